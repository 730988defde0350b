"""What a participant sends after local training."""

from __future__ import annotations

from dataclasses import dataclass, field

from flock_pipeline.serialization import Weights, content_hash

__all__ = ["Update"]


@dataclass(frozen=True)
class Update:
    """One participant's locally trained weights for one round.

    ``epsilon`` is the participant's cumulative epsilon after this round (None without DP).
    """

    participant: str
    weights: Weights
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None

    @property
    def hash(self) -> str:
        return content_hash(self.weights)
