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

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flock_pipeline.runtime.participant import Participant, open_participant
from flock_pipeline.storage.counting import CountingStore

__all__ = ["DUTIES", "RECEIPT_MARK", "participant_claim", "participant_reveal",
           "participant_train", "participant_validate"]  # fmt: skip

TRAFFIC = "traffic.jsonl"
"""In a participant's state folder: the bytes each of its runs sent and received."""
RECEIPT_MARK = "flock-receipt"
"""The first line of a receipt artifact; the JSON follows in a code block."""


_OPENED: dict[tuple[str, ...], tuple[Participant, Any]] = {}
"""The participant runtimes this process opened, by their duty parameters, with each one's own
blob store: a resident worker (``flows.workers``) runs every duty of its one participant in
one process, and a duty would otherwise open the runtime again each time (read the card, check
the services, connect to the chain, load the data snapshot: seconds on a busy machine, three
times a round). It only ever holds what this process's own key and folders opened; a restarted
worker opens afresh."""


def _key(card: str, data: str, key_env: str, state: str, rpc_url: str | None) -> tuple[str, ...]:
    secret = hashlib.sha256(os.environ.get(key_env, "").encode()).hexdigest()  # a new key: anew
    return (card, data, key_env, secret, state, rpc_url or "")


def keep_open(p: Participant, card: str, data: str, key_env: str, state: str,
              rpc_url: str | None) -> None:  # fmt: skip
    """Let this process's duty runs with these parameters use ``p`` (what ``flock participant
    start`` opened and checked) instead of opening it again."""
    _OPENED[_key(card, data, key_env, state, rpc_url)] = (p, p.store)
    _count_rpc(p)


def _open(card: str, data: str, key_env: str, state: str, rpc_url: str | None) -> Participant:
    """This participant's runtime, opened once per process and key, with fresh traffic counts
    for this run. The data folder is still checked against its snapshot by every duty that
    reads it (``verify_data``)."""
    key = _key(card, data, key_env, state, rpc_url)
    if key not in _OPENED:
        opened = open_participant(Path(card), Path(data), key_env, Path(state), rpc_url)
        keep_open(opened, card, data, key_env, state, rpc_url)
    p, store = _OPENED[key]
    p.store = CountingStore(store)
    p.traffic.update(rpc_sent=0, rpc_received=0)
    return p


def _count_rpc(p: Participant) -> None:
    """Count the JSON-RPC bytes (request and response bodies) of the runtime's connection into
    ``p.traffic`` (reset by each run)."""
    session = p.client.chain.session
    counts = p.traffic
    counts.update(rpc_sent=0, rpc_received=0)

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        body = response.request.body or b""
        counts["rpc_sent"] += len(body)
        counts["rpc_received"] += len(response.content)
        return response

    if session is not None:
        session.hooks["response"].append(hook)


def _traffic(p: Participant, duty: str, round_index: int | None) -> None:
    """Append what this run sent and received to ``traffic.jsonl`` in the state folder."""
    store = p.store
    entry = dict(p.traffic, duty=duty, round=round_index)
    entry["blob_sent"] = getattr(store, "sent", 0)
    entry["blob_received"] = getattr(store, "received", 0)
    with (p.state / TRAFFIC).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _publish(receipt: dict[str, Any]) -> dict[str, Any]:
    create_markdown_artifact(
        markdown=f"{RECEIPT_MARK}\n```json\n{json.dumps(receipt)}\n```",
        description="what this participant reported back",
    )
    return receipt


@flow(name="participant-train")
def participant_train(
    card: str, data: str, key_env: str, state: str, round_index: int, global_hash: str,
    rpc_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train from the global model, upload the update, commit its hash."""
    p = _open(card, data, key_env, state, rpc_url)
    p.verify_data()
    receipt = p.receipt(p.train_and_submit(round_index, global_hash, get_run_logger()))
    _traffic(p, "train", round_index)
    return _publish(receipt)


@flow(name="participant-validate")
def participant_validate(
    card: str, data: str, key_env: str, state: str, round_index: int,
    state_hash: str | None = None, rpc_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Recompute the aggregate, judge it on its own data, commit hash, score, contributions."""
    p = _open(card, data, key_env, state, rpc_url)
    p.verify_data()
    vote = p.validate_and_commit(round_index, state_hash, get_run_logger())
    _traffic(p, "validate", round_index)
    return _publish({"committed": bool(vote), "hash": vote.get("hash")})


@flow(name="participant-reveal")
def participant_reveal(
    card: str, data: str, key_env: str, state: str, round_index: int, rpc_url: str | None = None
) -> dict[str, Any]:
    """Reveal what it committed."""
    p = _open(card, data, key_env, state, rpc_url)
    revealed = p.reveal(round_index)
    _traffic(p, "reveal", round_index)
    return _publish({"revealed": revealed})


@flow(name="participant-claim")
def participant_claim(
    card: str, data: str, key_env: str, state: str, rpc_url: str | None = None
) -> dict[str, Any]:
    """Claim what the task owes it."""
    p = _open(card, data, key_env, state, rpc_url)
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
