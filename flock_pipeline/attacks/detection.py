"""Pure checks that back contribution-based rewards: free riders and copiers earn nothing."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

from flock_pipeline.update import Update

__all__ = ["flat_delta", "is_free_rider", "near_duplicates"]


def is_free_rider(
    update: Update,
    global_weights: Mapping[str, torch.Tensor],
    atol: float = 0.0,
    rtol: float | None = None,
) -> bool:
    """True if every tensor of ``update`` equals the global model's (within ``atol``), or, with
    ``rtol``, if its delta's L2 norm over the float tensors is at most ``rtol`` times the global
    model's (at least 1)."""
    if set(update.weights) != set(global_weights):
        return False
    if rtol is not None:
        names = sorted(n for n, g in global_weights.items() if g.is_floating_point())
        if any(update.weights[n].shape != global_weights[n].shape for n in names):
            return False
        delta = torch.linalg.vector_norm(flat_delta(update.weights, names, global_weights))
        scale = torch.linalg.vector_norm(flat_delta(global_weights, names, None))
        return float(delta) <= rtol * max(float(scale), 1.0)
    for name, w in update.weights.items():
        g = global_weights[name]
        if w.shape != g.shape:
            return False
        diff = (w.detach().to(torch.float64) - g.detach().to(torch.float64)).abs()
        if diff.numel() and float(diff.max()) > atol:
            return False
    return True


def flat_delta(
    weights: Mapping[str, torch.Tensor],
    names: list[str],
    reference: Mapping[str, torch.Tensor] | None,
) -> torch.Tensor:
    """The tensors ``names`` of ``weights`` minus ``reference`` (or as they are, without one),
    flattened into one float64 vector in that order."""
    parts = []
    for name in names:
        w = weights[name].detach().to(torch.float64).reshape(-1)
        if reference is not None:
            w = w - reference[name].detach().to(torch.float64).reshape(-1)
        parts.append(w)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def near_duplicates(
    updates: Sequence[Update],
    rtol: float = 1e-6,
    global_weights: Mapping[str, torch.Tensor] | None = None,
) -> list[tuple[str, str]]:
    """Pairs of participants whose submissions are identical or nearly so.

    With ``global_weights``, compares deltas (w - global): ||d_a - d_b|| <= rtol * max(||d_a||,
    ||d_b||), so two free riders (both zero deltas) also pair up. Without it, the same test on
    the full weights, which is much weaker (the shared global part dominates the norms). Pairs
    are (smaller id, larger id), sorted; updates of different architectures never pair.
    """
    flats: dict[str, tuple[tuple[tuple[str, tuple[int, ...]], ...], torch.Tensor]] = {}
    for u in updates:
        names = sorted(u.weights)
        if global_weights is not None and (
            set(names) != set(global_weights)
            or any(u.weights[n].shape != global_weights[n].shape for n in names)
        ):
            continue
        key = tuple((n, tuple(u.weights[n].shape)) for n in names)
        flats[u.participant] = (key, flat_delta(u.weights, names, global_weights))
    pairs = []
    for a, b in itertools.combinations(sorted(flats), 2):
        (key_a, va), (key_b, vb) = flats[a], flats[b]
        if key_a != key_b:
            continue
        dist = float(torch.linalg.vector_norm(va - vb))
        scale = max(float(torch.linalg.vector_norm(va)), float(torch.linalg.vector_norm(vb)))
        if dist <= rtol * scale:
            pairs.append((a, b))
    return pairs
