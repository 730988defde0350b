"""Before any task starts: every external service the configuration names answers, or one error
names each that does not (PostgreSQL, S3, Prefect, MLflow) and the command that starts it."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from urllib.parse import urlparse

from flock_pipeline.config import FlockConfig
from flock_pipeline.errors import FlockError

__all__ = ["ServiceDown", "check_services"]

START_HINT = (
    "start them (`infra/local-stack.sh up` starts the local stack, then `source "
    ".flock/stack/stack.env`), or point the setting at a running service"
)


class ServiceDown(FlockError):
    """A service the configuration names does not answer."""


def _status(url: str, timeout: float = 5.0) -> int | str:
    """The HTTP status of a GET of ``url``, or why there was none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def _tcp(url: str, timeout: float = 3.0) -> str | None:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc)


def _postgres(uri: str) -> str | None:
    import psycopg2

    parsed = urlparse(uri)
    try:
        psycopg2.connect(
            host=parsed.hostname, port=parsed.port or 5432, user=parsed.username,
            password=parsed.password, dbname=parsed.path.lstrip("/") or "postgres",
            connect_timeout=3,
        ).close()  # fmt: skip
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _where(url: str) -> str:
    """A URL without its credentials."""
    p = urlparse(url)
    return f"{p.scheme}://{p.hostname}:{p.port}{p.path}" if p.port else f"{p.scheme}://{p.hostname}"


def problems(cfg: FlockConfig, *, tracking: bool = True) -> list[str]:
    """One line per service that does not answer."""
    found = []
    prefect = os.environ.get("PREFECT_API_URL")
    if prefect:
        health = _status(f"{prefect.rstrip('/')}/health")
        if health != 200:
            found.append(f"Prefect: the server at {prefect} (PREFECT_API_URL) does not answer "
                         f"({health})")  # fmt: skip
        elif _status(f"{prefect.rstrip('/')}/ready") == 503:
            found.append(f"PostgreSQL: the Prefect server at {prefect} cannot reach its database")
    uri = cfg.tracking.uri or ""
    if tracking and uri.startswith(("http://", "https://")):
        health = _status(f"{uri.rstrip('/')}/health")
        if health != 200:
            found.append(f"MLflow: the tracking server at {uri} (tracking.uri) does not answer "
                         f"({health})")  # fmt: skip
        else:
            probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name="
            if _status(probe + "flock-preflight") not in (200, 404):
                found.append(f"PostgreSQL: the MLflow server at {uri} cannot reach its database")
    elif tracking and uri.startswith("postgresql"):
        why = _postgres(uri.replace("+psycopg2", "").replace("+asyncpg", ""))
        if why is not None:
            found.append(f"PostgreSQL: {_where(uri)} (tracking.uri) does not answer ({why})")
    endpoint = cfg.storage.s3_endpoint_url
    if (cfg.storage.url or "").startswith("s3://") and endpoint:
        why = _tcp(endpoint)
        if why is not None:
            found.append(f"S3: the endpoint {endpoint} (storage.s3_endpoint_url) does not "
                         f"answer ({why})")  # fmt: skip
    return found


def check_services(cfg: FlockConfig, *, tracking: bool = True) -> None:
    """Raise ServiceDown naming every service that does not answer (``tracking``: the MLflow
    server too; a participant never talks to it)."""
    found = problems(cfg, tracking=tracking)
    if found:
        lines = "\n".join(f"  - {line}" for line in found)
        raise ServiceDown(f"{len(found)} service(s) down:\n{lines}\n{START_HINT}")
