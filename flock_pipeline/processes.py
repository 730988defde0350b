"""The one process supervisor: every server the project starts (anvil, Prefect, MLflow,
``rclone serve s3``, PostgreSQL) goes through ``start_server``: on 127.0.0.1, in its own process
group, health-checked until it answers, and stopped by PID (``Server.stop`` /
``stop_process``), the whole group with it.

Servers a command starts for its own use die with it; any left behind are found and named.

A server a command starts for itself (Prefect's temporary server, the anvil of a run, the UIs
of ``flock ui``) is bound to that command: Linux sends it SIGTERM when the command dies, even by
SIGKILL (``PR_SET_PDEATHSIG``, set in the child between fork and exec). Each one is also
recorded under ``<data_dir>/servers/``, with the command that owns it, so that one left behind
where the binding cannot hold (another OS, or a server started from a thread that ended) is
stopped by the next run, and ``flock chain status`` / ``flock chain down`` can name it.

A process is recognised by its PID and its start time (``/proc/<pid>/stat``): a PID the kernel
gave to another process since is never taken for the server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flock_pipeline.errors import FlockError

__all__ = [
    "Server",
    "ServerError",
    "ServerRecord",
    "ServerRegistry",
    "alive",
    "bind_prefect_temporary_server",
    "bound_to_parent",
    "free_port",
    "http_ready",
    "port_free",
    "start_server",
    "start_ticks",
    "stop_process",
    "tcp_ready",
]

_PR_SET_PDEATHSIG = 1
_libc: Any = None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if it is gone (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def alive(pid: int, ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not) and, given ``ticks``, is the process that
    started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _state(pid) in ("Z", "X"):
        return False
    return ticks is None or start_ticks(pid) in (None, ticks)


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_process(
    pid: int, ticks: int | None = None, timeout: float = 10.0, group: bool = True
) -> bool:
    """SIGTERM ``pid`` (it may save its state), SIGKILL it after ``timeout``; False if it was
    not running. ``group``: a process that leads its own group (every ``start_server``
    server) is signalled with its group, so workers it forked (uvicorn's, gunicorn's,
    PostgreSQL's backends) end with it."""
    if not alive(pid, ticks):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        _signal(pid, sig, group)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
            if not alive(pid, ticks):
                return True
            time.sleep(0.05)
    return True


def bound_to_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child receive ``sig`` when this process dies; None where
    that cannot hold: off Linux, or off the main thread (the kernel ties the signal to the
    thread that forks, and a worker thread may end long before the process)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl, parent = _libc.prctl, os.getpid()

    def bind() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the binding took hold
            os._exit(1)

    return bind


class ServerError(FlockError):
    """A server could not start: its port is taken, it exited, or it never answered; the
    message names the server and its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server may listen on ``port`` now: nothing listens there (connections of a
    stopped server that linger in TIME_WAIT do not count; servers bind with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` itself listens on TCP ``port`` (Linux: /proc); None where that
    cannot be told. A server told to take a free port can lose it to another one started at
    the same moment, and a readiness check at the port is then answered by that other one."""
    inodes: set[str] = set()
    tables = [Path(t) for t in ("/proc/net/tcp", "/proc/net/tcp6") if Path(t).exists()]
    if not tables:
        return None
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def http_ready(url: str) -> Callable[[], bool]:
    """Ready when ``url`` answers a GET with a 2xx status."""

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return ready


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """Ready when something accepts TCP connections on ``host:port``."""

    def ready() -> bool:
        with socket.socket() as sock:
            sock.settimeout(2)
            return sock.connect_ex((host, port)) == 0

    return ready


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Server:
    """A server ``start_server`` started: its own process group, its log, where it answers."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ticks(self) -> int | None:
        return start_ticks(self.process.pid)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's group, SIGKILL it after ``timeout``; reap it."""
        if self.process.poll() is None:
            _signal(self.pid, signal.SIGTERM, True)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(self.pid, signal.SIGKILL, True)
                self.process.wait()
        # Workers of the group may outlive their leader (uvicorn, gunicorn).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def start_server(
    name: str,
    command: list[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    url: str | None = None,
    timeout: float = 60.0,
    bound: bool = True,
    own_port: bool = False,
) -> Server:
    """Start ``command`` in its own process group, its output appended to ``log``, and wait
    until ``ready()``. ``port``: refused at once when something already listens there.
    ``bound``: the server dies with this process, even on SIGKILL (``bound_to_parent``);
    unbound, it runs until stopped by its PID. ``own_port``: ready only once the process
    itself listens on ``port`` (a single-process server), not whoever answers there. Raises
    ServerError naming ``name`` and the log when the server exits before it answers or does
    not answer within ``timeout``."""
    if port is not None and not port_free(port, host):
        raise ServerError(f"{name}: port {port} on {host} is already in use; choose another")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=bound_to_parent() if bound else None,
            )  # fmt: skip
        except OSError as exc:
            raise ServerError(f"{name}: cannot run {command[0]}: {exc}") from None
    server = Server(name, process, log, port, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"{name} exited with code {process.returncode} before answering; see {log}:\n"
                f"{_tail(log)}"
            )
        if ready() and (not own_port or port is None or listens(process.pid, port) is not False):
            return server
        time.sleep(0.1)
    server.stop()
    raise ServerError(f"{name} did not answer within {timeout:.0f} s; see {log}:\n{_tail(log)}")


@dataclass(frozen=True)
class ServerRecord:
    """A server some command started, and that command."""

    what: str
    pid: int
    port: int | None
    owner: str
    owner_pid: int
    ticks: int | None = None
    owner_ticks: int | None = None

    @property
    def running(self) -> bool:
        return alive(self.pid, self.ticks)

    @property
    def orphaned(self) -> bool:
        """Running while the command that owns it has ended."""
        return self.running and not alive(self.owner_pid, self.owner_ticks)

    def describe(self) -> str:
        port = f", port {self.port}" if self.port else ""
        owner = "ended" if not alive(self.owner_pid, self.owner_ticks) else "running"
        return (
            f"{self.what} (pid {self.pid}{port}) of `{self.owner}` pid {self.owner_pid} ({owner})"
        )


class ServerRegistry:
    """The servers recorded under ``<data_dir>/servers/``, one JSON file per server."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "servers"

    def add(self, what: str, pid: int, port: int | None, owner: str) -> ServerRecord:
        """Record server ``pid``, owned by this process."""
        me = os.getpid()
        record = ServerRecord(what, pid, port, owner, me, start_ticks(pid), start_ticks(me))
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(pid)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)
        return record

    def remove(self, pid: int) -> None:
        self._path(pid).unlink(missing_ok=True)

    def records(self) -> list[ServerRecord]:
        """Every recorded server still running; records of servers that ended are dropped."""
        found = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                record = ServerRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if record.running:
                found.append(record)
            else:
                path.unlink(missing_ok=True)
        return found

    def reap(self) -> list[ServerRecord]:
        """Stop every recorded server whose owner has ended; the ones stopped."""
        stopped = []
        for record in self.records():
            if record.orphaned:
                stop_process(record.pid, record.ticks)
                self.remove(record.pid)
                stopped.append(record)
        return stopped

    def _path(self, pid: int) -> Path:
        return self.dir / f"{pid}.json"


@contextlib.contextmanager
def _popen_bound(module: Any, preexec: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``module.subprocess.Popen`` starts children bound to this process."""
    real = module.subprocess

    class _Subprocess:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
            kwargs.setdefault("preexec_fn", preexec)
            return subprocess.Popen(*args, **kwargs)

    module.subprocess = _Subprocess()
    try:
        yield
    finally:
        module.subprocess = real


def bind_prefect_temporary_server(data_dir: Path, owner: str) -> ServerRecord | None:
    """Start Prefect's temporary API server now, as Prefect would on the first flow run, but
    bound to this process and recorded in ``data_dir``; None when PREFECT_API_URL names a
    server (then there is no temporary one). Call it from the main thread before a flow runs:
    every Prefect client of this process then uses this server."""
    from prefect.settings import PREFECT_API_URL

    preexec = bound_to_parent()
    if PREFECT_API_URL.value() or preexec is None:
        return None
    bind: Callable[[], None] = preexec
    import prefect.server.api.server as server_module

    class _BoundServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            with _popen_bound(server_module, bind):
                process: subprocess.Popen[Any] = super()._run_uvicorn_command()
            return process

    server = _BoundServer()
    if not isinstance(server, _BoundServer):  # a client of this process already started one
        return None
    server.start()
    process = server.server_process
    if process is None:
        return None
    registry = ServerRegistry(data_dir)
    record = registry.add("Prefect temporary server", process.pid, server.port, owner)
    atexit.register(registry.remove, process.pid)
    return record
