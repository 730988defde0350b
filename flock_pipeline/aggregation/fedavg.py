"""FedAvg (McMahan et al. 2017): the sample-weighted mean of the participants' weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedAvg", "fedavg"]


def fedavg(
    updates: Sequence[Update], reference: Mapping[str, torch.Tensor] | None = None
) -> Weights:
    """Sample-weighted mean, bit-for-bit the same for any order of ``updates``.

    ``reference`` (usually the current global model) fixes the expected architecture.
    """
    check_compatible(updates, reference)
    canonical = ordered(updates)
    total = sum(u.num_samples for u in canonical)
    out: Weights = {}
    for name in sorted(canonical[0].weights):
        acc = torch.zeros_like(canonical[0].weights[name], dtype=torch.float64)
        for u in canonical:
            acc.add_(u.weights[name].to(torch.float64), alpha=u.num_samples)
        out[name] = (acc / total).to(canonical[0].weights[name].dtype).contiguous()
    return out


@dataclass(frozen=True)
class FedAvg(Strategy):
    """FedAvg (McMahan et al. 2017) as a stateless strategy; exactly ``fedavg()``."""

    name = "fedavg"

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        return Aggregate(weights=fedavg(updates, reference=global_weights))
