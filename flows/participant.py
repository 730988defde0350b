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

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flock_pipeline.runtime.participant import Participant, open_participant

__all__ = ["DUTIES", "RECEIPT_MARK", "participant_claim", "participant_reveal",
           "participant_train", "participant_validate"]  # fmt: skip

RECEIPT_MARK = "flock-receipt"
"""The first line of a receipt artifact; the JSON follows in a code block."""


def _open(card: str, data: str, key_env: str, state: str, rpc_url: str | None) -> Participant:
    return open_participant(Path(card), Path(data), key_env, Path(state), rpc_url)


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
    return _publish(p.receipt(p.train_and_submit(round_index, global_hash, get_run_logger())))


@flow(name="participant-validate")
def participant_validate(
    card: str, data: str, key_env: str, state: str, round_index: int,
    state_hash: str | None = None, rpc_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Recompute the aggregate, judge it on its own data, commit hash, score, contributions."""
    p = _open(card, data, key_env, state, rpc_url)
    p.verify_data()
    vote = p.validate_and_commit(round_index, state_hash, get_run_logger())
    return _publish({"committed": bool(vote), "hash": vote.get("hash")})


@flow(name="participant-reveal")
def participant_reveal(
    card: str, data: str, key_env: str, state: str, round_index: int, rpc_url: str | None = None
) -> dict[str, Any]:
    """Reveal what it committed."""
    p = _open(card, data, key_env, state, rpc_url)
    return _publish({"revealed": p.reveal(round_index)})


@flow(name="participant-claim")
def participant_claim(
    card: str, data: str, key_env: str, state: str, rpc_url: str | None = None
) -> dict[str, Any]:
    """Claim what the task owes it."""
    p = _open(card, data, key_env, state, rpc_url)
    return _publish({"claimed": str(p.claim())})


DUTIES = {
    "train": participant_train,
    "validate": participant_validate,
    "reveal": participant_reveal,
    "claim": participant_claim,
}
"""Duty -> the flow its worker serves."""
