"""Partitioning a labelled data set among participants: IID, Dirichlet label skew, shards.

Pure functions of (labels, settings, seed): the same seed gives the same partition everywhere,
which is what lets every participant and validator agree on who holds what in a simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from flock_pipeline.errors import DataError

__all__ = [
    "IndexArray",
    "Scheme",
    "balanced_split",
    "class_counts",
    "partition_indices",
    "split_holdout",
    "stratified_split",
]

IndexArray = npt.NDArray[np.int64]
Scheme = Literal["iid", "dirichlet", "shards"]
_MAX_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class _Args:
    num_participants: int
    alpha: float
    classes_per_participant: int
    quantity_alpha: float | None
    min_samples: int


def partition_indices(
    labels: npt.NDArray[np.int64],
    num_participants: int,
    scheme: Scheme = "iid",
    *,
    alpha: float = 0.5,
    classes_per_participant: int = 2,
    quantity_alpha: float | None = None,
    min_samples: int = 1,
    seed: int = 0,
) -> list[IndexArray]:
    """Split ``range(len(labels))`` into ``num_participants`` disjoint, complete, sorted parts.

    - ``iid``: a random permutation cut into equal parts, or, with ``quantity_alpha``, into parts
      whose sizes follow Dirichlet(quantity_alpha) (quantity skew, same label mix).
    - ``dirichlet``: per class, the share of each participant follows Dirichlet(alpha): small
      alpha, strong label skew. Redrawn until every participant holds ``min_samples``.
    - ``shards``: every participant holds exactly ``classes_per_participant`` classes; each class
      is split evenly among the participants holding it.
    """
    n = int(labels.shape[0])
    if num_participants < 1:
        raise DataError(f"need at least one participant, got {num_participants}")
    if num_participants * max(min_samples, 1) > n:
        raise DataError(
            f"{num_participants} participants with at least {max(min_samples, 1)} samples each "
            f"need {num_participants * max(min_samples, 1)} samples, the data set has {n}"
        )
    if scheme == "dirichlet" and not alpha > 0:
        raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
    if quantity_alpha is not None and not quantity_alpha > 0:
        raise DataError(f"quantity_alpha must be > 0, got {quantity_alpha}")
    args = _Args(num_participants, alpha, classes_per_participant, quantity_alpha, min_samples)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(n, args, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, args, rng)
    elif scheme == "shards":
        parts = _shards(labels, args, rng)
    else:
        raise DataError(f"unknown partition scheme {scheme!r}; choose iid, dirichlet or shards")
    return [np.sort(p).astype(np.int64) for p in parts]


def _cut(indices: IndexArray, shares: npt.NDArray[np.float64]) -> list[IndexArray]:
    """Cut ``indices`` into consecutive pieces proportional to ``shares`` (sum 1)."""
    bounds = np.floor(np.cumsum(shares) * len(indices)).astype(np.int64)
    bounds[-1] = len(indices)
    return [a.astype(np.int64) for a in np.split(indices, bounds[:-1])]


def _iid(n: int, args: _Args, rng: np.random.Generator) -> list[IndexArray]:
    perm = rng.permutation(n).astype(np.int64)
    k = args.num_participants
    if args.quantity_alpha is None:
        return [a.astype(np.int64) for a in np.array_split(perm, k)]
    floor = max(args.min_samples, 1)
    # Each participant gets the floor, the rest is shared by Dirichlet(quantity_alpha).
    spare = n - floor * k
    shares = rng.dirichlet(np.full(k, args.quantity_alpha))
    sizes = floor + np.floor(shares * spare).astype(np.int64)
    sizes[-1] += n - int(sizes.sum())
    return [a.astype(np.int64) for a in np.split(perm, np.cumsum(sizes)[:-1])]


def _dirichlet(
    labels: npt.NDArray[np.int64], args: _Args, rng: np.random.Generator
) -> list[IndexArray]:
    k = args.num_participants
    classes = np.unique(labels)
    for _ in range(_MAX_DIRICHLET_TRIES):
        buckets: list[list[IndexArray]] = [[] for _ in range(k)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
            shares = rng.dirichlet(np.full(k, args.alpha))
            for p, piece in enumerate(_cut(idx, shares)):
                buckets[p].append(piece)
        parts = [np.concatenate(b) for b in buckets]
        if min(len(p) for p in parts) >= args.min_samples:
            return parts
    raise DataError(
        f"Dirichlet(alpha={args.alpha}) could not give each of {k} participants "
        f"{args.min_samples} samples in {_MAX_DIRICHLET_TRIES} draws; raise alpha, lower "
        "partition.min_samples or use fewer participants"
    )


def _shards(
    labels: npt.NDArray[np.int64], args: _Args, rng: np.random.Generator
) -> list[IndexArray]:
    k, per = args.num_participants, args.classes_per_participant
    classes = np.unique(labels)
    if not 1 <= per <= len(classes):
        raise DataError(f"classes_per_participant must be between 1 and {len(classes)}, got {per}")
    if k * per < len(classes):
        raise DataError(
            f"{k} participants × {per} classes each cannot cover all {len(classes)} classes; "
            "raise classes_per_participant or the number of participants"
        )
    # Walk a shuffled class order round-robin so every class is held by someone and nobody holds
    # the same class twice (per <= number of classes).
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    pos = 0
    for p in range(k):
        for _ in range(per):
            holders[int(order[pos % len(order)])].append(p)
            pos += 1
    buckets: list[list[IndexArray]] = [[] for _ in range(k)]
    for c, owners in holders.items():
        idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
        for owner, piece in zip(owners, np.array_split(idx, len(owners)), strict=True):
            buckets[owner].append(piece.astype(np.int64))
    parts = [np.concatenate(b) for b in buckets]
    short = [i for i, p in enumerate(parts) if len(p) < args.min_samples]
    if short:
        raise DataError(
            f"shards left participants {short} with fewer than {args.min_samples} samples"
        )
    return parts


def split_holdout(indices: IndexArray, fraction: float, seed: int) -> tuple[IndexArray, IndexArray]:
    """Split one participant's indices into (train, held-out); held-out gets >= 1 if possible."""
    if not 0 <= fraction < 1:
        raise DataError(f"holdout fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(indices).astype(np.int64)
    n_hold = round(len(perm) * fraction)
    if fraction > 0 and len(perm) > 1:
        n_hold = max(n_hold, 1)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def stratified_split(
    labels: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[IndexArray, IndexArray]:
    """Split all indices into (rest, test) with ``fraction`` of every class in test."""
    if not 0 < fraction < 1:
        raise DataError(f"test fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    test: list[IndexArray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[: max(1, round(len(idx) * fraction))].astype(np.int64))
    test_idx = np.sort(np.concatenate(test))
    rest = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test_idx)
    return rest.astype(np.int64), test_idx.astype(np.int64)


def balanced_split(
    labels: npt.NDArray[np.int64],
    per_class: int,
    seed: int,
    num_classes: int | None = None,
    keep: bool = True,
    source: str = "the training pool",
    other_fix: str = "use a larger data set",
) -> tuple[IndexArray, IndexArray]:
    """Split all indices into (rest, held): ``held`` has exactly ``per_class`` samples of every
    class ``0 .. num_classes - 1`` (default: every class present), drawn at random. With
    ``keep`` (the rest is training data), each class needs ``2 * per_class`` samples, so at
    least half of it stays for training; without, ``per_class``. Otherwise a DataError names
    every short class, ``source`` and the largest ``per_class`` that works, or ``other_fix``
    when none does."""
    if per_class < 1:
        raise DataError(f"samples per class must be >= 1, got {per_class}")
    classes = range(num_classes) if num_classes is not None else np.unique(labels).tolist()
    factor = 2 if keep else 1
    counts = {int(c): int(np.count_nonzero(labels == c)) for c in classes}
    short = {c: n for c, n in counts.items() if n < factor * per_class}
    if short:
        workable = min(counts.values()) // factor
        listed = ", ".join(f"class {c}: {n}" for c, n in sorted(short.items()))
        need = f"{factor * per_class}" + (" (half stays for training)" if keep else "")
        fix = f"lower data.validation_per_class to at most {workable}" if workable >= 1 else ""
        fix = " or ".join(f for f in (fix, other_fix) if f)
        raise DataError(
            f"a validation set of {per_class} samples per class needs {need} of every class in "
            f"{source}, which has {listed}; {fix}"
        )
    rng = np.random.default_rng(seed)
    held = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False).astype(np.int64)
        for c in classes
    ]
    held_idx = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels), dtype=np.int64), held_idx)
    return rest.astype(np.int64), held_idx.astype(np.int64)


def class_counts(
    labels: npt.NDArray[np.int64], parts: list[IndexArray], num_classes: int
) -> npt.NDArray[np.int64]:
    """Samples per class per participant: shape (participants, classes)."""
    return np.stack([np.bincount(labels[p], minlength=num_classes).astype(np.int64) for p in parts])
