"""FedAvg (McMahan et al. 2017): the sample-weighted mean of the participants' weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from flock_pipeline.aggregation.base import (
    capped_shares,
    check_compatible,
    check_max_weight_share,
    ordered,
)
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedAvg", "fedavg"]


def fedavg(
    updates: Sequence[Update],
    reference: Mapping[str, torch.Tensor] | None = None,
    max_weight_share: float = 1.0,
) -> Weights:
    """Sample-weighted mean, bit-for-bit the same for any order of ``updates``; no update
    carries more than ``max_weight_share`` of the weight (``capped_shares``).

    ``reference`` (usually the current global model) fixes the expected architecture.
    """
    check_compatible(updates, reference)
    canonical = ordered(updates)
    shares = capped_shares([u.num_samples for u in canonical], max_weight_share)
    total = sum(u.num_samples for u in canonical)
    out: Weights = {}
    for name in sorted(canonical[0].weights):
        # Summed in float64: a mixed-dtype add_ computes in the accumulator's dtype, so no
        # float64 copy of each update is made (the bits are those of adding the copy).
        acc = torch.zeros_like(canonical[0].weights[name], dtype=torch.float64)
        if shares is None:
            for u in canonical:
                acc.add_(u.weights[name], alpha=u.num_samples)
            acc = acc / total
        else:
            for u, share in zip(canonical, shares, strict=True):
                acc.add_(u.weights[name], alpha=share)
        out[name] = acc.to(canonical[0].weights[name].dtype).contiguous()
    return out


@dataclass(frozen=True)
class FedAvg(Strategy):
    """FedAvg (McMahan et al. 2017) as a stateless strategy; exactly ``fedavg()``.

    ``max_weight_share`` bounds any one update's share of the weight (1: plain FedAvg); the
    engines set it from ``aggregation.max_weight_share``."""

    keeps_state: ClassVar[bool] = False

    max_weight_share: float = 1.0

    name = "fedavg"
    sample_weighted = True

    def __post_init__(self) -> None:
        check_max_weight_share(self.max_weight_share)

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        return Aggregate(weights=fedavg(updates, global_weights, self.max_weight_share))
