"""Trust carried across rounds: the screen leaves out a proposer whose earlier updates scored a
mean contribution below ``min_trust``; an excluded update is scored by the harm adding it back
would do, so a proposer that stops hurting is let in again."""

from __future__ import annotations

import pytest
import torch
from toy_updates import DIRECTION, GLOBAL, distance_loss, honest_updates, relative_gain, toy_update

from flock_pipeline.aggregation import Bulyan, FedAvg
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.config import load_config
from flock_pipeline.contribution import PENALTY, contributions
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.round import aggregate, aggregate_kept
from flock_pipeline.simulation import run_simulation


def test_a_proposer_whose_trust_is_below_min_trust_is_distrusted():
    updates = honest_updates(5)
    # Each round's mean absolute contribution is its unit: 0.1 in both rounds here.
    history = [
        {"h0": -0.2, "h1": -0.1, "h2": 0.1, "h3": 0.0, "h4": 0.1},
        {"h0": -0.15, "h2": -0.05, "h3": -0.1, "h4": 0.1},
    ]
    # trust: h0 (-2 - 1.5) / 2 = -1.75; h1 -1 (one round only); h2 (1 - 0.5) / 2 = 0.25;
    # h3 (0 - 1) / 2 = -0.5; h4 +1
    screen = Screen()
    assert screen.trust(history, "h0") == pytest.approx(-1.75)
    assert screen.trust(history, "h1") is None  # one round is not enough to judge (trust_rounds 2)
    assert screen.trust(history, "h3") == pytest.approx(-0.5)
    assert screen(updates, GLOBAL, history).flagged == {"h0": "distrusted"}
    assert Screen(min_trust=-0.4)(updates, GLOBAL, history).flagged == {
        "h0": "distrusted",
        "h3": "distrusted",
    }
    assert Screen(trust_rounds=1, min_trust=-0.9)(updates, GLOBAL, history).flagged == {
        "h0": "distrusted",
        "h1": "distrusted",
    }
    assert Screen(min_trust=None)(updates, GLOBAL, history).flagged == {}
    assert screen(updates, GLOBAL).flagged == {}  # no history, nothing to hold against anyone
    # the same harm means the same trust whatever the round's scale
    assert screen.trust([{k: v / 1000 for k, v in r.items()} for r in history], "h0") == (
        pytest.approx(-1.75)
    )
    assert screen.trust([{"h0": 0.0, "h1": 0.0}, *history], "h1") is None  # all-zero: no news
    # left out of the aggregate like any flagged update
    agg = aggregate(FedAvg(), updates, GLOBAL, None, 0, Screen(), history)
    expected = FedAvg().aggregate(updates[1:], GLOBAL, {}, 0).weights
    assert all(torch.equal(agg.weights[k], expected[k]) for k in GLOBAL)


def test_a_provable_flag_takes_precedence_over_distrust():
    # A distrusted free rider is still a free rider: penalized, not merely left out.
    updates = [*honest_updates(3), toy_update("rider", torch.zeros(15))]
    history = [{"rider": -1.0, "h0": 0.1}, {"rider": -1.0, "h0": 0.1}]
    flagged = Screen()(updates, GLOBAL, history).flagged
    assert flagged == {"rider": "free_rider"}


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"min_trust": 0.5}, "min_trust"), ({"trust_rounds": 0}, "trust_rounds")]
)
def test_bad_trust_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Screen(**kwargs)
    with pytest.raises(ConfigError):
        load_config(overrides={f"aggregation.screen.{k}": v for k, v in kwargs.items()})


def test_an_excluded_update_scores_only_the_harm_adding_it_back_would_do():
    honest = honest_updates(3)
    harmful = toy_update("bad", -DIRECTION)
    helpful = toy_update("good", DIRECTION)
    updates = [*honest, harmful, helpful]
    history = [{"bad": -0.3, "good": -0.3, "h0": 0.1}] * 2
    loss = distance_loss(DIRECTION)
    scores = dict(
        zip(
            [u.participant for u in updates],
            contributions(FedAvg(), updates, GLOBAL, None, 0, Screen(), loss, None, history),
            strict=True,
        )
    )
    round_loss = loss(FedAvg().aggregate(honest, GLOBAL, {}, 0).weights)
    with_bad = loss(FedAvg().aggregate([*honest, harmful], GLOBAL, {}, 0).weights)
    assert scores["bad"] == pytest.approx(relative_gain(round_loss, with_bad))
    assert PENALTY < scores["bad"] < 0  # measured harm, not a flag
    assert scores["good"] == 0.0  # it would have helped, but it was not used: unpaid
    # the kept updates' leave-one-out leaves the distrusted ones out as the round did
    without_h0 = loss(FedAvg().aggregate(honest[1:], GLOBAL, {}, 0).weights)
    assert scores["h0"] == pytest.approx(relative_gain(without_h0, round_loss))


def test_a_rule_left_with_too_few_updates_by_the_screen_makes_no_step():
    honest = honest_updates(2)
    riders = [toy_update(f"r{i}", torch.zeros(15)) for i in range(3)]
    agg = aggregate(Bulyan(num_malicious=1), [*honest, *riders], GLOBAL, {"s": torch.ones(1)},
                    0, Screen())  # fmt: skip
    assert set(agg.flagged) == {"r0", "r1", "r2"}
    assert all(torch.equal(agg.weights[k], GLOBAL[k]) for k in GLOBAL)
    assert torch.equal(agg.state["s"], torch.ones(1))
    # a round that is simply too small for the rule is still an error to report
    with pytest.raises(AggregationError, match="4f"):
        aggregate_kept(Bulyan(num_malicious=1), honest, GLOBAL, None, 0, {})


def test_label_flippers_are_distrusted_after_two_rounds_of_real_training(tmp_path):
    overrides = {
        "participants": 6,
        "rounds": 4,
        "data.dataset": "digits",
        "partition.scheme": "iid",
        "model.name": "mlp",
        "privacy.enabled": False,
        "training.local_epochs": 2,
        "attacks": {"p1": {"kind": "label_flip"}, "p2": {"kind": "label_flip"}},
        # everyone proposes and votes in every round, whatever the seed
        "chain.proposers_per_round": 6,
        "chain.voters_per_round": 6,
    }
    summary = run_simulation(load_config(overrides=overrides)).summary
    rounds = summary["rounds"]
    for r in rounds[:2]:
        scores = {p["id"]: p["trust_score"] for p in r["participants"]}
        assert scores["p1"] < 0 and scores["p2"] < 0, scores  # they hurt every round
    assert [r["screened"] for r in rounds[:2]] == [{}, {}]  # too early to judge anyone
    for r in rounds[2:]:
        assert r["screened"] == {"p1": "distrusted", "p2": "distrusted"}
        scores = {p["id"]: p["trust_score"] for p in r["participants"]}
        assert scores["p1"] <= 0 and scores["p2"] <= 0, scores  # left out: at most the harm
    off = tmp_path / "off.yaml"  # the way to turn the check off: null in the task file
    off.write_text("aggregation:\n  screen:\n    min_trust: null\n")
    untrusting = run_simulation(load_config(off, overrides)).summary
    assert not any("distrusted" in r["screened"].values() for r in untrusting["rounds"])
    # measured: 0.554 with trust, 0.376 without
    assert summary["final"]["accuracy"] > untrusting["final"]["accuracy"] + 0.05
