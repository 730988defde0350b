"""The deployment end to end: `flock ui` servers, `prefect deploy` from prefect.yaml, a process
worker, `prefect deployment run` with typed parameters, and the round's MLflow version."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flock_pipeline.report import RunReport
from flock_pipeline.tracking import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (then SIGKILL) the process group this test started for ``proc``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`flock ui` on free ports, all state in a temporary data dir; stopped by PID."""
    home = tmp_path_factory.mktemp("ui")
    env = dict(os.environ, MPLCONFIGDIR=str(home / "mpl"), PREFECT_HOME=str(home / "prefect"))
    env.pop("PREFECT_API_URL", None)
    ports = (_free_port(), _free_port())
    out = home / "ui.out"
    with out.open("wb") as fh:
        ui = subprocess.Popen(
            [str(BIN / "flock"), "ui", "--data-dir", str(home), "--prefect-port", str(ports[0]),
             "--mlflow-port", str(ports[1])],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        info: dict[str, Any] | None = None
        while info is None:
            assert ui.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            lines = [x for x in out.read_text().splitlines() if x.startswith('{"prefect"')]
            info = json.loads(lines[0]) if lines else None
            time.sleep(0.5)
        api = info["prefect"] + "/api"
        assert _get(api + "/health") is True
        assert urllib.request.urlopen(info["mlflow"] + "/health", timeout=5).status == 200
        env.update(PREFECT_API_URL=api)
        yield {"env": env, "home": home, "info": info, "ui": ui}
    finally:
        _stop(ui)  # SIGTERM: `flock ui` stops both servers by PID
    for key in ("prefect_pid", "mlflow_pid"):
        if info is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(info[key], 0)


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _flow_run_state(env: dict[str, str], run_id: str) -> str:
    out = subprocess.run(
        [str(BIN / "python"), "-c",
         "import asyncio, sys\n"
         "from prefect.client.orchestration import get_client\n"
         "async def main():\n"
         "    async with get_client() as c:\n"
         "        r = await c.read_flow_run(sys.argv[1])\n"
         "        print(r.state.type.value)\n"
         "asyncio.run(main())\n", run_id],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_deployment_run_from_prefect_yaml(servers: dict[str, Any], tmp_path: Path) -> None:
    env: dict[str, str] = servers["env"]
    _prefect(env, "work-pool", "create", "flock-pool", "--type", "process")
    deployed = _prefect(env, "deploy", "--all")
    assert "federated-task/nightly" in deployed

    data_dir = tmp_path / "flock"
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as fh:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "flock-pool"],
            cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        config = {
            "participants": 4,
            "rounds": 1,
            "data_dir": str(data_dir),
            "data": {"max_samples": 800},
            "training": {"local_epochs": 1},
        }
        started = _prefect(
            env, "deployment", "run", "federated-task/nightly",
            "--params", json.dumps({"config": config}),
        )  # fmt: skip
        run_id = next(
            line.split("UUID:")[1].strip() for line in started.splitlines() if "UUID:" in line
        )
        deadline = time.monotonic() + 150
        state = ""
        while state not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            assert time.monotonic() < deadline, f"flow run still {state}:\n{worker_log.read_text()}"
            time.sleep(3)
            state = _flow_run_state(env, run_id)
        assert state == "COMPLETED", worker_log.read_text()
    finally:
        _stop(worker)  # the worker before the server

    registry = ModelRegistry.open(None, data_dir, "flock", "flock-mnist5k-cnn")
    versions = registry.versions()
    assert versions
    tags = registry.version_tags(versions[-1].version)
    assert tags["round"] == "1"
    assert tags["task"].startswith("flock-mnist5k-cnn-")
    summary = json.loads((data_dir / "runs" / tags["task"] / "summary.json").read_text())
    report = RunReport.model_validate(summary)
    assert report.task.rounds == 1 and report.task.engine == "flow"
    (round_,) = report.rounds
    assert tags["outcome"] == round_.outcome and tags["finalize_tx"] == round_.finalize_tx
    assert tags["global_model_hash"] == round_.global_model_hash
    # The anvil the flow started is stopped at its end.
    info = data_dir / "chain" / "anvil.json"
    if info.exists():
        with pytest.raises(ProcessLookupError):
            os.kill(int(json.loads(info.read_text())["pid"]), 0)


def test_flock_serve_registers_deployment(servers: dict[str, Any], tmp_path: Path) -> None:
    env: dict[str, str] = servers["env"]
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        served = subprocess.Popen(
            [str(BIN / "flock"), "serve", "--name", "served", "--cron", "30 2 * * *",
             "--timezone", "Europe/Paris", "--data-dir", str(tmp_path / "flock")],
            cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        found = False
        while not found:
            assert served.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(2)
            done = subprocess.run(
                [str(BIN / "prefect"), "deployment", "inspect", "federated-task/served",
                 "--output", "json"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            found = done.returncode == 0
        spec = json.loads(done.stdout)
        assert spec["entrypoint"] == "flows.federated.federated_task"
        (schedule,) = spec["schedules"]
        assert schedule["schedule"]["cron"] == "30 2 * * *"
        assert schedule["schedule"]["timezone"] == "Europe/Paris"
        config = spec["parameters"]["config"]
        assert config["data_dir"] == str(tmp_path / "flock")
        assert config["training"]["local_epochs"] == 3
        assert "FlockConfig" in spec["parameter_openapi_schema"]["definitions"]
    finally:
        _stop(served)
