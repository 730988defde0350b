"""Screening: updates that are provably useless or plainly hostile never reach the strategy.

Before any strategy runs, the round's updates (in submission order) are checked against the
current global model and against each other. An update is *flagged*, with a reason, when it is

- ``free_rider``: its delta (update - global) is zero, or smaller than ``free_rider_rtol`` times
  the global model's norm: it trained nothing;
- ``copy``: its delta is within ``duplicate_rtol`` of the delta of an update submitted *earlier*
  in the round (the first submitter keeps its update; the later one copied it);
- ``distrusted``: its proposer's *trust* is below ``min_trust``. Trust is the mean, over the
  earlier rounds it was scored in (at least ``trust_rounds`` of them), of its contribution
  divided by that round's mean absolute contribution (``history``: the validators' contribution
  scores of earlier rounds, see ``flock_pipeline.contribution``). Dividing by the round's scale
  makes it mean the same whether a round moves the loss by 10 % or by 0.1 %: -1 is an update
  that hurt as much as a typical update of its round helped or hurt. This is trust carried across
  rounds: an update poisoned at its source (trained on flipped labels) looks like an honest
  update from skewed data to any check of one round's geometry, but it hurts the validators'
  held-out loss round after round;
- ``norm_outlier``: its delta's L2 norm exceeds ``max_norm_ratio`` times the median delta norm of
  the round (a boosted or noise update);
- ``opposed``: the cosine between its delta and the coordinate-wise median delta is below
  ``min_cosine`` (it pulls against what the round agrees on: a sign-flipped update).

The last two need a consensus to compare with, so they run only when at least ``min_updates``
updates remain after the first three. Everything here is a pure function of the committed
updates, the global weights and the history (in the flows: the contributions revealed on chain),
in float64, so every voter flags exactly the same updates. Flagged updates are excluded from the
aggregate. Free riders and copies are also penalized (voters score
them -1, which the contract turns into a slash, see ``flock_pipeline.contribution``); the two
statistical flags and distrust only exclude, since on strongly skewed data an honest update can
trip them. An excluded update is still scored, by what adding it would have done, and only its
harm is kept (``min(0, gain)``): a distrusted proposer whose updates stop hurting climbs back
to ``min_trust`` and is let in again; one that keeps hurting stays out.

The thresholds are loose (honest Fashion-MNIST Dirichlet(0.5) updates measure 0.6-2x the median
norm and +0.08..+0.67 cosine), so that an honest update is rarely left out. ``min_trust`` is
not as clean: label-flipping proposers on that split score about -0.7..-4 a round, but so can an
honest proposer whose classes few validators hold (its update raises most of their held-out
losses), and the check leaves it out too. That is its cost; ``min_trust=None`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from flock_pipeline.attacks.detection import flat_delta, is_free_rider, near_duplicates
from flock_pipeline.errors import ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FLAG_REASONS", "History", "Screen", "ScreenResult"]

FLAG_REASONS = ("free_rider", "copy", "distrusted", "norm_outlier", "opposed")

History = Sequence[Mapping[str, float]]
"""One mapping per earlier scored round, oldest first: proposer -> the contribution score of its
update (in the flows, the stake-weighted mean over every voter that revealed contributions in
that round, accepting or rejecting)."""


@dataclass(frozen=True)
class ScreenResult:
    """Updates that pass (submission order kept) and the flagged ones with their reason."""

    kept: list[Update]
    flagged: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Screen:
    """The screening rule; ``None`` for a threshold turns that check off."""

    free_rider_rtol: float | None = 1e-7
    duplicate_rtol: float | None = 1e-6
    max_norm_ratio: float | None = 5.0
    min_cosine: float | None = 0.0
    min_updates: int = 3
    min_trust: float | None = -1.0
    trust_rounds: int = 2

    def __post_init__(self) -> None:
        for name in ("free_rider_rtol", "duplicate_rtol", "max_norm_ratio"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"screen: {name} must be >= 0 or None, got {value}")
        if self.max_norm_ratio is not None and self.max_norm_ratio < 1:
            raise ConfigError(f"screen: max_norm_ratio must be >= 1, got {self.max_norm_ratio}")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise ConfigError(f"screen: min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.min_trust is not None and self.min_trust > 0:
            raise ConfigError(
                f"screen: min_trust must be <= 0 (a proposer is distrusted for harm, not for "
                f"helping too little), got {self.min_trust}"
            )
        if self.trust_rounds < 1:
            raise ConfigError(f"screen: trust_rounds must be >= 1, got {self.trust_rounds}")
        if self.min_updates < 2:
            raise ConfigError(f"screen: min_updates must be >= 2, got {self.min_updates}")

    def trust(self, history: History | None, participant: str) -> float | None:
        """The participant's mean earlier contribution, each in units of its round's mean
        absolute contribution; None before ``trust_rounds`` such rounds (a single round's score
        is too noisy to exclude anyone on). Rounds where every score is 0 say nothing."""
        return self.trusts(history).get(participant)

    def trusts(self, history: History | None) -> dict[str, float]:
        """:meth:`trust` of every participant that has one, each round's scale computed once."""
        scores: dict[str, list[float]] = {}
        for scored in history or ():
            scale = sum(abs(v) for v in scored.values()) / len(scored) if scored else 0.0
            if scale > 0:
                for pid, value in scored.items():
                    scores.setdefault(pid, []).append(value / scale)
        return {
            pid: sum(mine) / len(mine)
            for pid, mine in scores.items()
            if len(mine) >= self.trust_rounds
        }

    def __call__(
        self, updates: Sequence[Update], global_weights: Weights, history: History | None = None
    ) -> ScreenResult:
        """Flag updates in submission order; the rest are kept in that order. ``history``
        (earlier rounds' contribution scores) feeds the ``distrusted`` check."""
        names = sorted(k for k, v in global_weights.items() if v.is_floating_point())
        seen: set[str] = set()
        for u in updates:
            if u.participant in seen:
                raise ConfigError(f"screen: participant {u.participant!r} submitted twice")
            seen.add(u.participant)
            if set(u.weights) != set(global_weights) or any(
                u.weights[n].shape != global_weights[n].shape for n in names
            ):
                raise ConfigError(
                    f"screen: the update of {u.participant!r} does not match the global model's "
                    "tensors (names or shapes)"
                )
        flagged: dict[str, str] = {}
        if self.free_rider_rtol is not None:
            for u in updates:
                if is_free_rider(u, global_weights, rtol=self.free_rider_rtol):
                    flagged[u.participant] = "free_rider"
        if self.duplicate_rtol is not None:
            # Of each near-identical pair, the later submission is the copy.
            position = {u.participant: i for i, u in enumerate(updates)}
            rest = [u for u in updates if u.participant not in flagged]
            for a, b in near_duplicates(rest, self.duplicate_rtol, global_weights):
                flagged[max(a, b, key=position.__getitem__)] = "copy"
        if self.min_trust is not None and history:
            trusts = self.trusts(history)
            for u in updates:
                trust = trusts.get(u.participant)
                if u.participant not in flagged and trust is not None and trust < self.min_trust:
                    flagged[u.participant] = "distrusted"
        deltas = {
            u.participant: flat_delta(u.weights, names, global_weights)
            for u in updates
            if u.participant not in flagged
        }
        if len(deltas) >= self.min_updates and (
            self.max_norm_ratio is not None or self.min_cosine is not None
        ):
            ids = list(deltas)
            stacked = torch.stack([deltas[i] for i in ids])
            norms = torch.linalg.vector_norm(stacked, dim=1)
            median_norm = float(norms.median())
            consensus = stacked.median(dim=0).values
            consensus_norm = float(torch.linalg.vector_norm(consensus))
            for k, pid in enumerate(ids):
                n = float(norms[k])
                if self.max_norm_ratio is not None and n > self.max_norm_ratio * median_norm:
                    flagged[pid] = "norm_outlier"
                elif self.min_cosine is not None and n > 0 and consensus_norm > 0:
                    cos = float(stacked[k] @ consensus) / (n * consensus_norm)
                    if cos < self.min_cosine:
                        flagged[pid] = "opposed"
        kept = [u for u in updates if u.participant not in flagged]
        return ScreenResult(kept=kept, flagged=flagged)
