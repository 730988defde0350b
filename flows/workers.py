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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Cancelling

from flock_pipeline.chain import Phase
from flock_pipeline.errors import ConfigError
from flock_pipeline.runtime.task import TaskCard

if TYPE_CHECKING:  # a participant's worker never loads the coordinator (nor MLflow)
    from flock_pipeline.runtime.coordinator import Coordinator, RoundStart

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


def _receipts(client: Any, runs: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The receipts the participants' runs (``flows.participant``) published so far, in one
    request: a run publishes its receipt when its duty is done, before its run ends. None for
    a receipt that is not a JSON object."""
    from flows.participant import RECEIPT_MARK

    ids = {run.id: pid for pid, run in runs.items() if run is not None}
    if not ids:
        return {}
    found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))
    out: dict[str, dict[str, Any] | None] = {}
    for artifact in found:
        text = str(artifact.data or "")
        pid = ids.get(artifact.flow_run_id)
        if pid is None or not text.startswith(RECEIPT_MARK):
            continue
        body = text.split("```json\n", 1)[-1].rsplit("\n```", 1)[0]
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        out[pid] = value if isinstance(value, dict) else None
    return out


class WorkerDuties:
    """Each duty is a run of the participant's own deployment, started with
    ``run_deployment`` and given ``workers.deadline_seconds`` from the start of its phase. A
    run that has not completed by then is cancelled, and the participant is a no-show
    (reported once the round is final). A participant's receipt is all the coordinator reads
    from it; the chain says the rest.

    A round's validate and reveal runs are dispatched with its training runs, and so are the
    next round's training runs (for this round's proposers) and, for a strategy that keeps no
    state, the next round's validate and reveal runs (for this round's voters); each waits on
    the chain for its phase (``flows.participant.wait_for_phase``). A worker takes a run up
    at its next poll of its queue, and the run's start costs the worker a moment too, so a
    run dispatched when its phase began would spend most of a short phase being picked up.
    One that ended before its phase began (its worker was killed and started again) is
    dispatched again when the phase begins."""

    engine = "workers"
    poll_seconds = 0.1
    """How often the coordinator reads the receipts of a phase's runs (one request for all)."""

    def __init__(self, c: Coordinator, log: Any) -> None:
        self.c = c
        self.log = log
        self.missed: dict[int, set[str]] = {}
        self.ahead: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        """(round, duty) -> (the parameters, participant -> its run) dispatched ahead."""
        self._later: tuple[ThreadPoolExecutor, Future[None]] | None = None
        self._guard = threading.Lock()
        from flock_pipeline.round import build_aggregator

        self.keeps_state = build_aggregator(c.cfg).keeps_state

    def _dispatch(self, duty: str, pids: list[str], params: dict[str, Any],
                  r: int | None) -> dict[str, Any]:  # fmt: skip
        """Create a run of ``duty`` for each of ``pids`` and return at once; None for one whose
        deployment does not exist (its worker never registered)."""
        c = self.c
        label = "" if r is None else f"-round-{r + 1}"

        def one(pid: str) -> Any:
            name = f"{_FLOW_NAMES[duty]}/{deployment_name(c.name, pid)}"
            try:
                return run_deployment(
                    name, parameters=params, timeout=0,
                    flow_run_name=f"{c.name}{label}-{pid}-{duty}", as_subflow=True,
                )  # fmt: skip
            except Exception as exc:
                self.log.warning("%s of %s could not start: %s", duty, pid, exc)
                return None

        if not pids:
            return {}
        with ThreadPoolExecutor(max_workers=len(pids), thread_name_prefix="flock-duty") as pool:
            futures = {pid: pool.submit(contextvars.copy_context().run, one, pid) for pid in pids}
            return {pid: f.result() for pid, f in futures.items()}

    def _states(self, client: Any, runs: dict[str, Any]) -> dict[str, Any]:
        """The current state of each run (None where it cannot be read now)."""
        ids = {run.id: pid for pid, run in runs.items() if run is not None}
        if not ids:
            return {}
        try:
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))),
                limit=len(ids),
            )
        except Exception as exc:  # the server is restarting: ask again at the next poll
            self.log.debug("could not read the duty runs' states: %s", exc)
            return {}
        return {ids[run.id]: run.state for run in found if run.id in ids}

    def _await(
        self, duty: str, runs: dict[str, Any], r: int | None, again: dict[str, Any] | None = None
    ) -> dict[str, dict[str, Any] | None]:
        """Wait up to the deadline for ``runs``; each one's receipt, None for one that missed
        the deadline (cancelled) or failed.

        A run is done when it has published its receipt: the run's own end (its state, its
        logs, its observers) takes the worker most of a second more, which the round need not
        wait for. Its state is read every half second, for a run that ended without one.
        ``again``: the parameters to dispatch a run with once more, once per participant, if it
        crashed (its worker was killed and started again: a vote or a reveal can still be
        made in the phase; a training is not repeated)."""
        deadline = self.c.cfg.workers.deadline_seconds
        until = time.monotonic() + deadline
        label = "-" if r is None else str(r + 1)
        out: dict[str, dict[str, Any] | None] = {pid: None for pid in runs}
        ended: dict[str, Any] = {}
        retried: set[str] = set()
        runs = dict(runs)
        with get_client(sync_client=True) as client:
            pending = {pid: run for pid, run in runs.items() if run is not None}
            states_at = time.monotonic() + 0.5
            while pending:
                try:
                    found = _receipts(client, pending)
                except Exception as exc:  # the server is restarting: ask again
                    self.log.debug("could not read the duty runs' receipts: %s", exc)
                    found = {}
                for pid, receipt in found.items():
                    out[pid] = receipt
                    del pending[pid]
                if pending and time.monotonic() >= states_at:
                    for pid, state in self._states(client, pending).items():
                        if state is None or not state.is_final():
                            continue
                        if again is not None and state.is_crashed() and pid not in retried:
                            retried.add(pid)
                            self.log.info("%s's %s run crashed; dispatched again", pid, duty)
                            fresh = self._dispatch(duty, [pid], again, r).get(pid)
                            if fresh is not None:
                                runs[pid] = pending[pid] = fresh
                                continue
                        ended[pid] = state
                        del pending[pid]
                    states_at = time.monotonic() + 0.5
                if not pending or time.monotonic() > until:
                    break
                time.sleep(self.poll_seconds)
            # One that completed between the two reads published its receipt first.
            done = {pid: runs[pid] for pid, state in ended.items() if state.is_completed()}
            if done:
                out.update(_receipts(client, done))
            for pid, state in ended.items():
                if not state.is_completed():
                    self.log.warning("%s's %s run ended %s: %s", pid, duty, state.name,
                                     state.message)  # fmt: skip
            for pid, run in pending.items():
                client.set_flow_run_state(run.id, Cancelling(), force=True)
                self.log.warning("%s missed the %s deadline (%gs) of round %s",
                                 pid, duty, deadline, label)  # fmt: skip
        return out

    def _run(self, duty: str, pids: list[str], params: dict[str, Any],
             r: int | None) -> dict[str, dict[str, Any] | None]:  # fmt: skip
        """Run ``duty`` for every participant in ``pids`` at once; each one's receipt, None
        for one that missed the deadline or failed."""
        return self._await(duty, self._dispatch(duty, pids, params, r), r)

    def _ahead(self, r: int, duty: str, pids: list[str], params: dict[str, Any]) -> None:
        """Dispatch round ``r``'s ``duty`` runs now for those of ``pids`` that have none, to
        wait on the chain for their phase. Runs dispatched ahead with other parameters are
        cancelled first, running or not: a validate run a round ahead took the strategy state
        to be none, and it must not act on it (it checks, once its phase began, that it was
        not cancelled; this is called before the round's clock moves to that phase)."""
        with self._guard:
            kept, runs = self.ahead.get((r, duty), (params, {}))
        if kept != params:
            self._cancel(runs, running=True)
            runs = {}
        fresh = [pid for pid in pids if runs.get(pid) is None]
        dispatched = self._dispatch(duty, fresh, params, r)
        with self._guard:
            self.ahead[(r, duty)] = (params, {**runs, **dispatched})

    def _in_background(self, job: Callable[[], None]) -> None:
        """Run ``job`` (dispatching runs ahead: a dozen API calls, seconds on a loaded server)
        beside the round instead of on its path; :meth:`_settle` waits for it (the next
        round's start does)."""
        self._settle()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flock-ahead")
        self._later = (pool, pool.submit(contextvars.copy_context().run, job))

    def _settle(self) -> None:
        """Wait for the dispatch running in the background, if any. What it could not
        dispatch is dispatched when its phase begins."""
        if self._later is None:
            return
        pool, job = self._later
        self._later = None
        try:
            job.result()
        except Exception as exc:
            self.log.warning("could not dispatch the next round's runs ahead: %s", exc)
        finally:
            pool.shutdown()

    def _ready(self, r: int, duty: str, pids: list[str],
               params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """The phase of ``duty`` has begun: the runs of ``pids``, those dispatched ahead where
        they are still live, the others dispatched now (not dispatched ahead, or with other
        parameters, or could not start, or ended before their phase: killed, or gave up).
        What was dispatched ahead for anyone else is cancelled if no worker took it up."""
        with self._guard:  # the next round's are dispatched beside this one
            kept, ahead = self.ahead.pop((r, duty), (None, {}))
        if kept != params:
            self._cancel(ahead)
            ahead = {}
        self._cancel({pid: run for pid, run in ahead.items() if pid not in pids})
        runs = {pid: ahead.get(pid) for pid in pids}
        with get_client(sync_client=True) as client:
            states = self._states(client, runs)
        ended = {pid for pid, state in states.items() if state is not None and state.is_final()}
        again = [pid for pid, run in runs.items() if run is None or pid in ended]
        if again:
            runs.update(self._dispatch(duty, again, params, r))
        return runs

    def _cancel(self, runs: dict[str, Any], running: bool = False) -> None:
        """Cancel those of ``runs`` that no worker took up (it is down): their phase is over.
        One that is running ends on its own when it sees its phase past; ``running``: it is
        told to stop (Cancelling) as well."""
        with get_client(sync_client=True) as client:
            for pid, state in self._states(client, runs).items():
                if state is None or state.is_final():
                    continue
                if state.is_scheduled() or state.is_pending():
                    client.set_flow_run_state(runs[pid].id, Cancelled(), force=True)
                elif running:
                    client.set_flow_run_state(runs[pid].id, Cancelling(), force=True)

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
        members = [p for p in c.roster if p not in missing]
        if c.creator.phase_of(c.task_id, 0) is Phase.NOT_STARTED:
            self._first_round_ahead(members)
        self._wait_for_polls(members, until)

    def _first_round_ahead(self, members: list[str]) -> None:
        """Dispatch the first round's runs for every member before the round is drawn: a
        worker's first run is its slowest to take up (seconds: the run's first start in the
        process), and it would otherwise be on the first round's path. A run for a member the
        round does not draw to propose (or to vote) does nothing when its phase begins, or is
        cancelled before a worker takes it up. A duty is dispatched so only where the task
        expects to draw at least half of the members for it (by default everyone proposes
        and votes): a sampled committee of a large federation would leave most of the runs
        with nothing to do. Before the first round there is no strategy state, whatever the
        strategy."""
        proposers, voters = self.c.cfg.committee
        if 2 * proposers >= len(members):
            self._ahead(0, "train", members, {"round_index": 0, "global_hash": None})
        if 2 * voters >= len(members):
            self._ahead(0, "validate", members, {"round_index": 0, "state_hash": None})
            self._ahead(0, "reveal", members, {"round_index": 0})

    def _wait_for_polls(self, pids: list[str], until: float) -> None:
        """Wait (until ``until``) for each of ``pids``' workers to poll its queue: a worker
        stakes before its polling loop starts, and the first round's runs would wait for it.
        A queue polled within the last 10 s has a live worker."""
        pool = self.c.cfg.workers.pool
        waiting = list(pids)
        with get_client(sync_client=True) as client:
            while waiting and time.monotonic() < until:
                now = time.time()
                for pid in list(waiting):
                    try:
                        queue = client.read_work_queue_by_name(
                            queue_name(self.c.name, pid), work_pool_name=pool
                        )
                    except Exception:  # not created yet, or the server is busy: ask again
                        continue
                    polled = queue.last_polled
                    if polled is not None and now - polled.timestamp() < 10:
                        waiting.remove(pid)
                if waiting:
                    time.sleep(0.1)

    def train(self, r: int, pids: list[str], global_hash: str,
              started: RoundStart) -> dict[str, dict[str, Any]]:  # fmt: skip
        # Every training run starts from the global model on chain (``global_hash``), so
        # that the next round's can be dispatched before that model exists.
        self._settle()
        runs = self._ready(r, "train", pids, {"round_index": r, "global_hash": None})
        if started.voters:
            state_hash = self.c.previous_state_hash(r)
            self._ahead(r, "validate", started.voters,
                        {"round_index": r, "state_hash": state_hash})  # fmt: skip
            self._ahead(r, "reveal", started.voters, {"round_index": r})
        if r + 1 < self.c.cfg.rounds:  # most of this round's drawn are drawn in the next
            voters = started.voters if not self.keeps_state else []  # the next state: none

            def next_round() -> None:
                self._ahead(r + 1, "train", pids, {"round_index": r + 1, "global_hash": None})
                if voters:
                    self._ahead(r + 1, "validate", voters,
                                {"round_index": r + 1, "state_hash": None})  # fmt: skip
                    self._ahead(r + 1, "reveal", voters, {"round_index": r + 1})

            self._in_background(next_round)
        found = self._await("train", runs, r)
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
        params = {"round_index": r, "state_hash": state_hash}
        found = self._await("validate", self._ready(r, "validate", pids, params), r, params)
        votes = {}
        for pid, receipt in found.items():
            if receipt is None:
                self.missed.setdefault(r, set()).add(pid)
            elif receipt.get("committed"):
                votes[pid] = receipt
        return votes

    def reveal(self, r: int, votes: dict[str, dict[str, Any]], started: RoundStart) -> None:
        # The runs of the voters that did not commit find nothing to reveal and end.
        params = {"round_index": r}
        self._await("reveal", self._ready(r, "reveal", list(votes), params), r, params)

    def after_finalize(self, r: int, started: RoundStart) -> None:
        """Report the participants that missed a deadline of round ``r`` and did not do their
        part on chain either (the contract refuses anyone else's report)."""
        with self._guard:  # a void round: no vote, no reveal
            left = [self.ahead.pop(k)[1] for k in [k for k in self.ahead if k[0] == r]]
        for runs in left:
            self._cancel(runs)
        absent = sorted(self.missed.get(r, set()))
        if absent:
            reported = self.c.report_no_shows(r, absent, self.log)
            if reported:
                self.log.warning("round %d: reported no-shows %s", r + 1, ", ".join(reported))

    def holdouts(self, global_hash: str) -> dict[str, tuple[float, float] | None]:
        return {}  # a participant's held-out data never leaves its machine

    def claim(self) -> None:
        self._settle()
        for key in list(self.ahead):  # the task ends: nothing dispatched ahead is needed
            self._cancel(self.ahead.pop(key)[1])
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
    share_plain_http_tls_context()
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


def share_plain_http_tls_context() -> bool:
    """Let every Prefect client of this process share one TLS context when the Prefect API is
    plain http (or the ephemeral server), where no client ever uses one. True if it applied.

    Each Prefect client builds a TLS context with the CA bundle (``ssl.create_default_context``:
    ~20 ms of CPU), and a duty run makes several (its engine, its suspension observer, its
    logs). Measured in a participant worker during rounds: a third of its CPU, on a machine
    whose cores the workers share. Prefect reads ``ssl.create_default_context`` from its client
    module's namespace, so that is where the shared context is handed out; an https API keeps
    Prefect's own behaviour. (Prefect has no setting for it: PrefectHQ/prefect#19106 proposes
    one.)"""
    import ssl
    import types

    import prefect.client.orchestration as orchestration
    from prefect.settings import PREFECT_API_URL

    def plain_http() -> bool:
        url = PREFECT_API_URL.value()
        return not url or str(url).startswith("http://")

    if not plain_http():
        return False
    if getattr(getattr(orchestration, "ssl", None), "shared_plain_http", False):
        return True
    shared = ssl.create_default_context()

    def create_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        # Asked again each time: a process that moves to an https API gets Prefect's own.
        return shared if plain_http() else ssl.create_default_context(*args, **kwargs)

    module = types.SimpleNamespace(
        SSLContext=ssl.SSLContext,
        CERT_NONE=ssl.CERT_NONE,
        create_default_context=create_default_context,
        shared_plain_http=True,
    )
    setattr(orchestration, "ssl", module)  # noqa: B010  # not an attribute it declares
    return True


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
