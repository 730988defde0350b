"""Participants on their own hosts: a 3-round task whose 4 participants each run `flock
participant start` with only their own key, data folder and ledger, each in its own network
namespace with its own address (``ip netns``, a veth on a bridge), against the local stack
(``infra/local-stack.sh``: PostgreSQL, a Prefect server and an MLflow server on it, ``rclone
serve s3`` for the blobs, anvil) listening on the bridge. The report equals the in-process
engine's for the same config (rounds 1 and 2: in round 3 p3's training run is killed with
SIGKILL (its worker process, which runs its duties: the trial starts it again, and the new
process marks the killed run crashed), and the round goes on without its update, the other
three paid and none slashed),
each participant's processes loaded only its own key and data, and each reached the stack
from its own address.

Without root or iproute2 the workers run on this host (127.0.0.1); without PostgreSQL the test
is skipped (`.ci/run` installs both)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import psutil
import pytest
import yaml
from eth_account import Account
from flow_helpers import flock_cmd, flock_env

from flock_pipeline.config import load_config
from flock_pipeline.data.folder import write_folder
from flock_pipeline.faces import stack
from flock_pipeline.processes import free_port
from flock_pipeline.protocol.params import dev_key
from flock_pipeline.round import prepare_federation
from flock_pipeline.runtime.participant import LOADED
from flows.trial import run_trial

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")),
        reason="PostgreSQL is not installed (.ci/run installs Debian's postgresql)",
    ),
]

N = 4
CONFIG: dict[str, Any] = {
    "task": "workers-trial",
    "participants": N,
    "rounds": 3,
    "seed": 3,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp"},
    # About a second of local training: p3's worker is killed mid-training, and its training
    # run, dispatched a round ahead, starts training within 0.05 s of the round's start (one
    # epoch takes 0.07 s, less than the watcher may need to see it and kill)
    "training": {"local_epochs": 15},
    "privacy": {"enabled": False},
    "partition": {"scheme": "iid"},
}


def _kill_when_started(owner: Path, line: str) -> threading.Event:
    """SIGKILL ``owner``'s worker process (its duties run in it) as its log says ``line``
    (the training run's start of training: the run was dispatched a round ahead and waited
    for the round); the event is set when it did. The duties it had dispatched ahead die with
    it. The trial starts the worker again, as a participant's supervisor would."""
    done = threading.Event()

    def watch() -> None:
        log = owner / "worker.log"
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if log.exists() and line in log.read_text(errors="replace"):
                for proc in psutil.process_iter(["cmdline"]):
                    cmd = proc.info["cmdline"] or []
                    if "participant" in cmd and str(owner / "state") in cmd:
                        with contextlib.suppress(psutil.Error):
                            proc.kill()
                        done.set()
                        return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return done


@contextlib.contextmanager
def _hosts() -> Iterator[netns.Hosts | None]:
    if netns.available():
        with netns.namespaces(N) as hosts:
            yield hosts
    else:
        yield None


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


def test_four_participants_on_their_own_hosts_finish_the_task_the_in_process_engine_finishes(
    tmp_path: Path, stack_dirs: list[Path]
) -> None:
    # Prepare: the in-process engine's run of the same config, alongside (it needs nothing of
    # the stack); each participant's own data folder and key; the hosts; the stack on the
    # bridge they reach
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "task.yaml").write_text(yaml.safe_dump(dict(CONFIG, data_dir=str(alone))))
    in_process_run = subprocess.Popen(
        flock_cmd("run", "-c", str(alone / "task.yaml"), "--out", str(alone / "out")),
        cwd=alone, env=flock_env(alone), text=True, stdout=subprocess.DEVNULL,
        stderr=(alone / "run.log").open("w"),
    )  # fmt: skip
    keys = [dev_key("flock-participant", i) for i in range(N)]
    addresses = [Account.from_key(k).address for k in keys]
    cfg = load_config(None, {"data_dir": str(tmp_path / "x"), **_flat(CONFIG)})
    fed = prepare_federation(cfg)
    folders = [write_folder(tmp_path / "owners" / p.id / "data", p) for p in fed.participants]
    home = tmp_path / "coordinator"
    workers = {"pool": "flock-test-pool", "members": addresses, "deadline_seconds": 300}
    root: Path | None = None
    try:
        with _hosts() as hosts:
            host = hosts.bridge_ip if hosts else "127.0.0.1"
            try:
                root = _stack_up(host, stack_dirs)
                env = {**flock_env(home), **stack.environment(root)}  # the stack's Prefect API
                config = dict(CONFIG, data_dir=str(home), workers=workers)

                # Execute: the coordinator on this host, a worker on each participant's host;
                # p3's worker is killed (SIGKILL) as it starts its round-3 training
                killed = _kill_when_started(tmp_path / "owners" / "p3", "p3 trains round 3")
                trial = run_trial(
                    config, home, keys, folders, "flock-test-pool", env=env,
                    prefixes=[hosts.prefix(i) for i in range(N)] if hosts else None,
                )  # fmt: skip
            finally:
                if root is not None:
                    stack.down(root)
    except BaseException:
        in_process_run.kill()  # not left running on a failure (its servers die with it)
        in_process_run.wait()
        raise
    assert in_process_run.wait(timeout=900) == 0, (alone / "run.log").read_text()[-4000:]
    in_process = json.loads((alone / "out" / "summary.json").read_text())

    # Assert: the task completed, as the in-process engine completes it
    distributed = trial.summary
    assert distributed["task"]["engine"] == "workers"
    assert [r["outcome"] for r in distributed["rounds"]] == ["accepted"] * 3
    ours, theirs = _essence(distributed), _essence(in_process)
    assert ours["rounds"][:2] == theirs["rounds"][:2]
    # ... but for round 3, where p3's training run was killed: it submitted nothing and the
    # round went on with the other three proposers, each paid, none slashed
    assert killed.wait(timeout=5), "p3's training run of round 3 was never seen"
    last = {p["id"]: p for p in distributed["rounds"][2]["participants"]}
    assert last["p3"]["update_hash"] is None
    # ... it still voted: its validate and reveal runs, dispatched ahead, died with its
    # worker, and were dispatched again when their phases began
    assert last["p3"]["vote"] is not None and int(last["p3"]["reward"]) > 0
    assert all(last[p]["update_hash"] and int(last[p]["reward"]) > 0 for p in ("p0", "p1", "p2"))
    assert all(last[p]["slashed"] == "0" for p in ("p0", "p1", "p2"))
    # The same money: a round's pot in total; a participant's share up to rounding dust, which
    # the contract hands out in the order participants settle (claim order, here timing)
    for ours, theirs in zip(_paid(distributed)[:2], _paid(in_process)[:2], strict=True):
        assert sum(ours) == sum(theirs)
        assert all(abs(a - b) <= N for a, b in zip(ours, theirs, strict=True))
    # ... the models went through the stack: its S3 holds the blobs and MLflow's artifacts
    assert root is not None
    assert any(p.is_file() for p in (root / "s3" / "flock-blobs").rglob("*"))
    assert any(p.is_file() for p in (root / "s3" / "mlflow").rglob("*"))
    # ... and each participant's processes loaded its own key and its own folder, nothing
    # else, from its own host
    for i, (folder, state) in enumerate(zip(folders, trial.states, strict=True)):
        loaded = [json.loads(line) for line in (state / LOADED).read_text().splitlines()]
        # once per worker process: its duty runs use what the worker opened
        assert len(loaded) == len({e["pid"] for e in loaded}) == (2 if i == 3 else 1)
        assert {e["address"] for e in loaded} == {addresses[i]}
        assert {e["data"] for e in loaded} == {str(folder.resolve())}
        assert {e["participant"] for e in loaded} == {f"p{i}"}
        assert {e["source_ip"] for e in loaded} == {hosts.ips[i] if hosts else "127.0.0.1"}


@pytest.fixture
def stack_dirs() -> Iterator[list[Path]]:
    """The stacks' folders (outside pytest's own, which PostgreSQL's user may not enter),
    removed after the test."""
    made: list[Path] = []
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def _stack_up(host: str, made: list[Path]) -> Path:
    """Start the stack on free ports in a new folder; a port another process takes between
    the pick and the start (the other test worker's servers) is retried in a new folder on
    new ports."""
    for attempt in range(3):
        root = Path(tempfile.mkdtemp(prefix="flock-stack-"))
        made.append(root)
        root.chmod(0o755)  # PostgreSQL's own user enters it when the test runs as root
        try:
            stack.up(root, host=host, ports={name: free_port(host) for name in stack.SERVICES})
            return root
        except stack.StackError as exc:
            stack.down(root)
            if "is taken" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
