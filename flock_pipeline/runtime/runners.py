"""Where the in-process engine trains its proposers: one at a time in the flow's process, or
on a local Dask cluster through prefect-dask's task runner (``runner.kind: dask``).

Only training goes to the cluster: a ``TrainingJob`` is plain data (config, the proposer's own
data, the global model, a copy of its privacy ledger), and each job seeds its own generators,
so a worker process gives the bits the flow's process gives with the same thread count. Keys,
chain connections and the blob store stay in the flow's process, which submits each result."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flock_pipeline.config import RunnerConfig

__all__ = ["DaskCluster"]


def _temporary_server_url() -> str | None:
    """The API of the temporary Prefect server this process runs, if it runs one."""
    from prefect.server.api.server import SubprocessASGIServer

    for server in SubprocessASGIServer._instances.values():
        if server.running:
            return str(server.api_url)
    return None


@dataclass
class DaskCluster:
    """A local Dask cluster (worker processes on 127.0.0.1) and how to reach it."""

    address: str
    threads: int
    """Torch threads per job (the cluster's threads per worker process)."""
    workers: int
    """Worker processes."""

    def task_runner(self) -> Any:
        """A prefect-dask task runner on this cluster (one per flow run: runners are used once)."""
        from prefect_dask.task_runners import DaskTaskRunner

        return DaskTaskRunner(address=self.address)

    @classmethod
    @contextlib.contextmanager
    def start(cls, runner: RunnerConfig) -> Iterator[DaskCluster]:
        """Start the cluster for the block, then stop its processes. The workers report task
        states to this process's Prefect API (its URL is exported for them)."""
        from distributed import LocalCluster
        from prefect.settings import get_current_settings

        api = get_current_settings().api.url or _temporary_server_url()
        saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "OMP_NUM_THREADS")}
        if api:  # else each worker process would start a temporary server of its own
            os.environ["PREFECT_API_URL"] = str(api)
        os.environ["OMP_NUM_THREADS"] = str(runner.threads_per_process)
        try:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=runner.processes, threads_per_worker=runner.threads_per_process,
                processes=True, host="127.0.0.1", dashboard_address=":0",
            )  # fmt: skip
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            yield cls(str(cluster.scheduler_address), runner.threads_per_process, runner.processes)
        finally:
            cluster.close()
