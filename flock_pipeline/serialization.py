"""Model weights as canonical bytes (safetensors, no metadata) and their content hash.

safetensors writes tensors sorted by name with a header that depends only on names, dtypes and
shapes, so the same weights give the same bytes on every machine: the hash a participant commits
on chain is the sha256 of exactly the file it uploads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from flock_pipeline.errors import SerializationError

__all__ = [
    "Weights",
    "canonical_bytes",
    "content_hash",
    "from_bytes",
    "read_weights",
    "write_weights",
]

Weights = dict[str, torch.Tensor]


def canonical_bytes(weights: Mapping[str, torch.Tensor]) -> bytes:
    """The one byte form of ``weights``: CPU, contiguous, no metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    return st_save(tensors)


def content_hash(weights: Mapping[str, torch.Tensor]) -> str:
    """``0x``-prefixed sha256 of the canonical bytes (the form stored on chain)."""
    return "0x" + hashlib.sha256(canonical_bytes(weights)).hexdigest()


def from_bytes(data: bytes, source: str = "<bytes>") -> Weights:
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise SerializationError(f"{source} is not a valid safetensors file: {exc}") from None


def write_weights(weights: Mapping[str, torch.Tensor], path: Path) -> str:
    """Write atomically (temp file + rename) and return the content hash."""
    data = canonical_bytes(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return "0x" + hashlib.sha256(data).hexdigest()


def read_weights(path: Path, expected_hash: str | None = None) -> Weights:
    """Read weights; with ``expected_hash``, refuse a file whose content does not match it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SerializationError(f"weights file {path} does not exist") from None
    if expected_hash is not None:
        actual = "0x" + hashlib.sha256(data).hexdigest()
        if actual.lower() != expected_hash.lower():
            raise SerializationError(
                f"{path} has content hash {actual}, expected {expected_hash}: the file was "
                "changed or corrupted"
            )
    return from_bytes(data, str(path))
