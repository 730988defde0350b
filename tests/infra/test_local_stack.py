"""The production stack's native twin (``infra/local-stack.sh``): PostgreSQL, a Prefect server
and an MLflow server on it, ``rclone serve s3`` and anvil, started on 127.0.0.1 and stopped by
PID. A task runs against it end to end (the Prefect server's runs, the MLflow registry on
PostgreSQL with its artifacts in S3, the blobs in S3). A service that is down at start is
named, with the command that starts it, before any task starts."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flock_pipeline.config import load_config
from flock_pipeline.faces import stack
from flock_pipeline.processes import alive, free_port, stop_process
from flock_pipeline.services import problems

pytestmark = pytest.mark.skipif(
    not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")),
    reason="PostgreSQL is not installed (.ci/run installs Debian's postgresql)",
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A stack on free ports, in a folder PostgreSQL's own user may enter when run as root."""
    base = Path(tempfile.mkdtemp(prefix="flock-stack-"))
    base.chmod(0o755)
    ports = {name: free_port() for name in stack.SERVICES}
    stack.up(base / "stack", ports=ports)
    try:
        yield base / "stack"
    finally:
        stack.down(base / "stack")


def _env(root: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "PREFECT_API"))}
    env.update(stack.environment(root))
    env.update(PREFECT_HOME=str(home / "prefect"), MPLCONFIGDIR=str(home / "mpl"),
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", OMP_NUM_THREADS="1")  # fmt: skip
    return env


def _config(home: Path) -> Path:
    path = home / "task.yaml"
    path.write_text(yaml.safe_dump({
        "participants": 3, "rounds": 1, "data_dir": str(home / "flock"),
        "data": {"dataset": "digits"}, "model": {"name": "mlp"}, "privacy": {"enabled": False},
        "partition": {"scheme": "iid"}, "chain": {"proposers_per_round": 3, "voters_per_round": 3},
    }))  # fmt: skip
    return path


def test_a_task_runs_against_the_stack_and_registers_its_model_on_postgresql_and_s3(
    root: Path, tmp_path: Path
) -> None:
    # Prepare
    assert all(entry["running"] for entry in stack.status(root).values())
    assert set(stack.status(root)) == set(stack.SERVICES)
    env = _env(root, tmp_path)

    # Execute
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "flock"), "run", "-c", str(_config(tmp_path)), "--out",
         str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    # Assert: the run went through the stack's services, not the embedded defaults
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "summary.json").exists()
    blobs = list((root / "s3" / "flock-blobs" / "tasks").rglob("*"))
    assert any(p.is_file() for p in blobs)  # the global models and updates, in S3
    assert any(p.is_file() for p in (root / "s3" / "mlflow").rglob("*"))  # MLflow's artifacts
    assert not (tmp_path / "flock" / "mlflow.db").exists()  # the registry is on PostgreSQL
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["FLOCK_TRACKING__URI"])
    assert client.search_model_versions("name = 'flock-digits-mlp'")


def test_a_service_down_at_start_is_named_with_the_command_that_starts_it(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the stack's settings; then stop PostgreSQL, S3 and MLflow by their PIDs
    env = _env(root, tmp_path)
    for key in ("PREFECT_API_URL",):
        monkeypatch.setenv(key, env[key])
    cfg = load_config(None, {
        "data_dir": str(tmp_path / "flock"), "tracking.uri": env["FLOCK_TRACKING__URI"],
        "storage.url": env["FLOCK_STORAGE__URL"],
        "storage.s3_endpoint_url": env["FLOCK_STORAGE__S3_ENDPOINT_URL"],
    })  # fmt: skip
    assert problems(cfg) == []
    record = stack.status(root)
    for name in ("postgres", "s3"):
        stop_process(int(record[name]["pid"]), record[name]["ticks"], 30)
        assert not alive(int(record[name]["pid"]))

    # Execute: the checks, and `flock run` on the stack's settings
    found = problems(cfg)
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "flock"), "run", "-c", str(_config(tmp_path))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    stop_process(int(record["mlflow"]["pid"]), record["mlflow"]["ticks"], 30)
    stop_process(int(record["prefect"]["pid"]), record["prefect"]["ticks"], 30)
    all_down = problems(cfg)
    lines = stack.up(root, ports={n: int(e["port"]) for n, e in record.items()})

    # Assert: each down service named once, in one error, with the command; then `up` again
    # restarts exactly the stopped ones
    assert any(p.startswith("PostgreSQL: the Prefect server") for p in found)
    assert any(p.startswith("PostgreSQL: the MLflow server") for p in found)
    assert any(p.startswith("S3: the endpoint") for p in found)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "service(s) down" in done.stderr and "infra/local-stack.sh up" in done.stderr
    assert [p.split(":")[0] for p in all_down] == ["Prefect", "MLflow", "S3"]
    assert "anvil: running" in lines[2]
    assert all(entry["running"] for entry in stack.status(root).values())
    assert problems(cfg) == []


def test_the_cli_refuses_a_taken_port_by_name(tmp_path: Path) -> None:
    root = tmp_path / "s"
    port = free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = dict(os.environ, STACK_ROOT=str(root), STACK_PORT_POSTGRES=str(port))
        done = subprocess.run([str(REPO / "infra" / "local-stack.sh"), "up"], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"postgres: port {port} on 127.0.0.1 is taken" in done.stderr
    assert "STACK_PORT_POSTGRES" in done.stderr
    assert stack.status(root) == {}
