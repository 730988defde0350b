"""Krum and Multi-Krum (Blanchard et al. 2017): keep the updates closest to their neighbours.

An update's score is the sum of squared L2 distances (over all floating-point tensors) to its
``n − f − 2`` nearest other updates; a boosted or far-off update scores high. Ties are broken by
the canonical order, so the choice is the same for every voter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from flock_pipeline.aggregation.base import check_compatible, check_max_weight_share, ordered
from flock_pipeline.aggregation.fedavg import fedavg
from flock_pipeline.aggregation.fedopt import float_names
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["Krum", "MultiKrum", "krum_scores", "squared_distances"]


def squared_distances(canonical: Sequence[Update], names: Sequence[str]) -> list[list[float]]:
    """Pairwise squared L2 distances in float64, computed directly (no ‖x‖²+‖y‖²−2xy)."""
    flat = [
        torch.cat([u.weights[n].to(torch.float64).flatten() for n in names])
        if names
        else torch.zeros(0, dtype=torch.float64)
        for u in canonical
    ]
    d = [[0.0] * len(flat) for _ in flat]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            d[i][j] = d[j][i] = float((flat[i] - flat[j]).square().sum())
    return d


def krum_scores(distances: list[list[float]], among: Sequence[int], f: int) -> list[float]:
    """Krum score of each index in ``among``, counting only neighbours within ``among``.

    Uses ``max(1, n − f − 2)`` neighbours like Flower (fewer if there are not that many).
    """
    k = min(max(1, len(among) - f - 2), len(among) - 1)
    scores = []
    for i in among:
        nearest = sorted(distances[i][j] for j in among if j != i)[:k]
        scores.append(math.fsum(nearest))
    return scores


@dataclass(frozen=True)
class MultiKrum(Strategy):
    """Multi-Krum: the sample-weighted mean (as Flower) of the ``num_to_keep`` best-scoring updates.

    ``num_malicious`` is f; ``num_to_keep`` (m) defaults to ``n − f`` and is clamped to [1, n].
    ``Aggregate.selected`` lists the kept participants, best score first; ``metrics`` holds every
    participant's score as ``krum_score/<participant>``. ``max_weight_share`` bounds any one
    kept update's share of that mean (1: no bound).
    """

    keeps_state: ClassVar[bool] = False

    num_malicious: int = 0
    num_to_keep: int | None = None
    max_weight_share: float = 1.0

    name = "multikrum"
    order_statistic = True
    sample_weighted = True

    def __post_init__(self) -> None:
        check_max_weight_share(self.max_weight_share)
        if self.num_malicious < 0:
            raise ConfigError(f"num_malicious must be >= 0, got {self.num_malicious}")
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ConfigError(f"num_to_keep must be >= 1, got {self.num_to_keep}")

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        canonical = ordered(updates)
        n = len(canonical)
        distances = squared_distances(canonical, float_names(global_weights))
        scores = krum_scores(distances, range(n), self.num_malicious)
        keep = self.num_to_keep if self.num_to_keep is not None else n - self.num_malicious
        ranking = sorted(range(n), key=lambda i: (scores[i], i))
        chosen = [canonical[i] for i in ranking[: min(max(keep, 1), n)]]
        mean = fedavg(chosen, global_weights, self.max_weight_share)
        weights = {
            name: mean[name] if g.is_floating_point() else g.clone()
            for name, g in sorted(global_weights.items())
        }
        return Aggregate(
            weights=weights,
            selected=tuple(u.participant for u in chosen),
            metrics={
                f"krum_score/{u.participant}": s for u, s in zip(canonical, scores, strict=True)
            },
        )


@dataclass(frozen=True)
class Krum(MultiKrum):
    """Krum: the single update with the lowest score becomes the new global model."""

    num_to_keep: int | None = field(default=1, init=False)

    name = "krum"
