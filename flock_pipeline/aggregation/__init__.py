"""Server-side aggregation: pure, deterministic functions of the committed updates."""

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.bulyan import Bulyan
from flock_pipeline.aggregation.central_dp import CentralDP
from flock_pipeline.aggregation.fedadagrad import FedAdagrad
from flock_pipeline.aggregation.fedadam import FedAdam
from flock_pipeline.aggregation.fedavg import FedAvg, fedavg
from flock_pipeline.aggregation.fedavgm import FedAvgM
from flock_pipeline.aggregation.fedmedian import FedMedian
from flock_pipeline.aggregation.fedopt import FedOpt
from flock_pipeline.aggregation.fedtrimmedavg import FedTrimmedAvg
from flock_pipeline.aggregation.fedyogi import FedYogi
from flock_pipeline.aggregation.krum import Krum, MultiKrum
from flock_pipeline.aggregation.registry import STRATEGIES, build_strategy
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "Bulyan",
    "CentralDP",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedOpt",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "Strategy",
    "StrategyState",
    "build_strategy",
    "check_compatible",
    "fedavg",
    "ordered",
]
