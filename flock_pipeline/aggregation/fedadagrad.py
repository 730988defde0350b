"""FedAdagrad (Reddi et al. 2021): Adagrad on the server, v accumulates every Δ²."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flock_pipeline.aggregation.fedopt import FedOpt

__all__ = ["FedAdagrad"]


@dataclass(frozen=True)
class FedAdagrad(FedOpt):
    """v = v + Δ². Like Flower, β1 defaults to 0 (m = Δ); β2 plays no part."""

    beta_1: float = 0.0
    beta_2: float = field(default=0.0, init=False)

    name = "fedadagrad"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return v + delta.square()
