"""Vote-level attack: a dishonest voter votes against what it measured."""

from __future__ import annotations

from flock_pipeline.attacks.spec import AttackSpec

__all__ = ["VOTE_RESOLUTION", "tamper_contributions", "tamper_score"]

VOTE_RESOLUTION = 1e-6
"""Smallest score the flows keep (they round to 6 decimals before the fixed-point vote)."""


def tamper_score(score: float, spec: AttackSpec | None) -> float:
    """The score a participant actually votes: ``-score`` for a ``dishonest_voter``.

    A measurement smaller than :data:`VOTE_RESOLUTION` in magnitude (including 0) would vanish
    in rounding, so the dishonest voter votes ``-VOTE_RESOLUTION`` (a strict reject) instead.
    Every other spec returns ``score`` unchanged.
    """
    if spec is None or spec.kind != "dishonest_voter":
        return score
    if abs(score) < VOTE_RESOLUTION:
        return -VOTE_RESOLUTION
    return -score


def tamper_contributions(scores: list[float], spec: AttackSpec | None) -> list[float]:
    """The contribution scores a participant actually reveals: a ``dishonest_voter`` negates
    each one (it rewards the flagged and harmful updates and penalizes the useful ones)."""
    if spec is None or spec.kind != "dishonest_voter":
        return list(scores)
    return [-s for s in scores]
