"""Whether a committed update can enter its round: one check that anyone can rerun.

A proposer controls everything it commits: the bytes behind its hash (or whether there are
any) and the sample count it claims. None of that may halt a round. An update that fails
:func:`check_update` is a protocol outcome, not an error: every voter flags it
``invalid:<reason>`` (contribution exactly -1, which the contract turns into the penalty at
``penaltyBps``), it never reaches the screen or the strategy, and the round goes on with the
rest. The check is a pure function of the bytes, the round's global model and the claim, so all
honest voters reach the same verdict and the aggregate hash keeps its majority.

Reasons, in the order they are checked:

- ``unavailable``: no bytes behind the committed hash (never uploaded, lost from the store, or
  stored bytes that do not hash to it);
- only when a :class:`SignatureCheck` is given (see :mod:`flock_pipeline.signing`):
  ``unsigned``, ``bad_signature``, ``wrong_signer``, ``wrong_context``, ``replayed``,
  ``expired``: the proposer's EIP-712 signature is missing, malformed, another key's, over
  other fields than the chain recorded, for an earlier round, or past its deadline;
- ``too_many_samples``: more samples claimed than the proposer registered (only when the
  registered count is known);
- ``not_safetensors``: the bytes do not parse as a safetensors file;
- ``wrong_tensors``: other tensor names than the global model's (another architecture);
- ``wrong_shape``, ``wrong_dtype``: a tensor's shape or dtype differs from the global model's;
- ``not_finite``: a floating-point tensor holds a NaN or an infinity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args, overload

import torch

from flock_pipeline.errors import SerializationError
from flock_pipeline.serialization import Weights, from_bytes
from flock_pipeline.signing import SignedUpdate, verify_update
from flock_pipeline.storage.errors import StorageError, StoreUnreachable
from flock_pipeline.update import Update

if TYPE_CHECKING:
    from flock_pipeline.storage import BlobStore

__all__ = [
    "INVALID_PREFIX",
    "INVALID_REASONS",
    "Checked",
    "Invalid",
    "InvalidReason",
    "Oversized",
    "SignatureCheck",
    "Valid",
    "check_submissions",
    "check_update",
    "fetch_blob",
    "is_invalid",
    "update_size_limit",
]

InvalidReason = Literal[
    "unavailable",
    "too_large",
    "unsigned",
    "bad_signature",
    "wrong_signer",
    "wrong_context",
    "replayed",
    "expired",
    "too_many_samples",
    "not_safetensors",
    "wrong_tensors",
    "wrong_shape",
    "wrong_dtype",
    "not_finite",
]
INVALID_REASONS: tuple[str, ...] = get_args(InvalidReason)

INVALID_PREFIX = "invalid:"
"""How an invalid update's reason reads among the screen's flags: ``invalid:not_finite``."""


@dataclass(frozen=True)
class Valid:
    """The update's weights, as the bytes hold them."""

    weights: Weights


@dataclass(frozen=True)
class Invalid:
    """Why the update cannot enter the round: a reason every voter agrees on, and details for
    the log (the details may differ between library versions; the reason does not)."""

    reason: InvalidReason
    detail: str

    @property
    def flag(self) -> str:
        return INVALID_PREFIX + self.reason


@dataclass(frozen=True)
class SignatureCheck:
    """A proposer's signature envelope and what the chain recorded about its submission: the
    update must be ``signer``'s signature over exactly these (and the claimed sample count)."""

    envelope: SignedUpdate | bytes | None
    """The envelope, or its wire bytes as fetched (None when there is none)."""
    signer: str
    """The proposer's address, as the chain recorded the submission's sender."""
    chain_id: int
    contract: str
    """The alliance's address."""
    task_id: int
    round: int
    content_hash: str | bytes
    """The committed update hash."""
    submitted_at: int
    """Timestamp of the block that recorded the submission: public, so every voter agrees."""


def is_invalid(reason: str | None) -> bool:
    """Whether a screen flag is an invalid update's."""
    return reason is not None and reason.startswith(INVALID_PREFIX)


def check_update(
    blob: bytes | Oversized | None,
    reference: Mapping[str, torch.Tensor],
    num_samples: int,
    registered_samples: int | None = None,
    *,
    signature: SignatureCheck | None = None,
) -> Valid | Invalid:
    """The verdict on one committed update: ``blob`` is the bytes behind its hash (None when
    there are none), ``reference`` the round's global model, ``num_samples`` the claimed count
    and ``registered_samples`` the proposer's registered data set size, if known. With
    ``signature``, the update must also carry the proposer's signature (without, none is
    asked for)."""
    if blob is None:
        return Invalid("unavailable", "no bytes behind the committed hash")
    if isinstance(blob, Oversized):
        return Invalid(
            "too_large",
            f"{blob.size} bytes behind the committed hash; an update of this model takes at "
            f"most {blob.limit}",
        )
    if signature is not None:
        refusal = verify_update(
            signature.envelope,
            signature.signer,
            chain_id=signature.chain_id,
            contract=signature.contract,
            task_id=signature.task_id,
            round_=signature.round,
            content_hash=signature.content_hash,
            num_samples=num_samples,
            now=signature.submitted_at,
        )
        if refusal is not None:
            return Invalid(refusal.reason, refusal.detail)
    if registered_samples is not None and num_samples > registered_samples:
        return Invalid(
            "too_many_samples",
            f"claims {num_samples} samples, registered {registered_samples}",
        )
    try:
        weights = from_bytes(blob, "the update")
    except SerializationError as exc:
        return Invalid("not_safetensors", str(exc))
    missing, extra = sorted(set(reference) - set(weights)), sorted(set(weights) - set(reference))
    if missing or extra:
        return Invalid("wrong_tensors", f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name in sorted(reference):
        got, want = weights[name], reference[name]
        if got.shape != want.shape:
            return Invalid(
                "wrong_shape",
                f"tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}",
            )
    for name in sorted(reference):
        got, want = weights[name], reference[name]
        if got.dtype != want.dtype:
            return Invalid(
                "wrong_dtype", f"tensor {name!r} has dtype {got.dtype}, expected {want.dtype}"
            )
    for name in sorted(reference):
        got = weights[name]
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return Invalid("not_finite", f"tensor {name!r} holds NaN or infinity")
    return Valid(weights)


@dataclass(frozen=True)
class Oversized:
    """A blob :func:`fetch_blob` left unread: ``size`` bytes, more than ``limit``."""

    size: int
    limit: int


def update_size_limit(reference: Mapping[str, torch.Tensor]) -> int:
    """The most bytes an update of the model ``reference`` can take: its tensors' bytes plus
    1 MiB for the safetensors header (a real header of this project's models is a few KB)."""
    return sum(t.numel() * t.element_size() for t in reference.values()) + (1 << 20)


@overload
def fetch_blob(store: BlobStore, digest: str, max_bytes: None = None) -> bytes | None: ...


@overload
def fetch_blob(store: BlobStore, digest: str, max_bytes: int) -> bytes | Oversized | None: ...


def fetch_blob(
    store: BlobStore, digest: str, max_bytes: int | None = None
) -> bytes | Oversized | None:
    """The bytes behind a committed hash, or None when the store has none that hash to it.

    A store that cannot be reached raises (StorageError): an outage is not the proposer's fault
    and must not flag its update. A blob that is there but cannot be read back intact (bytes
    that do not hash to their address) is the proposer's: it counts as unavailable. With
    ``max_bytes``, a larger blob is not read at all (:class:`Oversized`): a proposer cannot make
    every voter load gigabytes."""
    size = store.size(digest)
    if size is None:
        return None
    if max_bytes is not None and size > max_bytes:
        return Oversized(size, max_bytes)
    try:
        return store.get(digest)
    except StoreUnreachable:
        raise  # the store's outage, never the proposer's fault: the duty is retried
    except StorageError:
        store.exists(digest)  # raises if the store itself has become unreachable
        return None  # corrupt, unreadable, or removed since: not the bytes committed


@dataclass(frozen=True)
class Checked:
    """A round's committed updates after :func:`check_update`."""

    updates: list[Update]
    """The valid ones, in submission order."""
    invalid: dict[str, str] = field(default_factory=dict)
    """Proposer -> its flag (``invalid:<reason>``), in submission order."""
    order: list[str] = field(default_factory=list)
    """Every proposer, in submission order (the contract's update index)."""
    details: dict[str, str] = field(default_factory=dict)
    """Proposer -> what made its update invalid, for the log."""


def check_submissions(
    submissions: Iterable[tuple[str, bytes | Oversized | None, int]],
    reference: Mapping[str, torch.Tensor],
    registered_samples: Mapping[str, int] | None = None,
    signatures: Mapping[str, SignatureCheck] | None = None,
) -> Checked:
    """:func:`check_update` over ``(proposer, blob, num_samples)`` in submission order; with
    ``signatures`` (one :class:`SignatureCheck` per proposer), every update must be signed."""
    updates: list[Update] = []
    invalid: dict[str, str] = {}
    details: dict[str, str] = {}
    order: list[str] = []
    for pid, blob, num_samples in submissions:
        order.append(pid)
        registered = None if registered_samples is None else registered_samples.get(pid)
        check = None
        if signatures is not None:
            if pid not in signatures:  # the caller's omission, not the proposer's fault
                raise ValueError(
                    f"no SignatureCheck for proposer {pid}: build one per submission, with "
                    "envelope None when none came"
                )
            check = signatures[pid]
        verdict = check_update(blob, reference, num_samples, registered, signature=check)
        if isinstance(verdict, Invalid):
            invalid[pid] = verdict.flag
            details[pid] = verdict.detail
        else:
            updates.append(Update(pid, verdict.weights, num_samples))
    return Checked(updates, invalid, order, details)
