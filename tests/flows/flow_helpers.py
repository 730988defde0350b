"""Running `flock run` as a user does, and reading back what the chain and MLflow recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flock_pipeline.chain import AllianceClient, Deployment, dev_signers
from flock_pipeline.chain.anvil import AnvilNode


def flock_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MPLCONFIGDIR=str(home / "mpl"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        **extra,
    )
    env.pop("PREFECT_API_URL", None)
    return env


def flock_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flock_pipeline", *args]


def run_flock(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flock_cmd(*args), capture_output=True, text=True, cwd=home, env=flock_env(home, **env),
        timeout=900,
    )  # fmt: skip


def open_chain(data_dir: Path) -> tuple[AnvilNode, AllianceClient]:
    """The run's chain, restarted from its saved state, seen through a read-only client."""
    node = AnvilNode(data_dir)
    node.up()
    chain = node.chain()
    deployment = Deployment.load(data_dir / "chain" / "deployment.json")
    (reader,) = dev_signers(chain, 1, label="flock-test-reader")
    return node, AllianceClient(chain, deployment, reader)


def events(client: AllianceClient, name: str, task_id: int) -> list[dict[str, Any]]:
    logs = getattr(client.alliance.events, name)().get_logs(
        from_block=0, argument_filters={"taskId": task_id}
    )
    return [dict(log["args"]) for log in logs]


def load_summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))
