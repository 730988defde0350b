"""Data-level attack: label flipping on the attacker's own training labels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flock_pipeline.attacks.spec import AttackSpec
from flock_pipeline.errors import DataError

__all__ = ["poison_labels"]


def poison_labels(
    y: npt.NDArray[np.integer], num_classes: int, spec: AttackSpec | None
) -> npt.NDArray[np.integer]:
    """Relabel ``y`` for a ``label_flip`` attacker; any other spec returns ``y`` itself.

    ``reverse``: y -> C-1-y; ``next``: y -> (y+1) mod C. A new array of the same shape and dtype;
    ``y`` is never modified.
    """
    if spec is None or spec.kind != "label_flip":
        return y
    if num_classes < 2:
        raise DataError(f"label flipping needs at least 2 classes, got {num_classes}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}) to be flipped; "
            f"got {int(y.min())}..{int(y.max())}"
        )
    flipped = num_classes - 1 - y if spec.flip_to == "reverse" else (y + 1) % num_classes
    return np.asarray(flipped, dtype=y.dtype)
