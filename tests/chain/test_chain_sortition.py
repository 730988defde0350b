"""Properties of the off-chain sortition and score encoding (the contract agrees: see lifecycle)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from flock_pipeline.chain import Role, from_fixed, role_of, to_fixed

seeds = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
stakes = st.integers(min_value=1, max_value=2**100)


@given(seeds, addresses, stakes, stakes, st.integers(1, 64), st.integers(1, 64))
def test_more_stake_never_loses_a_selection(
    seed: bytes, address: str, stake: int, extra: int, proposers: int, voters: int
) -> None:
    total = stake + extra + 10**18
    before = role_of(seed, address, stake, total, proposers, voters)
    after = role_of(seed, address, stake + extra, total + extra, proposers, voters)
    if before is Role.PROPOSER:
        assert after is Role.PROPOSER
    if before is not Role.NONE:
        assert after is not Role.NONE


@given(seeds, addresses, stakes, st.integers(1, 64), st.integers(1, 64))
def test_an_account_holding_all_the_stake_is_always_a_proposer(
    seed: bytes, address: str, stake: int, proposers: int, voters: int
) -> None:
    assert role_of(seed, address, stake, stake, proposers, voters) is Role.PROPOSER


@given(seeds, addresses, st.integers(1, 64), st.integers(1, 64))
def test_no_stake_means_no_role(seed: bytes, address: str, proposers: int, voters: int) -> None:
    assert role_of(seed, address, 0, 10**18, proposers, voters) is Role.NONE


@given(st.decimals(min_value=-1000, max_value=1000, places=18, allow_nan=False))
def test_scores_round_trip_through_fixed_point(score: Decimal) -> None:
    assert from_fixed(to_fixed(score)) == score
