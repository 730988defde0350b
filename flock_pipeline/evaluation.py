"""Loss and accuracy of a model on a labelled set: a held-out split or the global test split."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from flock_pipeline.serialization import Weights

__all__ = [
    "FORWARD_BATCH",
    "Evaluation",
    "GroupLosses",
    "evaluate",
    "evaluate_many",
    "sample_losses",
]

FORWARD_BATCH = 128
"""Samples per forward pass. A batch of 1,024 28x28 images puts ~50 MB of activations through
every layer, far past the CPU's caches; 128 ran the CNN ~2.5x faster on this project's machines.
Each layer works per sample and every reduction keeps its own chunks, so a result changes
with it at most in the last bits: a CPU may take other kernels for other batch sizes (see
``_logits`` on a batch of one), which is why the project fixes it rather than tuning it per
machine."""


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    num_samples: int


def _logits(network: nn.Module, x: npt.NDArray[np.float32]) -> torch.Tensor:
    """The network's logits for every row of ``x`` (at least one), in order.

    No pass runs a single sample unless ``x`` is one: a batch of one takes other CPU kernels,
    whose float results differ in the last bits (seen with the CNN), so a last sample left
    over joins the pass before it."""
    xs = torch.from_numpy(x)
    starts = list(range(0, len(xs), FORWARD_BATCH))
    if len(starts) > 1 and len(xs) - starts[-1] == 1:
        starts.pop()
    ends = [*starts[1:], len(xs)]
    return torch.cat([network(xs[a:b]) for a, b in zip(starts, ends, strict=True)])


@torch.no_grad()
def evaluate(
    network: nn.Module,
    weights: Weights,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    batch_size: int = 1024,
) -> Evaluation:
    """Mean cross-entropy and accuracy; the loss is summed in float32 per ``batch_size``
    samples (the chunks fix its rounding; the forward passes are :data:`FORWARD_BATCH`)."""
    network.load_state_dict(weights)
    network.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = _logits(network, x[start : start + batch_size])
        yb = torch.from_numpy(y[start : start + batch_size])
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    network.train()
    n = len(y)
    if n == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    return Evaluation(total_loss / n, correct / n, n)


def _per_sample(
    network: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each sample's cross-entropy (float64) and whether the model's top class is its label;
    the caller has loaded the weights and holds ``no_grad``."""
    if not len(y):
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.bool_)
    logits = _logits(network, x)
    yt = torch.from_numpy(y)
    losses = F.cross_entropy(logits, yt, reduction="none").double().numpy()
    return losses, (logits.argmax(dim=1) == yt).numpy()


@torch.no_grad()
def sample_losses(
    network: nn.Module,
    weights: Weights,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """The cross-entropy of every sample, in order: what a voter's paired test compares between
    the current global model and a candidate aggregate."""
    network.load_state_dict(weights)
    network.eval()
    losses, _ = _per_sample(network, x, y)
    network.train()
    return losses


def _summary(losses: npt.NDArray[np.float64], hits: npt.NDArray[np.bool_]) -> Evaluation:
    if not len(losses):
        return Evaluation(float("nan"), float("nan"), 0)
    return Evaluation(float(losses.mean()), float(hits.mean()), len(losses))


_Results = dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]


class GroupLosses:
    """Per-sample losses and hits of several named labelled sets (the participants' held-out
    splits, a shared validation set) under given weights, each set run once per weights.

    The simulation's voters judge and score the same candidate aggregates, and the round's
    evaluation then runs the model it keeps on every held-out split. The sets missing for some
    weights are run together in one forward pass, and what was computed is remembered, by the
    weights' identity (holding a reference), for the weights last asked about and for those
    named in :meth:`remember`: the contribution table asks about one candidate for every voter
    before the next, the round's evaluation about the model it keeps, and the next round's
    judgement about that same model again."""

    def __init__(
        self,
        network: nn.Module,
        groups: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    ) -> None:
        self.network = network
        self.groups = dict(groups)
        self.names = list(self.groups)
        self._last: tuple[Weights, _Results] | None = None
        self._kept: list[tuple[Weights, _Results]] = []

    def remember(self, *weights: Weights) -> None:
        """Remember the results of exactly these weights (besides the last asked about) from
        now on, keeping what is known of them already."""
        known = [*self._kept, *([self._last] if self._last is not None else [])]
        kept: list[tuple[Weights, _Results]] = []
        for w in weights:
            if not any(k is w for k, _ in kept):
                kept.append((w, next((r for k, r in known if k is w), {})))
        self._kept = kept

    def _results(
        self, weights: Weights, names: Iterable[str], together: Iterable[str] = ()
    ) -> _Results:
        """``names``' results under ``weights``; if any is missing, the missing ones of
        ``names`` and ``together`` are computed in one pass."""
        entry = next((e for e in self._kept if e[0] is weights), None)
        if entry is None:
            if self._last is None or self._last[0] is not weights:
                self._last = (weights, {})
            entry = self._last
        results = entry[1]
        wanted = list(names)
        if any(k not in results for k in wanted):
            missing = [k for k in dict.fromkeys([*wanted, *together]) if k not in results]
            with torch.no_grad():
                self.network.load_state_dict(weights)
                self.network.eval()
                losses, hits = _per_sample(
                    self.network,
                    np.concatenate([self.groups[k][0] for k in missing]),
                    np.concatenate([self.groups[k][1] for k in missing]),
                )
                self.network.train()
            at = 0
            for k in missing:
                n = len(self.groups[k][1])
                results[k] = (losses[at : at + n], hits[at : at + n])
                at += n
        return {k: results[k] for k in wanted}

    def per_sample(
        self, weights: Weights, names: Iterable[str] | None = None
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Each set's (default: every set's) per-sample cross-entropy under ``weights``."""
        found = self._results(weights, self.names if names is None else names)
        return {k: losses for k, (losses, _) in found.items()}

    def evaluations(
        self, weights: Weights, names: Iterable[str] | None = None
    ) -> dict[str, Evaluation]:
        """:func:`evaluate_many` of ``weights`` on each set (default: every set)."""
        found = self._results(weights, self.names if names is None else names)
        return {k: _summary(losses, hits) for k, (losses, hits) in found.items()}

    def mean_loss(self, name: str, together: Iterable[str] = ()) -> Callable[[Weights], float]:
        """Set ``name``'s mean loss as a function of the weights (NaN for an empty set); weights
        it has not seen are run on ``together`` (the other voters' sets) at the same time."""
        batch = list(together)

        def loss(weights: Weights) -> float:
            values = self._results(weights, [name], batch)[name][0]
            return float(values.mean()) if len(values) else float("nan")

        return loss


@torch.no_grad()
def evaluate_many(
    network: nn.Module,
    weights: Weights,
    sets: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> list[Evaluation]:
    """:func:`evaluate` of one model on several sets, loaded and run once over all of them;
    the loss is each set's mean of the per-sample float64 losses."""
    sizes = [len(y) for _, y in sets]
    if not sum(sizes):
        return [Evaluation(float("nan"), float("nan"), 0) for _ in sets]
    network.load_state_dict(weights)
    network.eval()
    loss, hit = _per_sample(
        network, np.concatenate([x for x, _ in sets]), np.concatenate([y for _, y in sets])
    )
    network.train()
    out, at = [], 0
    for n in sizes:
        out.append(_summary(loss[at : at + n], hit[at : at + n]))
        at += n
    return out
