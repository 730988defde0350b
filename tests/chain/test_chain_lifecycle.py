"""The FL Alliance round lifecycle, end to end on py-evm and on anvil (four participants).

Each test builds the situation it checks (who proposes, who votes, for which hash, with which
score) and asserts properties that hold whatever the contract's internal arithmetic: payouts
add up to the pot, shares match the exact proportion to within rounding, stakes move only by
the named slash.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import pytest
from chain_world import (
    AGGREGATE,
    BAD,
    BOGUS,
    FULL,
    GOOD,
    MODEL,
    STAKE,
    TOKEN,
    RoundUnderTest,
    World,
)

from flock_pipeline.attacks import AttackSpec, tamper_score
from flock_pipeline.chain import Outcome, Phase, Role, VoteState, role_of, to_fixed, vote_commitment
from flock_pipeline.chain.errors import NotANoShow, PendingSettlement, StillUnbonding, WrongPhase

UNEVEN = [100 * TOKEN + 1, 150 * TOKEN + 7, 70 * TOKEN + 3, 33 * TOKEN + 333]
BPS = 10_000


def split(reward: int, bps: int = 5_000) -> tuple[int, int]:
    """(proposers' pot, voters' pot) of a round's reward."""
    proposer_part = reward * bps // BPS
    return proposer_part, reward - proposer_part


def assert_shares(
    paid: dict[str, int], pots: Sequence[tuple[Fraction | int, dict[str, int]]], tolerance: int
) -> None:
    """Each account's pay is its exact proportional share of every pot (pot, {account:
    weight}) it takes part in, to within `tolerance` wei (each settler rounds down what is
    left, the last takes the remainder)."""
    for account, amount in paid.items():
        exact = sum(Fraction(pot) * w.get(account, 0) / sum(w.values()) for pot, w in pots if w)
        assert abs(amount - exact) <= tolerance, (account, amount, exact)


def settled(world: World, r: RoundUnderTest) -> dict[str, tuple[int, int]]:
    """(reward, slashed) of each account's settlement of the round, from one event query."""
    events = world.keeper.task_events(r.task_id, "Settled", from_block=r.block)
    return {e["account"]: (e["reward"], e["slashed"]) for e in events if e["round"] == r.round}


def test_an_all_honest_round_pays_everyone_and_slashes_nobody(world: World) -> None:
    # Prepare: uneven stakes, so that every share rounds
    r = world.everyone_round(stakes=UNEVEN)
    pool = world.keeper.task_state(r.task_id).pool
    # Execute
    r.play([GOOD] * 4)
    paid = r.claim_all()
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    state = world.keeper.task_state(r.task_id)
    weights = {p.address: r.weight(p) for p in world.people}
    assert info.outcome is Outcome.ACCEPTED and info.finalized
    assert info.aggregate_hash == state.global_model_hash == AGGREGATE
    assert info.reward == pool // 3  # three rounds left
    tally = world.keeper.tally_of(r.task_id, r.round, AGGREGATE)
    assert tally.weight == tally.accept_weight == info.revealed_weight == sum(weights.values())
    assert tally.reject_weight == 0 and tally.flag_voter_weight == tally.weight
    updates = world.keeper.round_updates(r.task_id, r.round)
    assert [u.proposer for u in updates] == [p.address for p in world.people]
    # every other voter scored each update 1.0: its part is its proposer's weight times 1.0
    assert [u.part for u in updates] == [weights[u.proposer] * FULL for u in updates]
    assert not any(u.flagged for u in updates)
    assert paid.pop(world.keeper.address) == 0  # nothing was slashed, so no finalizer cut
    assert all(amount > 0 for amount in paid.values())
    assert sum(paid.values()) == info.reward
    proposer_pot, voter_pot = split(info.reward)
    parts = {u.proposer: u.part for u in updates}
    assert_shares(paid, [(proposer_pot, parts), (voter_pot, weights)], tolerance=8)
    assert all(r.active(p) == amount for p, amount in zip(world.people, UNEVEN, strict=True))
    assert settled(world, r) == {a: (amount, 0) for a, amount in paid.items()}
    assert state.pool == pool - info.reward
    assert state.allotted == 0 and state.claimable == 0
    assert world.vault_balance() == world.bucket_total()
    submitted = world.keeper.round_events(r.task_id, r.round, "UpdateSubmitted", r.block)
    assert [e["proposer"] for e in submitted] == [p.address for p in world.people]
    assert all(len(e["updateHash"]) == 32 and e["numSamples"] == 100 for e in submitted)


def test_a_rejected_round_slashes_no_honest_proposer(world: World) -> None:
    # Prepare: a proposer that does not vote, so nothing it earns as a voter hides a slash
    r = world.open_round(want=lambda r: Role.PROPOSER in r.roles.values())
    pool = world.keeper.task_state(r.task_id).pool
    # Execute: every voter rejects, without contributions
    r.play([BAD] * len(r.voters))
    paid = r.claim_all()
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    state = world.keeper.task_state(r.task_id)
    assert info.outcome is Outcome.REJECTED
    assert state.global_model_hash == MODEL
    assert all(r.active(p) == STAKE for p in world.people)
    assert paid.pop(world.keeper.address) == 0
    only_proposers = [p for p in r.proposers if r.roles[p.address] is Role.PROPOSER]
    assert only_proposers and all(paid[p.address] == 0 for p in only_proposers)
    _, voter_pot = split(info.reward)
    # the voters' pot is budgeted for the whole stake: the rejecting voters' weight over it
    tally = world.keeper.tally_of(r.task_id, r.round, AGGREGATE)
    allotted = voter_pot * tally.reject_weight // info.total_stake
    assert sum(paid.values()) == allotted
    weights = {v.address: r.weight(v) for v in r.voters}  # equal stakes: equal voter weights
    assert_shares(paid, [(allotted, weights)], tolerance=4)
    updates = world.keeper.round_updates(r.task_id, r.round)
    assert all(u.part == 0 and not u.flagged for u in updates)
    assert tally.flag_voter_weight == 0
    assert state.pool == pool - allotted  # the proposers' pot stays in the pool
    assert world.vault_balance() == world.bucket_total()


VOID_ROUNDS = {
    "nobody votes": ([None] * 4, [AGGREGATE] * 4),
    "a tie": ([GOOD, GOOD, BAD, BAD], [AGGREGATE] * 4),
    "no hash has a majority": ([GOOD] * 4, [AGGREGATE, AGGREGATE, BOGUS, BOGUS]),
}


@pytest.mark.parametrize("case", list(VOID_ROUNDS))
def test_a_void_round_slashes_nobody_and_its_pot_carries_over(world: World, case: str) -> None:
    # Prepare
    scores, hashes = VOID_ROUNDS[case]
    r = world.everyone_round(rounds=3)
    pool = world.keeper.task_state(r.task_id).pool
    # Execute
    r.play(scores, hashes=hashes)
    paid = r.claim_all()
    follow = world.start(r.task_id)
    follow.play([GOOD] * 4)
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is Outcome.VOID
    assert sum(paid.values()) == 0
    assert all(r.active(p) == STAKE for p in world.people)
    assert set(settled(world, r).values()) == {(0, 0)}
    assert world.keeper.round_info(r.task_id, follow.round).reward == pool // 2
    assert world.keeper.task_state(r.task_id).global_model_hash == AGGREGATE
    assert world.vault_balance() == world.bucket_total()


def test_a_bogus_minority_hash_loses(world: World) -> None:
    # Prepare: three voters name the aggregate, one names a hash of its own
    r = world.everyone_round(voter_slash_bps=4_000)
    liar = world.people[3]
    # Execute
    r.play([GOOD] * 4, hashes=[AGGREGATE] * 3 + [BOGUS])
    paid = r.claim_all()
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is Outcome.ACCEPTED and info.aggregate_hash == AGGREGATE
    assert world.keeper.task_state(r.task_id).global_model_hash == AGGREGATE
    assert world.keeper.tally_of(r.task_id, r.round, BOGUS).weight == STAKE
    assert world.keeper.tally_of(r.task_id, r.round, AGGREGATE).accept_weight == 3 * STAKE
    assert world.keeper.record_of(r.task_id, r.round, liar.address).aggregate_hash == BOGUS
    slash = STAKE * 4_000 // BPS
    assert r.active(liar) == STAKE - slash
    assert all(r.active(p) == STAKE for p in world.people[:3])
    assert settled(world, r)[liar.address][1] == slash
    proposer_pot, voter_pot = split(info.reward)
    # the liar's update was still scored by the honest voters: it keeps its proposer share
    assert abs(paid[liar.address] - Fraction(proposer_pot, 4)) <= 4
    honest = {p.address: STAKE for p in world.people[:3]}
    # the voters' pot is budgeted for the whole stake: the liar's quarter stays in the pool
    pots = [(Fraction(proposer_pot * 3, 4), honest), (Fraction(voter_pot * 3, 4), honest)]
    assert_shares({a: paid[a] for a in honest}, pots, tolerance=8)
    assert paid.pop(world.keeper.address) == slash * 1_000 // BPS
    assert sum(paid.values()) == proposer_pot + voter_pot * 3 // 4
    assert world.vault_balance() == world.bucket_total()


@pytest.mark.parametrize("revealed", [3, 0], ids=["others reveal", "nobody reveals"])
def test_a_vote_committed_and_not_revealed_is_slashed(world: World, revealed: int) -> None:
    # Prepare
    r = world.everyone_round()
    revealers = world.people[4 - revealed :]
    silent = world.people[: 4 - revealed]
    # Execute
    r.play([GOOD] * 4, revealers=revealers)
    paid = r.claim_all()
    # Assert: never cheaper than revealing another hash: max(slash_bps, voter_slash_bps)
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is (Outcome.ACCEPTED if revealers else Outcome.VOID)
    slash = STAKE * 7_000 // BPS
    for person in silent:
        assert r.active(person) == STAKE - slash
        record = world.keeper.record_of(r.task_id, r.round, person.address)
        assert record.vote is VoteState.COMMITTED and record.settled
    assert all(r.active(p) == STAKE for p in revealers)
    assert all(paid[p.address] > 0 for p in revealers)
    assert paid[world.keeper.address] == len(silent) * slash * 1_000 // BPS
    assert world.vault_balance() == world.bucket_total()


def test_every_token_paid_out_comes_from_the_pool_or_a_slash(world: World) -> None:
    # Prepare: random roles, uneven stakes, a split vote and one silent voter
    r = world.open_round(min_proposers=1, min_voters=2, stakes=UNEVEN)
    state = world.keeper.task_state(r.task_id)
    # Execute
    _silent, *revealers = r.voters
    r.play([GOOD] * (len(r.voters) - 1) + [BAD], revealers=revealers)
    paid = r.claim_all()
    # Assert
    after = world.keeper.task_state(r.task_id)
    info = world.keeper.round_info(r.task_id, r.round)
    slashed = sum(s for _, s in settled(world, r).values())
    assert slashed == sum(
        amount - r.active(p) for p, amount in zip(world.people, UNEVEN, strict=True)
    )
    assert sum(paid.values()) == state.pool - after.pool + slashed
    assert after.allotted == 0 and after.claimable == 0
    assert info.proposer_reward_left == 0 and info.voter_reward_left == 0
    assert world.vault_balance() == world.bucket_total()


def test_finalize_and_claim_run_twice_do_nothing_the_second_time(world: World) -> None:
    # Prepare
    r = world.everyone_round()
    r.play([GOOD] * 4)
    proposer = world.people[0]
    first, _ = proposer.claim(r.task_id)
    state = world.keeper.task_state(r.task_id)
    balance = proposer.balance_of()
    # Execute
    again = world.keeper.finalize_round(r.task_id, r.round)
    second, _ = proposer.claim(r.task_id)
    # Assert
    assert first > 0 and again is None and second == 0
    assert proposer.balance_of() == balance
    assert world.keeper.task_state(r.task_id) == state
    with pytest.raises(WrongPhase) as raised:
        world.keeper.tx.send(
            world.keeper.alliance.functions.finalizeRound(r.task_id, r.round), world.keeper.signer
        )
    assert raised.value.args_by_name["actual"] is Phase.FINALIZED


def test_a_selected_participant_who_does_nothing_is_slashed_when_reported(world: World) -> None:
    # Prepare: `absent` neither submits nor votes; `idle` submits but does not vote
    r = world.everyone_round()
    absent, idle, *present = world.people
    r.submit([idle, *present])
    r.commit([None, None, GOOD, GOOD])
    r.reveal()
    r.finalize()
    # Execute
    world.keeper.report_no_show(r.task_id, r.round, absent.address)
    world.keeper.report_no_show(r.task_id, r.round, idle.address)
    # Assert
    slash = STAKE * 1_000 // BPS
    assert r.active(absent) == r.active(idle) == STAKE - slash
    assert world.keeper.record_of(r.task_id, r.round, absent.address).no_show
    assert world.keeper.claimable_of(r.task_id) == 2 * (slash * 1_000 // BPS)
    with pytest.raises(NotANoShow):
        world.keeper.report_no_show(r.task_id, r.round, absent.address)
    with pytest.raises(NotANoShow):
        world.keeper.report_no_show(r.task_id, r.round, present[0].address)
    assert world.vault_balance() == world.bucket_total()


def test_unbonding_stake_stays_slashable_and_leaves_after_the_delay(world: World) -> None:
    # Prepare
    r = world.everyone_round()
    leaver = world.people[0]
    r.submit()
    leaver.request_unstake(r.task_id, STAKE)
    # Execute / Assert: cannot leave while its round is unsettled
    with pytest.raises(PendingSettlement):
        leaver.withdraw(r.task_id)
    r.commit([GOOD] * 4)
    r.reveal(world.people[1:])  # the leaver commits and withholds its reveal
    r.finalize()
    with pytest.raises(StillUnbonding):
        leaver.withdraw(r.task_id)
    world.chain.advance(86_400)
    before = leaver.balance_of()
    leaver.withdraw(r.task_id)
    assert leaver.balance_of() - before == STAKE - STAKE * 7_000 // BPS
    assert world.keeper.participant_of(r.task_id, leaver.address).unbonding == 0
    assert world.vault_balance() == world.bucket_total()


def test_anyone_can_check_roles_from_seed_address_and_stake(world: World) -> None:
    # Prepare: two tasks of six rounds, uneven stakes that change between rounds
    samples = 0
    for stakes, proposers, voters in ((UNEVEN, 2, 2), ([10 * TOKEN] * 3 + [900 * TOKEN], 1, 3)):
        task_id = world.open_task(
            stakes, rounds=6, proposers_per_round=proposers, voters_per_round=voters
        )
        for round_ in range(6):
            r = world.start(task_id)
            info = world.keeper.round_info(task_id, r.round)
            for person in world.people:
                stake = world.keeper.stake_at(task_id, r.round, person.address)
                computed = role_of(
                    info.seed, person.address, stake, info.total_stake, proposers, voters
                )
                # Assert
                assert computed is r.roles[person.address]
                samples += 1
            if round_ < 5:  # counts from the next round
                world.people[round_ % 4].stake(task_id, (round_ + 1) * TOKEN)
            r.finalize()
    assert samples == 48


def test_vote_commitments_are_computed_like_the_contract(world: World) -> None:
    salt = b"\x07" * 32
    address = world.people[0].address
    commitment = world.keeper.alliance.functions.voteCommitment
    for contributions in ([], [FULL, -FULL, 0, to_fixed(0.25)]):
        on_chain = commitment(3, 1, address, AGGREGATE, BAD, contributions, salt).call()
        assert bytes(on_chain) == vote_commitment(
            3, 1, address, AGGREGATE, BAD, salt, contributions
        )
    base = vote_commitment(3, 1, address, AGGREGATE, BAD, salt)
    assert base != vote_commitment(3, 1, address, AGGREGATE, BAD, salt, [0])
    assert base != vote_commitment(3, 1, address, BOGUS, BAD, salt)


def test_proposers_are_paid_by_weight_times_mean_contribution(world: World) -> None:
    # Prepare: every voter gives update i the same score c_i, and its own update -1 (which
    # must not count: nobody scores itself)
    r = world.everyone_round(stakes=UNEVEN)
    c = [FULL, to_fixed(0.5), to_fixed(0.25), to_fixed(-0.5)]
    table = [[-FULL if v == i else c[i] for i in range(4)] for v in range(4)]
    # Execute
    r.play([GOOD] * 4, contributions=table)
    paid = r.claim_all()
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    updates = world.keeper.round_updates(r.task_id, r.round)
    weights = {p.address: r.weight(p) for p in world.people}
    for i, update in enumerate(updates):
        others = sum(weights.values()) - weights[update.proposer]
        assert update.index == i and update.weight == weights[update.proposer]
        assert update.contribution == others * c[i] and update.flag_weight == 0
        assert update.part == (weights[update.proposer] * c[i] if c[i] > 0 else 0)
        assert not update.flagged
    assert info.contribution_total == sum(u.part for u in updates)
    proposer_pot, voter_pot = split(info.reward)
    parts = {u.proposer: u.part for u in updates}
    # the pot is budgeted for the whole stake; the weight of update 3 (no part) goes unpaid
    paid_weight = sum(weights[u.proposer] for u in updates if u.part > 0)
    pot = Fraction(proposer_pot * paid_weight, sum(weights.values()))
    assert_shares(paid, [(pot, parts), (voter_pot, weights)], tolerance=8)
    assert abs(sum(paid.values()) - (pot + voter_pot)) <= 1
    after = world.keeper.round_info(r.task_id, r.round)
    assert after.proposer_reward_left == 0 and after.contribution_left == 0
    assert all(r.active(p) == amount for p, amount in zip(world.people, UNEVEN, strict=True))
    assert world.vault_balance() == world.bucket_total()


@pytest.mark.parametrize("score", [GOOD, BAD], ids=["accepted", "rejected"])
def test_a_proposer_flagged_by_the_voters_is_slashed_at_penalty_bps(
    world: World, score: int
) -> None:
    # Prepare: every voter scores update 3 exactly -1 and the others 1.0
    r = world.everyone_round(penalty_bps=3_000)
    *honest, flagged = world.people
    votes = [[FULL, FULL, FULL, -FULL] for _ in range(4)]
    # Execute
    r.play([score] * 4, contributions=votes)
    paid = r.claim_all()
    # Assert: the flag vote runs over every voter that scored the updates, either side
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is (Outcome.ACCEPTED if score >= 0 else Outcome.REJECTED)
    updates = world.keeper.round_updates(r.task_id, r.round)
    assert [u.flagged for u in updates] == [False, False, False, True]
    assert updates[3].flag_weight == 3 * STAKE and updates[3].part == 0
    if score < 0:  # rejecting votes do not count for rewards
        assert all(u.contribution == 0 and u.part == 0 for u in updates)
    penalty = STAKE * 3_000 // BPS
    assert r.active(flagged) == STAKE - penalty
    assert all(r.active(p) == STAKE for p in honest)
    assert settled(world, r)[flagged.address][1] == penalty
    assert paid[world.keeper.address] == penalty * 1_000 // BPS
    assert world.vault_balance() == world.bucket_total()


def test_a_voter_that_rejects_an_accepted_round_is_unpaid_but_keeps_its_stake(
    world: World,
) -> None:
    # Prepare: every voter measures the same gain; the last one reverses it
    r = world.everyone_round(voter_slash_bps=4_000)
    measured = 0.05
    scores = [to_fixed(measured)] * 3
    scores.append(to_fixed(tamper_score(measured, AttackSpec(kind="dishonest_voter"))))
    # Execute
    r.play(scores)
    paid = r.claim_all()
    # Assert: the honest majority carries the round; the reversed vote earns nothing, and a
    # dissent is not slashed (an honest voter's own data can disagree with the majority's)
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is Outcome.ACCEPTED
    *honest, liar = world.people
    assert world.keeper.tally_of(r.task_id, r.round, AGGREGATE).reject_weight == STAKE
    assert r.active(liar) == STAKE
    assert all(r.active(p) == STAKE for p in honest)
    assert all(paid[p.address] > paid[liar.address] for p in honest)
    assert world.vault_balance() == world.bucket_total()


def test_a_voter_that_accepts_a_rejected_round_is_unpaid_but_keeps_its_stake(
    world: World,
) -> None:
    # Prepare: every voter measures harm; the last one reverses it and accepts
    r = world.everyone_round(voter_slash_bps=4_000)
    measured = -0.05
    scores = [to_fixed(measured)] * 3
    scores.append(to_fixed(tamper_score(measured, AttackSpec(kind="dishonest_voter"))))
    # Execute
    r.play(scores)
    paid = r.claim_all()
    # Assert: rejected; the accepting vote earns nothing, and it is not slashed either: the
    # chain cannot tell a reversed vote from an honest voter whose own data disagrees
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.outcome is Outcome.REJECTED
    *honest, liar = world.people
    assert world.keeper.tally_of(r.task_id, r.round, AGGREGATE).accept_weight == STAKE
    assert r.active(liar) == STAKE
    assert all(r.active(p) == STAKE for p in honest)
    assert all(paid[p.address] > paid[liar.address] for p in honest)
    assert paid[world.keeper.address] == 0  # nothing slashed, no finalizer share
    assert world.vault_balance() == world.bucket_total()
