"""Models that differential privacy can train: no BatchNorm (per-sample gradients need it gone)."""

from flock_pipeline.models.classifier import Classifier
from flock_pipeline.models.networks import MODELS, build_network

__all__ = ["MODELS", "Classifier", "build_network"]
