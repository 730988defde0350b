"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum on the pseudo-gradient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flock_pipeline.aggregation.base import check_compatible, check_max_weight_share
from flock_pipeline.aggregation.fedopt import float_names, load_state, weighted_mean64
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedAvgM"]


@dataclass(frozen=True)
class FedAvgM(Strategy):
    """Δ = global − fedavg(updates); v = β·v + Δ; new = global − η·v (PyTorch SGD convention).

    v starts at zero, so round 1 has v = Δ as in Flower. State: ``momentum/<tensor>`` (float64).
    With ``momentum=0`` and ``server_lr=1`` this is FedAvg. ``max_weight_share`` bounds any one
    update's share of the mean (1: no bound).
    """

    server_lr: float = 1.0
    momentum: float = 0.9
    max_weight_share: float = 1.0

    name = "fedavgm"
    sample_weighted = True

    def __post_init__(self) -> None:
        check_max_weight_share(self.max_weight_share)
        if not self.server_lr > 0.0:
            raise ConfigError(f"server_lr must be > 0, got {self.server_lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        names = float_names(global_weights)
        prev = load_state(
            state, {f"momentum/{n}": global_weights[n].shape for n in names}, self.name
        )
        mean = weighted_mean64(updates, names, self.max_weight_share)
        weights: Weights = {}
        new_state: StrategyState = {}
        for name in sorted(global_weights):
            g = global_weights[name]
            if name not in mean:
                weights[name] = g.clone()
                continue
            g64 = g.to(torch.float64)
            pseudo_gradient = g64 - mean[name]
            v = pseudo_gradient
            if prev is not None:
                v = self.momentum * prev[f"momentum/{name}"] + pseudo_gradient
            weights[name] = (g64 - self.server_lr * v).to(g.dtype).contiguous()
            new_state[f"momentum/{name}"] = v
        return Aggregate(weights=weights, state=new_state)
