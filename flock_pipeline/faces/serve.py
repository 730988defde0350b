"""Deployments of the task flow and the local UIs: ``flock serve`` and ``flock ui``.

``flock serve`` registers a scheduled deployment of ``federated_task`` whose typed ``config``
parameter the Prefect UI renders as a form, then runs its flow runs until interrupted.
``flock ui`` starts the Prefect server and the MLflow server on 127.0.0.1, against the stores the
runs used (``<data_dir>/prefect`` and ``<data_dir>/mlflow.db``), and stops both on Ctrl-C.

Runs show in that Prefect UI only when they talk to its API: ``flock run`` uses Prefect's
ephemeral mode (its database lives under ``PREFECT_HOME``) unless ``PREFECT_API_URL`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console

from flock_pipeline.config import FlockConfig
from flock_pipeline.errors import ConfigError
from flock_pipeline.processes import Server, ServerError, http_ready, start_server

__all__ = [
    "DEFAULT_CRON",
    "DEFAULT_DEPLOYMENT",
    "DEFAULT_TIMEZONE",
    "Service",
    "ServiceError",
    "check_schedule",
    "deployment_parameters",
    "mlflow_backend_uri",
    "run_ui",
    "serve_deployment",
    "start_mlflow_server",
    "start_prefect_server",
]

DEFAULT_DEPLOYMENT = "nightly"
DEFAULT_CRON = "0 3 * * *"
DEFAULT_TIMEZONE = "UTC"
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 15.0


ServiceError = ServerError
"""A local server could not start: its port is taken or it died; the message names its log."""


def check_schedule(cron: str, timezone: str) -> Any:
    """The Prefect ``Cron`` schedule, or a ConfigError naming what is wrong."""
    from prefect.schedules import Cron

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown timezone {timezone!r}: use an IANA name (Europe/Paris)"
        ) from None
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"invalid cron schedule {cron!r}: {exc}") from None


def deployment_parameters(cfg: FlockConfig) -> dict[str, Any]:
    """``federated_task``'s parameters for ``cfg``: every field, data_dir made absolute."""
    values = json.loads(cfg.model_dump_json())
    values["data_dir"] = str(Path(cfg.data_dir).resolve())
    return {"config": values}


def serve_deployment(
    cfg: FlockConfig,
    name: str = DEFAULT_DEPLOYMENT,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    console: Console | None = None,
) -> None:
    """Register ``federated-task/<name>`` on a cron schedule and run its flow runs (blocks)."""
    from prefect.types.entrypoint import EntrypointType

    from flows.federated import federated_task

    console = console or Console(stderr=True)
    schedule = check_schedule(cron, timezone)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        console.print(
            "[yellow]PREFECT_API_URL is not set:[/] the deployment lives in a temporary server "
            "only this process sees. Start `flock ui` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api to see it in the UI."
        )
    federated_task.serve(
        name=name,
        schedule=schedule,
        parameters=deployment_parameters(cfg),
        description="A federated task: DP training, on-chain settlement, MLflow versions.",
        tags=["flock"],
        # The module path works from any working directory: flows is an installed package.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


# ---------------------------------------------------------------- local servers


def mlflow_backend_uri(data_dir: Path) -> str:
    """The SQLite URI ModelRegistry.open uses by default for ``data_dir``."""
    return f"sqlite:///{(Path(data_dir) / 'mlflow.db').resolve()}"


Service = Server
"""A server ``flock ui`` started (``processes.start_server``)."""


def _start(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    url: str,
    health: str,
    log: Path,
    timeout: float,
) -> Server:
    # Its own group (stop() signals the workers too), and bound to this process: it dies
    # with `flock ui` even when that is killed with SIGKILL.
    log.unlink(missing_ok=True)
    return start_server(
        name, cmd, log=log, ready=http_ready(health), env=env, port=port, url=url,
        timeout=timeout,
    )  # fmt: skip


def tool_path(tool: str) -> str:
    """The tool next to this interpreter (the venv), else whatever PATH finds."""
    here = Path(sys.executable).parent / tool
    return str(here) if here.exists() else tool


def tool_env(data_dir: Path) -> dict[str, str]:
    """The environment of a server started for ``data_dir``: its tool state kept there."""
    env = dict(os.environ)
    env.setdefault("MPLCONFIGDIR", str(data_dir / "matplotlib"))
    env["PREFECT_HOME"] = str(data_dir / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def start_prefect_server(data_dir: Path, port: int, timeout: float = _START_TIMEOUT) -> Service:
    """``prefect server start`` on 127.0.0.1:port, PREFECT_HOME=<data_dir>/prefect."""
    data_dir = Path(data_dir).resolve()
    url = f"http://127.0.0.1:{port}"
    env = tool_env(data_dir)
    env.pop("PREFECT_API_URL", None)  # the server's UI must call this server, not another
    env["PREFECT_UI_API_URL"] = f"{url}/api"
    cmd = [tool_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = data_dir / "logs" / "prefect-server.log"
    return _start("Prefect server", cmd, env, port, url, f"{url}/api/health", log, timeout)


def start_mlflow_server(data_dir: Path, port: int, timeout: float = _START_TIMEOUT) -> Service:
    """``mlflow server`` on 127.0.0.1:port over ``<data_dir>/mlflow.db`` and its artifacts."""
    data_dir = Path(data_dir).resolve()
    artifacts = data_dir / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    cmd = [
        tool_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", mlflow_backend_uri(data_dir),
        "--default-artifact-root", str(artifacts),
    ]  # fmt: skip
    log = data_dir / "logs" / "mlflow-server.log"
    env = tool_env(data_dir)
    return _start("MLflow server", cmd, env, port, url, f"{url}/health", log, timeout)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the wait like Ctrl-C does, so the servers are stopped either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ui(
    data_dir: Path,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    console: Console | None = None,
) -> None:
    """Start both servers, print their URLs, block until Ctrl-C or SIGTERM, stop both."""
    console = console or Console(stderr=True)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if prefect_port == mlflow_port:
        raise ConfigError(f"the Prefect and MLflow ports must differ (both {prefect_port})")
    services: list[Service] = []
    with _sigterm_interrupts():
        try:
            console.print("starting the Prefect server and the MLflow server ...")
            services.append(start_prefect_server(data_dir, prefect_port))
            services.append(start_mlflow_server(data_dir, mlflow_port))
            prefect, mlflow = services
            console.print(
                f"Prefect UI: {prefect.url}  (pid {prefect.pid}, log {prefect.log})\n"
                f"MLflow UI:  {mlflow.url}  (pid {mlflow.pid}, log {mlflow.log})\n"
                f"Point runs and workers at this Prefect server:\n"
                f"  export PREFECT_API_URL={prefect.url}/api\n"
                f"(without it `flock run` uses Prefect's ephemeral mode, whose database is under "
                f"PREFECT_HOME: {data_dir / 'prefect'} shows those runs here after a restart)\n"
                f"MLflow store: {mlflow_backend_uri(data_dir)}\n"
                "Ctrl-C stops both.",
                soft_wrap=True,
            )
            print(json.dumps({"prefect": prefect.url, "mlflow": mlflow.url,
                              "prefect_pid": prefect.pid, "mlflow_pid": mlflow.pid}),
                  flush=True)  # fmt: skip
            while all(s.process.poll() is None for s in services):
                time.sleep(0.5)
            dead = next(s for s in services if s.process.poll() is not None)
            raise ServiceError(f"{dead.name} stopped unexpectedly; see {dead.log}")
        except KeyboardInterrupt:
            console.print("stopping ...")
        finally:
            for s in reversed(services):
                s.stop()
