"""Update-level attacks: applied after honest local training, before submission.

Deltas are computed in float64 and rounded once to each tensor's dtype. Non-floating tensors
(counters) keep the update's own values, except for the free rider, which submits the global
model as is. ``submission_bytes`` is what a participant uploads: the canonical file of its
update, or, for ``corrupt_update``, bytes that are not safetensors; ``submission_envelope`` is
the signature envelope it commits next to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from eth_account import Account

from flock_pipeline.aggregation.base import ordered
from flock_pipeline.attacks.spec import AttackSpec
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.serialization import Weights, canonical_bytes
from flock_pipeline.signing import sign_update
from flock_pipeline.update import Update

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["skips_training", "submission_bytes", "submission_envelope", "tamper_update"]


def skips_training(spec: AttackSpec | None) -> bool:
    """True for attacks that discard the honest weights (free rider, copier): no need to train."""
    return spec is not None and spec.kind in ("free_rider", "copier")


def _clone(weights: Mapping[str, torch.Tensor]) -> Weights:
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in weights.items()}


def _check_shapes(update: Update, global_weights: Mapping[str, torch.Tensor]) -> None:
    if set(update.weights) != set(global_weights):
        raise AggregationError(
            f"update of {update.participant} has a different architecture than the global model"
        )
    for name, t in update.weights.items():
        if t.shape != global_weights[name].shape:
            raise AggregationError(
                f"update of {update.participant}: tensor {name!r} has shape {tuple(t.shape)}, "
                f"expected {tuple(global_weights[name].shape)}"
            )


def _affine(update: Update, global_weights: Mapping[str, torch.Tensor], factor: float) -> Weights:
    """global + factor * (w - global), tensor by tensor."""
    out: Weights = {}
    for name, w in update.weights.items():
        if not w.is_floating_point():
            out[name] = w.detach().clone().contiguous()
            continue
        g = global_weights[name].detach().to("cpu", torch.float64)
        new = g + factor * (w.detach().to("cpu", torch.float64) - g)
        out[name] = new.to(w.dtype).contiguous()
    return out


def _gaussian(
    update: Update, global_weights: Mapping[str, torch.Tensor], sigma: float, seed: int
) -> Weights:
    """global + N(0, sigma²) per coordinate, drawn in sorted tensor-name order."""
    gen = torch.Generator().manual_seed(seed)
    out: Weights = {}
    for name in sorted(update.weights):
        w = update.weights[name]
        if not w.is_floating_point():
            out[name] = w.detach().clone().contiguous()
            continue
        g = global_weights[name].detach().to("cpu", torch.float64)
        noise = torch.randn(g.shape, generator=gen, dtype=torch.float64)
        out[name] = (g + sigma * noise).to(w.dtype).contiguous()
    return out


def _with_nan(weights: Weights, seed: int) -> Weights:
    """``weights`` with one coordinate of one floating tensor set to NaN, both drawn from
    ``seed``: the rest of the update stays honest, so only a check of every value finds it."""
    out = _clone(weights)
    names = sorted(n for n, t in out.items() if t.is_floating_point() and t.numel())
    if not names:
        raise ConfigError("nan_update: the model has no floating-point tensor to poison")
    gen = torch.Generator().manual_seed(seed)
    name = names[int(torch.randint(len(names), (1,), generator=gen))]
    flat = out[name].view(-1)
    flat[int(torch.randint(flat.numel(), (1,), generator=gen))] = float("nan")
    return out


def _grown(weights: Weights) -> Weights:
    """``weights`` with the first floating tensor (by name) one zero row longer along dim 0."""
    out = _clone(weights)
    name = next((n for n in sorted(out) if out[n].is_floating_point()), None)
    if name is None:
        raise ConfigError("wrong_shape: the model has no floating-point tensor to reshape")
    t = out[name].reshape(-1) if out[name].dim() == 0 else out[name]
    out[name] = torch.cat([t, torch.zeros_like(t[:1])]).contiguous()
    return out


def submission_bytes(update: Update, spec: AttackSpec | None) -> bytes:
    """The bytes a participant uploads and commits the hash of: its update's canonical file, or
    for ``corrupt_update`` that file cut in half (its header promises tensors the bytes do not
    hold, so no safetensors reader accepts it)."""
    data = canonical_bytes(update.weights)
    if spec is not None and spec.kind == "corrupt_update":
        return data[: len(data) // 2]
    return data


def submission_envelope(
    spec: AttackSpec | None,
    key: LocalAccount,
    *,
    chain_id: int,
    contract: str,
    task_id: int,
    round_: int,
    content_hash: str,
    num_samples: int,
    deadline: int,
) -> bytes | None:
    """The signature envelope (``flock_pipeline.signing``) a participant commits with its
    update: ``key``'s signature over it; none for ``unsigned``; for ``foreign_signature``, the
    signature of a fresh key that is not the participant's."""
    if spec is not None and spec.kind == "unsigned":
        return None
    signer = Account.create() if spec is not None and spec.kind == "foreign_signature" else key
    return sign_update(
        signer, chain_id=chain_id, contract=contract, task_id=task_id, round_=round_,
        content_hash=content_hash, num_samples=num_samples, deadline=deadline,
    ).to_json()  # fmt: skip


def _copy_source(update: Update, spec: AttackSpec, others: Sequence[Update]) -> Update:
    candidates = [u for u in others if u.participant != update.participant]
    if spec.copy_from is not None:
        for u in candidates:
            if u.participant == spec.copy_from:
                return u
        available = ", ".join(sorted(u.participant for u in candidates)) or "none"
        raise ConfigError(
            f"copier {update.participant}: copy_from {spec.copy_from!r} submitted no update "
            f"this round (available: {available})"
        )
    if not candidates:
        raise ConfigError(
            f"copier {update.participant}: no other participant's update to copy this round"
        )
    return ordered(candidates)[0]


def tamper_update(
    update: Update,
    global_weights: Weights,
    spec: AttackSpec | None,
    seed: int,
    others: Sequence[Update] = (),
) -> Update:
    """The update the attacker submits instead of ``update`` (its honest local training).

    ``seed`` drives the Gaussian noise (``torch.Generator().manual_seed(seed)``) and the NaN's
    position; ``others`` are the round's other updates a copier may copy. ``label_flip``,
    ``dishonest_voter``, ``corrupt_update`` (its bytes are tampered with, see
    ``submission_bytes``), ``unsigned`` and ``foreign_signature`` (its envelope is, see
    ``submission_envelope``) and no spec return ``update`` itself. Participant id, metrics and
    privacy accounting are always the attacker's own, and so is the sample count except under
    ``inflated_samples``.
    """
    untouched = ("label_flip", "dishonest_voter", "corrupt_update", "unsigned", "foreign_signature")
    if spec is None or spec.kind in untouched:
        return update
    if spec.kind == "inflated_samples":
        claimed = max(update.num_samples, round(update.num_samples * spec.factor))
        return dataclasses.replace(update, num_samples=claimed)
    if spec.kind == "copier":
        source = _copy_source(update, spec, others)
        return dataclasses.replace(update, weights=_clone(source.weights))
    _check_shapes(update, global_weights)
    if spec.kind == "free_rider":
        weights = _clone(global_weights)
    elif spec.kind == "sign_flip":
        weights = _affine(update, global_weights, -1.0)
    elif spec.kind == "boosted":
        weights = _affine(update, global_weights, spec.scale)
    elif spec.kind == "gaussian_noise":
        weights = _gaussian(update, global_weights, spec.sigma, seed)
    elif spec.kind == "nan_update":
        weights = _with_nan(update.weights, seed)
    elif spec.kind == "wrong_shape":
        weights = _grown(update.weights)
    else:  # pragma: no cover - AttackKind is exhaustive
        raise ConfigError(f"unknown attack kind {spec.kind!r}")
    return dataclasses.replace(update, weights=weights)
