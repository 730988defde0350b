"""The federated round as a Prefect DAG, and the task that runs R of them.

```
start round (start and draw it, roles; put back a lost global model) ─► train × proposers
  (Lightning + Opacus) ─► upload + submit hash ─► validate × voters (recompute the aggregate,
  score it, commit hash and vote) ─► reveal × voters ─► finalize (the majority hash and vote
  decide) ─► model version (MLflow)
```
Each task is one runtime call: the coordinator's (``flock_pipeline.runtime.coordinator``) or a
participant's (``flock_pipeline.runtime.participant``). Participants' duties run either in this
process (the in-process engine: every participant's runtime, each with its own key, data and
ledger) or on each participant's own Prefect worker (``flock participant start``), triggered
with ``run_deployment`` and a deadline; one that misses it is a no-show.

Every step is idempotent against the chain, which is the source of truth: a task flow that
crashed resumes where the chain says it stopped and never settles anything twice. Nobody posts
the aggregate: each voter commits the hash it computed, and the hash with most of the revealed
voting stake is the round's. Participants settle lazily on their next action (and at the end of
the task, when each claims); the report reads what the chain recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.task_runners import ThreadPoolTaskRunner

from flock_pipeline.chain import Phase
from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.faces.plots import plot_report
from flock_pipeline.report import RunReport
from flock_pipeline.runtime.coordinator import Coordinator, RoundStart
from flock_pipeline.runtime.participant import (
    Participant,
    TrainingJob,
    TrainingResult,
    run_training,
)
from flock_pipeline.runtime.runners import DaskCluster
from flock_pipeline.runtime.world import OpenTask, open_world
from flows.workers import (
    Duties,
    WorkerDuties,
    share_plain_http_tls_context,
    without_run_heartbeats,
)

__all__ = ["TaskRun", "federated_task"]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble (RPC, S3), never a revert or a user error."""
    try:
        state.result()
    except OSError:  # ConnectionError, timeouts, requests' and botocore's connection errors
        return True
    except Exception:
        return False
    return False


_DELAYS: list[float] = [1, 2, 5]
_SEQUENTIAL: Any = ThreadPoolTaskRunner(max_workers=1)  # one torch job at a time: seeded RNG
_RETRY: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 3,
    "retry_delay_seconds": _DELAYS,
    "retry_condition_fn": _transient,
}


def _logger() -> Any:
    """The run's logger; the module's when a task body is called outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows.federated")


# ---------------------------------------------------------------- tasks: one runtime call each


@task(name="start-round", **_RETRY)
def start_round(c: Coordinator, r: int) -> RoundStart:
    """Start round ``r`` if it was not and draw it; every participant's role."""
    return c.start_round(r, _logger())


@task(name="train-and-submit", **_RETRY)
def train_and_submit(p: Participant, r: int, global_hash: str) -> dict[str, Any]:
    """A proposer trains from the global model, uploads its update and commits its hash."""
    p.verify_data()
    return p.receipt(p.train_and_submit(r, global_hash, _logger()))


@task(name="train", cache_policy=NO_CACHE)
def train_jobs(jobs: list[TrainingJob], threads: int) -> list[TrainingResult]:
    """A share of the round's proposers' local training, one job after the other (no key, no
    chain): what a Dask worker runs."""
    import torch

    torch.set_num_threads(threads)
    return [run_training(job) for job in jobs]


def shares(jobs: list[TrainingJob], count: int) -> list[list[TrainingJob]]:
    """``jobs`` in ``count`` contiguous shares of near-equal length (none empty), in order."""
    count = max(1, min(count, len(jobs)))
    size, extra = divmod(len(jobs), count)
    out, at = [], 0
    for i in range(count):
        n = size + (1 if i < extra else 0)
        out.append(jobs[at : at + n])
        at += n
    return out


@flow(name="train-proposers")
def train_proposers(
    jobs: list[TrainingJob], threads: int, workers: int = 1
) -> list[TrainingResult]:
    """The round's proposers' training, in parallel on the flow's task runner (Dask): one
    task per share of the jobs, two shares per worker process, not one task per proposer.
    Each task run costs round trips to the Prefect API from the worker, which on a small
    model's local epoch cost several times the training (measured: 2.2 s per proposer on
    Dask, 0.3 s in the flow's process, with one task each)."""
    parts = shares(jobs, 2 * workers)
    done = train_jobs.map(parts, unmapped(threads)).result()
    return [result for part in done for result in part]


@task(name="submit-update", **_RETRY)
def submit_update(p: Participant, job: TrainingJob, result: TrainingResult) -> dict[str, Any]:
    """Keep, upload and commit what ``train`` trained."""
    return p.receipt(p.submit_trained(job, result, _logger()))


@task(name="validate-and-commit", **_RETRY)
def validate_and_commit(p: Participant, r: int, state_hash: str | None) -> dict[str, Any]:
    """A voter recomputes the aggregate, judges it and commits hash, score and contributions."""
    p.verify_data()
    return p.validate_and_commit(r, state_hash, _logger())


@task(name="reveal", **_RETRY)
def reveal(p: Participant, r: int, vote: dict[str, Any]) -> bool:
    """Reveal what ``validate-and-commit`` committed."""
    return p.reveal(r, vote)


@task(name="finalize", **_RETRY)
def finalize(c: Coordinator, r: int, reveal_ends: int) -> dict[str, Any]:
    """Finalize the round: one transaction; participants settle on their next action."""
    return c.finalize(r, reveal_ends)


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_model(c: Coordinator, r: int, record: dict[str, Any]) -> dict[str, str]:
    """One MLflow model version per round (the new global model)."""
    return c.register_model(r, record)


# ---------------------------------------------------------------- flows


class TaskRun:
    """One task's rounds: its coordinator, and who carries out the participants' duties."""

    def __init__(self, opened: OpenTask, duties: Duties) -> None:
        self.opened = opened
        self.c = opened.coordinator
        self.duties = duties
        self.rounds: list[dict[str, Any]] = []

    @flow(name="federated-round", task_runner=_SEQUENTIAL, persist_result=True)
    def round(self, round_index: int) -> dict[str, Any]:
        """One round (0-based ``round_index`` on chain; reported 1-based)."""
        c, r = self.c, round_index
        logger = get_run_logger()
        done = c.folder / "rounds" / f"{r + 1}.json"
        if done.exists() and c.creator.phase_of(c.task_id, r) is Phase.FINALIZED:
            logger.info("round %d was finalized by an earlier run; not repeating it", r + 1)
            return dict(json.loads(done.read_text()))
        began = time.perf_counter()

        started = start_round(c, r)
        global_hash = c.global_hash()
        proposers, voters = started.proposers, started.voters
        receipts = self.duties.train(r, proposers, global_hash, started)
        updates = [p for p in proposers if receipts.get(p, {}).get("update_hash")]
        c.advance_to(started.training_ends + 1)
        votes: dict[str, dict[str, Any]] = {}
        quorum = c.cfg.workers.quorum
        if len(updates) < quorum:
            logger.warning("round %d: %d update(s), below the quorum of %d; the round is void",
                           r + 1, len(updates), quorum)  # fmt: skip
        elif voters:
            votes = self.duties.validate(r, voters, c.previous_state_hash(r), started)
            c.advance_to(started.commit_ends + 1)
            if votes:
                self.duties.reveal(r, votes, started)
        settled = finalize(c, r, started.reveal_ends)
        self.duties.after_finalize(r, started)
        holdouts = self.duties.holdouts(c.global_hash())
        data = c.record_round(r, started, global_hash, receipts, settled, holdouts, logger)
        data["model"] = register_model(c, r, data)
        data["seconds"] = round(time.perf_counter() - began, 3)
        outcome, accuracy = data["outcome"], data["global"]["accuracy"]
        create_table_artifact(
            key=artifact_key(c.name, r),
            table=[
                {k: p[k] for k in ("id", "role", "epsilon", "contribution", "flagged")}
                | {"score": p["vote"]["score"] if p["vote"] else None}
                for p in data["participants"]
            ],
            description=(
                f"Round {r + 1} of {c.name}: {outcome}, global accuracy {accuracy:.4f}, "
                f"model version {data['model']['version']}"
            ),
        )
        logger.info("round %d %s: accuracy %.4f, proposers %s, voters %s",
                    r + 1, outcome, accuracy, proposers, voters)  # fmt: skip
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(data, indent=2))
        return dict(data)

    def finish(self, out_dir: str | None) -> RunReport:
        """Pay out (each claim settles its last round first; a repeat pays nothing), reclaim
        what no round paid, publish the champion, write the report."""
        c = self.c
        self.duties.claim()
        claims = c.claims()
        c.reclaim_pool()
        report = c.report(self.rounds, claims, self.duties.engine)
        champion = report.final.champion_version
        if champion is not None:
            c.registry.set_alias("champion", champion)
        out = Path(out_dir) if out_dir else c.cfg.data_dir / "runs" / c.name
        # A rerun of the finished task points here (world._resumed_meta).
        meta = dict(c.meta, complete=True, summary=str((out / "summary.json").resolve()))
        (c.folder / "task.json").write_text(json.dumps(meta, indent=2))
        write_report(report, out)
        return report


def artifact_key(task: str, r: int) -> str:
    """The Prefect artifact key of round ``r`` (0-based) of ``task``: Prefect accepts only
    lowercase letters, digits and dashes (a task of fashion_mnist has an underscore)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{task}-round-{r + 1}".lower())


@flow(name="federated-task", log_prints=True)
def federated_task(
    config: FlockConfig | None = None, config_file: str | None = None, out_dir: str | None = None
) -> dict[str, Any]:
    """Create or resume a task, run its remaining rounds, pay out, publish the champion.

    ``config`` takes precedence over ``config_file``; with neither, the embedded defaults.
    """
    cfg = config or load_config(Path(config_file) if config_file else None)
    share_plain_http_tls_context()
    logger = get_run_logger()
    opened = open_world(cfg)
    c = opened.coordinator
    stack = contextlib.ExitStack()
    cluster: DaskCluster | None = None
    try:
        logger.info("task %s (id %d on chain %d)", c.name, c.task_id, c.chain.chain_id)
        if cfg.runner.kind == "dask" and cfg.workers.pool is None:
            cluster = stack.enter_context(DaskCluster.start(cfg.runner))
            logger.info("training on a Dask cluster at %s", cluster.address)
        duties: Duties = (
            InProcessDuties(opened, cluster) if cfg.workers.pool is None
            else WorkerDuties(c, logger)
        )  # fmt: skip
        duties.wait_for_members()
        run = TaskRun(opened, duties)
        for r in range(cfg.rounds):
            # The task's own flow run sends the heartbeats of this process.
            with without_run_heartbeats():
                named: Any = run.round.with_options(flow_run_name=f"{c.name}-round-{r + 1}")
                run.rounds.append(named(r))
        report = run.finish(out_dir)
        logger.info("summary: %s", Path(out_dir or cfg.data_dir / "runs" / c.name) / "summary.json")
        return report.dump()
    finally:
        stack.close()
        opened.close()


def write_report(report: RunReport, out: Path) -> None:
    """summary.json, accuracy.png and rewards.png."""
    report.write(out / "summary.json")
    plot_report(report, out)


class InProcessDuties:
    """Every participant's runtime in this process, each duty a Prefect task of the round."""

    engine = "flow"

    def __init__(self, opened: OpenTask, cluster: DaskCluster | None = None) -> None:
        self.participants = {p.id: p for p in opened.participants}
        self.cluster = cluster

    def wait_for_members(self) -> None:
        pass  # they staked when the task opened

    def train(self, r: int, pids: list[str], global_hash: str,
              started: RoundStart) -> dict[str, dict[str, Any]]:  # fmt: skip
        cfg = next(iter(self.participants.values())).cfg
        # Copiers submit last: they copy what the others committed.
        copiers = [p for p in pids if (a := cfg.attacks.get(p)) and a.kind == "copier"]
        receipts = {pid: p.receipt({}) for pid, p in self.participants.items()}
        for group in ([p for p in pids if p not in copiers], copiers):
            if self.cluster is not None and group is not copiers:
                group = self._train_on_cluster(r, group, global_hash, receipts)
            if group:
                people = [self.participants[p] for p in group]
                results = train_and_submit.map(people, r, global_hash).result()
                receipts.update(zip(group, results, strict=True))
        return receipts

    def _train_on_cluster(self, r: int, pids: list[str], global_hash: str,
                          receipts: dict[str, dict[str, Any]]) -> list[str]:  # fmt: skip
        """Train ``pids`` on the Dask cluster, then submit each in this process (the key and
        the chain connection never leave it); returns those left to the sequential path (a
        resumed submission)."""
        assert self.cluster is not None
        fresh = [p for p in pids if self.participants[p].needs_training(r)]
        if not fresh:
            return pids
        people = [self.participants[p] for p in fresh]
        for p in people:
            p.verify_data()
        jobs = [p.training_job(r, global_hash) for p in people]
        parallel: Any = train_proposers.with_options(
            task_runner=self.cluster.task_runner(), flow_run_name=f"round-{r + 1}-training"
        )
        results = parallel(jobs, self.cluster.threads, self.cluster.workers)
        for p, job, result in zip(people, jobs, results, strict=True):
            receipts[p.id] = submit_update(p, job, result)
        return [p for p in pids if p not in fresh]

    def validate(self, r: int, pids: list[str], state_hash: str | None,
                 started: RoundStart) -> dict[str, dict[str, Any]]:  # fmt: skip
        people = [self.participants[p] for p in pids]
        scored = validate_and_commit.map(people, r, state_hash).result()
        return {v: x for v, x in zip(pids, scored, strict=True) if x}

    def reveal(self, r: int, votes: dict[str, dict[str, Any]], started: RoundStart) -> None:
        people = [self.participants[p] for p in votes]
        reveal.map(people, r, list(votes.values())).result()

    def after_finalize(self, r: int, started: RoundStart) -> None:
        pass  # an in-process participant abstains with a reason; it never misses a deadline

    def holdouts(self, global_hash: str) -> dict[str, tuple[float, float] | None]:
        if not self.participants:
            return {}
        weights = next(iter(self.participants.values())).model(global_hash)
        return {pid: p.holdout(weights) for pid, p in self.participants.items()}

    def claim(self) -> None:
        for p in self.participants.values():  # each claim settles its last round first
            p.claim()
