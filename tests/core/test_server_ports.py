"""A server started on a free port is ready only once it listens there itself: another server
started at the same moment can take the port first and answer its readiness check."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from flock_pipeline.processes import ServerError, free_port, listens, start_server

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def test_a_process_is_told_apart_from_the_one_listening_on_a_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert listens(os.getpid(), port) is True
        assert listens(os.getpid(), free_port()) is False
        assert listens(1, port) in (False, None)  # init does not hold this test's socket


def test_a_server_is_not_ready_while_someone_else_answers_at_its_port(tmp_path: Path) -> None:
    """The readiness check answers (as another server at the port would), but the process
    never listens: with ``own_port`` it is not taken for ready, and the start gives up."""
    port = free_port()
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    began = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        start_server("sleeper", sleeper, log=tmp_path / "a.log", ready=lambda: True,
                     port=port, timeout=1.0, own_port=True)  # fmt: skip
    assert time.monotonic() - began >= 1.0
    # Without it, an answer is enough (servers whose listener is a child process).
    server = start_server("sleeper", sleeper, log=tmp_path / "b.log", ready=lambda: True,
                          port=port, timeout=1.0)  # fmt: skip
    server.stop()


def test_anvil_on_a_free_port_listens_there_itself(tmp_path: Path) -> None:
    from flock_pipeline.chain.anvil import AnvilNode

    node = AnvilNode(tmp_path / "anvil", port=0)
    status = node.up(timeout=30)
    try:
        assert status.pid is not None and status.port is not None
        assert listens(status.pid, status.port) is True
    finally:
        node.down()
