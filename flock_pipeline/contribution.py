"""What each update contributed to a round, as one voter measures it.

A voter scores every update of the round, in submission order (the order the contract indexes
them), on its own held-out data:

- an update the screen flagged as a free rider or a copy (see
  ``flock_pipeline.aggregation.screen``) scores :data:`PENALTY` (-1). Both are facts anyone can
  check from the committed updates (a zero delta; the same delta as an earlier submission);
- so does an invalid update (``invalid:<reason>``, ``flock_pipeline.validity``: no bytes, not
  safetensors, wrong tensors, shapes or dtypes, NaN or infinity): it never reaches the screen
  or the strategy, and :func:`submission_scores` puts its -1 at its place in submission order;
- an update the screen excluded otherwise (``distrusted``, ``norm_outlier``, ``opposed``) is
  left out of the aggregate and earns nothing, but it is not penalized, because on strongly
  skewed data an honest update can look like one. It scores the harm it would have done,
  ``min(0, gain)``, where ``gain`` is the relative gain in held-out loss of the aggregate with it
  added over the round's: 0 when it would have helped, negative when it would have hurt. These
  scores are what the screen's trust check (``min_trust``) averages over a proposer's rounds;
- any other update scores its relative leave-one-out gain in held-out loss,
  ``(L_without - L_all) / max(L_without, L_all)``, where ``L_all`` is the loss of the round's
  aggregate and ``L_without`` that of the aggregate without it, computed exactly as the round's
  (same strategy, state and seed; the screen's exclusions stand and still count against a robust
  rule's ``num_malicious``) over the other updates the screen kept: what the round would have
  been without it. Relative, so the score means the same early in training (losses of
  several nats) as late; it lies in (-1, 1) and is clamped to [-1 + 1e-6, 1], so that only a
  flag is ever exactly -1.

Under an order-statistic rule (``Strategy.order_statistic``: median, trimmed mean, Krum,
Multi-Krum, Bulyan) the aggregate is the unweighted mean of the kept updates instead, for the
scores only (the round itself still runs its rule). Such a rule is built so that no single update
moves its output much, and what leaving one out does move is an artefact of the ranks: the median
steps to the other middle value, the trimmed mean trims one update fewer on each side, Krum picks
another update. Measured on Fashion-MNIST Dirichlet(0.5), those artefacts gave honest updates
the scores of an attacker round after round (under the trimmed mean every leave-one-out trimmed
less and so looked better), and the trust check left them out. Against the mean, an update scores
what it adds to the consensus of the round, the same for every rule. Under central DP the mean
carries no clipping or noise: the voters score the updates, not the release.

The contract (``FlockAlliance.revealVote``) takes the stake-weighted mean of the accepting
voters' scores per update: a proposer of an accepted round is paid ``stake x max(0, mean)`` pro
rata. A score of exactly -1 is a flag: a proposer flagged by more than half of the stake of the
voters that posted scores (accepting or rejecting) is slashed at the task's ``penaltyBps`` and
paid nothing, whether the round is accepted or rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from flock_pipeline.aggregation import (
    Aggregate,
    CentralDP,
    Strategy,
    StrategyState,
    check_compatible,
)
from flock_pipeline.aggregation.fedmedian import coordinatewise
from flock_pipeline.aggregation.screen import History, Screen
from flock_pipeline.errors import AggregationError
from flock_pipeline.round import aggregate, aggregate_kept
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update
from flock_pipeline.validity import Checked, is_invalid

__all__ = [
    "LOWEST_SCORE",
    "PENALIZED_REASONS",
    "PENALTY",
    "UpdateMean",
    "contribution_table",
    "contributions",
    "is_penalized",
    "scoring_rule",
    "submission_scores",
]

PENALIZED_REASONS = ("free_rider", "copy")
"""Screen flags that cost the proposer its stake; the other flags only exclude the update
(besides every ``invalid:<reason>``, see :func:`is_penalized`)."""

PENALTY = -1.0
"""The score of a flagged update: the most negative the contract accepts, and the only score
the contract counts as a flag."""

LOWEST_SCORE = -1.0 + 1e-6
"""The lowest score a measured (unflagged) update can get: one fixed-point step above a flag
after the flows round scores to 6 decimals."""


def is_penalized(reason: str | None) -> bool:
    """Whether a flag costs the proposer its stake: a free rider, a copy, an invalid update."""
    return reason in PENALIZED_REASONS or is_invalid(reason)


def submission_scores(checked: Checked, scores: Sequence[float]) -> list[float]:
    """One score per committed update in submission order: ``scores`` (one per valid update,
    as :func:`contributions` gives them) with :data:`PENALTY` at every invalid update's place."""
    valid = iter(scores)
    out = [PENALTY if pid in checked.invalid else next(valid) for pid in checked.order]
    if next(valid, None) is not None:
        raise ValueError("more scores than valid updates")
    return out


class UpdateMean(Strategy):
    """The unweighted coordinate-wise mean of the updates: what an order-statistic rule's
    updates are scored against (:func:`scoring_rule`)."""

    name = "mean"

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        mean = coordinatewise(updates, global_weights, lambda stack: stack.mean(dim=0))
        return Aggregate(weights=mean, state=dict(state or {}))


def scoring_rule(strategy: Strategy) -> Strategy:
    """The rule the leave-one-out scores rerun: the round's own, or :class:`UpdateMean` when the
    round's rule (under central DP, its inner rule) is an order-statistic rule."""
    inner = strategy.inner if isinstance(strategy, CentralDP) else strategy
    return UpdateMean() if inner.order_statistic else strategy


def contributions(
    strategy: Strategy,
    updates: Sequence[Update],
    global_weights: Weights,
    state: StrategyState | None,
    seed: int,
    screen: Screen | None,
    loss: Callable[[Weights], float],
    full: Aggregate | None = None,
    history: History | None = None,
    invalid: Mapping[str, str] | None = None,
) -> list[float]:
    """One score per update of ``updates`` (submission order). ``loss`` is the voter's
    validation loss (non-negative, lower is better: the flows use the held-out cross-entropy,
    which moves where accuracy on a small held-out set often does not). ``full`` is the
    round's aggregate if the caller has it already; ``history`` the screen's trust input and
    ``invalid`` the round's invalid updates, as the round's aggregate was computed with them.
    Only the valid ``updates`` are scored (see :func:`submission_scores`)."""
    table = contribution_table(
        strategy, updates, global_weights, state, seed, screen, {"": loss}, full, history,
        invalid,
    )  # fmt: skip
    return table[""]


def contribution_table(
    strategy: Strategy,
    updates: Sequence[Update],
    global_weights: Weights,
    state: StrategyState | None,
    seed: int,
    screen: Screen | None,
    losses: Mapping[str, Callable[[Weights], float]],
    full: Aggregate | None = None,
    history: History | None = None,
    invalid: Mapping[str, str] | None = None,
) -> dict[str, list[float]]:
    """:func:`contributions` for several voters at once (voter -> its loss): every
    counterfactual aggregate is computed once and evaluated by each voter."""
    if full is None:
        full = aggregate(strategy, updates, global_weights, state, seed, screen, history, invalid)
    kept = [v for v in updates if v.participant not in full.flagged]
    rule = scoring_rule(strategy)
    if rule is not strategy:
        full = aggregate_kept(rule, kept, global_weights, state, seed, full.flagged)
        strategy = rule
    with_all = {v: loss(full.weights) for v, loss in losses.items()}
    out: dict[str, list[float]] = {v: [] for v in losses}
    for u in updates:
        reason = full.flagged.get(u.participant)
        if is_penalized(reason):
            for v in losses:
                out[v].append(PENALTY)
            continue
        if reason is not None:
            # Excluded: what adding it back (alone, in submission order) would have done.
            added = [v for v in updates if v.participant not in full.flagged or v is u]
            rest = {k: r for k, r in full.flagged.items() if k != u.participant}
            try:
                other = aggregate_kept(strategy, added, global_weights, state, seed, rest).weights
            except AggregationError:
                other = None
            for v, loss in losses.items():
                gain = 0.0 if other is None else _relative_gain(with_all[v], loss(other))
                out[v].append(min(0.0, gain))
            continue
        # The round's exclusions stand (a copy must not stand in for the update it copied)
        # and still count against the rule's num_malicious, as they did in the round.
        rest_kept = [v for v in kept if v.participant != u.participant]
        try:
            without = aggregate_kept(
                strategy, rest_kept, global_weights, state, seed, full.flagged
            ).weights
        except AggregationError:
            # The rule cannot run on one update fewer (e.g. Bulyan's n >= 4f + 3): without
            # this update there would have been no step at all.
            without = global_weights
        for v, loss in losses.items():
            out[v].append(_relative_gain(loss(without), with_all[v]))
    return out


def _relative_gain(without: float, with_it: float) -> float:
    """(without - with) / max(without, with), in [LOWEST_SCORE, 1]; 0 when both are 0, and
    the worst score when a loss is not finite."""
    if not (math.isfinite(without) and math.isfinite(with_it)):
        return 1.0 if math.isfinite(with_it) else LOWEST_SCORE
    scale = max(without, with_it)
    gain = 0.0 if scale <= 0 else (without - with_it) / scale
    return min(1.0, max(LOWEST_SCORE, gain))
