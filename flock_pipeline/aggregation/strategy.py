"""The server-side strategy interface every aggregation rule implements.

A strategy is a pure function of (committed updates, current global weights, its own state):
deterministic, so every voter recomputes the same aggregate and hash. State (server momentum,
Adam moments, adaptive clip norms) is explicit and serializable, never hidden in the object, so a
resumed task or a late voter can continue from the published state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["Aggregate", "Strategy", "StrategyState"]

StrategyState = dict[str, torch.Tensor]
"""Named tensors carried from round to round (empty for stateless strategies)."""


@dataclass(frozen=True)
class Aggregate:
    """A strategy's output: the new global weights, its next state, and what it measured."""

    weights: Weights
    state: StrategyState = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    selected: tuple[str, ...] = ()
    """Participants whose updates were used (robust rules drop some); empty means all."""
    flagged: Mapping[str, str] = field(default_factory=dict)
    """Participants whose updates the screen excluded, with the reason (see ``screen``)."""


class Strategy(ABC):
    """Base of every aggregation rule. Subclasses hold only hyper-parameters."""

    name: str = "strategy"

    order_statistic: ClassVar[bool] = False
    """True for rules built on ranks or selection (median, trimmed mean, the Krum family): their
    output is by design insensitive to any one update, so an update's contribution is measured
    against the plain mean of the kept updates instead (see ``flock_pipeline.contribution``)."""

    sample_weighted: ClassVar[bool] = False
    """True for rules that weight updates by their self-reported sample counts (FedAvg, FedAvgM,
    the FedOpt family): they take a ``max_weight_share`` that bounds any one update's share."""

    keeps_state: ClassVar[bool] = True
    """False for rules that never return a state (FedAvg, the median, the trimmed mean, the
    Krum family, Bulyan): a round's aggregate is then a function of its updates and the global
    model alone, so a voter's work can be set up before the round before it is final. True by
    default, the safe answer for a rule that does not say."""

    @abstractmethod
    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        """Combine ``updates`` (full weights, not deltas) into the next global model.

        ``seed`` is public: it may break ties reproducibly, never stand in for a secret (DP
        noise is drawn by each proposer before it commits).
        Implementations must call ``check_compatible`` and iterate updates in ``ordered`` order.
        """
