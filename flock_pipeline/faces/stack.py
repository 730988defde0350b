"""The production stack's native twin: the services of ``infra/docker-compose.yml`` started on
this machine without containers (``infra/local-stack.sh up|down|status``).

- PostgreSQL from the distribution's packages (``initdb``/``postgres``), one database each for
  Prefect and MLflow, a password generated here (never derived from a config);
- a Prefect server on PostgreSQL (``postgresql+asyncpg``);
- ``rclone serve s3`` (the S3 API the blob store and MLflow's artifacts use), keys generated here;
- an MLflow server on PostgreSQL with its artifacts in S3;
- anvil.

Every server goes through ``processes.start_server``: its own process group, health-checked,
recorded with its PID in ``<root>/stack.json`` and stopped by that PID. They are not bound to
the command that started them (``up`` returns; ``down`` stops them). ``<root>/stack.env``
holds what a coordinator or participant exports to use the stack (mode 600: it has the keys).
Services listen on ``host`` (127.0.0.1 unless ``STACK_HOST`` names another local address,
e.g. a bridge that network namespaces reach)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flock_pipeline.errors import FlockError
from flock_pipeline.faces.serve import tool_env, tool_path
from flock_pipeline.processes import (
    Server,
    ServerError,
    alive,
    http_ready,
    port_free,
    start_server,
    start_ticks,
    stop_process,
    tcp_ready,
)

__all__ = ["DEFAULT_PORTS", "SERVICES", "StackError", "down", "status", "up"]

SERVICES = ("postgres", "s3", "anvil", "prefect", "mlflow")
"""In start order; ``down`` stops them in reverse."""

NEEDS = {"prefect": ("postgres",), "mlflow": ("postgres", "s3")}
"""What each service stores its state in: ``up`` of a service starts these too."""

DEFAULT_PORTS = {"postgres": 15432, "s3": 19000, "anvil": 18545, "prefect": 14200,
                 "mlflow": 15000}  # fmt: skip
"""Overridden per service by ``STACK_PORT_<NAME>`` (e.g. ``STACK_PORT_PREFECT=4200``)."""

BUCKETS = ("flock-blobs", "mlflow")
UP_COMMAND = "infra/local-stack.sh up"


@dataclass(frozen=True)
class _Started:
    pid: int
    log: Path

    @classmethod
    def of(cls, server: Server) -> _Started:
        return cls(server.pid, server.log)


class StackError(FlockError):
    """A stack service could not start, or the stack is not in the state a command needs."""


@dataclass(frozen=True)
class Secrets:
    """Generated once per stack root, kept in ``<root>/secrets.json`` (mode 600)."""

    pg_password: str
    s3_access_key: str
    s3_secret_key: str

    @classmethod
    def of(cls, root: Path) -> Secrets:
        path = root / "secrets.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls(secrets.token_hex(16), "flock" + secrets.token_hex(6), secrets.token_hex(20))
        path.touch(mode=0o600)
        path.write_text(json.dumps(made.__dict__))
        return made


def _pg_bin(tool: str) -> str:
    """A PostgreSQL server tool: Debian keeps them under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if found:
        return found[-1]
    on_path = shutil.which(tool)
    if on_path:
        return on_path
    raise StackError(
        f"PostgreSQL's {tool} is not installed: `apt-get install postgresql` (Debian/Ubuntu), "
        "then run `infra/local-stack.sh up` again"
    )


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the packages' ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root, and there is no `postgres` user to run PostgreSQL as: install "
            "Debian's postgresql package (it creates one), or run the stack as another user"
        ) from None
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _check_reachable(root: Path) -> None:
    """As root, PostgreSQL runs as ``postgres``: every folder above its data must let it pass."""
    if os.geteuid() != 0:
        return
    for folder in [root, *root.parents]:
        if not folder.stat().st_mode & 0o001:
            raise StackError(
                f"the stack's folder {root} is under {folder}, which the `postgres` user may "
                f"not enter: `chmod o+x {folder}`, or set STACK_ROOT to a folder it may enter"
            )


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)


def _ports() -> dict[str, int]:
    out = {}
    for name, default in DEFAULT_PORTS.items():
        raw = os.environ.get(f"STACK_PORT_{name.upper()}", str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StackError(f"STACK_PORT_{name.upper()}={raw!r} is not a port: give 1-65535")
        out[name] = int(raw)
    return out


def _tool_env(root: Path) -> dict[str, str]:
    env = tool_env(root)
    env["DO_NOT_TRACK"] = "1"
    env.pop("PREFECT_API_URL", None)  # a stack server is its own API, never a client of one
    return env


def _start_postgres(root: Path, host: str, port: int, keys: Secrets) -> Server:
    data = root / "postgres"
    wrap = _as_postgres()
    _check_reachable(root)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        pwfile = root / "pgpass.tmp"
        pwfile.write_text(keys.pg_password + "\n")
        _chown_postgres(data)
        _chown_postgres(pwfile)
        try:
            done = subprocess.run(
                [*wrap, _pg_bin("initdb"), "-D", str(data), "-U", "flock", "--pwfile",
                 str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--no-instructions"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(f"initdb failed:\n{done.stderr[-2000:]}")
    hba = data / "pg_hba.conf"
    line = "host all flock samenet scram-sha-256  # flock: the stack's own subnets\n"
    if line not in hba.read_text():  # another host than 127.0.0.1 (a bridge): its own subnet
        with hba.open("a") as f:
            f.write(line)
    socket_dir = root / "pg-socket"
    socket_dir.mkdir(exist_ok=True)
    _chown_postgres(socket_dir)
    log = root / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    _chown_postgres(log)
    cmd = [*wrap, _pg_bin("postgres"), "-D", str(data), "-h", host, "-p", str(port),
           "-k", str(socket_dir), "-c", "max_connections=200"]  # fmt: skip
    server = start_server("PostgreSQL", cmd, log=log, ready=_pg_ready(host, port, keys),
                          port=port, host=host, timeout=60, bound=False)  # fmt: skip
    _create_databases(host, port, keys)
    return server


def _pg_ready(host: str, port: int, keys: Secrets) -> Any:
    def ready() -> bool:
        import psycopg2

        try:
            psycopg2.connect(host=host, port=port, user="flock", password=keys.pg_password,
                             dbname="postgres", connect_timeout=2).close()  # fmt: skip
        except psycopg2.Error:
            return False
        return True

    return ready


def _create_databases(host: str, port: int, keys: Secrets) -> None:
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="flock", password=keys.pg_password,
                            dbname="postgres")  # fmt: skip
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for db in ("prefect", "mlflow"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        conn.close()


def _pg_url(driver: str, host: str, port: int, keys: Secrets, db: str) -> str:
    return f"{driver}://flock:{keys.pg_password}@{host}:{port}/{db}"


def _start_s3(root: Path, host: str, port: int, keys: Secrets) -> Server:
    served = root / "s3"
    for bucket in BUCKETS:
        (served / bucket).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RCLONE_CONFIG=str(root / "rclone.conf"), HOME=str(root))
    cmd = [tool_path("rclone"), "serve", "s3", str(served), "--addr", f"{host}:{port}",
           "--auth-key", f"{keys.s3_access_key},{keys.s3_secret_key}"]  # fmt: skip
    return start_server("S3 (rclone serve s3)", cmd, log=root / "logs" / "s3.log",
                        ready=tcp_ready(port, host), env=env, port=port, host=host,
                        timeout=30, bound=False)  # fmt: skip


def _start_anvil(root: Path, host: str, port: int) -> _Started:
    """anvil as `flock chain up` runs it (a fixed genesis, chain time in fixed steps), on
    ``host``; its state is kept in ``<root>/anvil/chain``."""
    from flock_pipeline.chain.anvil import AnvilNode
    from flock_pipeline.chain.errors import ChainSetupError

    node = AnvilNode(root / "anvil", port=port, host=host)
    try:
        status = node.up(timeout=30, owner="infra/local-stack.sh")
    except ChainSetupError as exc:
        raise StackError(str(exc)) from None
    if status.port != port:
        node.down()
        raise StackError(f"anvil: port {port} on {host} is taken; set STACK_PORT_ANVIL")
    assert status.pid is not None
    return _Started(status.pid, node.dir / "anvil.log")


def _start_prefect(root: Path, host: str, port: int, db: str) -> Server:
    url = f"http://{host}:{port}"
    env = _tool_env(root)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = db
    env["PREFECT_UI_API_URL"] = f"{url}/api"
    cmd = [tool_path("prefect"), "server", "start", "--host", host, "--port", str(port)]
    return start_server("Prefect server", cmd, log=root / "logs" / "prefect.log",
                        ready=http_ready(f"{url}/api/health"), env=env, port=port, host=host,
                        url=url, timeout=180, bound=False)  # fmt: skip


def _start_mlflow(root: Path, host: str, port: int, db: str, s3: str, keys: Secrets) -> Server:
    url = f"http://{host}:{port}"
    env = _tool_env(root)
    env.update(
        MLFLOW_S3_ENDPOINT_URL=s3, AWS_ACCESS_KEY_ID=keys.s3_access_key,
        AWS_SECRET_ACCESS_KEY=keys.s3_secret_key, AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    cmd = [tool_path("mlflow"), "server", "--host", host, "--port", str(port),
           "--backend-store-uri", db, "--artifacts-destination", "s3://mlflow/artifacts",
           "--serve-artifacts", "--workers", "1"]  # fmt: skip
    return start_server("MLflow server", cmd, log=root / "logs" / "mlflow.log",
                        ready=http_ready(f"{url}/health"), env=env, port=port, host=host,
                        url=url, timeout=180, bound=False)  # fmt: skip


def _record(root: Path) -> dict[str, dict[str, Any]]:
    path = root / "stack.json"
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def _save(root: Path, record: dict[str, dict[str, Any]]) -> None:
    tmp = root / "stack.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(root / "stack.json")


def _running(entry: dict[str, Any]) -> bool:
    return alive(int(entry["pid"]), entry.get("ticks"))


def environment(root: Path) -> dict[str, str]:
    """What a coordinator or participant exports to use a running stack."""
    record, keys = _record(root), Secrets.of(root)
    host = record["s3"]["host"]
    s3 = f"http://{host}:{record['s3']['port']}"
    return {
        "PREFECT_API_URL": f"http://{host}:{record['prefect']['port']}/api",
        "FLOCK_TRACKING__URI": f"http://{host}:{record['mlflow']['port']}",
        "FLOCK_STORAGE__URL": "s3://flock-blobs/tasks",
        "FLOCK_STORAGE__S3_ENDPOINT_URL": s3,
        "FLOCK_CHAIN__URL": f"http://{host}:{record['anvil']['port']}",
        "AWS_ACCESS_KEY_ID": keys.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": keys.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3,
    }


def up(root: Path, host: str | None = None, ports: dict[str, int] | None = None,
       services: tuple[str, ...] = SERVICES) -> list[str]:  # fmt: skip
    """Start every service (of ``services`` and what they need) not already running; write
    ``stack.env`` once all of them run. Returns one line each. A service that fails stops the
    ones this call started (the error names its log)."""
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise StackError(f"no stack service {', '.join(unknown)}; the services: "
                         f"{', '.join(SERVICES)}")  # fmt: skip
    wanted = set(services).union(*(NEEDS.get(name, ()) for name in services))
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    host = host or os.environ.get("STACK_HOST", "127.0.0.1")
    ports = {**_ports(), **(ports or {})}
    keys = Secrets.of(root)
    record = _record(root)
    if any(e.get("host") not in (None, host) and _running(e) for e in record.values()):
        raise StackError(
            f"the stack in {root} runs on another address; stop it first "
            "(`infra/local-stack.sh down`)"
        )
    started: list[str] = []
    lines = []
    pg = _pg_url("postgresql+psycopg2", host, ports["postgres"], keys, "mlflow")
    s3 = f"http://{host}:{ports['s3']}"
    prefect_db = _pg_url("postgresql+asyncpg", host, ports["postgres"], keys, "prefect")
    starters: dict[str, Callable[[], Server | _Started]] = {
        "postgres": lambda: _start_postgres(root, host, ports["postgres"], keys),
        "s3": lambda: _start_s3(root, host, ports["s3"], keys),
        "anvil": lambda: _start_anvil(root, host, ports["anvil"]),
        "prefect": lambda: _start_prefect(root, host, ports["prefect"], prefect_db),
        "mlflow": lambda: _start_mlflow(root, host, ports["mlflow"], pg, s3, keys),
    }
    try:
        for name in (n for n in SERVICES if n in wanted):
            entry = record.get(name)
            if entry is not None and _running(entry):
                lines.append(f"{name}: running (pid {entry['pid']}, {host}:{entry['port']})")
                continue
            if not port_free(ports[name], host):
                raise StackError(
                    f"{name}: port {ports[name]} on {host} is taken by another program; set "
                    f"STACK_PORT_{name.upper()} to a free port"
                )
            try:
                got = starters[name]()
            except ServerError as exc:
                raise StackError(str(exc)) from None
            server = got if isinstance(got, _Started) else _Started.of(got)
            record[name] = {"pid": server.pid, "ticks": start_ticks(server.pid),
                            "port": ports[name], "host": host, "log": str(server.log)}  # fmt: skip
            _save(root, record)
            started.append(name)
            lines.append(f"{name}: started (pid {server.pid}, {host}:{ports[name]})")
    except BaseException:
        for name in reversed(started):
            entry = record.pop(name)
            stop_process(int(entry["pid"]), entry.get("ticks"), 30)
        _save(root, record)
        raise
    if set(record) == set(SERVICES):
        env_file = root / "stack.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"export {k}={v}\n" for k, v in environment(root).items()))
        lines.append(f"environment: source {env_file}")
    return lines


def down(root: Path, timeout: float = 30.0) -> list[str]:
    """Stop every recorded service by its PID, in reverse start order."""
    root = Path(root).resolve()
    record = _record(root)
    lines = []
    for name in reversed(SERVICES):
        entry = record.pop(name, None)
        if entry is None:
            continue
        if _running(entry):
            stop_process(int(entry["pid"]), entry.get("ticks"), timeout)
            lines.append(f"{name}: stopped (pid {entry['pid']})")
        else:
            lines.append(f"{name}: was not running")
        _save(root, record)
    (root / "stack.env").unlink(missing_ok=True)
    return lines or ["no stack recorded in " + str(root)]


def status(root: Path) -> dict[str, dict[str, Any]]:
    """Each service's record and whether it runs."""
    record = _record(Path(root).resolve())
    return {name: dict(record[name], running=_running(record[name]))
            for name in SERVICES if name in record}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="local-stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--root", default=os.environ.get("STACK_ROOT", ".flock/stack"),
                        help="where the services keep their data, logs and PIDs")  # fmt: skip
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        if args.command == "up":
            began = time.monotonic()
            print("\n".join(up(root)))
            print(f"stack up in {time.monotonic() - began:.0f} s")
        elif args.command == "down":
            print("\n".join(down(root)))
        elif args.command == "env":
            if not status(root):
                raise StackError(f"no stack runs in {root}: start it with `{UP_COMMAND}`")
            print("".join(f"export {k}={v}\n" for k, v in environment(root).items()), end="")
        else:
            states = status(root)
            if not states:
                print(f"no stack in {root}; start it with `{UP_COMMAND}`")
                return 1
            for name, entry in states.items():
                state = "running" if entry["running"] else "stopped"
                print(f"{name}: {state} (pid {entry['pid']}, {entry['host']}:{entry['port']})")
            return 0 if all(e["running"] for e in states.values()) else 1
    except FlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
