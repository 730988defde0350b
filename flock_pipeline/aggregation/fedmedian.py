"""FedMedian (Yin et al. 2018): the coordinate-wise median of the participants' weights.

Also home of ``coordinatewise``, the loop every coordinate-wise rule (median, trimmed mean,
Bulyan) shares: stack one tensor of every update in the canonical order, in float64, reduce over
the update axis, round once. Non-float tensors (counters) are copied from the global model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedMedian", "coordinate_median", "coordinatewise"]

Reduction = Callable[[torch.Tensor], torch.Tensor]
"""Maps a float64 stack of shape (updates, *tensor shape) to one tensor of the tensor shape."""


def coordinatewise(
    updates: Sequence[Update], global_weights: Weights, reduce: Reduction
) -> Weights:
    """Apply ``reduce`` to every floating-point tensor across ``updates`` (already checked)."""
    canonical = ordered(updates)
    out: Weights = {}
    for name in sorted(global_weights):
        g = global_weights[name]
        if not g.is_floating_point():
            out[name] = g.clone()
            continue
        stack = torch.stack([u.weights[name].to(torch.float64) for u in canonical])
        out[name] = reduce(stack).to(g.dtype).contiguous()
    return out


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Median over dim 0; for an even count, the mean of the two middle values.

    ``torch.median`` returns the lower middle value instead, which biases the aggregate and
    differs from NumPy's (and Flower's) median.
    """
    ranked = torch.sort(stack, dim=0).values
    n = ranked.shape[0]
    if n % 2:
        return ranked[n // 2]
    return (ranked[n // 2 - 1] + ranked[n // 2]) / 2


@dataclass(frozen=True)
class FedMedian(Strategy):
    """Coordinate-wise median, unweighted (sample counts are not trusted by a robust rule)."""

    keeps_state: ClassVar[bool] = False

    name = "fedmedian"
    order_statistic = True

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        return Aggregate(weights=coordinatewise(updates, global_weights, coordinate_median))
