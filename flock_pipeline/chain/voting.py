"""Commit-reveal votes: fixed-point scores, salts and commitments matching FlockAlliance."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from decimal import Decimal

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from flock_pipeline.errors import ConfigError

__all__ = [
    "SCORE_SCALE",
    "from_fixed",
    "new_salt",
    "to_fixed",
    "validate_contributions",
    "vote_commitment",
]

SCORE_SCALE = 10**18
_INT128 = 2**127


def to_fixed(score: float | Decimal | int) -> int:
    """A metric change (e.g. +0.013 accuracy) as the contract's signed 18-decimal fixed point."""
    value = int((Decimal(str(score)) * SCORE_SCALE).to_integral_value())
    if not -_INT128 <= value < _INT128:
        raise ConfigError(f"score {score} does not fit a signed 128-bit fixed-point number")
    return value


def from_fixed(value: int) -> Decimal:
    """The inverse of to_fixed."""
    return Decimal(value) / SCORE_SCALE


def new_salt() -> bytes:
    """A fresh 32-byte secret for one commitment; keep it until the reveal."""
    return secrets.token_bytes(32)


def validate_contributions(
    contributions: Sequence[int], updates: int | None = None, *, accepting: bool = True
) -> tuple[int, ...]:
    """Contributions as revealVote accepts them, checked before anything is sent.

    Each must be an integer in [-SCORE_SCALE, SCORE_SCALE] (to_fixed of a value in [-1, 1]).
    With `updates` (the round's number of submitted updates) an accepting vote must carry
    exactly one per update, by submission index; a rejecting one (`accepting=False`) one per
    update or none. Raises ConfigError; returns them as a tuple.
    """
    values = tuple(contributions)
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"contribution {index} is {value!r}; use to_fixed() for an 18-decimal integer"
            )
        if not -SCORE_SCALE <= value <= SCORE_SCALE:
            raise ConfigError(
                f"contribution {index} is {from_fixed(value)}; it must lie in [-1, 1]"
                f" (fixed point {-SCORE_SCALE}..{SCORE_SCALE})"
            )
    if updates is not None and len(values) != updates and (accepting or values):
        raise ConfigError(
            f"{len(values)} contributions for {updates} submitted updates: an accepting vote "
            "needs one per update (by submission index), a rejecting one that many or none"
        )
    return values


def vote_commitment(
    task_id: int,
    round_: int,
    voter: str,
    score: int,
    salt: bytes,
    contributions: Sequence[int] = (),
) -> bytes:
    """keccak256(abi.encode(taskId, round, voter, score, contributions, salt)), as FlockAlliance
    checks it; `contributions` (int128[], one per update by submission index) may be empty."""
    return keccak(
        encode(
            ["uint256", "uint256", "address", "int128", "int128[]", "bytes32"],
            [task_id, round_, to_checksum_address(voter), score, list(contributions), salt],
        )
    )
