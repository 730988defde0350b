"""What each update contributed to a round, as one voter measures it.

A voter scores every update of the round, in submission order (the order the contract indexes
them), on its own held-out data:

- an update the screen flagged (free rider, copy, norm outlier, opposed; see
  ``flock_pipeline.aggregation.screen``) scores :data:`PENALTY` (-1);
- any other update scores its leave-one-out gain: ``metric(aggregate of all) - metric(aggregate
  without it)``, clamped to [-1, 1]. The aggregate without it is computed exactly as the round's
  (same strategy, state, seed and screen) over the updates the screen kept: what the round would
  have been without it.

The contract (``FlockAlliance.revealVote``) takes the stake-weighted mean of the accepting
voters' scores per update: a proposer of an accepted round is paid ``stake x max(0, mean)`` pro
rata. A score of exactly -1 is a flag: a proposer flagged by more than half of the stake of the
voters that posted scores (accepting or rejecting) is slashed at the task's ``penaltyBps`` and
paid nothing, whether the round is accepted or rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flock_pipeline.aggregation import Aggregate, Strategy, StrategyState
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.errors import AggregationError
from flock_pipeline.round import aggregate
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["PENALTY", "contributions"]

PENALTY = -1.0
"""The score of a flagged update: the most negative the contract accepts."""


def contributions(
    strategy: Strategy,
    updates: Sequence[Update],
    global_weights: Weights,
    state: StrategyState | None,
    seed: int,
    screen: Screen | None,
    metric: Callable[[Weights], float],
    full: Aggregate | None = None,
) -> list[float]:
    """One score per update of ``updates`` (submission order); ``metric`` is the voter's
    validation metric (higher is better; the flows use minus the held-out loss, which is
    continuous where accuracy on a small held-out set often does not move at all). ``full``
    is the round's aggregate if the caller has it already."""
    if full is None:
        full = aggregate(strategy, updates, global_weights, state, seed, screen)
    with_all = metric(full.weights)
    kept = [v for v in updates if v.participant not in full.flagged]
    out = []
    for u in updates:
        if u.participant in full.flagged:
            out.append(PENALTY)
            continue
        # Flagged updates stay out: a copy must not stand in for the update it copied.
        rest = [v for v in kept if v.participant != u.participant]
        try:
            without = aggregate(strategy, rest, global_weights, state, seed, screen).weights
        except AggregationError:
            # The rule cannot run on one update fewer (e.g. Bulyan's n >= 4f + 3): without
            # this update there would have been no step at all.
            without = global_weights
        gain = with_all - metric(without)
        out.append(min(1.0, max(-1.0, gain)))
    return out
