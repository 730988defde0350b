"""What a participant sends after local training."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from flock_pipeline.serialization import Weights, content_hash

__all__ = ["Update"]


@dataclass(frozen=True)
class Update:
    """One participant's locally trained weights for one round.

    ``epsilon`` is the participant's cumulative epsilon after this round (None without DP).
    Its weights are never changed in place once made: the content hash and the finiteness
    check are computed once per update (a voter's leave-one-out scores aggregate the same
    updates once per update of the round).
    """

    participant: str
    weights: Weights
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None

    @cached_property
    def hash(self) -> str:
        return content_hash(self.weights)

    @cached_property
    def non_finite(self) -> str | None:
        """The name of the first floating-point tensor (in key order) holding NaN or
        infinity; None when there is none."""
        for name, t in self.weights.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
        return None
