"""Checks and the canonical order every strategy shares.

Verifiable aggregation needs every voter to get the same bytes from the same set of updates, in
whatever order they arrive: strategies iterate updates sorted by content hash (ties broken by
participant id) and accumulate in float64 before rounding once to float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from flock_pipeline.errors import AggregationError
from flock_pipeline.update import Update

__all__ = ["check_compatible", "ordered"]


def ordered(updates: Sequence[Update]) -> list[Update]:
    """The canonical order: by content hash, then participant id."""
    return sorted(updates, key=lambda u: (u.hash, u.participant))


def check_compatible(
    updates: Sequence[Update], reference: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Refuse updates that cannot be averaged, naming the participant and tensor at fault."""
    if not updates:
        raise AggregationError("no updates to aggregate")
    ref_name = "the global model" if reference is not None else updates[0].participant
    ref = reference if reference is not None else updates[0].weights
    for u in updates:
        if u.num_samples <= 0:
            raise AggregationError(
                f"update of {u.participant} claims {u.num_samples} samples; must be > 0"
            )
        missing, extra = set(ref) - set(u.weights), set(u.weights) - set(ref)
        if missing or extra:
            raise AggregationError(
                f"update of {u.participant} has a different architecture than {ref_name}: "
                f"missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
            )
        for name, t in u.weights.items():
            r = ref[name]
            if t.shape != r.shape:
                raise AggregationError(
                    f"update of {u.participant}: tensor {name!r} has shape {tuple(t.shape)}, "
                    f"expected {tuple(r.shape)}"
                )
            if t.dtype != r.dtype:
                raise AggregationError(
                    f"update of {u.participant}: tensor {name!r} has dtype {t.dtype}, "
                    f"expected {r.dtype}"
                )
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise AggregationError(
                    f"update of {u.participant}: tensor {name!r} contains NaN or infinity"
                )
