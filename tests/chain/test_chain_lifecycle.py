"""The FL Alliance round lifecycle, end to end on py-evm and on anvil (four participants)."""

from __future__ import annotations

import pytest
from chain_world import AGGREGATE, FULL, MODEL, STAKE, TOKEN, World

from flock_pipeline.attacks import AttackSpec, tamper_score
from flock_pipeline.chain import Majority, Phase, role_of, to_fixed, vote_commitment
from flock_pipeline.chain.errors import NotANoShow, PendingSettlement, StillUnbonding, WrongPhase

GOOD = to_fixed(0.05)
BAD = to_fixed(-0.02)


def split(reward: int, bps: int = 5_000) -> tuple[int, int]:
    proposer_part = reward * bps // 10_000
    return proposer_part, reward - proposer_part


def test_an_honest_round_is_accepted_and_pays_proposers_and_majority_voters(world: World) -> None:
    # Prepare
    r = world.open_round(min_proposers=1, min_voters=1)
    pool = world.keeper.task_state(r.task_id).pool
    # Execute
    r.play([GOOD] * len(r.voters))
    paid = {p.address: p.claim(r.task_id)[0] for p in r.proposers + r.voters}
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    state = world.keeper.task_state(r.task_id)
    assert info.accepted and info.majority is Majority.ACCEPT
    assert state.global_model_hash == AGGREGATE
    proposer_part, voter_part = split(pool // 3)
    assert info.reward == pool // 3
    assert sum(paid[p.address] for p in r.proposers) == proposer_part
    assert sum(paid[v.address] for v in r.voters) == voter_part
    assert all(amount > 0 for amount in paid.values())
    for person in r.proposers + r.voters:
        assert world.keeper.participant_of(r.task_id, person.address).active == STAKE
    assert state.pool == pool - proposer_part - voter_part
    assert state.allotted == 0 and state.claimable == 0
    assert world.alliance_balance() == world.bucket_total()
    submitted = world.keeper.round_events(r.task_id, r.round, "UpdateSubmitted")
    assert {e["proposer"] for e in submitted} == {p.address for p in r.proposers}
    assert all(len(e["updateHash"]) == 32 and e["numSamples"] == 100 for e in submitted)


def test_a_round_voted_down_keeps_the_model_and_slashes_its_proposers(world: World) -> None:
    # Prepare
    r = world.open_round(min_proposers=1, min_voters=1)
    pool = world.keeper.task_state(r.task_id).pool
    # Execute
    r.play([BAD] * len(r.voters))
    proposer_paid = [p.claim(r.task_id)[0] for p in r.proposers]
    voter_paid = [v.claim(r.task_id)[0] for v in r.voters]
    keeper_paid, _ = world.keeper.claim(r.task_id)
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    assert not info.accepted and info.majority is Majority.REJECT
    assert world.keeper.task_state(r.task_id).global_model_hash == MODEL
    slash = STAKE * 1_000 // 10_000
    for proposer in r.proposers:
        assert world.keeper.participant_of(r.task_id, proposer.address).active == STAKE - slash
    assert proposer_paid == [0] * len(r.proposers)
    _, voter_part = split(pool // 3)
    assert sum(voter_paid) == voter_part
    total_slashed = slash * len(r.proposers)
    finalizer_cut = total_slashed * 1_000 // 10_000
    assert keeper_paid == finalizer_cut
    assert world.keeper.task_state(r.task_id).pool == (
        pool - voter_part + total_slashed - finalizer_cut
    )
    assert world.alliance_balance() == world.bucket_total()


def test_a_voter_who_does_not_reveal_is_slashed(world: World) -> None:
    # Prepare
    r = world.open_round(min_proposers=1, min_voters=2)
    silent, *honest = r.voters
    # Execute
    r.play([GOOD] * len(r.voters), revealers=honest)
    silent_paid, _ = silent.claim(r.task_id)
    honest_paid = [v.claim(r.task_id)[0] for v in honest]
    # Assert
    assert world.keeper.round_info(r.task_id, r.round).accepted
    assert silent_paid == 0
    # never cheaper than revealing on the losing side: max(slash_bps, voter_slash_bps) = 70 %
    slashed = STAKE * 7_000 // 10_000
    assert world.keeper.participant_of(r.task_id, silent.address).active == STAKE - slashed
    assert all(amount > 0 for amount in honest_paid)
    assert world.keeper.claimable_of(r.task_id) == slashed // 10
    assert world.alliance_balance() == world.bucket_total()


def test_claims_add_up_exactly_to_what_the_contract_accrued(world: World) -> None:
    # Prepare: uneven stakes so that every pro-rata share rounds
    stakes = [100 * TOKEN + 1, 150 * TOKEN + 7, 70 * TOKEN + 3, 33 * TOKEN + 333]
    r = world.open_round(min_proposers=1, min_voters=2, stakes=stakes)
    balances_before = {p.address: p.balance_of() for p in world.people}
    keeper_before = world.keeper.balance_of()
    # Execute: a split vote (majority accepts) with one silent voter
    _silent, *revealers = r.voters
    r.play([GOOD] + [GOOD] * (len(r.voters) - 2) + [BAD], revealers=revealers)
    for person in world.people:
        person.claim(r.task_id)
    world.keeper.claim(r.task_id)
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    state = world.keeper.task_state(r.task_id)
    received = sum(p.balance_of() - balances_before[p.address] for p in world.people)
    received += world.keeper.balance_of() - keeper_before
    allotted = info.reward if info.accepted else info.reward - split(info.reward)[0]
    slashes = [
        stakes[i] - world.keeper.participant_of(r.task_id, p.address).active
        for i, p in enumerate(world.people)
    ]
    finalizer_cuts = sum(amount * 1_000 // 10_000 for amount in slashes)
    assert state.allotted == 0 and state.claimable == 0
    assert info.proposer_reward_left == 0 and info.voter_reward_left == 0
    assert received == allotted + finalizer_cuts
    assert world.alliance_balance() == world.bucket_total()


def test_finalize_and_claim_run_twice_do_nothing_the_second_time(world: World) -> None:
    # Prepare
    r = world.open_round()
    r.play([GOOD] * len(r.voters))
    proposer = r.proposers[0]
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


def test_a_selected_proposer_who_does_not_submit_is_slashed_when_reported(world: World) -> None:
    # Prepare
    r = world.open_round(min_proposers=2, min_voters=1)
    absent, *present = r.proposers
    r.proposers = present
    r.play([GOOD] * len(r.voters))
    # Execute
    world.keeper.report_no_show(r.task_id, r.round, absent.address)
    # Assert
    slash = STAKE // 10
    assert world.keeper.participant_of(r.task_id, absent.address).active == STAKE - slash
    assert world.keeper.claimable_of(r.task_id) == slash // 10
    with pytest.raises(NotANoShow):
        world.keeper.report_no_show(r.task_id, r.round, absent.address)
    with pytest.raises(NotANoShow):
        world.keeper.report_no_show(r.task_id, r.round, present[0].address)
    assert world.alliance_balance() == world.bucket_total()


def test_unbonding_stake_stays_slashable_and_leaves_after_the_delay(world: World) -> None:
    # Prepare
    r = world.open_round(min_proposers=1, min_voters=1)
    leaver = r.proposers[0]
    r.submit_all()
    leaver.request_unstake(r.task_id, STAKE)
    # Execute / Assert: cannot leave while its round is unsettled
    with pytest.raises(PendingSettlement):
        leaver.withdraw(r.task_id)
    r.post_aggregate()
    r.commit([BAD] * len(r.voters))
    r.reveal()
    r.finalize()
    with pytest.raises(StillUnbonding):
        leaver.withdraw(r.task_id)
    world.chain.advance(86_400)
    before = leaver.balance_of()
    leaver.withdraw(r.task_id)
    assert leaver.balance_of() - before == STAKE * 9 // 10
    assert world.keeper.participant_of(r.task_id, leaver.address).unbonding == 0
    assert world.alliance_balance() == world.bucket_total()


def test_anyone_can_check_roles_from_seed_address_and_stake(world: World) -> None:
    r = world.open_round()
    info = world.keeper.round_info(r.task_id, r.round)
    config = world.keeper.task_config(r.task_id)
    for person in world.people:
        stake = world.keeper.stake_at(r.task_id, r.round, person.address)
        computed = role_of(
            info.seed,
            person.address,
            stake,
            info.total_stake,
            config.proposers_per_round,
            config.voters_per_round,
        )
        assert computed is person.role_of(r.task_id, r.round)


def test_vote_commitments_are_computed_like_the_contract(world: World) -> None:
    salt = b"\x07" * 32
    address = world.people[0].address
    commitment = world.keeper.alliance.functions.voteCommitment
    for contributions in ([], [FULL, -FULL, 0, to_fixed(0.25)]):
        on_chain = commitment(3, 1, address, BAD, contributions, salt).call()
        assert bytes(on_chain) == vote_commitment(3, 1, address, BAD, salt, contributions)
    assert vote_commitment(3, 1, address, BAD, salt) != vote_commitment(
        3, 1, address, BAD, salt, [0]
    )


def test_proposers_are_paid_stake_times_contribution_exactly(world: World) -> None:
    # Prepare: uneven stakes, and each voter scores each update differently
    stakes = [100 * TOKEN + 1, 150 * TOKEN + 7, 70 * TOKEN + 3, 33 * TOKEN + 333]
    r = world.open_round(min_proposers=2, min_voters=1, stakes=stakes)
    n = len(r.proposers)
    table = [[to_fixed(0.9 - 0.3 * i + 0.1 * v) for i in range(n)] for v in range(len(r.voters))]
    # Execute
    r.play([GOOD] * len(r.voters), contributions=table)
    info = world.keeper.round_info(r.task_id, r.round)
    paid = [p.claim(r.task_id)[0] for p in reversed(r.proposers)][::-1]
    # Assert: C_i = sum_v w_v c_vi; share_i = w_i C_i / sum_j w_j C_j of the proposers' pot,
    # settled in claim order, the last one taking the exact remainder
    voter_w = [world.keeper.record_of(r.task_id, r.round, v.address).weight for v in r.voters]
    weights = [world.keeper.record_of(r.task_id, r.round, p.address).weight for p in r.proposers]
    totals = [sum(w * row[i] for w, row in zip(voter_w, table, strict=True)) for i in range(n)]
    parts = [w * max(0, c) for w, c in zip(weights, totals, strict=True)]
    assert info.contribution_total == sum(parts) > 0
    for i, proposer in enumerate(r.proposers):
        update = world.keeper.update_at(r.task_id, r.round, i)
        assert (update.proposer, update.weight) == (proposer.address, weights[i])
        assert update.contribution == totals[i]
        assert world.keeper.record_of(r.task_id, r.round, proposer.address).update_index == i
    left, contribution_left = split(info.reward)[0], sum(parts)
    expected = [0] * n
    for i in reversed(range(n)):
        expected[i] = left * parts[i] // contribution_left
        left, contribution_left = left - expected[i], contribution_left - parts[i]
    assert paid == expected
    assert sum(paid) == split(info.reward)[0]
    after = world.keeper.round_info(r.task_id, r.round)
    assert after.proposer_reward_left == 0 and after.contribution_left == 0
    assert world.alliance_balance() == world.bucket_total()


def test_a_proposer_flagged_by_the_accepting_voters_is_slashed_at_penalty_bps(
    world: World,
) -> None:
    # Prepare
    r = world.open_round(min_proposers=2, min_voters=1, penalty_bps=3_000)
    good, *flagged = r.proposers
    votes = [[FULL] + [-FULL] * len(flagged) for _ in r.voters]
    # Execute
    r.play([GOOD] * len(r.voters), contributions=votes)
    flagged_paid = [p.claim(r.task_id)[0] for p in flagged]
    good_paid, _ = good.claim(r.task_id)
    keeper_paid, _ = world.keeper.claim(r.task_id)
    # Assert
    info = world.keeper.round_info(r.task_id, r.round)
    penalty = STAKE * 3_000 // 10_000
    assert world.keeper.task_config(r.task_id).penalty_bps == 3_000
    assert info.accepted and flagged_paid == [0] * len(flagged)
    for proposer in flagged:
        assert world.keeper.participant_of(r.task_id, proposer.address).active == STAKE - penalty
    assert world.keeper.participant_of(r.task_id, good.address).active == STAKE
    assert good_paid == split(info.reward)[0]
    assert keeper_paid == len(flagged) * (penalty * 1_000 // 10_000)
    assert world.alliance_balance() == world.bucket_total()


def test_a_proposer_flagged_in_a_rejected_round_is_slashed_at_penalty_bps(world: World) -> None:
    # Prepare: every voter rejects the round and flags all but the first update
    r = world.open_round(min_proposers=2, min_voters=1, penalty_bps=3_000)
    good, *flagged = r.proposers
    votes = [[FULL] + [-FULL] * len(flagged) for _ in r.voters]
    # Execute
    r.play([BAD] * len(r.voters), contributions=votes)
    paid = [p.claim(r.task_id)[0] for p in r.proposers]
    keeper_paid, _ = world.keeper.claim(r.task_id)
    # Assert: the flag vote runs over every voter that posted contributions, either side
    info = world.keeper.round_info(r.task_id, r.round)
    voter_weight = sum(
        world.keeper.record_of(r.task_id, r.round, v.address).weight for v in r.voters
    )
    assert not info.accepted and info.reject_weight == voter_weight
    assert info.flag_voter_weight == voter_weight
    first = world.keeper.update_at(r.task_id, r.round, 0)
    assert first.flag_weight == 0 and not first.flagged(info.flag_voter_weight)
    assert first.contribution == 0  # rejecting votes do not count for rewards
    for i in range(1, len(r.proposers)):
        update = world.keeper.update_at(r.task_id, r.round, i)
        assert update.flag_weight == voter_weight and update.flagged(info.flag_voter_weight)
    penalty, slash = STAKE * 3_000 // 10_000, STAKE // 10
    assert paid == [0] * len(r.proposers)
    for proposer in flagged:
        assert world.keeper.participant_of(r.task_id, proposer.address).active == STAKE - penalty
    assert world.keeper.participant_of(r.task_id, good.address).active == STAKE - slash
    assert keeper_paid == (len(flagged) * penalty + slash) * 1_000 // 10_000
    assert world.alliance_balance() == world.bucket_total()


def test_rejecting_votes_without_contributions_flag_nobody(world: World) -> None:
    # Prepare / Execute: the voters reject and post no contributions
    r = world.open_round(min_proposers=1, min_voters=1, penalty_bps=3_000)
    r.play([BAD] * len(r.voters))
    for p in r.proposers:
        p.claim(r.task_id)
    # Assert: no flag vote, so every proposer pays slash_bps only
    info = world.keeper.round_info(r.task_id, r.round)
    assert not info.accepted and info.flag_voter_weight == 0
    for proposer in r.proposers:
        active = world.keeper.participant_of(r.task_id, proposer.address).active
        assert active == STAKE - STAKE // 10
    assert world.alliance_balance() == world.bucket_total()


def test_a_dishonest_voter_lands_in_the_minority_and_is_slashed(world: World) -> None:
    # Prepare: every voter measures the same gain; the last one is a dishonest voter
    r = world.open_round(
        min_proposers=1, min_voters=3, proposers_per_round=1, voters_per_round=3,
        voter_slash_bps=4_000,
    )  # fmt: skip
    measured = 0.05
    scores = [to_fixed(measured)] * (len(r.voters) - 1)
    scores.append(to_fixed(tamper_score(measured, AttackSpec(kind="dishonest_voter"))))
    # Execute
    r.play(scores)
    paid = [v.claim(r.task_id)[0] for v in r.voters]
    # Assert: the honest majority carries the round; the reversed vote is slashed, unpaid
    info = world.keeper.round_info(r.task_id, r.round)
    assert info.accepted and info.majority is Majority.ACCEPT
    liar = r.voters[-1]
    assert paid[-1] == 0
    assert world.keeper.task_config(r.task_id).voter_slash_bps == 4_000
    assert world.keeper.participant_of(r.task_id, liar.address).active == STAKE * 6 // 10
    assert all(amount > 0 for amount in paid[:-1])
    assert world.alliance_balance() == world.bucket_total()
