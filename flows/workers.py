"""Participants on their own workers: the coordinator's side (trigger each duty with
``run_deployment`` and a deadline, read the receipts back) and the participant's side (create
its deployments, serve them with a Prefect process worker on its own work queue).

Names are a convention both sides compute from the task card: participant ``p`` of task ``t``
serves ``participant-<duty>/<t>-<p>`` from work queue ``<t>-<p>`` of the task's pool, so no
worker ever picks up another participant's run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from flock_pipeline.errors import ConfigError
from flock_pipeline.runtime.coordinator import Coordinator, RoundStart
from flock_pipeline.runtime.task import TaskCard

__all__ = ["Duties", "WorkerDuties", "deployment_name", "queue_name", "serve_participant"]

TOKEN = 10**18
_FLOW_NAMES = {"train": "participant-train", "validate": "participant-validate",
               "reveal": "participant-reveal", "claim": "participant-claim"}  # fmt: skip
_REPO = Path(__file__).resolve().parent.parent


class Duties(Protocol):
    """Who carries out the participants' duties for a task flow, and how."""

    engine: str

    def wait_for_members(self) -> None: ...
    def train(self, r: int, pids: list[str], global_hash: str,
              started: RoundStart) -> dict[str, dict[str, Any]]: ...  # fmt: skip
    def validate(self, r: int, pids: list[str], state_hash: str | None,
                 started: RoundStart) -> dict[str, dict[str, Any]]: ...  # fmt: skip
    def reveal(self, r: int, votes: dict[str, dict[str, Any]], started: RoundStart) -> None: ...
    def after_finalize(self, r: int, started: RoundStart) -> None: ...
    def holdouts(self, global_hash: str) -> dict[str, tuple[float, float] | None]: ...
    def claim(self) -> None: ...


def queue_name(task: str, pid: str) -> str:
    """The work queue participant ``pid`` of ``task`` serves (Prefect-safe characters)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{task}-{pid}")


def deployment_name(task: str, pid: str) -> str:
    return queue_name(task, pid)


def _receipt(client: Any, flow_run_id: Any) -> dict[str, Any] | None:
    """The receipt a participant's run published (``flows.participant``), if any."""
    from flows.participant import RECEIPT_MARK

    found = client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    for artifact in found:
        text = str(artifact.data or "")
        if text.startswith(RECEIPT_MARK):
            body = text.split("```json\n", 1)[-1].rsplit("\n```", 1)[0]
            try:
                value = json.loads(body)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


class WorkerDuties:
    """Each duty is a run of the participant's own deployment, started with
    ``run_deployment`` and given ``workers.deadline_seconds``. A run that has not completed by
    then is cancelled, and the participant is a no-show (reported once the round is final).
    A participant's receipt is all the coordinator reads from it; the chain says the rest."""

    engine = "workers"

    def __init__(self, c: Coordinator, log: Any) -> None:
        self.c = c
        self.log = log
        self.missed: dict[int, set[str]] = {}

    def _run(self, duty: str, pids: list[str], params: dict[str, Any],
             r: int | None) -> dict[str, dict[str, Any] | None]:  # fmt: skip
        """Run ``duty`` for every participant in ``pids`` at once; each one's receipt, None
        for one that missed the deadline or failed."""
        c = self.c
        deadline = c.cfg.workers.deadline_seconds
        label = "" if r is None else f"-round-{r + 1}"

        def one(pid: str) -> dict[str, Any] | None:
            name = f"{_FLOW_NAMES[duty]}/{deployment_name(c.name, pid)}"
            try:
                run: Any = run_deployment(
                    name, parameters=params, timeout=deadline, poll_interval=0.5,
                    flow_run_name=f"{c.name}{label}-{pid}-{duty}", as_subflow=True,
                )  # fmt: skip
            except Exception as exc:  # no such deployment: its worker never registered
                self.log.warning("%s of %s could not start: %s", duty, pid, exc)
                return None
            with get_client(sync_client=True) as client:
                state = run.state
                if state is None or not state.is_final():
                    client.set_flow_run_state(run.id, Cancelling(), force=True)
                    self.log.warning("%s missed the %s deadline (%gs) of round %s",
                                     pid, duty, deadline, label or "-")  # fmt: skip
                    return None
                if not state.is_completed():
                    self.log.warning("%s's %s run ended %s: %s", pid, duty, state.name,
                                     state.message)  # fmt: skip
                    return None
                return _receipt(client, run.id)

        if not pids:
            return {}
        with ThreadPoolExecutor(max_workers=len(pids), thread_name_prefix="flock-duty") as pool:
            futures = {pid: pool.submit(contextvars.copy_context().run, one, pid) for pid in pids}
            return {pid: f.result() for pid, f in futures.items()}

    def wait_for_members(self) -> None:
        """Wait (``workers.join_seconds``) until every member has staked; go on without the
        ones that did not (they hold no role)."""
        c = self.c
        stake = c.cfg.chain.stake * TOKEN
        until = time.monotonic() + c.cfg.workers.join_seconds
        missing = list(c.roster)
        while missing:
            stakes = c.creator.participants_of(c.task_id, [c.roster[p] for p in missing])
            missing = [p for p, s in zip(missing, stakes, strict=True) if s.active < stake]
            if not missing or time.monotonic() > until:
                break
            time.sleep(0.5)
        if missing:
            self.log.warning("%s did not stake within %gs; the task goes on without them",
                             ", ".join(missing), c.cfg.workers.join_seconds)  # fmt: skip

    def train(self, r: int, pids: list[str], global_hash: str,
              started: RoundStart) -> dict[str, dict[str, Any]]:  # fmt: skip
        found = self._run("train", pids, {"round_index": r, "global_hash": global_hash}, r)
        receipts = {}
        for pid, receipt in found.items():
            if receipt is None:
                self.missed.setdefault(r, set()).add(pid)
                continue
            receipt["dataset_hash"] = self.c.check_dataset(pid, receipt.get("dataset_hash"))
            receipts[pid] = receipt
        return receipts

    def validate(self, r: int, pids: list[str], state_hash: str | None,
                 started: RoundStart) -> dict[str, dict[str, Any]]:  # fmt: skip
        found = self._run("validate", pids, {"round_index": r, "state_hash": state_hash}, r)
        votes = {}
        for pid, receipt in found.items():
            if receipt is None:
                self.missed.setdefault(r, set()).add(pid)
            elif receipt.get("committed"):
                votes[pid] = receipt
        return votes

    def reveal(self, r: int, votes: dict[str, dict[str, Any]], started: RoundStart) -> None:
        self._run("reveal", list(votes), {"round_index": r}, r)

    def after_finalize(self, r: int, started: RoundStart) -> None:
        """Report the participants that missed a deadline of round ``r`` and did not do their
        part on chain either (the contract refuses anyone else's report)."""
        absent = sorted(self.missed.get(r, set()))
        if absent:
            reported = self.c.report_no_shows(r, absent, self.log)
            if reported:
                self.log.warning("round %d: reported no-shows %s", r + 1, ", ".join(reported))

    def holdouts(self, global_hash: str) -> dict[str, tuple[float, float] | None]:
        return {}  # a participant's held-out data never leaves its machine

    def claim(self) -> None:
        self._run("claim", list(self.c.roster), {}, None)


# ---------------------------------------------------------------- the participant's side


def serve_participant(
    card_path: Path,
    data: Path,
    key_env: str,
    pool: str,
    state: Path,
    rpc_url: str | None = None,
    run_once: bool = False,
) -> None:
    """Join the task (stake, once) and serve this participant's duties from ``pool`` until
    interrupted: what ``flock participant start`` runs."""
    import asyncio

    from prefect.flows import Flow

    import flows.participant  # its runs execute here: imported once, up front
    from flock_pipeline.runtime.participant import open_participant

    card = TaskCard.read(card_path)
    me = open_participant(card_path, data, key_env, state, rpc_url)  # every check, by name
    # A worker serves a task's rounds for as long as it runs: the training stack's imports
    # (Lightning; Opacus under DP: seconds each) are paid now, not in the first round's
    # deadline, where four workers starting on two cores took 7 s to train a tiny model.
    import lightning  # noqa: F401

    if me.cfg.privacy.enabled:
        import opacus  # noqa: F401
    queue = queue_name(card.name, me.id)
    card_at, data_at, state_at = (str(Path(p).resolve()) for p in (card_path, data, state))
    params = {"card": card_at, "data": data_at, "key_env": key_env, "state": state_at,
              "rpc_url": rpc_url}  # fmt: skip
    # Its duty runs in this process use what was opened and checked here.
    flows.participant.keep_open(me, card_at, data_at, key_env, state_at, rpc_url)
    _ensure_pool(pool)
    for duty in _FLOW_NAMES:
        entrypoint = f"flows/participant.py:participant_{duty}"
        source: Any = Flow.from_source(source=str(_REPO), entrypoint=entrypoint)
        source.deploy(
            name=deployment_name(card.name, me.id),
            work_pool_name=pool,
            work_queue_name=queue,
            parameters=params,
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
    # Stake only once its deployments exist: the task starts when everyone has staked, and
    # a duty triggered before its deployment exists would find nothing to run.
    me.join(me.cfg.chain.stake * TOKEN)
    _crash_left_running(pool, queue)
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    worker = _resident_worker(work_pool_name=pool, work_queues=[queue], name=f"flock-{queue}",
                              prefetch_seconds=1)  # fmt: skip

    async def serve() -> None:
        async with worker:
            await worker.start(run_once=run_once)

    # Poll its queue every second, not Prefect's default 10 s: a duty waits for the poll, three
    # times a round. (The setting must be in the settings context: Prefect read the
    # environment when it was imported.) An explicit PREFECT_WORKER_QUERY_SECONDS wins.
    query = float(os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "1"))
    with (
        temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: query}),
        contextlib.suppress(KeyboardInterrupt),
    ):
        asyncio.run(serve())


def without_run_heartbeats() -> contextlib.AbstractContextManager[Any]:
    """Flow runs started inside send no Prefect flow-run heartbeats. A run's heartbeat thread
    sleeps in steps of a second, and the run's end waits for it: up to a second per run
    (measured: a no-op run takes 1.1 s with it, 0.13 s without). For runs whose liveness
    something else shows: a round inside the task's flow run, a duty inside its worker."""
    from prefect.settings import temporary_settings

    return temporary_settings(updates={"flows.heartbeat_frequency": None})


def _crash_left_running(pool: str, queue: str) -> None:
    """Mark Crashed the runs of ``queue`` that an earlier process of this worker left pending
    or running (it was killed mid-duty: nobody else would ever finish them), so that the
    coordinator, waiting on them, goes on at once instead of at the deadline."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
        WorkQueueFilter,
        WorkQueueFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    live = FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
    with get_client(sync_client=True) as client:
        left = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=live)),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=[queue])),
        )
        for run in left:
            client.set_flow_run_state(
                run.id, Crashed(message="its worker stopped mid-run and was started again"),
                force=True,
            )  # fmt: skip


def _resident_worker_class() -> type:
    from prefect.workers.process import ProcessWorker

    class ResidentWorker(ProcessWorker):
        """A process-pool worker that runs each of its participant's flow runs in its own
        process, one at a time, instead of starting a Python process per run: a duty run's
        imports (torch, Prefect, web3: about 7 s of CPU) would otherwise cost more than the
        duty itself on a small model, three times a round. The runs are this participant's
        own deployments (its queue), executed by Prefect's flow engine as a spawned run
        would be. A run past its deadline cannot be killed from here (a thread): it is
        cancelled on the server, and the chain refuses what it sends after its phase."""

        async def run(self, flow_run: Any, configuration: Any, task_status: Any = None) -> Any:
            import anyio
            from prefect.flow_engine import load_flow_run, run_flow
            from prefect.workers.process import ProcessWorkerResult

            from flows.participant import DUTIES

            name = (await self.client.read_flow(flow_run.flow_id)).name
            served: list[Any] = list(DUTIES.values())
            duty = next((f for f in served if f.name == name), None)
            if task_status is not None:
                task_status.started(os.getpid())
            if duty is None:  # not a participant duty: refuse it rather than run it
                self._logger.error("flow run %s is of flow %r, not a duty", flow_run.id, name)
                return ProcessWorkerResult(status_code=1, identifier=str(os.getpid()))

            def execute() -> Any:
                # A duty is bounded by its deadline, and this worker's own heartbeats show
                # it alive.
                with without_run_heartbeats():
                    run = load_flow_run(flow_run.id)
                    return run_flow(duty, flow_run=run, return_type="state")

            state = await anyio.to_thread.run_sync(execute)
            ok = state is not None and state.is_completed()
            return ProcessWorkerResult(status_code=0 if ok else 1, identifier=str(os.getpid()))

        async def kill_infrastructure(self, infrastructure_pid: str, configuration: Any,
                                      grace_seconds: int = 30) -> None:  # fmt: skip
            from prefect.exceptions import InfrastructureNotAvailable

            raise InfrastructureNotAvailable("a duty runs in the worker's own process")

    return ResidentWorker


def _resident_worker(**kwargs: Any) -> Any:
    """A :class:`ResidentWorker` (the class is built on first use: it imports Prefect's
    worker module)."""
    return _resident_worker_class()(**kwargs)


def _ensure_pool(pool: str) -> None:
    """Create process work pool ``pool`` unless it exists."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", pool):
        raise ConfigError(f"work pool name {pool!r}: use letters, digits, '_', '-' and '.'")
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
