"""Participants on their own worker processes: a 2-round task whose 4 participants each run
`flock participant start` with only their own key, data folder and ledger, against a Prefect
server and an anvil started by the test. The report equals the in-process engine's for the
same config, and each participant's processes loaded only its own key and data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from flow_helpers import flock_cmd, flock_env

from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import load_config
from flock_pipeline.data.folder import write_folder
from flock_pipeline.protocol.params import dev_key
from flock_pipeline.round import prepare_federation
from flock_pipeline.runtime.participant import LOADED
from flows.trial import run_trial

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

N = 4
CONFIG: dict[str, Any] = {
    "task": "workers-trial",
    "participants": N,
    "rounds": 2,
    "seed": 3,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 1},
    "privacy": {"enabled": False},
    "partition": {"scheme": "iid"},
}


def _essence(report: dict[str, Any]) -> dict[str, Any]:
    """What both engines must agree on: outcomes, models, updates, votes and money. Not
    timings, transaction hashes, the engine's name, or what only the in-process engine can
    see (the partition table and each participant's held-out metrics)."""
    keep_round = ("round", "outcome", "accepted", "aggregate_hash", "global_model_hash",
                  "selected", "screened", "accept_weight", "reject_weight", "global")  # fmt: skip
    keep_p = ("id", "address", "role", "update_hash", "num_samples", "dataset_hash", "vote",
              "flagged", "contribution", "trust_score", "slashed")  # fmt: skip
    rounds = [
        {k: r[k] for k in keep_round}
        | {"participants": [{k: p[k] for k in keep_p} for p in r["participants"]]}
        for r in report["rounds"]
    ]
    final = {k: report["final"][k] for k in ("accuracy", "model_hash", "accepted_rounds",
                                             "honest_slashes")}  # fmt: skip
    return {"rounds": rounds, "final": final}


def _paid(report: dict[str, Any]) -> list[list[int]]:
    """Each round's rewards, in participant order."""
    return [[int(p["reward"]) for p in r["participants"]] for r in report["rounds"]]


def test_four_participant_workers_finish_the_task_the_in_process_engine_finishes(
    tmp_path: Path,
) -> None:
    # Prepare: an anvil; each participant's own data folder and key; the task's config
    node = AnvilNode(tmp_path / "anvil", port=0)
    node.up(owner="test")
    keys = [dev_key("flock-participant", i) for i in range(N)]
    addresses = [Account.from_key(k).address for k in keys]
    cfg = load_config(None, {"data_dir": str(tmp_path / "x"), **_flat(CONFIG)})
    fed = prepare_federation(cfg)
    folders = [write_folder(tmp_path / "owners" / p.id / "data", p) for p in fed.participants]
    home = tmp_path / "coordinator"
    workers = {"pool": "flock-test-pool", "members": addresses, "deadline_seconds": 300}
    config = dict(CONFIG, data_dir=str(home), chain={"url": node.status().url}, workers=workers)
    try:
        # Execute: the coordinator and four workers; then the in-process engine alone
        trial = run_trial(config, home, keys, folders, "flock-test-pool", env=flock_env(home))
        alone = tmp_path / "alone"
        alone.mkdir()
        (alone / "task.yaml").write_text(yaml.safe_dump(dict(CONFIG, data_dir=str(alone))))
        done = subprocess.run(
            flock_cmd("run", "-c", str(alone / "task.yaml"), "--out", str(alone / "out")),
            cwd=alone, env=flock_env(alone), text=True, capture_output=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        in_process = json.loads((alone / "out" / "summary.json").read_text())
    finally:
        node.down()

    # Assert: the task completed, as the in-process engine completes it
    distributed = trial.summary
    assert distributed["task"]["engine"] == "workers"
    assert [r["outcome"] for r in distributed["rounds"]] == ["accepted", "accepted"]
    assert _essence(distributed) == _essence(in_process)
    # The same money: a round's pot in total; a participant's share up to rounding dust, which
    # the contract hands out in the order participants settle (claim order, here timing)
    for ours, theirs in zip(_paid(distributed), _paid(in_process), strict=True):
        assert sum(ours) == sum(theirs)
        assert all(abs(a - b) <= N for a, b in zip(ours, theirs, strict=True))
    # ... and each participant's processes loaded its own key and its own folder, nothing else
    for i, (folder, state) in enumerate(zip(folders, trial.states, strict=True)):
        loaded = [json.loads(line) for line in (state / LOADED).read_text().splitlines()]
        assert len({e["pid"] for e in loaded}) >= 2 * 3 + 2  # its worker, then 7 runs
        assert {e["address"] for e in loaded} == {addresses[i]}
        assert {e["data"] for e in loaded} == {str(folder.resolve())}
        assert {e["participant"] for e in loaded} == {f"p{i}"}


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
