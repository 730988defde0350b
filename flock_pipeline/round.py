"""The steps of one federated round, as plain functions.

The plain simulation and the Prefect flows both call exactly these, so round logic exists once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flock_pipeline.aggregation import fedavg
from flock_pipeline.config import FlockConfig
from flock_pipeline.data import Federation, build_federation, load_dataset
from flock_pipeline.evaluation import Evaluation, evaluate
from flock_pipeline.models import build_network
from flock_pipeline.privacy import PrivacyLedger
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights
from flock_pipeline.training import train_local
from flock_pipeline.update import Update

__all__ = [
    "RoundOutcome",
    "aggregate",
    "evaluate_round",
    "initial_weights",
    "prepare_federation",
    "train_participant",
]


def prepare_federation(cfg: FlockConfig) -> Federation:
    dataset = load_dataset(cfg.data.dataset, cfg.data.fashion_mnist_dir)
    return build_federation(dataset, cfg.participants, cfg.data, cfg.partition, cfg.seed)


def initial_weights(cfg: FlockConfig, fed: Federation) -> Weights:
    """The round-0 global model: a fresh network from the task seed."""
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def train_participant(
    cfg: FlockConfig,
    fed: Federation,
    index: int,
    global_weights: Weights,
    round_number: int,
    ledger: PrivacyLedger | None,
    spend_label: str | None = None,
) -> Update:
    part = fed.participants[index]
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    return train_local(
        part.id,
        net,
        global_weights,
        part.x_train,
        part.y_train,
        cfg.training,
        cfg.privacy,
        ledger,
        seed=derive_seed(cfg.seed, "train", round_number, part.id),
        spend_label=spend_label,
        max_seconds=cfg.training.timeout_minutes * 60,
    )


def aggregate(updates: list[Update], global_weights: Weights) -> Weights:
    return fedavg(updates, reference=global_weights)


@dataclass(frozen=True)
class RoundOutcome:
    global_eval: Evaluation
    holdout: dict[str, Evaluation]


def evaluate_round(cfg: FlockConfig, fed: Federation, weights: Weights) -> RoundOutcome:
    """The model on the global test split and on every participant's held-out split."""
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    return RoundOutcome(
        global_eval=evaluate(net, weights, fed.x_test, fed.y_test),
        holdout={p.id: evaluate(net, weights, p.x_holdout, p.y_holdout) for p in fed.participants},
    )
