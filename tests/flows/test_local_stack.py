"""The production stack's native twin (``infra/local-stack.sh``): PostgreSQL, a Prefect server
and an MLflow server on it, ``rclone serve s3`` and anvil, started on 127.0.0.1 and stopped by
PID.

One 2-round task runs against it through three faults at once: the S3 server restarted as the
first proposer of round 1 is about to upload, the Prefect server restarted as one of round 2 is,
and an RPC in front of anvil that answers bursts of calls with HTTP 503 throughout. The task
ends with every round finalized once, every reward claimed once, every committed update in the
report, and its models registered on PostgreSQL with their artifacts in S3. (A coordinator that
crashes mid-round is resumed by the next run: tests/flows/test_task_flow.py; a participant
worker killed mid-training: tests/flows/test_workers.py.) A service that is down at start is
named, with the command that starts it, before any task starts.

Each fault is injected by this test process when the run reaches a point it can see: a
proposer's kept update on disk (it is about to upload and commit), or the n-th JSON-RPC call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flow_helpers import check_settlements, events, flock_cmd, flock_env

from flock_pipeline.chain import AllianceClient, Deployment, connect, dev_signers
from flock_pipeline.config import load_config
from flock_pipeline.faces import stack
from flock_pipeline.processes import alive, free_port, stop_process
from flock_pipeline.services import problems

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")),
        reason="PostgreSQL is not installed (.ci/run installs Debian's postgresql)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
TOKEN = 10**18
ROUNDS = 2


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
        shutil.rmtree(base, ignore_errors=True)


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


# ---------------------------------------------------------------- faults


def _restart(root: Path, name: str, down_for: float) -> None:
    """Stop a stack service by its PID, wait, start it again on its port."""
    record = stack.status(root)
    entry = record[name]
    stop_process(int(entry["pid"]), entry["ticks"], 30)
    time.sleep(down_for)
    stack.up(root, ports={n: int(e["port"]) for n, e in record.items()})


def _when(condition: Callable[[], bool], then: Callable[[], None]) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if condition():
                then()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _kept_update(data: Path, round_number: int) -> Callable[[], bool]:
    """True once a proposer has kept an update of ``round_number`` (1-based) that it is about
    to upload and commit."""
    return lambda: any(data.glob(f"tasks/*/updates/{round_number}-*.bin"))


_COUNT = threading.Lock()


class _FlakyRpc(ThreadingHTTPServer):
    upstream: str
    calls: int
    failing: set[int]
    """Which calls (1-based) fail with HTTP 503 before reaching the node."""
    failed: list[str]


class _Flaky(BaseHTTPRequestHandler):
    server: _FlakyRpc

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with _COUNT:
            self.server.calls += 1
            n = self.server.calls
        if n in self.server.failing:
            self.server.failed.append(json.loads(body).get("method", "?"))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = requests.post(self.server.upstream, data=body, timeout=60,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class FaultyRun:
    summary: dict[str, Any]
    home: Path
    env: dict[str, str]
    rpc_failed: list[str]
    rpc_calls: int
    faults: dict[str, bool]
    """Fault -> whether it was injected."""


@pytest.fixture(scope="module")
def faulty_run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> FaultyRun:
    """One `flock run` of 2 rounds on the stack through the three faults."""
    home = tmp_path_factory.mktemp("faults")
    data = home / "flock"
    anvil = stack.environment(root)["FLOCK_CHAIN__URL"]
    server = _FlakyRpc(("127.0.0.1", 0), _Flaky)
    server.upstream, server.calls, server.failed = anvil, 0, []
    # bursts of 3 through the run (about 400 requests in all): at least two land in it
    server.failing = {n for start in (100, 180, 260, 340) for n in range(start, start + 3)}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    config = {
        "task": "faults", "participants": 3, "rounds": ROUNDS, "seed": 1,
        "data_dir": str(data), "data": {"dataset": "digits"},
        "model": {"name": "mlp"}, "privacy": {"enabled": False}, "partition": {"scheme": "iid"},
        "chain": {"url": f"http://{host!s}:{port}", "proposers_per_round": 3,
                  "voters_per_round": 3},
        "aggregation": {"screen": {"min_trust": None}},
    }  # fmt: skip
    (home / "task.yaml").write_text(yaml.safe_dump(config))
    env = {**flock_env(home), **stack.environment(root)}
    env.pop("FLOCK_CHAIN__URL")
    s3 = _when(_kept_update(data, 1), lambda: _restart(root, "s3", 4.0))
    prefect = _when(_kept_update(data, 2), lambda: _restart(root, "prefect", 2.0))
    try:
        done = subprocess.run(
            flock_cmd("run", "-c", str(home / "task.yaml"), "--out", str(home / "out")),
            cwd=home, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    s3.join(timeout=60)
    prefect.join(timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = dict(json.loads((home / "out" / "summary.json").read_text()))
    faults = {"s3": not s3.is_alive(), "prefect": not prefect.is_alive()}
    return FaultyRun(summary, home, env, list(server.failed), server.calls, faults)


def test_a_task_survives_s3_and_prefect_restarts_and_a_flaky_rpc(
    root: Path, faulty_run: FaultyRun
) -> None:
    # Prepare: each fault hit the run
    summary = faulty_run.summary
    assert faulty_run.faults == {"s3": True, "prefect": True}
    assert len(faulty_run.rpc_failed) >= 6, faulty_run.rpc_calls
    chain = connect(stack.environment(root)["FLOCK_CHAIN__URL"], kind="anvil")
    deployment = Deployment.load(faulty_run.home / "flock" / "chain" / "deployment.json")
    (reader,) = dev_signers(chain, 1, label="flock-test-reader")
    client = AllianceClient(chain, deployment, reader)
    task_id = summary["task"]["task_id"]

    # Assert: every round finalized once; every committed update reported; claims paid the
    # rewards, once
    finalized = Counter(int(e["round"]) + 1 for e in events(client, "RoundFinalized", task_id))
    assert finalized == {r: 1 for r in range(1, ROUNDS + 1)}
    submitted = Counter((int(e["round"]) + 1, str(e["proposer"]).lower())
                        for e in events(client, "UpdateSubmitted", task_id))  # fmt: skip
    assert set(submitted.values()) == {1}
    reported = {(r["round"], p["address"].lower()) for r in summary["rounds"]
                for p in r["participants"] if p["update_hash"]}  # fmt: skip
    assert reported == set(submitted)
    assert [r["outcome"] for r in summary["rounds"]] == ["accepted"] * ROUNDS
    check_settlements(summary, client, summary["config"]["chain"]["stake"] * TOKEN)
    claimed: Counter[str] = Counter()
    for e in events(client, "Claimed", task_id):
        claimed[str(e["account"]).lower()] += int(e["amount"])
    for p in summary["rounds"][0]["participants"]:
        assert claimed[p["address"].lower()] == int(summary["claimed"][p["id"]])


def test_the_task_on_the_stack_registers_its_models_on_postgresql_and_s3(
    root: Path, faulty_run: FaultyRun
) -> None:
    # Assert: the run went through the stack's services, not the embedded defaults
    assert all(entry["running"] for entry in stack.status(root).values())
    assert set(stack.status(root)) == set(stack.SERVICES)
    blobs = list((root / "s3" / "flock-blobs" / "tasks").rglob("*"))
    assert any(p.is_file() for p in blobs)  # the global models and updates, in S3
    assert any(p.is_file() for p in (root / "s3" / "mlflow").rglob("*"))  # MLflow's artifacts
    assert not (faulty_run.home / "flock" / "mlflow.db").exists()  # the registry: PostgreSQL
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=faulty_run.env["FLOCK_TRACKING__URI"])
    versions = client.search_model_versions("name = 'flock-digits-mlp'")
    assert len(versions) >= ROUNDS


# ---------------------------------------------------------------- a service down at start


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
