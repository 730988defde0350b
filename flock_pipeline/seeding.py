"""Seeds derived from the task seed, so every (round, participant) gets its own stable stream,
and the one kind of randomness that must never be derived from it: privacy noise."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["derive_seed", "secret_generator"]


def derive_seed(seed: int, *labels: object) -> int:
    """A 31-bit seed that depends only on ``seed`` and ``labels`` (not on Python's hash salt)."""
    text = ":".join([str(seed), *(str(x) for x in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def secret_generator() -> torch.Generator:
    """A CPU generator seeded with 64 bits from the OS CSPRNG (``os.urandom``), for noise.

    Differential privacy noise that anyone could regenerate (from the task seed, the config, a
    key or a chain seed) can be subtracted, which voids the guarantee. So each call draws a
    fresh seed that is never stored, logged or derived from anything else: two runs of the same
    config differ wherever this generator is used, and only there.
    """
    import torch  # here, not at module level: seeds are derived where no torch is needed

    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(os.urandom(8), "big"))
    return gen
