"""Commit-reveal votes; the encoding lives in flock_pipeline.protocol.vote."""

from __future__ import annotations

from flock_pipeline.protocol.vote import (
    SCORE_SCALE,
    from_fixed,
    new_salt,
    to_fixed,
    validate_contributions,
    validate_score,
    vote_commitment,
)

__all__ = [
    "SCORE_SCALE",
    "from_fixed",
    "new_salt",
    "to_fixed",
    "validate_contributions",
    "validate_score",
    "vote_commitment",
]
