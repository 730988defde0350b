"""Seeds derived from the task seed, so every (round, participant) gets its own stable stream."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *labels: object) -> int:
    """A 31-bit seed that depends only on ``seed`` and ``labels`` (not on Python's hash salt)."""
    text = ":".join([str(seed), *(str(x) for x in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
