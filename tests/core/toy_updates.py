"""Hand-made updates on a tiny two-tensor model, for the screen, trust and contribution tests."""

from __future__ import annotations

from collections.abc import Callable

import torch

from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

GLOBAL: Weights = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
DIRECTION = torch.linspace(0.5, 1.5, 15)


def toy_update(pid: str, delta: torch.Tensor, n: int = 10) -> Update:
    """GLOBAL plus the flat ``delta`` (15 values), trained on ``n`` samples."""
    out, i = {}, 0
    for name, t in GLOBAL.items():
        out[name] = t + delta[i : i + t.numel()].reshape(t.shape).to(t.dtype)
        i += t.numel()
    return Update(pid, out, n)


def honest_updates(k: int) -> list[Update]:
    """k honest updates h0..: a shared direction plus a little seeded noise each."""
    g = torch.Generator().manual_seed(0)
    return [toy_update(f"h{i}", DIRECTION + 0.3 * torch.randn(15, generator=g)) for i in range(k)]


def distance_loss(target: torch.Tensor) -> Callable[[Weights], float]:
    """A loss: the distance of the model's flat weights from ``target``."""

    def loss(weights: Weights) -> float:
        flat = torch.cat([weights[k].reshape(-1).double() for k in GLOBAL])
        return float(torch.linalg.vector_norm(flat - target.double()))

    return loss


def relative_gain(without: float, with_it: float) -> float:
    """The contribution score's formula, by hand."""
    return (without - with_it) / max(without, with_it)
