"""A task with participant workers, all on this machine: the coordinator (`flock run`) and one
`flock participant start` process per participant, each started with only its own key (in its
environment), its own data folder and its own state folder. What the worker test and
``bench/distributed_overhead.py`` run; also a way to try the setup before spreading it over
machines (docs/workers.md).

Every process is started in its own session and stopped by its process group.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Trial", "run_trial"]

KEY_ENV = "FLOCK_PARTICIPANT_KEY"
_SECRETS = ("FLOCK_CHAIN_PRIVATE_KEY", KEY_ENV)


@dataclass
class Trial:
    summary: dict[str, Any]
    seconds: float
    """Wall time of the coordinator's run, from its start to its summary."""
    states: list[Path] = field(default_factory=list)
    """Each participant's state folder (loaded.jsonl, traffic.jsonl, its ledger)."""


def _env(home: Path, base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _SECRETS}
    env.update(PREFECT_HOME=str(home / "prefect"), MPLCONFIGDIR=str(home / "mpl"), **extra)
    return env


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _supervise(
    coordinator: subprocess.Popen[Any],
    workers: list[subprocess.Popen[Any]],
    spawn: list[Callable[[], subprocess.Popen[Any]]],
    timeout: float,
) -> int:
    """Wait for the coordinator; start again any worker that dies meanwhile, with its own
    command (what systemd's ``Restart=always`` or a StatefulSet does for a participant).
    ``workers[i]`` is the live process of ``spawn[i]``."""
    until = time.monotonic() + timeout
    while (code := coordinator.poll()) is None:
        if time.monotonic() > until:
            raise subprocess.TimeoutExpired(coordinator.args, timeout)
        for i, proc in enumerate(workers):
            if proc.poll() is not None:
                workers[i] = spawn[i]()
        time.sleep(0.5)
    return code


def run_trial(
    config: dict[str, Any],
    home: Path,
    keys: list[bytes],
    folders: list[Path],
    pool: str,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
    prefixes: list[list[str]] | None = None,
    threads: int | None = None,
) -> Trial:
    """Run the task of ``config`` (it must name its ``task`` and ``workers``) with one worker
    per key and folder; the coordinator's state goes to ``home``. ``env``: the environment
    every process starts from (the Prefect API URL, ...), secrets removed. ``prefixes``: what
    each worker's command runs under (``ip netns exec <ns>``: a host of its own). ``threads``:
    each worker's torch threads (``OMP_NUM_THREADS``), for workers that share one machine's
    cores; by default, torch's own choice (every core)."""
    base = dict(os.environ if env is None else env)
    flock = [sys.executable, "-m", "flock_pipeline"]
    home.mkdir(parents=True, exist_ok=True)
    (home / "task.yaml").write_text(yaml.safe_dump(config))
    card = Path(config["data_dir"]) / "tasks" / str(config["task"]) / "card.json"
    logs = []
    started: list[subprocess.Popen[Any]] = []
    workers: list[subprocess.Popen[Any]] = []
    began = time.perf_counter()
    try:
        log = (home / "coordinator.log").open("w")
        logs.append(log)
        coordinator = subprocess.Popen(
            [*flock, "run", "-c", str(home / "task.yaml"), "--out", str(home / "out")],
            cwd=home, env=_env(home, base), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started.append(coordinator)
        until = time.monotonic() + 300
        while not card.exists():
            if coordinator.poll() is not None or time.monotonic() > until:
                raise RuntimeError(
                    f"the coordinator wrote no task card ({home / 'coordinator.log'})"
                )
            time.sleep(0.5)
        states = []
        wraps = prefixes or [[] for _ in keys]
        spawn: list[Callable[[], subprocess.Popen[Any]]] = []
        for key, folder, wrap in zip(keys, folders, wraps, strict=True):
            owner = Path(folder).parent
            states.append(owner / "state")
            log = (owner / "worker.log").open("w")
            logs.append(log)
            command = [*wrap, *flock, "participant", "start", "--task", str(card),
                       "--data", str(folder), "--key-env", KEY_ENV, "--pool", pool,
                       "--state", str(owner / "state")]  # fmt: skip
            worker_env = _env(owner, base, **{KEY_ENV: "0x" + key.hex()})
            if threads is not None:
                worker_env["OMP_NUM_THREADS"] = str(threads)
            spawn.append(functools.partial(
                subprocess.Popen, command, cwd=owner, env=worker_env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        workers = [start() for start in spawn]
        code = _supervise(coordinator, workers, spawn, timeout)
        seconds = time.perf_counter() - began
        if code != 0:
            tail = (home / "coordinator.log").read_text()[-4000:]
            raise RuntimeError(f"the coordinator failed ({code}):\n{tail}")
        summary = json.loads((home / "out" / "summary.json").read_text())
        return Trial(summary, seconds, states)
    finally:
        for proc in [*started, *workers]:
            _stop(proc)
        for log in logs:
            log.close()
