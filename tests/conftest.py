"""Keep every tool's state inside a temporary folder, never in the user's home."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLCONFIGDIR", str(_ROOT / ".flock" / "matplotlib"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Under pytest-xdist each worker has its own Prefect database: two temporary servers on one
# SQLite file lock each other out. Set before anything imports prefect.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    os.environ["PREFECT_HOME"] = str(_ROOT / ".flock" / f"prefect-{_WORKER}")
# Prefect stops its temporary server at interpreter exit and logs that to a stream pytest has
# already closed; without this every run ends with a "--- Logging error ---" dump.
logging.raiseExceptions = False

PREFECT_API_ENV = "FLOCK_TEST_PREFECT_API_URL"
"""Where the session's Prefect server answers; tests/flows/flow_helpers.flock_env passes it on as
PREFECT_API_URL to the `flock` processes a test starts."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server for the session's `flock` subprocesses, started on 127.0.0.1
    and stopped by PID: each subprocess would otherwise start (and migrate) a temporary server
    of its own. A port another process takes first is retried on a new one."""
    from flock_pipeline.faces.serve import ServiceError, start_prefect_server

    home = tmp_path_factory.mktemp("prefect-server")
    error: ServiceError | None = None
    for _ in range(3):
        try:
            service = start_prefect_server(home, _free_port(), timeout=180)
        except ServiceError as exc:
            error = exc
            continue
        os.environ[PREFECT_API_ENV] = f"{service.url}/api"
        try:
            yield f"{service.url}/api"
        finally:
            os.environ.pop(PREFECT_API_ENV, None)
            service.stop()
        return
    raise RuntimeError(f"no Prefect server for the tests: {error}")


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "flock"


# The longest test files, longest first (seconds, from `pytest --durations`). With
# `--dist loadfile --no-loadscope-reorder` (the Makefile's) each file runs on one worker, in
# collection order as workers free up: a long file collected last keeps one worker busy alone
# at the end (8 min for the worker test). Longest first keeps every worker busy to the end.
LONGEST_FIRST = (
    "tests/flows/test_task_flow.py",  # ~250 (three workers on 2 cores)
    "tests/flows/test_workers.py",  # ~220 (its own stack, 4 workers, 3 rounds)
    "tests/flows/test_contribution_rewards.py",  # ~215
    "tests/flows/test_local_stack.py",  # ~150 (its own stack, the faults)
    "tests/protocol/test_protocol_differential.py",  # ~120
    "tests/flows/test_dvc_pipeline.py",  # ~120
    "tests/core/test_cli_orphans.py",  # ~110
    "tests/flows/test_deployment.py",  # ~100 with its server
    "tests/core/test_simulation_e2e.py",  # ~80
    "tests/chain/test_public_chain.py",  # ~70, real-time phases
    "tests/flows/test_two_engines.py",  # ~65
    "tests/chain/test_chain_forge.py",  # ~65
    "tests/flows/test_dask_runner.py",  # ~60
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
