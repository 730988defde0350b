"""Loss and accuracy of a model on a labelled set: a held-out split or the global test split."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from flock_pipeline.serialization import Weights

__all__ = ["Evaluation", "GroupLosses", "evaluate", "evaluate_many", "sample_losses"]


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


class GroupLosses:
    """Per-sample losses of several labelled sets (one per voter) under the same weights, in
    one forward pass: the simulation's voters judge and score the same candidate aggregates,
    so each candidate is loaded and run once for all of them instead of once per voter. The
    last weights seen are remembered (by identity, holding a reference), which serves the
    contribution table's order: every voter evaluates one candidate before the next."""

    def __init__(
        self,
        network: nn.Module,
        groups: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    ) -> None:
        self.network = network
        self.names = list(groups)
        sizes = [len(groups[k][1]) for k in self.names]
        self.bounds = np.cumsum([0, *sizes])
        self.x = np.concatenate([groups[k][0] for k in self.names]) if sizes else None
        self.y = np.concatenate([groups[k][1] for k in self.names]) if sizes else None
        self._last: tuple[Weights, dict[str, npt.NDArray[np.float64]]] | None = None

    def per_sample(self, weights: Weights) -> dict[str, npt.NDArray[np.float64]]:
        """Every set's per-sample cross-entropy under ``weights``."""
        if self._last is not None and self._last[0] is weights:
            return self._last[1]
        if self.x is None or self.y is None:
            out: dict[str, npt.NDArray[np.float64]] = {k: np.zeros(0) for k in self.names}
        else:
            losses = sample_losses(self.network, weights, self.x, self.y)
            out = {k: losses[self.bounds[i] : self.bounds[i + 1]] for i, k in enumerate(self.names)}
        self._last = (weights, out)
        return out

    def mean_loss(self, name: str) -> Callable[[Weights], float]:
        """Set ``name``'s mean loss as a function of the weights (NaN for an empty set)."""

        def loss(weights: Weights) -> float:
            values = self.per_sample(weights)[name]
            return float(values.mean()) if len(values) else float("nan")

        return loss


@torch.no_grad()
def evaluate_many(
    network: nn.Module,
    weights: Weights,
    sets: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    batch_size: int = 1024,
) -> list[Evaluation]:
    """:func:`evaluate` of one model on several sets, loaded and run once over all of them."""
    sizes = [len(y) for _, y in sets]
    if not sum(sizes):
        return [Evaluation(float("nan"), float("nan"), 0) for _ in sets]
    x = np.concatenate([x for x, _ in sets])
    y = np.concatenate([y for _, y in sets])
    network.load_state_dict(weights)
    network.eval()
    losses, hits = [], []
    for start in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        yb = torch.from_numpy(y[start : start + batch_size])
        logits = network(xb)
        losses.append(F.cross_entropy(logits, yb, reduction="none").double().numpy())
        hits.append((logits.argmax(dim=1) == yb).numpy())
    network.train()
    loss, hit = np.concatenate(losses), np.concatenate(hits)
    out, at = [], 0
    for n in sizes:
        if n == 0:
            out.append(Evaluation(float("nan"), float("nan"), 0))
        else:
            out.append(
                Evaluation(float(loss[at : at + n].mean()), float(hit[at : at + n].mean()), n)
            )
        at += n
    return out
