"""The steps of one federated round, as plain functions.

The plain simulation and the Prefect flows both call exactly these, so round logic exists once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, is_dataclass, replace

import numpy as np
import torch

from flock_pipeline.aggregation import Aggregate, CentralDP, Strategy, StrategyState, build_strategy
from flock_pipeline.aggregation.screen import History, Screen
from flock_pipeline.attacks import (
    poison_labels,
    skips_training,
    tamper_contributions,
    tamper_score,
    tamper_update,
)
from flock_pipeline.config import FlockConfig
from flock_pipeline.data import Federation, build_federation, load_dataset
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.evaluation import (
    Evaluation,
    GroupLosses,
    evaluate,
    evaluate_many,
    sample_losses,
)
from flock_pipeline.models import build_network
from flock_pipeline.privacy import PrivacyLedger
from flock_pipeline.protocol.decision import judge
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights
from flock_pipeline.training import train_local
from flock_pipeline.update import Update

__all__ = [
    "RoundOutcome",
    "aggregate",
    "aggregate_kept",
    "attack_update",
    "ballot",
    "build_aggregator",
    "build_screen",
    "evaluate_round",
    "held_out_losses",
    "initial_weights",
    "judgement_score",
    "prepare_federation",
    "submitted_updates",
    "train_participant",
    "voter_set",
]

SHARED_VALIDATION = "(shared validation)"
"""The name of the task's shared validation set in :func:`held_out_losses` (no participant id
looks like it)."""


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
    """Honest local training, or what the participant's configured attack does instead.

    Free riders and copiers do not train (their update is made by ``attack_update``); a label
    flipper trains on flipped labels. Under central DP a trained update comes back clipped and
    with this proposer's secret noise share (``CentralDP.share``): what it commits.
    """
    part = fed.participants[index]
    spec = cfg.attacks.get(part.id)
    if skips_training(spec):
        return Update(part.id, {k: v.clone() for k, v in global_weights.items()}, len(part.y_train))
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    trained = train_local(
        part.id,
        net,
        global_weights,
        part.x_train,
        poison_labels(part.y_train, fed.num_classes, spec).astype(np.int64),
        cfg.training,
        cfg.privacy,
        ledger,
        seed=derive_seed(cfg.seed, "train", round_number, part.id),
        spend_label=spend_label,
        max_seconds=cfg.training.timeout_minutes * 60,
    )
    strategy = build_aggregator(cfg)
    return strategy.share(trained, global_weights) if isinstance(strategy, CentralDP) else trained


def attack_update(
    cfg: FlockConfig,
    update: Update,
    global_weights: Weights,
    round_number: int,
    others: Sequence[Update] = (),
) -> Update:
    """The update a participant submits: its trained one, or its attack's (seeded) version."""
    spec = cfg.attacks.get(update.participant)
    seed = derive_seed(cfg.seed, "attack", round_number, update.participant)
    if spec is not None and spec.kind == "copier":
        # In a task only the round's proposers submit: a copier copies whoever is there, and
        # with nobody to copy it free-rides.
        others = [u for u in others if u.participant != update.participant]
        if not others:
            return update
        if spec.copy_from not in {u.participant for u in others}:
            spec = spec.model_copy(update={"copy_from": None})
    return tamper_update(update, global_weights, spec, seed, others)


def build_aggregator(cfg: FlockConfig) -> Strategy:
    """The configured strategy, wrapped in central DP when that is on; a sample-weighted rule
    gets the configured bound on any one update's share (``aggregation.max_weight_share``)."""
    if "max_weight_share" in cfg.aggregation.params:
        raise ConfigError(
            "aggregation.params.max_weight_share: set aggregation.max_weight_share instead"
        )
    inner = build_strategy(cfg.aggregation.strategy, **cfg.aggregation.params)
    if inner.sample_weighted and is_dataclass(inner):
        inner = replace(inner, max_weight_share=cfg.aggregation.max_weight_share)
    dp = cfg.aggregation.central_dp
    if dp is None:
        return inner
    return CentralDP(inner, **dp.model_dump())


def build_screen(cfg: FlockConfig) -> Screen | None:
    """The configured screen, or None when screening is off."""
    if not cfg.aggregation.screening:
        return None
    return Screen(**cfg.aggregation.screen.model_dump(exclude={"enabled"}))


def submitted_updates(
    cfg: FlockConfig, trained: Sequence[Update], global_weights: Weights, round_number: int
) -> list[Update]:
    """Apply each participant's attack to its trained update, in submission order: copiers
    submit last, since they copy what the others actually submitted."""
    copier = {u.participant for u in trained if (s := cfg.attacks.get(u.participant)) and
              s.kind == "copier"}  # fmt: skip
    first = [attack_update(cfg, u, global_weights, round_number) for u in trained
             if u.participant not in copier]  # fmt: skip
    rest = [attack_update(cfg, u, global_weights, round_number, first) for u in trained
            if u.participant in copier]  # fmt: skip
    return [*first, *rest]


def aggregate(
    strategy: Strategy,
    updates: Sequence[Update],
    global_weights: Weights,
    state: StrategyState | None,
    seed: int,
    screen: Screen | None = None,
    history: History | None = None,
    invalid: Mapping[str, str] | None = None,
) -> Aggregate:
    """The screen (if any) over ``updates`` in submission order, with ``history`` (earlier
    rounds' contribution scores) for its trust check, then the strategy over what it kept.
    ``invalid`` (proposer -> ``invalid:<reason>``, ``flock_pipeline.validity``) are the
    round's updates that failed the validity check: never in ``updates``, flagged like the
    screen's exclusions. With nothing kept, the global model and the state stay as they are.

    The screen sees the submission order (of two near-identical updates, the later one is the
    copy: a copier can only copy what was committed before it). The strategy combines the
    kept updates in participant-id order, whatever order they were submitted in: float sums
    depend on their order, and submission order is timing (which worker finished first), so
    the aggregate must not."""

    def by_id(kept: Sequence[Update]) -> list[Update]:
        return sorted(kept, key=lambda u: u.participant)

    invalid = dict(invalid or {})
    if screen is None:
        if not invalid:
            return strategy.aggregate(by_id(updates), global_weights, state or {}, seed)
        return aggregate_kept(strategy, by_id(updates), global_weights, state, seed, invalid)
    result = screen(list(updates), global_weights, history)
    flagged = {**invalid, **result.flagged}
    return aggregate_kept(strategy, by_id(result.kept), global_weights, state, seed, flagged)


def aggregate_kept(
    strategy: Strategy,
    kept: Sequence[Update],
    global_weights: Weights,
    state: StrategyState | None,
    seed: int,
    flagged: Mapping[str, str],
) -> Aggregate:
    """The strategy over the updates a screen kept, ``flagged`` being the ones it left out.

    Each flagged update counts against a robust rule's ``num_malicious`` (f): the screen has
    already removed that many of the f updates the rule was told to expect, and a rule still
    braced for all f would drop as many honest ones in their place. When the screen left
    nothing, or fewer updates than the rule needs (Bulyan's 4f + 3), the round makes no step:
    the global model and the state stay as they are."""
    unchanged = Aggregate(
        weights=dict(global_weights), state=dict(state or {}), flagged=dict(flagged)
    )
    if not kept:
        return unchanged
    rule = _discounted(strategy, len(flagged))
    try:
        agg = rule.aggregate(list(kept), global_weights, state or {}, seed)
    except AggregationError:
        if not flagged:
            raise  # the round itself is too small for the rule: the caller's problem
        return unchanged
    if not flagged:
        return agg
    selected = agg.selected or tuple(sorted(u.participant for u in kept))
    return replace(agg, selected=selected, flagged=dict(flagged))


def _discounted(strategy: Strategy, flagged: int) -> Strategy:
    """``strategy`` with ``num_malicious`` lowered by ``flagged`` (not below 0), if it has one."""
    f = getattr(strategy, "num_malicious", None)
    if not flagged or not isinstance(f, int) or not is_dataclass(strategy):
        return strategy
    return replace(strategy, num_malicious=max(0, f - flagged))


@dataclass(frozen=True)
class RoundOutcome:
    global_eval: Evaluation
    holdout: dict[str, Evaluation]


def held_out_losses(cfg: FlockConfig, fed: Federation) -> GroupLosses:
    """Every participant's held-out split (by its id) and the task's shared validation set, if
    it has one (:data:`SHARED_VALIDATION`), for a run's voters and its rounds' evaluations."""
    sets = {p.id: (p.x_holdout, p.y_holdout) for p in fed.participants}
    if fed.x_validation is not None and fed.y_validation is not None:
        sets[SHARED_VALIDATION] = (fed.x_validation, fed.y_validation)
    return GroupLosses(build_network(cfg.model.name, fed.input_shape, fed.num_classes), sets)


def voter_set(fed: Federation, index: int) -> str:
    """The name in :func:`held_out_losses` of what participant ``index`` scores on as a voter
    (``Federation.voter_data``)."""
    return SHARED_VALIDATION if fed.shared_validation else fed.participants[index].id


def evaluate_round(
    cfg: FlockConfig, fed: Federation, weights: Weights, held_out: GroupLosses | None = None
) -> RoundOutcome:
    """The model on the global test split and on every participant's held-out split; with
    ``held_out`` (:func:`held_out_losses` of this federation), the held-out splits the voters
    already ran under ``weights`` are not run again."""
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    ids = [p.id for p in fed.participants]
    if held_out is not None:
        holdout = held_out.evaluations(weights, ids)
    else:
        sets = [(p.x_holdout, p.y_holdout) for p in fed.participants]
        holdout = dict(zip(ids, evaluate_many(net, weights, sets), strict=True))
    return RoundOutcome(global_eval=evaluate(net, weights, fed.x_test, fed.y_test), holdout=holdout)


def judgement_score(
    cfg: FlockConfig,
    fed: Federation,
    voter_index: int,
    old_weights: Weights,
    new_weights: Weights,
) -> float:
    """An honest voter's score of ``new_weights`` against the global model on what it scores on
    (``Federation.voter_data``): the paired held-out loss test of
    ``flock_pipeline.protocol.decision``."""
    x, y = fed.voter_data(voter_index)
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    old = sample_losses(net, old_weights, x, y)
    new = sample_losses(net, new_weights, x, y)
    return judge(old, new, cfg.vote.tolerance)


def ballot(
    cfg: FlockConfig,
    voter: str,
    score: float,
    scores: Sequence[float],
    proposers: Sequence[str],
) -> tuple[float, list[float]]:
    """What voter ``voter`` reveals: its score and one contribution per update of ``proposers``
    (submission order, invalid updates included), after its configured attack (a dishonest
    voter reverses both). Its own update, if it proposed too, carries 0: nobody scores itself,
    and the contract ignores that entry."""
    spec = cfg.attacks.get(voter)
    revealed = tamper_contributions(list(scores), spec)
    own = [i for i, p in enumerate(proposers) if p == voter]
    for i in own:
        revealed[i] = 0.0
    return tamper_score(score, spec), revealed
