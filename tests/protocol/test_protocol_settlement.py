"""The round protocol's rules on the Python model of FlockAlliance, one situation per test.

Each test picks the roles it needs (Play.start searches the seed), plays the round and checks
who is paid and who is slashed, by exact integer amounts; Play.call checks the token books
after every call.
"""

from __future__ import annotations

import pytest
from protocol_helpers import (
    DATA,
    FLAG,
    FULL,
    H2,
    SAMPLES,
    STAKE,
    TOKEN,
    H,
    Play,
    addresses,
    make_params,
)

from flock_pipeline.protocol import (
    BPS,
    MAX_UPDATES,
    Alliance,
    Outcome,
    Phase,
    ProtocolRevert,
    Role,
    VoteState,
)

P, V, B, N = Role.PROPOSER, Role.VOTER, Role.BOTH, Role.NONE


def reverts(play: Play, name: str, method: str, *args: object) -> ProtocolRevert:
    """Call a model method (or a Play step) that must revert with `name`."""
    step = getattr(play, method) if method in ("reveal", "submit") else None
    with pytest.raises(ProtocolRevert) as caught:
        if step is not None:
            step(*args)
        else:
            play.call(method, *args)
    assert caught.value.name == name, caught.value
    return caught.value


def pots(play: Play) -> tuple[int, int]:
    """(proposers' pot, voters' pot) of the current round's reward."""
    reward = play.alliance.rounds[play.round].reward
    proposer_part = reward * play.alliance.params.proposer_reward_bps // BPS
    return proposer_part, reward - proposer_part


def test_an_honest_accepted_round_pays_everyone_and_slashes_nobody() -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: P, c: V, d: V, e: V})
    play.submit(a, b)
    for voter, contributions in ((c, (FULL, FULL // 2)), (d, (FULL, FULL // 2)), (e, (FULL, 0))):
        play.commit(voter, FULL // 10, contributions)
    play.reveal()
    assert play.finalize() is Outcome.ACCEPTED
    paid = play.settle_all()
    proposer_pot, voter_pot = pots(play)
    assert all(s.slashed == 0 for s in paid.values())
    # weights: each role's stake over its odds, max(stake, ceil(S / k)), with S = 5 * STAKE
    (ua, ub) = play.alliance.round_updates(play.round)
    assert ua.weight == ub.weight == 5 * STAKE // 2
    assert play.voter_weight(c) == -(-5 * STAKE // 3)
    # each pot is budgeted for S: two proposers of weight S / 2 take all of theirs, three
    # voters of weight ceil(S / 3) a wei more than all of theirs
    proposers, voters = play.allotment
    assert proposers == proposer_pot
    assert voters == voter_pot * 3 * play.voter_weight(c) // (5 * STAKE)
    # parts: a is scored 1.0 by all, b 0.5, 0.5, 0: b's mean is 1/3 of a's
    assert ua.part == ua.weight * FULL and ub.part == ub.weight * FULL // 3
    assert paid[a].reward == proposers * ua.part // (ua.part + ub.part)
    assert paid[b].reward == proposers - paid[a].reward  # the last settler takes the rest
    assert [paid[v].reward for v in (c, d)] == [voters // 3, (voters - voters // 3) // 2]
    assert sum(s.reward for s in paid.values()) == proposers + voters
    state = play.alliance.task_state()
    assert state.allotted == 0 and state.global_model_hash == H
    assert state.staked == 5 * STAKE


def test_a_rejected_round_pays_the_rejecting_voters_and_slashes_nobody() -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: P, c: V, d: V, e: V})
    play.submit(a, b)
    play.commit(c, FULL // 5, (FULL, FULL))
    play.commit(d, -FULL // 5, (FULL, 0))
    play.commit(e, -1)  # a rejecting vote may carry no contributions
    play.reveal()
    pool_before = play.alliance.task.pool
    assert play.finalize() is Outcome.REJECTED
    _, voter_pot = pots(play)
    # the proposers' part stays in the pool; the two rejecting voters share theirs, budgeted
    # for the whole stake
    winners = play.voter_weight(d) + play.voter_weight(e)
    assert play.allotment == (0, voter_pot * winners // (5 * STAKE))
    assert play.alliance.task.pool == pool_before - play.allotment[1]
    paid = play.settle_all()
    for proposer in (a, b):
        assert (paid[proposer].reward, paid[proposer].slashed) == (0, 0)
    # c accepted what most of the stake rejected: its own data disagrees, not a fault
    assert (paid[c].reward, paid[c].slashed) == (0, 0)
    assert paid[d].reward + paid[e].reward == play.allotment[1]
    assert paid[d].slashed == paid[e].slashed == 0
    assert play.alliance.round_updates(play.round)[0].part == 0
    assert play.alliance.task.global_model_hash != H
    assert play.alliance.slashes == []
    assert play.alliance.claimable_of(play.alliance.rounds[play.round].finalizer) == 0


def test_a_reject_of_an_accepted_round_is_unpaid_but_not_slashed() -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: N, c: V, d: V, e: V})
    play.submit(a)
    play.commit(c, FULL, (FULL,))
    play.commit(d, FULL, (FULL,))
    play.commit(e, -FULL // 3, (FULL // 2,))  # its own data disagrees: not a fault
    play.reveal()
    assert play.finalize() is Outcome.ACCEPTED
    paid = play.settle_all()
    assert (paid[e].reward, paid[e].slashed) == (0, 0)
    assert paid[c].reward + paid[d].reward == play.allotment[1] > 0


@pytest.mark.parametrize("case", ["no reveals", "tie", "no majority hash"])
def test_a_void_round_pays_nobody_and_carries_its_pot_over(case: str) -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: N, c: V, d: V, e: V})
    play.submit(a)
    if case == "tie":
        play.commit(c, FULL, (FULL,))
        play.commit(d, -FULL, (FULL,))
    elif case == "no majority hash":
        play.commit(c, FULL, (FULL,))
        play.commit(d, FULL, (FULL,), aggregate_hash=H2)
    play.commit(e, FULL, (FULL,))  # commits, never reveals: slashed whatever the outcome
    if case != "no reveals":
        play.reveal(c, d)
    pool = play.alliance.task.pool
    assert play.finalize() is Outcome.VOID
    assert play.alliance.rounds[play.round].reward == pool // 3
    paid = play.settle_all()
    assert all(s.reward == 0 for s in paid.values())
    assert paid[e].slashed == STAKE * 3_000 // BPS  # max(voterSlashBps, slashBps)
    assert all(s.slashed == 0 for who, s in paid.items() if who != e)
    assert play.alliance.task.allotted == 0
    # the pot stays in the pool (plus the pool's part of e's slash)
    cut = paid[e].slashed * 1_000 // BPS
    assert play.alliance.task.pool == pool + paid[e].slashed - cut
    play.start()
    play.enter(Phase.FINALIZABLE)
    play.finalize()
    assert play.alliance.rounds[play.round].reward == (pool + paid[e].slashed - cut) // 2


def test_the_minority_hash_loses_and_its_contributions_do_not_count() -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: P, c: V, d: V, e: V})
    play.submit(a, b)
    play.commit(c, FULL, (FULL, FULL // 2))
    play.commit(d, FULL, (FULL, FULL // 2))
    play.commit(e, FULL, (FLAG, FULL), aggregate_hash=H2)  # another aggregate: a copy-cat's
    play.reveal()
    assert play.finalize() is Outcome.ACCEPTED
    ua, ub = play.alliance.round_updates(play.round)
    w = play.voter_weight(c)
    assert (ua.flag_weight, ua.contribution, ub.contribution) == (0, 2 * w * FULL, w * FULL)
    assert (ua.part, ub.part) == (ua.weight * FULL, ub.weight * (FULL // 2))
    paid = play.settle_all()
    assert paid[e].slashed == STAKE * 3_000 // BPS and paid[e].reward == 0
    assert paid[c].reward + paid[d].reward == play.allotment[1]
    assert paid[a].slashed == paid[b].slashed == 0


@pytest.mark.parametrize("score", [FULL, -FULL])
def test_a_flagged_proposer_is_slashed_at_penalty_bps_in_either_outcome(score: int) -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: P, c: V, d: V, e: V})
    play.submit(a, b)
    play.commit(c, score, (FLAG, FULL))
    play.commit(d, score, (FLAG, FULL))
    play.commit(e, score, (FULL, FULL))
    play.reveal()
    expected = Outcome.ACCEPTED if score > 0 else Outcome.REJECTED
    assert play.finalize() is expected
    ua, ub = play.alliance.round_updates(play.round)
    assert ua.flagged and not ub.flagged
    paid = play.settle_all()
    assert (paid[a].reward, paid[a].slashed) == (0, STAKE * 5_000 // BPS)
    assert paid[b].slashed == 0
    if expected is Outcome.ACCEPTED:
        # the only part left takes the proposers' allotment: its share of the whole stake
        assert paid[b].reward == play.allotment[0] == pots(play)[0] * ub.weight // (5 * STAKE)
    else:
        assert paid[b].reward == 0


def test_a_proposer_that_also_votes_does_not_score_itself() -> None:
    play = Play.open(4)
    a, b, c, d = play.people
    play.start({a: B, b: P, c: V, d: N})
    play.submit(a, b)
    play.commit(a, FULL, (FULL, 0))  # full marks for itself, nothing for its rival b
    play.commit(c, FULL, (FULL // 2, FULL))
    play.reveal()
    assert play.finalize() is Outcome.ACCEPTED
    ua, ub = play.alliance.round_updates(play.round)
    # a's own 1.0 is skipped and a leaves its own pay denominator: only c's 0.5 counts
    w = play.voter_weight(c)
    assert play.voter_weight(a) == w
    assert ua.contribution == w * (FULL // 2) and ua.part == ua.weight * (FULL // 2)
    # b is scored by both accepting voters: (0 + 1.0) / 2
    assert ub.contribution == w * FULL and ub.part == ub.weight * (FULL // 2)
    paid = play.settle_all()
    proposers, voters = play.allotment
    # a's settlement sums both roles: its proposer share and its voter share
    assert paid[a].reward == proposers * ua.part // (ua.part + ub.part) + voters // 2
    assert paid[a].slashed == 0
    assert play.alliance.record_of(play.round, a).vote is VoteState.REVEALED


def test_a_flag_of_itself_does_not_count() -> None:
    play = Play.open(4)
    a, b, c, _ = play.people
    play.start({a: B, b: V, c: V})
    play.submit(a)
    play.commit(a, FULL, (FLAG,))
    play.commit(b, FULL, (FULL,))
    play.commit(c, FULL, (FULL,))
    play.reveal()
    play.finalize()
    (ua,) = play.alliance.round_updates(play.round)
    assert ua.flag_weight == 0 and not ua.flagged and ua.part == ua.weight * FULL


def test_no_shows_are_slashed_at_slash_bps_once_and_only_when_they_were_needed() -> None:
    play = Play.open(5)
    a, b, c, d, e = play.people
    play.start({a: P, b: P, c: V, d: V, e: N})
    play.submit(a)
    play.commit(c, FULL, (FULL,))
    reverts(play, "WrongPhase", "report_no_show", e, play.round, b)
    play.reveal()
    play.finalize()
    for account in (b, d):  # b proposed nothing, d did not vote although there was an update
        slashed = play.call("report_no_show", e, play.round, account)
        assert slashed == STAKE * 1_000 // BPS
        assert play.alliance.record_of(play.round, account).no_show
        assert play.alliance.record_of(play.round, account).settled
        reverts(play, "NotANoShow", "report_no_show", e, play.round, account)  # once only
    assert play.alliance.claimable_of(e) == 2 * (STAKE * 1_000 // BPS) * 1_000 // BPS
    for account in (a, c, e):  # acted, or was not selected
        reverts(play, "NotANoShow", "report_no_show", e, play.round, account)
    # a voter of a round without updates had nothing to vote on; its proposers did not show up
    play.start({a: P, c: V})
    play.enter(Phase.FINALIZABLE)
    play.finalize()
    assert play.alliance.rounds[play.round].outcome is Outcome.VOID
    reverts(play, "NotANoShow", "report_no_show", e, play.round, c)
    play.call("report_no_show", e, play.round, a)


def test_a_both_role_account_is_a_no_show_for_the_side_it_skipped() -> None:
    play = Play.open(4)
    a, b, c, _ = play.people
    play.start({a: B, b: V, c: V})
    play.submit(a)
    play.commit(b, FULL, (FULL,))
    play.commit(c, FULL, (FULL,))
    play.reveal()
    play.finalize()
    play.call("report_no_show", b, play.round, a)  # it proposed but never voted
    record = play.alliance.record_of(play.round, a)
    assert record.no_show and not record.settled  # its proposer side is still to settle
    paid = play.settle_all()
    assert paid[a].reward > 0


def test_settlement_is_lazy_one_pending_round_per_account() -> None:
    play = Play.open(4)
    a, b, c, d = play.people
    play.start({a: P, b: V, c: V, d: P})
    play.submit(a, d)
    play.commit(b, FULL, (FULL, FULL))
    play.commit(c, FULL, (FULL, FULL))
    play.reveal()
    play.finalize()
    assert play.alliance.participant_of(a).pending_round == play.round + 1
    assert not play.alliance.settlements
    first = play.round
    play.start({a: P})
    play.submit(a)  # settles round `first` on the way in
    assert [s.account for s in play.alliance.settlements] == [a]
    assert play.alliance.record_of(first, a).settled
    assert play.alliance.participant_of(a).pending_round == play.round + 1
    assert play.alliance.claimable_of(a) == play.alliance.settlements[0].reward > 0


def test_reveal_checks_in_the_contracts_order() -> None:
    play = Play.open(4, proposers_per_round=4, voters_per_round=4)
    a, b, c, d = play.people
    play.start({a: B, b: B, c: B, d: B})
    play.submit(a, b)
    reverts(play, "WrongPhase", "commit_vote", c, play.round, b"\x01" * 32)
    play.commit(a, FULL + 1, (FULL, FULL))
    play.commit(b, FULL, (FULL,))
    play.commit(c, FULL, (FULL, FULL + 1))
    play.commit(d, FULL, (FULL, FULL), aggregate_hash=bytes(32))
    reverts(play, "DuplicateVote", "commit_vote", d, play.round, b"\x01" * 32)
    play.enter(Phase.REVEALING)
    x = play.ballots[(play.round, a)]
    err = reverts(
        play, "RevealMismatch", "reveal_vote", a, play.round, H, FULL, x.contributions, x.salt
    )
    assert err.error_args == (1, play.round, a)
    assert reverts(play, "ScoreOutOfRange", "reveal", a).error_args == (FULL + 1,)
    assert reverts(play, "ContributionsMismatch", "reveal", b).error_args == (1, play.round, 2, 1)
    assert reverts(play, "ContributionOutOfRange", "reveal", c).error_args == (1, FULL + 1)
    reverts(play, "ZeroValue", "reveal", d)
    reverts(play, "NoCommitment", "reveal_vote", addresses(9)[8], play.round, H, 0, (), x.salt)
    assert play.alliance.rounds[play.round].revealed_weight == 0


def test_round_calls_refuse_what_the_contract_refuses() -> None:
    play = Play.open(4)
    a, b, c, d = play.people
    reverts(play, "WrongPhase", "submit_update", a, 0, H, 1)  # not started
    play.start({a: P, b: V, c: N, d: P})
    reverts(play, "NotSelected", "submit_update", b, play.round, H, 1)
    reverts(play, "ZeroValue", "submit_update", a, play.round, bytes(32), 1)
    reverts(play, "ZeroValue", "submit_update", a, play.round, H, 0)
    play.submit(a)
    reverts(play, "DuplicateSubmission", "submit_update", a, play.round, H, 1)
    reverts(play, "WrongPhase", "start_round", b"\x01" * 32)
    play.enter(Phase.COMMITTING)
    reverts(play, "NotSelected", "commit_vote", a, play.round, b"\x01" * 32)
    reverts(play, "ZeroValue", "commit_vote", b, play.round, bytes(32))
    reverts(play, "WrongPhase", "finalize_round", c, play.round)
    play.enter(Phase.FINALIZABLE)
    play.finalize()
    reverts(play, "WrongPhase", "finalize_round", c, play.round)
    play.start({b: V})
    play.enter(Phase.COMMITTING)
    reverts(play, "NoUpdates", "commit_vote", b, play.round, b"\x01" * 32)


def test_a_round_takes_at_most_max_updates() -> None:
    count = MAX_UPDATES + 1
    play = Play.open(count, proposers_per_round=count, voters_per_round=1)
    play.start()
    for account in play.people[:MAX_UPDATES]:
        play.call("submit_update", account, play.round, H, 1)
    err = reverts(play, "RoundFull", "submit_update", play.people[-1], play.round, H, 1)
    assert err.error_args == (1, play.round, MAX_UPDATES)


def test_stake_rules() -> None:
    play = Play.open(2, max_participants=3, rounds=1)
    a, b = play.people
    c, d = addresses(2, "late")
    reverts(play, "ZeroValue", "stake", c, 0, SAMPLES, DATA)
    reverts(play, "ZeroValue", "stake", c, STAKE)  # a first stake registers its dataset
    reverts(play, "ZeroValue", "stake", c, STAKE, SAMPLES, bytes(32))
    err = reverts(play, "InsufficientStake", "stake", c, TOKEN, SAMPLES, DATA)
    assert err.error_args == (10 * TOKEN, TOKEN)
    play.call("stake", c, 10 * TOKEN, SAMPLES, DATA)
    assert reverts(play, "TaskFull", "stake", d, STAKE, SAMPLES, DATA).error_args == (1, 3)
    play.call("request_unstake", c, 10 * TOKEN)  # leaves: a seat is free again
    play.call("stake", d, STAKE, SAMPLES, DATA)
    assert reverts(play, "InsufficientStake", "request_unstake", a, STAKE + 1).error_args == (
        STAKE + 1,
        STAKE,
    )
    reverts(play, "InsufficientStake", "request_unstake", a, STAKE - TOKEN)  # 1 token left
    play.start()
    reverts(play, "TaskClosed", "stake", b, STAKE)
    reverts(play, "TaskClosed", "start_round", b"\x01" * 32)


def test_stake_changes_count_from_the_next_round_on() -> None:
    play = Play.open(3)
    a, b, _ = play.people
    play.start()
    play.call("stake", a, STAKE)
    play.call("request_unstake", b, STAKE)
    assert play.alliance.stake_at(a, play.round) == STAKE
    assert play.alliance.stake_at(a, play.round + 1) == 2 * STAKE
    assert play.alliance.stake_at(b, play.round + 1) == 0
    assert play.alliance.rounds[play.round].total_stake == 3 * STAKE
    play.enter(Phase.FINALIZABLE)
    play.finalize()
    play.start()
    assert play.alliance.rounds[play.round].total_stake == 3 * STAKE
    assert play.alliance.role_of(play.round, b) is Role.NONE


def test_withdraw_waits_for_the_delay_and_the_pending_round_and_rolls_back_on_revert() -> None:
    play = Play.open(4)
    a, b, c, _ = play.people
    play.start({a: P, b: V, c: V})
    play.submit(a)
    play.commit(b, FULL, (FULL,))
    play.commit(c, -FULL, (FULL,))
    play.call("request_unstake", c, STAKE)
    play.reveal(b)  # c keeps its vote to itself: slashed on settlement
    reverts(play, "PendingSettlement", "withdraw", c)
    play.finalize()
    release = play.alliance.participant_of(c).release_at
    assert play.alliance.now < release
    before = (play.alliance.participant_of(c), len(play.alliance.settlements))
    # the settlement withdraw runs first is undone with the revert
    assert reverts(play, "StillUnbonding", "withdraw", c).error_args == (release,)
    assert (play.alliance.participant_of(c), len(play.alliance.settlements)) == before
    play.alliance.now = release
    paid = play.call("withdraw", c)
    assert paid == STAKE - STAKE * 3_000 // BPS
    assert play.alliance.net_paid[c] == -STAKE + paid
    reverts(play, "ZeroValue", "withdraw", c)


def test_the_books_balance_over_a_whole_task() -> None:
    play = Play.open(5, stakes=[STAKE, STAKE + 7, 3 * STAKE // 2 + 1, 40 * TOKEN + 3, 11 * TOKEN])
    a, b, c, d, _ = play.people
    for _ in range(3):
        play.start({a: B, b: P, c: V, d: V})
        play.submit(a, b)
        play.commit(a, FULL, (FULL, FULL // 3))
        play.commit(c, FULL // 7, (FULL // 5, -FULL // 2))
        play.commit(d, -FULL // 9, (FLAG, FULL))
        play.reveal()
        play.finalize()
        for account in play.people:
            play.call("claim", account)
        for account in play.people:
            if play.alliance.role_of(play.round, account).votes and account not in (a, c, d):
                play.call("report_no_show", b, play.round, account)
    reverts(play, "NotCreator", "reclaim_pool", a)
    left = play.alliance.task.pool
    assert play.call("reclaim_pool", play.alliance.task.creator) == left
    for account in play.people:
        play.call("claim", account)
        stake = play.alliance.participant_of(account).active
        if stake:
            play.call("request_unstake", account, stake)
    play.call("claim", play.alliance.rounds[0].finalizer)
    play.alliance.now += play.alliance.params.unbonding_delay
    for account in play.people:
        if play.alliance.participant_of(account).unbonding:
            play.call("withdraw", account)
    assert play.alliance.balance() == 0
    assert sum(play.alliance.net_paid.values()) == 0


def test_invalid_task_parameters_are_refused() -> None:
    with pytest.raises(ProtocolRevert) as caught:
        Alliance(make_params(unbonding_delay=199), addresses(1)[0])
    assert caught.value.name == "InvalidTaskParameter"
    assert caught.value.error_args == (b"unbondingDelay".ljust(32, b"\0"),)
