"""Checks, the canonical order and the bounded sample weights every strategy shares.

Verifiable aggregation needs every voter to get the same bytes from the same set of updates, in
whatever order they arrive: strategies iterate updates sorted by content hash (ties broken by
participant id) and accumulate in float64 before rounding once to float32.

Sample counts are self-reported, so a sample-weighted rule bounds each update's share of the
total weight (:func:`capped_shares`): a proposer claiming 1e30 samples gets at most that share,
not the whole aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.update import Update

__all__ = ["capped_shares", "check_compatible", "check_max_weight_share", "ordered"]


_EXACT = 2**53
"""Sample totals below this are exact in float64: weighting by the counts is safe."""


def check_max_weight_share(value: float) -> None:
    """Refuse a weight cap outside (0, 1]."""
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"max_weight_share must be in (0, 1], got {value}")


def capped_shares(counts: Sequence[int], max_share: float) -> list[float] | None:
    """Each update's share of the total weight, proportional to ``counts`` but none above
    ``max_share``; None when the plain proportional shares already respect it and the counts
    are small enough to weight by exactly (the caller then weights by the counts themselves,
    bit for bit as without a cap).

    What a capped update loses goes to the others in proportion to their counts, repeated until
    no share exceeds the cap (water-filling: deterministic, and the order of ``counts`` does not
    matter). When the cap is below 1/n no split can respect it, and the shares are equal."""
    n = len(counts)
    total = sum(counts)
    if not n:
        return None
    if max(counts) <= max_share * total:
        if total < _EXACT:
            return None
        return [c / total for c in counts]  # a claim torch could not take as a factor
    if max_share * n <= 1.0:
        return [1.0 / n] * n
    capped = [False] * n
    while True:
        free = sum(c for c, done in zip(counts, capped, strict=True) if not done)
        left = 1.0 - max_share * sum(capped)
        over = [i for i in range(n) if not capped[i] and counts[i] * left > max_share * free]
        if not over:
            break
        for i in over:
            capped[i] = True
    return [max_share if capped[i] else counts[i] * left / free for i in range(n)]


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
        if u.non_finite is not None:
            raise AggregationError(
                f"update of {u.participant}: tensor {u.non_finite!r} contains NaN or infinity"
            )
