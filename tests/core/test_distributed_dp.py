"""Central DP with distributed noise through the simulation: the proposers' shares are secret
(two runs of one config commit different updates, without DP none of them changes), and the
reported central ε is the accountant's for σ given t honest proposers."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from flock_pipeline.config import load_config
from flock_pipeline.simulation import run_simulation

SMALL = {
    "participants": 4,
    "rounds": 2,
    "data.dataset": "digits",
    "partition.scheme": "iid",
    "model.name": "mlp",
    "privacy.enabled": False,
    "training.local_epochs": 1,
}


def _hashes(summary):
    return [[p["update_hash"] for p in r["participants"]] for r in summary["rounds"]]


def test_central_dp_shares_are_secret_and_epsilon_holds_at_sigma_given_t_honest():
    central = {"aggregation.central_dp": {"noise_multiplier": 0.8, "clip_norm": 2.0,
                                          "min_honest": 4}}  # fmt: skip
    a, b = (run_simulation(load_config(overrides={**SMALL, **central})).summary for _ in "ab")
    plain = [run_simulation(load_config(overrides=SMALL)).summary for _ in "ab"]
    # every proposer committed in both runs, and no committed update is the same twice
    first, second = _hashes(a), _hashes(b)
    assert all(h is not None for row in first + second for h in row)
    assert not {h for row in first for h in row} & {h for row in second for h in row}
    assert _hashes(plain[0]) == _hashes(plain[1])  # no secret involved: bit for bit
    # four updates a round, t = 4: each round released at σ = 0.8
    by_hand = RDPAccountant()
    for r in a["rounds"]:
        by_hand.step(noise_multiplier=0.8, sample_rate=1.0)
        assert r["central_epsilon"] == pytest.approx(by_hand.get_epsilon(delta=1e-5), rel=1e-9)
