"""Bulyan (El Mhamdi et al. 2018): Krum selection, then a trimmed mean around the median.

1. Select θ = n − 2f updates by repeated Krum: pick the best-scoring update, remove it from the
   pool, rescore the rest (scores count neighbours within the remaining pool only).
2. Per coordinate, average the β = θ − 2f selected values closest to their median (even counts
   use the mean of the two middle values). Distance ties go to the smaller value.

Flower runs one Multi-Krum pass for step 1; we follow the paper's repeated Krum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.fedmedian import coordinate_median, coordinatewise
from flock_pipeline.aggregation.fedopt import float_names
from flock_pipeline.aggregation.krum import krum_scores, squared_distances
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["Bulyan", "closest_to_median_mean"]


def closest_to_median_mean(stack: torch.Tensor, beta: int) -> torch.Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the median (dim 0)."""
    ranked = torch.sort(stack, dim=0).values
    distance = (ranked - coordinate_median(ranked)).abs()
    # Stable sort over value-sorted rows: equal distances keep the smaller value first.
    nearest = torch.argsort(distance, dim=0, stable=True)[:beta]
    return torch.take_along_dim(ranked, nearest, dim=0).mean(dim=0)


@dataclass(frozen=True)
class Bulyan(Strategy):
    """Bulyan with ``num_malicious`` = f; needs n ≥ 4f + 3 updates.

    ``Aggregate.selected`` lists the θ participants Krum chose, in the order they were picked.
    """

    keeps_state: ClassVar[bool] = False

    num_malicious: int = 0

    name = "bulyan"
    order_statistic = True

    def __post_init__(self) -> None:
        if self.num_malicious < 0:
            raise ConfigError(f"num_malicious must be >= 0, got {self.num_malicious}")

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        f, n = self.num_malicious, len(updates)
        if n < 4 * f + 3:
            raise AggregationError(
                f"Bulyan with num_malicious={f} needs at least 4f + 3 = {4 * f + 3} updates, "
                f"got {n}; lower num_malicious or wait for more participants"
            )
        canonical = ordered(updates)
        distances = squared_distances(canonical, float_names(global_weights))
        pool, picked = list(range(n)), []
        for _ in range(n - 2 * f):
            scores = krum_scores(distances, pool, f)
            best = min(range(len(pool)), key=lambda k: (scores[k], pool[k]))
            picked.append(pool.pop(best))
        chosen = [canonical[i] for i in picked]
        beta = len(chosen) - 2 * f
        weights = coordinatewise(chosen, global_weights, lambda s: closest_to_median_mean(s, beta))
        return Aggregate(weights=weights, selected=tuple(u.participant for u in chosen))
