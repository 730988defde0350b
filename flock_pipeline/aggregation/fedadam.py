"""FedAdam (Reddi et al. 2021): Adam on the server, with Flower's bias-corrected step size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flock_pipeline.aggregation.fedopt import FedOpt

__all__ = ["FedAdam"]


@dataclass(frozen=True)
class FedAdam(FedOpt):
    """v = β2·v + (1−β2)·Δ².

    With ``bias_correction`` (Flower's current default) the step size of round t is
    ``η·√(1−β2^(t+1)) / (1−β1^(t+1))``; Flower uses exponent t+1 where Kingma & Ba use t, and we
    keep Flower's. Without it, the step is η, as in Reddi et al.'s Algorithm 2.
    """

    bias_correction: bool = True

    name = "fedadam"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.beta_2 * v + (1.0 - self.beta_2) * delta.square()

    def step_size(self, step: int) -> float:
        if not self.bias_correction:
            return self.eta
        exponent = float(step + 1)
        correction = math.sqrt(1.0 - math.pow(self.beta_2, exponent))
        return self.eta * correction / (1.0 - math.pow(self.beta_1, exponent))
