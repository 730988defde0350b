"""The screen (what never reaches a strategy) and contribution scores (what a proposer is paid
for): hand-made updates for the rules, real local training for each attack being caught."""

from __future__ import annotations

import pytest
import torch
from toy_updates import DIRECTION, GLOBAL, distance_loss, honest_updates, relative_gain, toy_update

from flock_pipeline.aggregation import (
    CentralDP,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.attacks import AttackSpec, tamper_contributions
from flock_pipeline.config import load_config
from flock_pipeline.contribution import (
    LOWEST_SCORE,
    PENALTY,
    UpdateMean,
    contributions,
    scoring_rule,
)
from flock_pipeline.errors import ConfigError
from flock_pipeline.round import aggregate, build_screen
from flock_pipeline.serialization import Weights, content_hash
from flock_pipeline.update import Update

# ---------------------------------------------------------------- screen


def test_honest_updates_pass_the_screen():
    result = Screen()(honest_updates(5), GLOBAL)
    assert result.flagged == {}
    assert [u.participant for u in result.kept] == ["h0", "h1", "h2", "h3", "h4"]


def test_each_hostile_kind_is_flagged_with_its_reason():
    honest = honest_updates(5)
    updates = [
        *honest,
        toy_update("rider", torch.zeros(15)),
        Update("copy", honest[1].weights, 10),
        toy_update("boost", 10 * DIRECTION),
        toy_update("flip", -DIRECTION),
    ]
    result = Screen()(updates, GLOBAL)
    assert result.flagged == {
        "rider": "free_rider",
        "copy": "copy",
        "boost": "norm_outlier",
        "flip": "opposed",
    }
    assert [u.participant for u in result.kept] == ["h0", "h1", "h2", "h3", "h4"]


def test_the_first_submitter_keeps_its_update_and_the_later_copy_is_flagged():
    a, b = honest_updates(2)
    copy_of_b = Update("c", {k: v + 1e-9 for k, v in b.weights.items()}, 10)
    assert Screen()([a, copy_of_b, b], GLOBAL).flagged == {"h1": "copy"}
    assert Screen()([a, b, copy_of_b], GLOBAL).flagged == {"c": "copy"}


def test_the_round_flags_the_later_copy_even_when_its_id_sorts_first():
    # The strategy combines updates in participant-id order, but the screen judges who copied
    # whom by submission order: "a-copier" sorts before "h1", yet it submitted after it.
    h0, h1, h2 = honest_updates(3)
    copier = Update("a-copier", dict(h1.weights), 10)
    agg = aggregate(FedAvg(), [h0, h1, h2, copier], GLOBAL, None, 0, Screen())
    assert agg.flagged == {"a-copier": "copy"}
    assert agg.selected == ("h0", "h1", "h2")


def test_outlier_checks_need_a_consensus():
    pair = [toy_update("a", DIRECTION), toy_update("b", -DIRECTION)]
    assert Screen()(pair, GLOBAL).flagged == {}  # two updates: nobody to side with
    assert Screen(min_updates=2)(pair, GLOBAL).flagged != {}


def test_every_check_can_be_turned_off():
    updates = [
        *honest_updates(4),
        toy_update("rider", torch.zeros(15)),
        toy_update("flip", -DIRECTION),
    ]
    off = Screen(free_rider_rtol=None, duplicate_rtol=None, max_norm_ratio=None, min_cosine=None)
    assert off(updates, GLOBAL).flagged == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_norm_ratio": 0.5}, "max_norm_ratio"),
        ({"min_cosine": 2.0}, "min_cosine"),
        ({"free_rider_rtol": -1.0}, "free_rider_rtol"),
        ({"min_updates": 1}, "min_updates"),
    ],
)
def test_bad_thresholds_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Screen(**kwargs)


def test_a_mismatched_or_repeated_update_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not match the global model"):
        Screen()([Update("x", {"w": torch.zeros(4, 3)}, 1)], GLOBAL)
    h = honest_updates(1)[0]
    with pytest.raises(ConfigError, match="submitted twice"):
        Screen()([h, h], GLOBAL)


def test_the_screen_is_on_by_default_and_off_with_central_dp():
    assert build_screen(load_config()) is not None
    dp = load_config(overrides={"aggregation.central_dp": {"noise_multiplier": 1.0}})
    assert build_screen(dp) is None
    forced = {"aggregation.central_dp": {"noise_multiplier": 1.0}, "aggregation.screen.enabled": 1}
    assert build_screen(load_config(overrides=forced)) is not None
    assert build_screen(load_config(overrides={"aggregation.screen.enabled": False})) is None


# ---------------------------------------------------------------- aggregate with the screen


def test_flagged_updates_never_reach_the_strategy():
    honest = honest_updates(4)
    hostile = toy_update("boost", 10 * DIRECTION)
    screened = aggregate(FedAvg(), [*honest, hostile], GLOBAL, None, 0, Screen())
    plain = aggregate(FedAvg(), honest, GLOBAL, None, 0)
    assert content_hash(screened.weights) == content_hash(plain.weights)
    assert screened.flagged == {"boost": "norm_outlier"}
    assert screened.selected == ("h0", "h1", "h2", "h3")


def test_with_everything_flagged_the_global_model_stays():
    riders = [toy_update(p, torch.zeros(15)) for p in ("a", "b")]
    agg = aggregate(FedAvg(), riders, GLOBAL, {"m": torch.ones(1)}, 0, Screen())
    assert content_hash(agg.weights) == content_hash(GLOBAL)
    assert set(agg.flagged) == {"a", "b"}
    assert torch.equal(agg.state["m"], torch.ones(1))


# ---------------------------------------------------------------- contributions


def test_contributions_are_leave_one_out_gains_and_flagged_updates_score_minus_one():
    honest = honest_updates(3)
    harmful = toy_update("bad", 0.5 * -DIRECTION + 2.0)  # passes the screen, raises the loss
    rider = toy_update("rider", torch.zeros(15))
    updates = [*honest, harmful, rider]
    loss = distance_loss(DIRECTION)
    scores = contributions(FedAvg(), updates, GLOBAL, None, 0, Screen(), loss)
    assert len(scores) == len(updates)
    assert scores[4] == PENALTY
    assert all(s > 0 for s in scores[:3])
    assert PENALTY < scores[3] < 0  # harmful, but measured: never mistaken for a flag
    # the relative leave-one-out gain, recomputed by hand for the first update
    full = aggregate(FedAvg(), updates, GLOBAL, None, 0, Screen())
    without = aggregate(FedAvg(), updates[1:], GLOBAL, None, 0, Screen())
    assert scores[0] == pytest.approx(relative_gain(loss(without.weights), loss(full.weights)))


def test_leave_one_out_reruns_the_round_s_own_rule_with_its_state():
    # FedAvgM's step depends on the server momentum it carries: the leave-one-out aggregate is
    # the same rule from the same state, without the update.
    honest = honest_updates(4)
    rule, loss = FedAvgM(server_lr=1.0, momentum=0.9), distance_loss(DIRECTION)
    state = aggregate(rule, honest_updates(3), GLOBAL, None, 0).state
    assert state  # the momentum buffer a second round starts from
    scores = contributions(rule, honest, GLOBAL, state, 0, None, loss)
    full = loss(aggregate(rule, honest, GLOBAL, state, 0).weights)
    for i, s in enumerate(scores):
        alone = loss(aggregate(rule, honest[:i] + honest[i + 1 :], GLOBAL, state, 0).weights)
        assert s == pytest.approx(relative_gain(alone, full))


@pytest.mark.parametrize(
    "rule",
    [Krum(num_malicious=1), MultiKrum(num_malicious=2), FedMedian(), FedTrimmedAvg(beta=0.2),
     CentralDP(FedMedian(), noise_multiplier=1.0)],
    ids=lambda r: r.name,
)  # fmt: skip
def test_an_order_statistic_rule_is_scored_against_the_mean_of_the_kept_updates(rule):
    # Leaving one update out of a median or a Krum pick moves the output by a rank artefact;
    # the scores use the unweighted mean of the kept updates instead (the rider stays out).
    honest = honest_updates(6)
    updates = [*honest, toy_update("rider", torch.zeros(15))]
    loss = distance_loss(DIRECTION)
    assert isinstance(scoring_rule(rule), UpdateMean)
    scores = contributions(rule, updates, GLOBAL, None, 0, Screen(), loss)
    assert scores[-1] == PENALTY

    def mean_loss(us: list[Update]) -> float:
        flat = torch.stack([torch.cat([u.weights[k].reshape(-1) for k in GLOBAL]) for u in us])
        return float(torch.linalg.vector_norm(flat.double().mean(dim=0) - DIRECTION.double()))

    full = mean_loss(honest)
    for i, s in enumerate(scores[:-1]):
        assert s == pytest.approx(relative_gain(mean_loss(honest[:i] + honest[i + 1 :]), full))


def test_mean_rules_are_scored_with_themselves():
    for rule in (FedAvg(), FedAvgM(), CentralDP(FedAvg(), noise_multiplier=1.0)):
        assert scoring_rule(rule) is rule


def test_a_measured_score_never_reaches_the_flag_value():
    # An update that makes the loss explode scores just above -1, and only a flag is -1.
    updates = honest_updates(3)
    with_all = aggregate(FedAvg(), updates, GLOBAL, None, 0).weights

    def loss(w: Weights) -> float:
        return 1e12 if w is with_all or torch.equal(w["b"], with_all["b"]) else 1.0

    scores = contributions(FedAvg(), updates, GLOBAL, None, 0, None, loss)
    assert all(s == LOWEST_SCORE for s in scores)
    assert round(LOWEST_SCORE, 6) > PENALTY  # still distinct after the flows' rounding
    inf = contributions(FedAvg(), updates, GLOBAL, None, 0, None, lambda w: float("inf"))
    assert all(s == LOWEST_SCORE for s in inf)


def test_a_dishonest_voter_negates_its_contribution_scores():
    assert tamper_contributions([0.2, -1.0], AttackSpec(kind="dishonest_voter")) == [-0.2, 1.0]
    assert tamper_contributions([0.2, -1.0], AttackSpec(kind="sign_flip")) == [0.2, -1.0]
    assert tamper_contributions([0.2], None) == [0.2]


# ---------------------------------------------------------------- real training, each attack


@pytest.fixture(scope="module")
def trained_round():
    """One round of real local training on digits (6 participants, IID), every attack kind
    that changes the update applied to a different participant."""
    from flock_pipeline.round import (
        initial_weights,
        prepare_federation,
        submitted_updates,
        train_participant,
    )

    attacks = {
        "p1": {"kind": "free_rider"},
        "p2": {"kind": "copier", "copy_from": "p0"},
        "p3": {"kind": "boosted", "scale": 10.0},
        "p4": {"kind": "sign_flip"},
        "p5": {"kind": "gaussian_noise", "sigma": 1.0},
    }
    honest = {f"p{i}": None for i in range(6, 9)}
    cfg = load_config(
        overrides={
            "participants": 9,
            "data.dataset": "digits",
            "partition.scheme": "iid",
            "model.name": "mlp",
            "privacy.enabled": False,
            "training.local_epochs": 2,
            "attacks": attacks,
        }
    )
    fed = prepare_federation(cfg)
    g = initial_weights(cfg, fed)
    trained = [train_participant(cfg, fed, i, g, 1, None) for i in range(cfg.participants)]
    return cfg, fed, g, submitted_updates(cfg, trained, g, 1), honest


def test_each_update_attack_is_caught_by_the_screen_in_real_training(trained_round):
    cfg, _, g, updates, honest = trained_round
    flagged = aggregate(FedAvg(), updates, g, None, 0, build_screen(cfg)).flagged
    assert flagged == {
        "p1": "free_rider",
        "p2": "copy",
        "p3": "norm_outlier",
        "p4": "opposed",
        "p5": "norm_outlier",
    }
    assert not set(flagged) & set(honest)


def test_free_riders_and_copies_are_penalized_and_outliers_only_excluded(trained_round):
    from flock_pipeline.evaluation import evaluate
    from flock_pipeline.models import build_network

    cfg, fed, g, updates, honest = trained_round
    voter = fed.participants[6]
    net = build_network("mlp", fed.input_shape, fed.num_classes)

    def loss(weights: Weights) -> float:
        return evaluate(net, weights, voter.x_holdout, voter.y_holdout).loss

    scores = dict(
        zip(
            [u.participant for u in updates],
            contributions(FedAvg(), updates, g, None, 0, build_screen(cfg), loss),
            strict=True,
        )
    )
    assert scores["p1"] == scores["p2"] == PENALTY  # free rider, copy: provable
    # Outliers (boosted, sign-flipped, noise): excluded and unpaid; each scores the harm adding
    # it back would have done (0 if none), never the penalty.
    assert all(PENALTY < scores[p] <= 0 for p in ("p3", "p4", "p5")), scores
    # Four near-identical IID updates: each one's leave-one-out gain is small noise (measured
    # -0.002..+0.004 here), far from the penalty.
    assert all(abs(scores[p]) < 0.05 for p in ["p0", *honest])


def test_flagged_updates_count_against_a_robust_rule_s_num_malicious():
    honest = honest_updates(5)
    hostile = [toy_update("boost", 10 * DIRECTION), toy_update("rider", torch.zeros(15))]
    # told to expect 2 attackers, Multi-Krum keeps n - f of what it sees; the screen already
    # removed both, so it keeps all 5 honest updates, exactly as with f = 0 on them alone
    screened = aggregate(MultiKrum(num_malicious=2), [*honest, *hostile], GLOBAL, None, 0, Screen())
    alone = aggregate(MultiKrum(num_malicious=0), honest, GLOBAL, None, 0)
    assert sorted(screened.selected) == ["h0", "h1", "h2", "h3", "h4"]
    assert content_hash(screened.weights) == content_hash(alone.weights)
    # never below zero, and rules without the parameter are untouched
    more = aggregate(MultiKrum(num_malicious=1), [*honest, *hostile], GLOBAL, None, 0, Screen())
    assert content_hash(more.weights) == content_hash(alone.weights)
