"""FedOpt (Reddi et al. 2021, "Adaptive Federated Optimization"): the shared server-optimizer base.

The averaged client update ``Δ = fedavg(updates) − global`` is treated as a pseudo-gradient step
and fed to an adaptive optimizer on the server. The math follows Flower's FedOpt family
(``flwr.serverapp.strategy``): m and v start at zero, ``new = global + η·m / (√v + τ)``.
Subclasses only say how v is updated (and FedAdam how η is bias-corrected).

The helpers here (float64 weighted mean, state checks) are shared with FedAvgM.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from flock_pipeline.aggregation.base import (
    capped_shares,
    check_compatible,
    check_max_weight_share,
    ordered,
)
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["FedOpt", "float_names", "load_state", "weighted_mean64"]


def float_names(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Sorted names of the floating-point tensors: the only ones a strategy changes."""
    return sorted(name for name, t in weights.items() if t.is_floating_point())


def weighted_mean64(
    updates: Sequence[Update], names: Sequence[str], max_weight_share: float = 1.0
) -> dict[str, torch.Tensor]:
    """Sample-weighted mean of ``names`` in float64, in the canonical order, not yet rounded,
    no update above ``max_weight_share`` of the weight (``capped_shares``).

    Same arithmetic as ``fedavg()`` but without its final cast, so a server optimizer rounds once.
    """
    canonical = ordered(updates)
    shares = capped_shares([u.num_samples for u in canonical], max_weight_share)
    total = sum(u.num_samples for u in canonical)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        acc = torch.zeros_like(canonical[0].weights[name], dtype=torch.float64)
        if shares is None:
            for u in canonical:
                acc.add_(u.weights[name], alpha=u.num_samples)
            out[name] = acc / total
            continue
        for u, share in zip(canonical, shares, strict=True):
            acc.add_(u.weights[name], alpha=share)
        out[name] = acc
    return out


def load_state(
    state: StrategyState | None,
    keys: Mapping[str, torch.Size],
    strategy: str,
) -> dict[str, torch.Tensor] | None:
    """The float64 state tensors for ``keys``, or None on the first round (no state yet).

    A partial or mis-shaped state is refused: silently restarting an optimizer would change the
    aggregate without anyone noticing.
    """
    if not state:
        return None
    out: dict[str, torch.Tensor] = {}
    for key, shape in keys.items():
        if key not in state:
            raise AggregationError(
                f"{strategy} state is missing {key!r}; pass the state returned by the previous "
                "round, or none to start fresh"
            )
        t = state[key]
        if t.shape != shape:
            raise AggregationError(
                f"{strategy} state {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}"
            )
        out[key] = t.to(torch.float64)
    return out


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def _check_positive(name: str, value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")


@dataclass(frozen=True)
class FedOpt(Strategy):
    """Base of FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021); not usable on its own.

    ``eta`` is the server learning rate, ``beta_1`` the momentum of m, ``beta_2`` the decay of v,
    ``tau`` the adaptivity (it keeps the step finite where v is zero). State: ``m/<tensor>``,
    ``v/<tensor>`` (float64) and ``step`` (rounds aggregated so far, int64).
    ``max_weight_share`` bounds any one update's share of the mean (1: no bound).
    """

    eta: float = 1e-1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    max_weight_share: float = 1.0

    name = "fedopt"
    sample_weighted = True

    def __post_init__(self) -> None:
        check_max_weight_share(self.max_weight_share)
        _check_positive("eta", self.eta)
        _check_unit_interval("beta_1", self.beta_1)
        _check_unit_interval("beta_2", self.beta_2)
        _check_positive("tau", self.tau)

    @abstractmethod
    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The next v from the previous v (zeros on the first round) and Δ."""

    def step_size(self, step: int) -> float:
        """The server learning rate for round ``step`` (1-based)."""
        return self.eta

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, reference=global_weights)
        names = float_names(global_weights)
        shapes = {f"{kind}/{n}": global_weights[n].shape for n in names for kind in ("m", "v")}
        prev = load_state(state, {**shapes, "step": torch.Size([])}, self.name)
        step = 1 if prev is None else int(prev["step"].item()) + 1
        lr = self.step_size(step)
        mean = weighted_mean64(updates, names, self.max_weight_share)

        weights: Weights = {}
        new_state: StrategyState = {"step": torch.tensor(step, dtype=torch.int64)}
        for name in sorted(global_weights):
            g = global_weights[name]
            if name not in mean:
                weights[name] = g.clone()
                continue
            g64 = g.to(torch.float64)
            delta = mean[name] - g64
            m0 = torch.zeros_like(g64) if prev is None else prev[f"m/{name}"]
            v0 = torch.zeros_like(g64) if prev is None else prev[f"v/{name}"]
            m = self.beta_1 * m0 + (1.0 - self.beta_1) * delta
            v = self.second_moment(v0, delta)
            weights[name] = (g64 + lr * m / (v.sqrt() + self.tau)).to(g.dtype).contiguous()
            new_state[f"m/{name}"] = m
            new_state[f"v/{name}"] = v
        return Aggregate(weights=weights, state=new_state, metrics={"server_lr": lr})
