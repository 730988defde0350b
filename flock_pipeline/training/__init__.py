"""One participant's local training: Lightning, with optional Opacus DP-SGD and FedProx."""

from flock_pipeline.training.local import plan_spend, train_local

__all__ = ["plan_spend", "train_local"]
