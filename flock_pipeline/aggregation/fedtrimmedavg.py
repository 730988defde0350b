"""FedTrimmedAvg (Yin et al. 2018): the coordinate-wise trimmed mean of the weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from flock_pipeline.aggregation.base import check_compatible
from flock_pipeline.aggregation.fedmedian import coordinatewise
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedTrimmedAvg", "trimmed_mean"]


def trimmed_mean(stack: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over dim 0 after dropping ``int(beta·n)`` values from each end (as Flower and SciPy)."""
    n = stack.shape[0]
    cut = int(beta * n)
    ranked = torch.sort(stack, dim=0).values
    return ranked[cut : n - cut].mean(dim=0)


@dataclass(frozen=True)
class FedTrimmedAvg(Strategy):
    """Per coordinate, drop the ``beta`` fraction of smallest and of largest values, average the
    rest, unweighted. With ``int(beta·n) == 0`` (few updates) it is the plain mean."""

    keeps_state: ClassVar[bool] = False

    beta: float = 0.2

    name = "fedtrimmedavg"
    order_statistic = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise ConfigError(f"beta must be in [0, 0.5), got {self.beta}")

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        weights = coordinatewise(updates, global_weights, lambda s: trimmed_mean(s, self.beta))
        return Aggregate(weights=weights)
