"""Strategies by the name a configuration uses for them."""

from __future__ import annotations

import dataclasses
import typing
from types import NoneType, UnionType
from typing import Any

from flock_pipeline.aggregation.bulyan import Bulyan
from flock_pipeline.aggregation.fedadagrad import FedAdagrad
from flock_pipeline.aggregation.fedadam import FedAdam
from flock_pipeline.aggregation.fedavg import FedAvg
from flock_pipeline.aggregation.fedavgm import FedAvgM
from flock_pipeline.aggregation.fedmedian import FedMedian
from flock_pipeline.aggregation.fedtrimmedavg import FedTrimmedAvg
from flock_pipeline.aggregation.fedyogi import FedYogi
from flock_pipeline.aggregation.krum import Krum, MultiKrum
from flock_pipeline.aggregation.strategy import Strategy
from flock_pipeline.errors import ConfigError

__all__ = ["STRATEGIES", "build_strategy", "strategy_params"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        FedMedian,
        FedTrimmedAvg,
        Krum,
        MultiKrum,
        Bulyan,
    )
}


def strategy_params(cls: type[Strategy]) -> dict[str, Any]:
    """The hyper-parameters ``cls`` accepts, with their defaults."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def _coerce(strategy: str, param: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a float, int, bool or ``X | None`` annotation; int is a float."""
    options = typing.get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    if value is None and NoneType in options:
        return None
    if isinstance(value, bool):
        if bool in options:
            return value
    elif isinstance(value, int) and int in options:
        return value
    elif isinstance(value, int | float) and float in options:
        return float(value)
    wanted = " or ".join("None" if o is NoneType else o.__name__ for o in options)
    raise ConfigError(f"strategy {strategy!r}: parameter {param!r} must be {wanted}, got {value!r}")


def build_strategy(name: str, **params: Any) -> Strategy:
    """The strategy called ``name`` with ``params``; ConfigError names what is wrong."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown aggregation strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}"
        )
    accepted = strategy_params(cls)
    hints = typing.get_type_hints(cls)
    checked: dict[str, Any] = {}
    for param, value in params.items():
        if param not in accepted:
            valid = ", ".join(accepted) if accepted else "none"
            raise ConfigError(
                f"strategy {name!r} has no parameter {param!r}; its parameters: {valid}"
            )
        checked[param] = _coerce(name, param, value, hints[param])
    return cls(**checked)
