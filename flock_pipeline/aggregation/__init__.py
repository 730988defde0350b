"""Server-side aggregation: pure, deterministic functions of the committed updates."""

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.fedavg import fedavg

__all__ = ["check_compatible", "fedavg", "ordered"]
