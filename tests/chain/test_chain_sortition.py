"""Properties of the off-chain sortition and score encoding (the contract agrees: see lifecycle)."""

from __future__ import annotations

import math
from decimal import Decimal

from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from flock_pipeline.chain import Role, from_fixed, role_of, to_fixed
from flock_pipeline.protocol.roles import draw, is_proposer, is_voter

seeds = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
stakes = st.integers(min_value=1, max_value=2**100)
counts = st.integers(1, 64)

# A fixed population and a fixed set of seeds: keccak is exact, so the counts below are the
# same on every machine.
STAKES = [(i + 1) * 10**18 for i in range(12)]
ACCOUNTS = ["0x" + keccak(b"account %d" % i)[-20:].hex() for i in range(len(STAKES))]
SEEDS = [keccak(b"seed %d" % i) for i in range(2_000)]


@given(seeds, addresses, stakes, stakes, counts, counts)
def test_more_stake_never_loses_a_selection(
    seed: bytes, address: str, stake: int, extra: int, proposers: int, voters: int
) -> None:
    total = stake + extra + 10**18
    before = role_of(seed, address, stake, total, proposers, voters)
    after = role_of(seed, address, stake + extra, total + extra, proposers, voters)
    assert after.proposes >= before.proposes
    assert after.votes >= before.votes


@given(seeds, addresses, stakes, counts, counts)
def test_an_account_holding_all_the_stake_proposes_and_votes(
    seed: bytes, address: str, stake: int, proposers: int, voters: int
) -> None:
    assert role_of(seed, address, stake, stake, proposers, voters) is Role.BOTH


@given(seeds, addresses, counts, counts)
def test_no_stake_means_no_role(seed: bytes, address: str, proposers: int, voters: int) -> None:
    assert role_of(seed, address, 0, 10**18, proposers, voters) is Role.NONE
    assert role_of(seed, address, 10**18, 0, proposers, voters) is Role.NONE


@given(seeds, addresses, stakes, stakes, counts, counts)
def test_the_role_combines_two_draws_of_their_own(
    seed: bytes, address: str, stake: int, extra: int, proposers: int, voters: int
) -> None:
    total = stake + extra
    role = role_of(seed, address, stake, total, proposers, voters)
    assert role.proposes is is_proposer(seed, address, stake, total, proposers)
    assert role.votes is is_voter(seed, address, stake, total, voters)
    assert role is Role(int(role.proposes) | int(role.votes) << 1)
    assert 0 <= draw(seed, address, 0) < 2**64 and 0 <= draw(seed, address, 1) < 2**64
    assert draw(seed, address, 0) != draw(seed, address, 1)  # equal with odds 2**-64


def _mean_and_tolerance(odds: list[float]) -> tuple[float, float]:
    """Expected count per seed and four standard deviations of its mean over SEEDS."""
    variance = sum(p * (1 - p) for p in odds)
    return sum(odds), 4 * math.sqrt(variance / len(SEEDS))


def test_the_expected_numbers_of_proposers_and_voters_are_the_configured_ones() -> None:
    proposers, voters = 4, 3
    total = sum(STAKES)
    p_odds = [proposers * s / total for s in STAKES]
    v_odds = [voters * s / total for s in STAKES]
    assert max(p_odds) < 1  # nobody is certain, so every draw counts
    population = list(zip(ACCOUNTS, STAKES, strict=True))
    roles = [
        [role_of(seed, a, s, total, proposers, voters) for a, s in population] for seed in SEEDS
    ]
    n = len(SEEDS)
    mean_p = sum(sum(r.proposes for r in row) for row in roles) / n
    mean_v = sum(sum(r.votes for r in row) for row in roles) / n
    mean_both = sum(sum(r is Role.BOTH for r in row) for row in roles) / n
    expected_p, tolerance_p = _mean_and_tolerance(p_odds)
    expected_v, tolerance_v = _mean_and_tolerance(v_odds)
    expected_both, tolerance_both = _mean_and_tolerance(
        [p * v for p, v in zip(p_odds, v_odds, strict=True)]
    )
    assert math.isclose(expected_p, proposers) and math.isclose(expected_v, voters)
    assert abs(mean_p - proposers) < tolerance_p
    assert abs(mean_v - voters) < tolerance_v
    assert abs(mean_both - expected_both) < tolerance_both  # the two draws are independent
    # odds grow with stake: the heaviest account proposes more often than the lightest
    heavy = sum(row[-1].proposes for row in roles) / n
    light = sum(row[0].proposes for row in roles) / n
    assert heavy - light > 4 * math.sqrt((p_odds[-1] + p_odds[0]) / n)


@given(st.decimals(min_value=-1000, max_value=1000, places=18, allow_nan=False))
def test_scores_round_trip_through_fixed_point(score: Decimal) -> None:
    assert from_fixed(to_fixed(score)) == score
