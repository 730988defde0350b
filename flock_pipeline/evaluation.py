"""Loss and accuracy of a model on a labelled set: a held-out split or the global test split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from flock_pipeline.serialization import Weights

__all__ = ["Evaluation", "evaluate", "sample_losses"]


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    num_samples: int


@torch.no_grad()
def evaluate(
    network: nn.Module,
    weights: Weights,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    batch_size: int = 1024,
) -> Evaluation:
    network.load_state_dict(weights)
    network.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        yb = torch.from_numpy(y[start : start + batch_size])
        logits = network(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    network.train()
    n = len(y)
    if n == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    return Evaluation(total_loss / n, correct / n, n)


@torch.no_grad()
def sample_losses(
    network: nn.Module,
    weights: Weights,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    batch_size: int = 1024,
) -> npt.NDArray[np.float64]:
    """The cross-entropy of every sample, in order: what a voter's paired test compares between
    the current global model and a candidate aggregate."""
    network.load_state_dict(weights)
    network.eval()
    out = []
    for start in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        yb = torch.from_numpy(y[start : start + batch_size])
        out.append(F.cross_entropy(network(xb), yb, reduction="none").double().numpy())
    network.train()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)
