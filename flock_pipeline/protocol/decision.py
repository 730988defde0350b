"""The voter's judgement of a round's aggregate: accept unless it is measurably harmful.

A voter scores the aggregate it recomputed against the current global model on its own data
(its held-out split, or the task's shared validation set). Per sample it takes the change in
cross-entropy, ``d_i = loss_old(x_i) - loss_new(x_i)`` (positive: the aggregate is better), and
votes

    score = (mean(d) + z * se(d)) / mean(loss_old),   se(d) = std(d) / sqrt(n)

clamped to [-1, 1]; it accepts iff ``score >= 0``. In words: the aggregate is accepted unless
its held-out loss is worse than the global model's by more than ``z`` standard errors of the
paired difference. The margin shrinks as the voter holds more samples, so a voter with little
data does not reject an aggregate for noise, and a harmful aggregate (a step that raises the
loss on most samples) is rejected even by a small voter. Dividing by the old loss makes the score
mean the same early in training (losses of several nats) as late.

Why this rule and not another is measured in ``bench/vote_rules.py`` and argued in
docs/protocol.md. It is pure: numbers in, a number out.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from flock_pipeline.errors import ConfigError

__all__ = ["DEFAULT_TOLERANCE", "accepts", "judge"]

DEFAULT_TOLERANCE = 1.0
"""Standard errors of the paired loss difference a voter tolerates before it rejects."""


def judge(
    old_losses: npt.ArrayLike, new_losses: npt.ArrayLike, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """The vote's score, in [-1, 1]: the relative loss improvement of the aggregate plus
    ``tolerance`` standard errors. Non-finite losses of the aggregate (a diverged model) score
    -1, a strict reject; with no samples the voter cannot tell and scores 0 (accept)."""
    if not tolerance >= 0:
        raise ConfigError(f"vote tolerance {tolerance} must be >= 0 standard errors")
    old = np.asarray(old_losses, dtype=np.float64)
    new = np.asarray(new_losses, dtype=np.float64)
    if old.shape != new.shape or old.ndim != 1:
        raise ValueError(f"paired losses need equal 1-d shapes, got {old.shape}, {new.shape}")
    n = len(old)
    if n == 0:
        return 0.0
    if not np.isfinite(new).all():
        return -1.0
    diff = old - new
    mean = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    scale = float(old.mean())
    if not scale > 0:
        scale = 1.0
    score = (mean + tolerance * se) / scale
    return max(-1.0, min(1.0, score))


def accepts(score: float) -> bool:
    """What the contract reads from a revealed score: non-negative accepts."""
    return score >= 0
