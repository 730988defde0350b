"""A participant's duties as Prefect flows, served by its own worker (``flock participant
start``): train, validate, reveal and claim. Each run opens the participant's runtime from what
only its machine holds (its key in an environment variable, its data folder, its state folder)
and makes one runtime call. What it sends back to the coordinator is a receipt (the update's
hash and sample count, its data's DVC hash, its epsilon), published as a Prefect artifact of
the run: nothing private leaves the machine.

The deployments' parameters name the task card, the folders and the *name* of the key's
environment variable, never the key: the Prefect server stores parameters.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flock_pipeline.chain import Phase
from flock_pipeline.runtime.participant import Participant, open_participant
from flock_pipeline.storage.counting import CountingStore

__all__ = ["DUTIES", "RECEIPT_MARK", "participant_claim", "participant_reveal",
           "participant_train", "participant_validate"]  # fmt: skip

TRAFFIC = "traffic.jsonl"
"""In a participant's state folder: the bytes each of its runs sent and received."""
RECEIPT_MARK = "flock-receipt"
"""The first line of a receipt artifact; the JSON follows in a code block."""


_OPENED: dict[tuple[str, ...], Participant] = {}
"""The participant runtimes this process opened, by their duty parameters: a resident worker
(``flows.workers``) runs every duty of its one participant in one process, and a duty would
otherwise open the runtime again each time (read the card, check the services, connect to the
chain, load the data snapshot: seconds on a busy machine, three times a round). It only ever
holds what this process's own key and folders opened; a restarted worker opens afresh."""

_COUNTS: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "flock_run_traffic", default=None
)
"""The bytes the current duty run sent and received. Each run counts its own: a round's
validate and reveal runs are dispatched with its training run and wait in this process for
their phase, so several runs of one participant are live at once."""


class RunCountingStore(CountingStore):
    """The participant's blob store, counting into the current run's traffic (``_COUNTS``)."""

    def count(self, sent: int = 0, received: int = 0) -> None:
        counts = _COUNTS.get()
        if counts is not None:
            counts["blob_sent"] += sent
            counts["blob_received"] += received


def _key(card: str, data: str, key_env: str, state: str, rpc_url: str | None) -> tuple[str, ...]:
    secret = hashlib.sha256(os.environ.get(key_env, "").encode()).hexdigest()  # a new key: anew
    return (card, data, key_env, secret, state, rpc_url or "")


def keep_open(p: Participant, card: str, data: str, key_env: str, state: str,
              rpc_url: str | None) -> None:  # fmt: skip
    """Let this process's duty runs with these parameters use ``p`` (what ``flock participant
    start`` opened and checked) instead of opening it again."""
    if not isinstance(p.store, RunCountingStore):
        p.store = RunCountingStore(p.store)
        _count_rpc(p)
    _OPENED[_key(card, data, key_env, state, rpc_url)] = p


def _open(card: str, data: str, key_env: str, state: str, rpc_url: str | None) -> Participant:
    """This participant's runtime, opened once per process and key; the calling run counts
    its traffic from here. The data folder is still checked against its snapshot by every duty
    that reads it (``verify_data``)."""
    key = _key(card, data, key_env, state, rpc_url)
    if key not in _OPENED:
        opened = open_participant(Path(card), Path(data), key_env, Path(state), rpc_url)
        keep_open(opened, card, data, key_env, state, rpc_url)
    _COUNTS.set(dict.fromkeys(("rpc_sent", "rpc_received", "blob_sent", "blob_received"), 0))
    return _OPENED[key]


def _count_rpc(p: Participant) -> None:
    """Count the JSON-RPC bytes (request and response bodies) of the runtime's connection into
    the traffic of the run that made the request."""
    session = p.client.chain.session

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        counts = _COUNTS.get()
        if counts is not None:
            counts["rpc_sent"] += len(response.request.body or b"")
            counts["rpc_received"] += len(response.content)
        return response

    if session is not None:
        session.hooks["response"].append(hook)


def _traffic(p: Participant, duty: str, round_index: int | None) -> None:
    """Append what this run sent and received to ``traffic.jsonl`` in the state folder."""
    entry = dict(_COUNTS.get() or {}, duty=duty, round=round_index)
    with (p.state / TRAFFIC).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _own_run_cancelled() -> bool:
    """Whether the coordinator cancelled this flow run (it gave up on it, or the round ended
    without this phase); False when that cannot be read now (the server is restarting)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if run_id is None:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(str(run_id))).state
    except Exception:  # the server is unreachable for now: go on waiting
        return False
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def wait_for_phase(p: Participant, r: int, phase: Phase, log: Any) -> bool:
    """Wait until round ``r`` is in ``phase``; False when it went past it, or this run was
    cancelled, or the round did not get there within the time its earlier phases may take.

    A round's validate and reveal runs are dispatched with its training runs, and the next
    round's training runs with them, so that when the chain reaches their phase they are
    running already: a run's dispatch (the worker's poll of its queue, the run's start) is
    off the round's path. On a dev chain the phase is read every 0.05 s once the round is in
    the phase before (for training: once the round before it is past training), every 0.5 s
    until then; on a public chain every second. On a dev chain a poll asks for the block
    number (a tenth of the bytes of the phase's ``eth_call``) and reads the phase only when a
    block was mined, or a second after it last read it: the coordinator moves a dev chain's
    round from phase to phase with a transaction or a mined block."""
    if (now := p.client.phase_of(p.task_id, r)) >= phase:
        return now == phase and not _own_run_cancelled()
    log.info("%s waits for round %d to reach %s (now %s)", p.id, r + 1, phase.name, now.name)
    cfg = p.cfg
    public = p.client.chain.kind == "rpc"
    # Its earlier phases: each at most a deadline (the coordinator gives up on a run that
    # misses one), on a public chain at least their length on the chain's clock.
    lengths = cfg.chain.training_seconds + cfg.chain.commit_seconds + cfg.chain.reveal_seconds
    bound = 3 * cfg.workers.deadline_seconds + (lengths if public else 0)
    until, check = time.monotonic() + bound, time.monotonic() + 2.0
    changed = _NewBlock(p) if not public else None
    while now < phase:
        if time.monotonic() > until:
            log.warning("%s: round %d did not reach %s in %.0f s; it abstains",
                        p.id, r + 1, phase.name, bound)  # fmt: skip
            return False
        if time.monotonic() > check:
            if _own_run_cancelled():
                log.info("%s's run for round %d was cancelled", p.id, r + 1)
                return False
            check = time.monotonic() + 2.0
        near = now == phase - 1 or (phase == Phase.TRAINING and now == Phase.NOT_STARTED)
        time.sleep(1.0 if public else 0.05 if near else 0.5)
        if changed is None or changed():
            now = p.client.phase_of(p.task_id, r)
    # Reached: act unless the coordinator gave this run up meanwhile (a resumed coordinator
    # dispatches its own).
    return now == phase and not _own_run_cancelled()


class _NewBlock:
    """True when a block was mined since it was last True, or ``every`` seconds after that (a
    block number that cannot be read counts as new)."""

    def __init__(self, p: Participant, every: float = 1.0) -> None:
        self.w3, self.every = p.client.chain.w3, every
        self.block: int | None = None
        self.at = time.monotonic()
        self()

    def __call__(self) -> bool:
        try:
            block: int | None = int(self.w3.eth.block_number)
        except Exception:
            block = None
        if block is None or block != self.block or time.monotonic() - self.at >= self.every:
            self.block, self.at = block, time.monotonic()
            return True
        return False


_GUARD = threading.Lock()
_ACTING: dict[tuple[str, int | None], threading.Lock] = {}


@contextlib.contextmanager
def _acting(duty: str, round_index: int | None) -> Iterator[None]:
    """One run at a time acts for a duty and round in this process: a run dispatched ahead
    by a coordinator that crashed and the run its successor dispatched may both reach the
    phase. The second finds the work done (every duty is idempotent against the chain and
    the state folder) instead of doing it again, which for training would spend privacy
    budget twice."""
    with _GUARD:
        lock = _ACTING.setdefault((duty, round_index), threading.Lock())
    with lock:
        yield


def _publish(receipt: dict[str, Any]) -> dict[str, Any]:
    create_markdown_artifact(
        markdown=f"{RECEIPT_MARK}\n```json\n{json.dumps(receipt)}\n```",
        description="what this participant reported back",
    )
    return receipt


@flow(name="participant-train")
def participant_train(
    card: str, data: str, key_env: str, state: str, round_index: int,
    global_hash: str | None = None, rpc_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train from the global model, upload the update, commit its hash. ``global_hash``: the
    model to start from, by default the task's global model on chain. A run dispatched before
    its round began waits for the round to train, and does nothing unless the round drew this
    participant to propose."""
    p = _open(card, data, key_env, state, rpc_url)
    log = get_run_logger()
    receipt = p.receipt({})
    if wait_for_phase(p, round_index, Phase.TRAINING, log) and p.proposes(round_index):
        with _acting("train", round_index):
            p.verify_data()
            start = global_hash or p.global_hash()
            log.info("%s trains round %d", p.id, round_index + 1)
            receipt = p.receipt(p.train_and_submit(round_index, start, log))
    _traffic(p, "train", round_index)
    return _publish(receipt)


@flow(name="participant-validate")
def participant_validate(
    card: str, data: str, key_env: str, state: str, round_index: int,
    state_hash: str | None = None, rpc_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Recompute the aggregate, judge it on its own data, commit hash, score, contributions."""
    p = _open(card, data, key_env, state, rpc_url)
    log = get_run_logger()
    vote: dict[str, Any] = {}
    if wait_for_phase(p, round_index, Phase.COMMITTING, log) and p.votes(round_index):
        with _acting("validate", round_index):
            p.verify_data()
            vote = p.validate_and_commit(round_index, state_hash, log)
    _traffic(p, "validate", round_index)
    return _publish({"committed": bool(vote), "hash": vote.get("hash")})


@flow(name="participant-reveal")
def participant_reveal(
    card: str, data: str, key_env: str, state: str, round_index: int, rpc_url: str | None = None
) -> dict[str, Any]:
    """Reveal what it committed."""
    p = _open(card, data, key_env, state, rpc_url)
    revealed = False
    if wait_for_phase(p, round_index, Phase.REVEALING, get_run_logger()):
        with _acting("reveal", round_index):
            revealed = p.reveal(round_index)
    _traffic(p, "reveal", round_index)
    return _publish({"revealed": revealed})


@flow(name="participant-claim")
def participant_claim(
    card: str, data: str, key_env: str, state: str, rpc_url: str | None = None
) -> dict[str, Any]:
    """Claim what the task owes it."""
    p = _open(card, data, key_env, state, rpc_url)
    with _acting("claim", None):
        claimed = p.claim()
    _traffic(p, "claim", None)
    return _publish({"claimed": str(claimed)})


DUTIES = {
    "train": participant_train,
    "validate": participant_validate,
    "reveal": participant_reveal,
    "claim": participant_claim,
}
"""Duty -> the flow its worker serves."""
