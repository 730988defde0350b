"""Strategies and attacks wired through the round steps: the config picks them, the plain
simulation applies them, and a robust rule holds where FedAvg breaks."""

from __future__ import annotations

import pytest

from flock_pipeline.config import load_config
from flock_pipeline.errors import ConfigError
from flock_pipeline.simulation import run_simulation

SMALL = {
    "participants": 5,
    "rounds": 2,
    "data.dataset": "digits",
    "partition.scheme": "iid",
    "model.name": "mlp",
    "privacy.enabled": False,
    "training.local_epochs": 4,
}


def _run(**overrides):
    cfg = load_config(overrides={**SMALL, **overrides})
    return run_simulation(cfg).summary


def test_a_boosted_attacker_breaks_fedavg_but_not_the_median_or_the_screen():
    attack = {"attacks": {"p1": {"kind": "boosted", "scale": 50.0}}}
    unscreened = {**attack, "aggregation.screen.enabled": False}
    honest = _run()["final"]["accuracy"]
    fedavg = _run(**unscreened)["final"]["accuracy"]
    median = _run(**unscreened, **{"aggregation.strategy": "fedmedian"})["final"]["accuracy"]
    screened = _run(**attack)
    # measured: honest 0.81, FedAvg under attack 0.20, FedMedian under attack 0.82
    assert honest > 0.7
    assert fedavg < 0.4  # one boosted update drags the mean away (and the voters reject it)
    assert median > honest - 0.1  # the median ignores it
    # the default screen drops it before FedAvg sees it
    assert all(r["screened"] == {"p1": "norm_outlier"} for r in screened["rounds"])
    assert screened["final"]["accuracy"] > honest - 0.1


def test_the_voters_reject_the_aggregate_a_boosted_attacker_breaks_and_the_model_stays():
    summary = _run(
        attacks={"p1": {"kind": "boosted", "scale": 50.0}}, **{"aggregation.screen.enabled": False}
    )
    first = summary["rounds"][0]
    assert first["outcome"] == "rejected"
    honest_votes = [p["vote"] for p in first["participants"] if p["vote"] and p["id"] != "p1"]
    assert honest_votes and not any(v["accept"] for v in honest_votes)
    # the global model does not move, and no honest proposer pays for the attacker's update
    assert first["aggregate_hash"] != first["global_model_hash"]
    assert all(p["slashed"] == "0" for p in first["participants"] if p["id"] != "p1")


def test_krum_leaves_the_attacker_out():
    summary = _run(
        attacks={"p4": {"kind": "sign_flip"}},
        **{
            "aggregation.strategy": "krum",
            "aggregation.params": {"num_malicious": 1},
            "aggregation.screen.enabled": False,
        },
    )
    assert all(r["selected"] and "p4" not in r["selected"] for r in summary["rounds"])


def test_central_dp_reports_a_growing_epsilon():
    summary = _run(**{"aggregation.central_dp": {"noise_multiplier": 1.0, "clip_norm": 5.0}})
    eps = [r["central_epsilon"] for r in summary["rounds"]]
    assert 0 < eps[0] < eps[1]


def test_attacks_on_unknown_participants_are_refused():
    with pytest.raises(ConfigError, match="p9"):
        load_config(overrides={"attacks": {"p9": {"kind": "free_rider"}}})


def test_unknown_strategy_is_refused():
    with pytest.raises(ConfigError, match=r"aggregation\.strategy"):
        load_config(overrides={"aggregation.strategy": "fedmagic"})


def test_a_copier_whose_target_did_not_submit_copies_another_or_free_rides():
    import torch

    from flock_pipeline.round import attack_update
    from flock_pipeline.update import Update

    cfg = load_config(overrides={"attacks": {"p2": {"kind": "copier", "copy_from": "p0"}}})
    glob = {"w": torch.zeros(3)}
    mine = Update("p2", {"w": torch.zeros(3)}, 10)
    other = Update("p3", {"w": torch.ones(3)}, 20)
    copied = attack_update(cfg, mine, glob, 1, [other])  # p0 is not a proposer this round
    assert torch.equal(copied.weights["w"], other.weights["w"]) and copied.participant == "p2"
    alone = attack_update(cfg, mine, glob, 1, [])
    assert torch.equal(alone.weights["w"], glob["w"])


@pytest.mark.parametrize("validation", ["shared", "holdout"])
def test_on_a_shared_validation_set_every_honest_voter_measures_the_same(validation):
    """With ``data.validation: shared`` the voters score on one set, so every honest voter
    measures each update the same, and a proposer's contribution (the mean over the other
    accepting voters) is the same whether one voter lies (and so rejects, and its scores do not
    count for pay) or not; on their own held-out splits the voters measure different values and
    the mean changes with who is left out."""
    base = {
        "data.validation": validation,
        "data.validation_per_class": 20,
        # everyone proposes and votes in every round (odds capped at one), whatever the seed
        "chain.proposers_per_round": 5,
        "chain.voters_per_round": 5,
    }
    honest = _run(**base)
    lying = _run(**base, attacks={"p3": {"kind": "dishonest_voter"}})
    # two rounds: too early for the trust check, so the lie changes no aggregate
    assert honest["final"]["model_hash"] == lying["final"]["model_hash"]
    pairs = [
        (a["contribution"], b["contribution"])
        for ra, rb in zip(honest["rounds"], lying["rounds"], strict=True)
        for a, b in zip(ra["participants"], rb["participants"], strict=True)
    ]
    assert len(pairs) == 10 and all(a != 0 for a, _ in pairs)
    same = [b == pytest.approx(a, rel=1e-9, abs=1e-12) for a, b in pairs]
    assert all(same) if validation == "shared" else not all(same)
