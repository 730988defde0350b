"""A vote's encoding: fixed-point scores, salts and the commitment FlockAlliance checks."""

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
    "validate_score",
    "vote_commitment",
]

SCORE_SCALE = 10**18
_INT128 = 2**127


def to_fixed(score: float | Decimal | int) -> int:
    """A score (e.g. +0.013) as the contract's signed 18-decimal fixed point."""
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


def _check_fixed(value: object, what: str) -> int:
    """An integer in [-SCORE_SCALE, SCORE_SCALE], the only values revealVote takes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} is {value!r}; use to_fixed() for an 18-decimal integer")
    if not -SCORE_SCALE <= value <= SCORE_SCALE:
        raise ConfigError(
            f"{what} is {from_fixed(value)}; it must lie in [-1, 1]"
            f" (fixed point {-SCORE_SCALE}..{SCORE_SCALE})"
        )
    return value


def validate_score(score: int) -> int:
    """The score as revealVote accepts it (in [-1, 1] fixed point); raises ConfigError.

    Checked before the commit: a commitment that cannot be revealed is slashed.
    """
    return _check_fixed(score, "score")


def validate_contributions(
    contributions: Sequence[int], updates: int | None = None, *, accepting: bool = True
) -> tuple[int, ...]:
    """Contributions as revealVote accepts them, checked before anything is sent.

    Each must be an integer in [-SCORE_SCALE, SCORE_SCALE] (to_fixed of a value in [-1, 1]).
    With `updates` (the round's number of submitted updates) an accepting vote must carry
    exactly one per update, by submission index; a rejecting one (`accepting=False`) one per
    update or none. Raises ConfigError; returns them as a tuple.
    """
    values = tuple(_check_fixed(v, f"contribution {i}") for i, v in enumerate(contributions))
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
    aggregate_hash: bytes,
    score: int,
    salt: bytes,
    contributions: Sequence[int] = (),
) -> bytes:
    """keccak256(abi.encode(taskId, round, voter, aggregateHash, score, contributions, salt)),
    as FlockAlliance checks it; `contributions` (int128[], one per update by submission index)
    may be empty."""
    return keccak(
        encode(
            ["uint256", "uint256", "address", "bytes32", "int128", "int128[]", "bytes32"],
            [
                task_id,
                round_,
                to_checksum_address(voter),
                aggregate_hash,
                score,
                list(contributions),
                salt,
            ],
        )
    )
