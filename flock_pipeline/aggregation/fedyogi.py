"""FedYogi (Reddi et al. 2021): Yogi on the server, v grows or shrinks additively."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flock_pipeline.aggregation.fedopt import FedOpt

__all__ = ["FedYogi"]


@dataclass(frozen=True)
class FedYogi(FedOpt):
    """v = v − (1−β2)·Δ²·sign(v − Δ²). Defaults are Flower's (η = 0.01, τ = 1e-3)."""

    eta: float = 1e-2

    name = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        d2 = delta.square()
        return v - (1.0 - self.beta_2) * d2 * torch.sign(v - d2)
