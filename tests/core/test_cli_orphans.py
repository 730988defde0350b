"""No orphans: the servers a command starts for itself die with it, even on SIGKILL, and any
left behind are named by `flock chain status` and stopped by `flock chain down` or the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.chain.cli import chain_app, reap_leftovers
from flock_pipeline.processes import ServerRegistry, alive, start_ticks

runner = CliRunner()


def _chain(*args: str) -> str:
    result = runner.invoke(chain_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _gone(pids: list[tuple[int, int | None]], within: float = 15.0) -> bool:
    """Whether every (pid, start ticks) has ended before the deadline (a deadline for a
    liveness check, not a speed claim)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(pid, ticks) for pid, ticks in pids):
            return True
        time.sleep(0.1)
    return False


def _python(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter that exits when done; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _orphan_anvil(data_dir: Path) -> int:
    """An anvil recorded as a run's, left behind by that run: started from a worker thread,
    where no binding to the process holds, by a process that then exits. Its pid."""
    return int(
        _python(
            f"""
            import threading
            from pathlib import Path
            from flock_pipeline.chain.anvil import AnvilNode
            out = []
            node = AnvilNode(Path({str(data_dir)!r}), port=0)
            t = threading.Thread(target=lambda: out.append(node.up(owner="flock run", bound=True)))
            t.start(); t.join()
            print(out[0].pid)
            """,
            data_dir.parent,
        )
    )


def test_kill_9_of_flock_run_takes_its_prefect_server_and_anvil_with_it(tmp_path: Path) -> None:
    # Prepare: a small run on the managed anvil, in its own session like a user's shell job
    config = tmp_path / "task.yaml"
    config.write_text(yaml.safe_dump({
        "participants": 2, "rounds": 2, "data": {"dataset": "digits"}, "model": {"name": "mlp"},
        "privacy": {"enabled": False}, "partition": {"scheme": "iid"},
    }))  # fmt: skip
    data = tmp_path / "d"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "MPLCONFIGDIR": str(tmp_path / "mpl")}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "flock_pipeline", "run", "-c", str(config), "--data-dir", str(data)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (
            list((data / "servers").glob("*.json")) and (data / "chain/anvil.json").exists()
        ):
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.1)
        (server,) = ServerRegistry(data).records()
        anvil = json.loads((data / "chain" / "anvil.json").read_text())
        assert server.what == "Prefect temporary server" and server.owner_pid == run.pid
        assert anvil["owner"] == "flock run" and anvil["owner_pid"] == run.pid
        servers = [(server.pid, server.ticks), (int(anvil["pid"]), anvil["ticks"])]
        assert all(alive(pid, ticks) for pid, ticks in servers)
        # Execute
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        log.close()
    # Assert: both servers end with the run, and nothing is left to name
    assert _gone(servers), [s for s in servers if alive(*s)]
    status = json.loads(_chain("status", "--data-dir", str(data), "--json"))
    assert status["running"] is False and status["servers"] == []


def test_an_orphaned_anvil_is_named_then_stopped_by_the_next_run_and_by_down(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d"
    first = _orphan_anvil(data)
    try:
        status = json.loads(_chain("status", "--data-dir", str(data), "--json"))
        assert status["running"] and status["pid"] == first and status["orphaned"]
        assert status["owner"] == "flock run" and isinstance(status["port"], int)
        text = _chain("status", "--data-dir", str(data))
        assert "orphaned: True" in text and f"pid: {first}" in text

        # The next run's up stops the orphan (its state saved) and starts its own.
        node = AnvilNode(data, port=0)
        node.up(owner="flock run", bound=True)
        mine = node.status()
        assert mine.pid != first and mine.owner_pid == os.getpid() and not mine.orphaned
        assert not alive(first)
        assert node.state_file.exists()
        node.down()

        second = _orphan_anvil(data)
        ticks = start_ticks(second)
        out = _chain("down", "--data-dir", str(data))
        assert f"anvil stopped, state saved: anvil (pid {second}, port" in out
        assert "started by `flock run` pid" in out and "(ended)" in out
        assert _gone([(second, ticks)])
    finally:
        AnvilNode(data).down()


def test_a_server_an_ended_run_left_is_named_and_stopped_and_a_live_one_kept(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d"
    left = int(
        _python(
            f"""
            import subprocess
            from pathlib import Path
            from flock_pipeline.processes import ServerRegistry
            server = subprocess.Popen(["sleep", "300"], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ServerRegistry(Path({str(data)!r})).add("Prefect temporary server", server.pid,
                                                    8123, "flock run")
            print(server.pid)
            """,
            tmp_path,
        )
    )
    live = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ServerRegistry(data).add("Prefect temporary server", live.pid, 8124, "flock serve")
        text = _chain("status", "--data-dir", str(data))
        assert f"Prefect temporary server (pid {left}, port 8123) of `flock run` pid" in text
        assert f"Prefect temporary server (pid {live.pid}, port 8124) of `flock serve`" in text
        ticks = start_ticks(left)
        out = _chain("down", "--data-dir", str(data))
        assert f"stopped Prefect temporary server (pid {left}, port 8123)" in out
        assert f"left running Prefect temporary server (pid {live.pid}, port 8124)" in out
        assert _gone([(left, ticks)])
        assert live.poll() is None  # a running command's server is its own to stop
        assert reap_leftovers(data) == []
    finally:
        live.kill()
        live.wait()
        if alive(left):
            os.kill(left, signal.SIGKILL)


def test_the_next_run_stops_what_an_ended_run_left_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "d"
    anvil = _orphan_anvil(data)
    try:
        lines = reap_leftovers(data)
        assert len(lines) == 1 and f"stopped anvil (pid {anvil}, port" in lines[0]
        assert not alive(anvil)
    finally:
        AnvilNode(data).down()


@pytest.mark.parametrize("bound", [True, False])
def test_a_supervised_server_dies_with_its_parent_even_on_sigkill(
    tmp_path: Path, bound: bool
) -> None:
    """Every server the project starts goes through ``processes.start_server`` (``flock ui``'s
    through ``serve._start``); its parent killed with SIGKILL takes it along. Control: the
    same child started unbound outlives it."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            import flock_pipeline.faces.serve as serve
            from flock_pipeline.processes import free_port, http_ready, start_server
            port = free_port()
            url = f"http://127.0.0.1:{{port}}/"
            cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
            log = Path({str(tmp_path / "http.log")!r})
            if {bound}:
                service = serve._start("http", cmd, {{}}, port, url, url, log, 60)
            else:
                service = start_server("http", cmd, log=log, ready=http_ready(url), port=port,
                                       bound=False)
            print(service.pid, flush=True)
            time.sleep(300)
        """)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    ticks = start_ticks(child)
    try:
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=30)
        assert _gone([(child, ticks)], within=10.0 if bound else 2.0) is bound
    finally:
        if alive(child, ticks):
            os.kill(child, signal.SIGKILL)


def test_anvil_dies_with_its_parent_on_sigkill(tmp_path: Path) -> None:
    """The chain node is started by the same supervisor: a killed run leaves no anvil."""
    data = tmp_path / "d"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pathlib import Path
            from flock_pipeline.chain.anvil import AnvilNode
            status = AnvilNode(Path({str(data)!r}), port=0).up(owner="test", bound=True)
            print(status.pid, flush=True)
            time.sleep(300)
        """)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert supervisor.stdout is not None
    line = supervisor.stdout.readline()
    assert line.strip().isdigit(), line
    child = int(line)
    ticks = start_ticks(child)
    try:
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=30)
        assert _gone([(child, ticks)], within=10.0)
    finally:
        if alive(child, ticks):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_resumed_after_a_crash_finishes_and_leaves_no_server(tmp_path: Path) -> None:
    """The run that resumes a crashed task starts its own anvil (the crashed run's died with
    it) and stops it at its end."""
    crash_run = Path(__file__).resolve().parents[1] / "flows" / "crash_run.py"
    config = tmp_path / "task.yaml"
    config.write_text(yaml.safe_dump({
        "participants": 2, "rounds": 2, "data": {"dataset": "digits"}, "model": {"name": "mlp"},
        "privacy": {"enabled": False}, "partition": {"scheme": "iid"},
        "training": {"local_epochs": 1},
    }))  # fmt: skip
    data = tmp_path / "d"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "MPLCONFIGDIR": str(tmp_path / "mpl")}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    args = ["run", "-c", str(config), "--data-dir", str(data)]
    crashed = subprocess.run(
        [sys.executable, str(crash_run), "2", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    left = json.loads((data / "chain" / "anvil.json").read_text())
    assert _gone([(int(left["pid"]), left["ticks"])])
    resumed = subprocess.run(
        [sys.executable, "-m", "flock_pipeline", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["task"] == "flock-digits-mlp-1"
    assert not (data / "chain" / "anvil.json").exists()
    status = json.loads(_chain("status", "--data-dir", str(data), "--json"))
    assert status["running"] is False and status["servers"] == []
