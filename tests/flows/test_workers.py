"""Participants on their own worker processes: a 2-round task whose 4 participants each run
`flock participant start` with only their own key, data folder and ledger, against a Prefect
server and an anvil started by the test. The report equals the in-process engine's for the
same config, and each participant's processes loaded only its own key and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from flow_helpers import flock_cmd, flock_env

from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import load_config
from flock_pipeline.data.folder import write_folder
from flock_pipeline.protocol.params import dev_key
from flock_pipeline.round import prepare_federation
from flock_pipeline.runtime.participant import LOADED

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

N = 4
KEY_ENV = "FLOCK_PARTICIPANT_KEY"
TASK = "workers-trial"

CONFIG: dict[str, Any] = {
    "task": TASK,
    "participants": N,
    "rounds": 2,
    "seed": 3,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 1},
    "privacy": {"enabled": False},
    "partition": {"scheme": "iid"},
}


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float) -> None:
    until = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the coordinator exited ({proc.returncode}): {proc.stderr}")
        if time.monotonic() > until:
            raise AssertionError(f"{path} did not appear in {seconds}s")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _essence(report: dict[str, Any]) -> dict[str, Any]:
    """What both engines must agree on: outcomes, models, updates, votes and money. Not
    timings, transaction hashes, the engine's name, or what only the in-process engine can
    see (the partition table and each participant's held-out metrics)."""
    rounds = []
    for r in report["rounds"]:
        rounds.append({
            k: r[k] for k in ("round", "outcome", "accepted", "aggregate_hash",
                              "global_model_hash", "selected", "screened", "accept_weight",
                              "reject_weight")
        } | {"global": r["global"], "participants": [
            {k: p[k] for k in ("id", "address", "role", "update_hash", "num_samples",
                               "dataset_hash", "vote", "flagged", "contribution",
                               "trust_score", "reward", "slashed")}
            for p in r["participants"]
        ]})  # fmt: skip
    final = {k: report["final"][k] for k in ("accuracy", "model_hash", "accepted_rounds",
                                             "honest_slashes")}  # fmt: skip
    return {"rounds": rounds, "claimed": report["claimed"], "final": final}


def test_four_participant_workers_finish_the_task_the_in_process_engine_finishes(
    tmp_path: Path,
) -> None:
    # Prepare: an anvil; each participant's own data folder and key; the task's config

    node = AnvilNode(tmp_path / "anvil", port=0)
    node.up(owner="test")
    url = str(node.status().url)
    keys = [dev_key("flock-participant", i) for i in range(N)]
    from eth_account import Account

    addresses = [Account.from_key(k).address for k in keys]
    fed = prepare_federation(load_config(None, {"data_dir": str(tmp_path / "x"), **_flat(CONFIG)}))
    folders = [write_folder(tmp_path / "owners" / p.id / "data", p) for p in fed.participants]
    home = tmp_path / "coordinator"
    home.mkdir()
    workers_cfg = dict(CONFIG, data_dir=str(home), chain={"url": url}, workers={
        "pool": "flock-test-pool", "members": addresses, "deadline_seconds": 300,
        "join_seconds": 300,
    })  # fmt: skip
    (home / "task.yaml").write_text(yaml.safe_dump(workers_cfg))
    started: list[subprocess.Popen[str]] = []
    try:
        # Execute: the coordinator creates the task and waits; each participant joins
        coordinator = subprocess.Popen(
            flock_cmd("run", "-c", str(home / "task.yaml"), "--out", str(home / "out")),
            cwd=home, env=flock_env(home), text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        started.append(coordinator)
        card = home / "tasks" / TASK / "card.json"
        _wait_for(card, coordinator, 240)
        for i, folder in enumerate(folders):
            owner = folder.parent
            env = flock_env(owner, **{KEY_ENV: "0x" + keys[i].hex()})
            for other in ("FLOCK_CHAIN_PRIVATE_KEY",):
                env.pop(other, None)
            started.append(
                subprocess.Popen(
                    flock_cmd(
                        "participant",
                        "start",
                        "--task",
                        str(card),
                        "--data",
                        str(folder),
                        "--key-env",
                        KEY_ENV,
                        "--pool",
                        "flock-test-pool",
                        "--state",
                        str(owner / "state"),
                    ),
                    cwd=owner,
                    env=env,
                    text=True,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=open(owner / "worker.log", "w"),  # noqa: SIM115  # closed at exit
                )
            )
        _, err = coordinator.communicate(timeout=1200)
        assert coordinator.returncode == 0, err[-4000:]
        distributed = json.loads((home / "out" / "summary.json").read_text())

        # The in-process engine on the same config, on a fresh chain folder
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
        for proc in started:
            _stop(proc)
        node.down()

    # Assert: the task completed, as the in-process engine completes it
    assert distributed["task"]["engine"] == "workers"
    assert [r["outcome"] for r in distributed["rounds"]] == ["accepted", "accepted"]
    assert _essence(distributed) == _essence(in_process)
    # ... and each participant's processes loaded its own key and its own folder, nothing else
    for i, folder in enumerate(folders):
        lines = (folder.parent / "state" / LOADED).read_text().splitlines()
        loaded = [json.loads(line) for line in lines]
        assert len({e["pid"] for e in loaded}) >= 2 * 3 + 1  # its worker, then its runs
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
