"""Models that differential privacy can train: no BatchNorm (per-sample gradients need it gone).

A config names a built-in network (``mlp``, ``cnn``) or a factory by dotted path
(``package.module:factory``, see ``flock_pipeline.models.custom``). The package imports torch
and lightning only when one of its networks is asked for, so that validating a config's model
name stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flock_pipeline.models.custom import check_model, check_model_name, is_dotted_path

if TYPE_CHECKING:
    from flock_pipeline.models.classifier import Classifier
    from flock_pipeline.models.networks import MODELS, build_network

__all__ = [
    "MODELS",
    "Classifier",
    "build_network",
    "check_model",
    "check_model_name",
    "is_dotted_path",
]

_LAZY = {
    "Classifier": "flock_pipeline.models.classifier",
    "MODELS": "flock_pipeline.models.networks",
    "build_network": "flock_pipeline.models.networks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
