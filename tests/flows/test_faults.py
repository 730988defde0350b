"""Faults survived: the S3 server restarted mid-round, the Prefect server restarted mid-round,
an RPC failing transiently. Each `flock run` goes on against the local stack's services
(``infra/local-stack.sh``), and the task ends with every round finalized once, every reward
claimed once, and every update that was committed in the report. (A coordinator that crashes
mid-round is resumed by the next run: tests/flows/test_task_flow.py; a participant worker
killed mid-training: tests/flows/test_workers.py's companion below.)

Each fault is injected by this test process when the run reaches a point it can see: a
proposer's kept update on disk (it is about to upload and commit), or the n-th JSON-RPC call."""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flow_helpers import check_settlements, events, flock_cmd, flock_env

from flock_pipeline.chain import AllianceClient, Deployment, connect, dev_signers
from flock_pipeline.faces import stack
from flock_pipeline.processes import free_port, stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")),
        reason="PostgreSQL is not installed (.ci/run installs Debian's postgresql)",
    ),
]

TOKEN = 10**18
ROUNDS = 2


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="flock-faults-"))
    base.chmod(0o755)
    stack.up(base / "stack", ports={name: free_port() for name in stack.SERVICES})
    try:
        yield base / "stack"
    finally:
        stack.down(base / "stack")


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


def _kept_update(data: Path) -> Callable[[], bool]:
    """True once a proposer has kept an update it is about to upload and commit."""
    return lambda: any(data.glob("tasks/*/updates/*.bin"))


def _run(home: Path, root: Path, chain_url: str) -> dict[str, Any]:
    config = {
        "task": "faults", "participants": 3, "rounds": ROUNDS, "seed": 1,
        "data_dir": str(home / "flock"), "data": {"dataset": "digits"},
        "model": {"name": "mlp"}, "privacy": {"enabled": False}, "partition": {"scheme": "iid"},
        "chain": {"url": chain_url, "proposers_per_round": 3, "voters_per_round": 3},
        "aggregation": {"screen": {"min_trust": None}},
    }  # fmt: skip
    (home / "task.yaml").write_text(yaml.safe_dump(config))
    env = {**flock_env(home), **stack.environment(root)}
    env.pop("FLOCK_CHAIN__URL")
    done = subprocess.run(
        flock_cmd("run", "-c", str(home / "task.yaml"), "--out", str(home / "out")),
        cwd=home, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads((home / "out" / "summary.json").read_text()))


def _assert_settled_once(summary: dict[str, Any], data: Path, url: str) -> None:
    """Every round finalized once; every committed update reported; claims paid the rewards."""
    chain = connect(url, kind="anvil")
    deployment = Deployment.load(data / "chain" / "deployment.json")
    (reader,) = dev_signers(chain, 1, label="flock-test-reader")
    client = AllianceClient(chain, deployment, reader)
    task_id = summary["task"]["task_id"]
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


def _anvil(root: Path) -> str:
    return stack.environment(root)["FLOCK_CHAIN__URL"]


def test_the_s3_server_restarted_mid_round(root: Path, tmp_path: Path) -> None:
    # Execute: S3 goes down as the first proposer is about to upload, for 4 s
    data = tmp_path / "flock"
    fault = _when(_kept_update(data), lambda: _restart(root, "s3", 4.0))
    summary = _run(tmp_path, root, _anvil(root))
    fault.join(timeout=60)

    # Assert
    assert not fault.is_alive()
    _assert_settled_once(summary, data, _anvil(root))


def test_the_prefect_server_restarted_mid_round(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "flock"
    fault = _when(_kept_update(data), lambda: _restart(root, "prefect", 2.0))
    summary = _run(tmp_path, root, _anvil(root))
    fault.join(timeout=120)

    assert not fault.is_alive()
    _assert_settled_once(summary, data, _anvil(root))


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


def test_an_rpc_failing_transiently(root: Path, tmp_path: Path) -> None:
    # Prepare: an RPC in front of the stack's anvil that refuses bursts of calls mid-task
    server = _FlakyRpc(("127.0.0.1", 0), _Flaky)
    server.upstream, server.calls, server.failed = _anvil(root), 0, []
    server.failing = {n for start in (150, 400, 700) for n in range(start, start + 3)}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        # Execute
        summary = _run(tmp_path, root, f"http://{host!s}:{port}")
    finally:
        server.shutdown()
        server.server_close()

    # Assert: the bursts hit the run, and it settled every round once all the same
    assert len(server.failed) >= 6, server.calls
    _assert_settled_once(summary, tmp_path / "flock", _anvil(root))
