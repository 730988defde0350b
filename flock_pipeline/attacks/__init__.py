"""Adversarial participants for robustness benchmarks and tests: pure and seeded.

Three levels: ``poison_labels`` (training data), ``tamper_update`` (the submitted weights) and
``tamper_score`` (the vote), plus detection helpers for rewards. Importing this package loads
only pydantic; the torch-based functions load on first use, so the config stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flock_pipeline.attacks.spec import ATTACK_KINDS, AttackKind, Attacks, AttackSpec, check_attacks
from flock_pipeline.attacks.votes import VOTE_RESOLUTION, tamper_contributions, tamper_score

if TYPE_CHECKING:
    from flock_pipeline.attacks.detection import is_free_rider, near_duplicates
    from flock_pipeline.attacks.labels import poison_labels
    from flock_pipeline.attacks.updates import skips_training, submission_bytes, tamper_update

__all__ = [
    "ATTACK_KINDS",
    "VOTE_RESOLUTION",
    "AttackKind",
    "AttackSpec",
    "Attacks",
    "check_attacks",
    "is_free_rider",
    "near_duplicates",
    "poison_labels",
    "skips_training",
    "submission_bytes",
    "tamper_contributions",
    "tamper_score",
    "tamper_update",
]

_LAZY = {
    "is_free_rider": "detection",
    "near_duplicates": "detection",
    "poison_labels": "labels",
    "skips_training": "updates",
    "submission_bytes": "updates",
    "tamper_update": "updates",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
