"""Stake counts once: with each selected role weighted by its stake over its odds of selection
(max(stake, ceil(S / k))), expected pay is linear in stake; weighted by stake alone it would
grow with stake squared. Checked on the Python model over many seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from eth_utils.crypto import keccak
from protocol_helpers import CREATOR, DATA, FINALIZER, FULL, SAMPLES, TOKEN, H, addresses

from flock_pipeline.protocol import (
    Alliance,
    Phase,
    TaskParams,
    role_of,
    role_weight,
    vote_commitment,
)

UNITS = [1, 1, 2, 2, 4, 4, 8, 8]
"""Stakes 1:2:4:8, two accounts each."""
STAKES = [u * 10 * TOKEN for u in UNITS]
K = 3  # proposers and voters per round
SEEDS = 2_000
PARAMS = TaskParams(
    model_hash=b"\x11" * 32,
    rounds=10,  # one round played per task: its reward is a tenth of the pool, never short
    reward_pool=1_000 * TOKEN,
    min_stake=10 * TOKEN,
    max_participants=8,
    proposers_per_round=K,
    voters_per_round=K,
    training_duration=100,
    commit_duration=50,
    reveal_duration=50,
    unbonding_delay=400,
)
PEOPLE = addresses(len(STAKES), "weights")


def play_one_round(seed: bytes) -> dict[str, int]:
    """A fresh task, one all-honest round under `seed`: every selected proposer submits, every
    selected voter accepts and gives every update full credit. Each account's reward."""
    alliance = Alliance(PARAMS, CREATOR, now=1_000)
    for account, stake in zip(PEOPLE, STAKES, strict=True):
        alliance.stake(account, stake, SAMPLES, DATA)
    r = alliance.start_round(seed)
    roles = {a: alliance.role_of(r, a) for a in PEOPLE}
    for account in PEOPLE:
        if roles[account].proposes:
            alliance.submit_update(account, r, keccak(account.encode()), 100)
    alliance.now = alliance.rounds[r].training_ends
    updates = alliance.rounds[r].updates
    ballots = {}
    if updates:
        for account in PEOPLE:
            if roles[account].votes:
                salt = keccak(seed + account.encode())
                values = (FULL,) * updates
                digest = vote_commitment(1, r, account, H, FULL, salt, values)
                alliance.commit_vote(account, r, digest)
                ballots[account] = (salt, values)
    alliance.now = alliance.rounds[r].commit_ends
    for account, (salt, values) in ballots.items():
        alliance.reveal_vote(account, r, H, FULL, values, salt)
    alliance.now = alliance.rounds[r].reveal_ends
    assert alliance.phase_of(r) is Phase.FINALIZABLE
    alliance.finalize_round(FINALIZER, r)
    assert alliance.audit() == []
    return {a: alliance.claim(a) for a in PEOPLE}


def per_unit_means(rewards: Sequence[dict[str, int]]) -> dict[int, tuple[float, float]]:
    """Per stake class: the mean reward per unit of stake over the rounds, and its standard
    error."""
    out = {}
    for unit in sorted(set(UNITS)):
        members = [a for a, u in zip(PEOPLE, UNITS, strict=True) if u == unit]
        series = [sum(r[a] for a in members) / (len(members) * unit) for r in rewards]
        out[unit] = (statistics.fmean(series), statistics.stdev(series) / math.sqrt(len(series)))
    return out


def test_expected_reward_is_linear_in_stake() -> None:
    # Prepare: 2,000 seeds, one honest round each; the odds of the lightest accounts are 0.1
    seeds = [keccak(b"weights seed %d" % i) for i in range(SEEDS)]
    assert K * STAKES[0] / sum(STAKES) == 0.1
    # Execute
    rewards = [play_one_round(seed) for seed in seeds]
    means = per_unit_means(rewards)
    # Assert: every class earns the same per unit of stake, within four standard errors
    overall = sum(sum(r.values()) for r in rewards) / (len(rewards) * sum(UNITS))
    for unit, (mean, error) in means.items():
        assert abs(mean - overall) < 4 * error, (unit, mean / overall, error / overall)
    assert all(error / overall < 0.06 for _, error in means.values())  # the test has power
    # and on average the whole pot of each round is paid out: the pots are budgeted for S
    reward = PARAMS.reward_pool // PARAMS.rounds
    paid = statistics.fmean(sum(r.values()) for r in rewards)
    assert abs(paid - reward) < 0.05 * reward


def test_weighting_by_stake_alone_pays_superlinearly() -> None:
    """The rule this replaces, for contrast: each selected role weighted by its stake and each
    pot split over the selected (same seeds and roles, arithmetic only)."""
    seeds = [keccak(b"weights seed %d" % i) for i in range(SEEDS)]
    total = sum(STAKES)
    old: list[dict[str, int]] = []
    new: list[dict[str, int]] = []
    for seed in seeds:
        roles = {a: role_of(seed, a, s, total, K, K) for a, s in zip(PEOPLE, STAKES, strict=True)}
        stake = dict(zip(PEOPLE, STAKES, strict=True))
        old_pay = dict.fromkeys(PEOPLE, 0)
        new_pay = dict.fromkeys(PEOPLE, 0)
        for takes in ("proposes", "votes"):
            chosen = [a for a in PEOPLE if getattr(roles[a], takes)]
            for a in chosen:
                old_pay[a] += 10**18 * stake[a] // sum(stake[c] for c in chosen)
                new_pay[a] += 10**18 * role_weight(stake[a], total, K) // total
        old.append(old_pay)
        new.append(new_pay)
    old_means, new_means = per_unit_means(old), per_unit_means(new)
    # weighted by stake, the heaviest earn several times the lightest per unit of stake
    assert old_means[8][0] > 3 * old_means[1][0]
    # weighted by stake over odds, they earn the same (within four standard errors)
    spread = new_means[8][0] - new_means[1][0]
    assert abs(spread) < 4 * math.hypot(new_means[8][1], new_means[1][1])


def test_a_role_weight_is_the_stake_over_its_odds() -> None:
    total = 300
    assert role_weight(10, total, 3) == 100  # odds 0.1
    assert role_weight(100, total, 3) == 100  # odds 1: its stake
    assert role_weight(250, total, 3) == 250  # certain, heavier than S / k: its stake
    assert role_weight(10, 301, 3) == 101  # ceil(S / k)
    # its expected value is the stake, up to the rounding of ceil
    for stake in (10, 37, 99, 100, 101):
        odds = min(1, 3 * stake / total)
        assert math.isclose(odds * role_weight(stake, total, 3), stake, abs_tol=1)
