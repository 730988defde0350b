"""Commit-reveal votes: fixed-point scores, salts and commitments matching FlockAlliance."""

from __future__ import annotations

import secrets
from decimal import Decimal

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from flock_pipeline.errors import ConfigError

__all__ = ["SCORE_SCALE", "from_fixed", "new_salt", "to_fixed", "vote_commitment"]

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


def vote_commitment(task_id: int, round_: int, voter: str, score: int, salt: bytes) -> bytes:
    """keccak256(abi.encode(taskId, round, voter, score, salt)), as FlockAlliance checks it."""
    return keccak(
        encode(
            ["uint256", "uint256", "address", "int128", "bytes32"],
            [task_id, round_, to_checksum_address(voter), score, salt],
        )
    )
