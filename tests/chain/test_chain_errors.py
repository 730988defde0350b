"""Bad input surfaces as named Python errors decoded from the contract's custom reverts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chain_world import (
    AGGREGATE,
    BOGUS,
    DATA,
    FULL,
    GOOD,
    SAMPLES,
    STAKE,
    TOKEN,
    RoundUnderTest,
    World,
)

from flock_pipeline.chain import (
    AllianceClient,
    Phase,
    Role,
    TaskConfig,
    Vote,
    VoteState,
    to_fixed,
    vote_commitment,
)
from flock_pipeline.chain.errors import (
    ContributionOutOfRange,
    ContributionsMismatch,
    DuplicateSubmission,
    DuplicateVote,
    InsufficientStake,
    InvalidTaskParameter,
    NoCommitment,
    NotSelected,
    NoUpdates,
    RevealMismatch,
    ScoreOutOfRange,
    UnknownTask,
    WrongPhase,
    ZeroValue,
)
from flock_pipeline.errors import ConfigError, FlockError


def test_a_reveal_that_does_not_match_its_commit_raises_reveal_mismatch(world: World) -> None:
    r = world.everyone_round()
    r.submit()
    r.commit([GOOD, None, None, None])
    voter = world.people[0]
    vote = r.votes[voter.address]
    r.enter(Phase.REVEALING)
    for forged in (
        replace(vote, score=to_fixed(-0.1)),
        replace(vote, contributions=(0,) * len(vote.contributions)),
        replace(vote, aggregate_hash=BOGUS),
    ):
        with pytest.raises(RevealMismatch):
            voter.reveal_vote(forged)
    voter.reveal_vote(vote)  # the honest reveal still goes through
    assert world.keeper.record_of(r.task_id, r.round, voter.address).vote is VoteState.REVEALED


def test_calls_out_of_phase_raise_wrong_phase_naming_both_phases(world: World) -> None:
    r = world.everyone_round()
    with pytest.raises(WrongPhase) as early:
        world.keeper.finalize_round(r.task_id, r.round)
    assert early.value.args_by_name["expected"] is Phase.FINALIZABLE
    assert early.value.args_by_name["actual"] is Phase.TRAINING
    r.enter(Phase.COMMITTING)
    with pytest.raises(WrongPhase) as late:
        r.proposers[0].submit_update(r.task_id, r.round, b"\x01" * 32, 10)
    assert late.value.args_by_name["actual"] is Phase.COMMITTING
    with pytest.raises(WrongPhase):
        r.proposers[0].submit_update(r.task_id, r.round + 1, b"\x01" * 32, 10)
    assert "FINALIZABLE" in str(early.value) and isinstance(early.value, FlockError)


def test_staking_below_the_minimum_raises_insufficient_stake(world: World) -> None:
    task_id, _ = world.creator.create_task(TaskConfig(model_hash=b"\x01" * 32))
    with pytest.raises(InsufficientStake) as raised:
        world.people[0].stake(task_id, 10 * TOKEN - 1, SAMPLES, DATA)
    assert raised.value.args_by_name == {"required": 10 * TOKEN, "actual": 10 * TOKEN - 1}


def test_a_second_submission_raises_duplicate_submission(world: World) -> None:
    r = world.everyone_round()
    proposer = r.proposers[0]
    proposer.submit_update(r.task_id, r.round, b"\x01" * 32, 10)
    with pytest.raises(DuplicateSubmission):
        proposer.submit_update(r.task_id, r.round, b"\x02" * 32, 10)


def test_an_unknown_task_raises_unknown_task(world: World) -> None:
    with pytest.raises(UnknownTask) as raised:
        world.people[0].stake(404, STAKE)
    assert raised.value.args_by_name == {"taskId": 404}
    with pytest.raises(UnknownTask):
        world.keeper.task_state(404)


def test_roles_are_enforced_and_votes_need_an_update_and_a_commit(world: World) -> None:
    # Prepare: one account that only proposes and one that only votes
    r = world.open_round(
        want=lambda r: {Role.PROPOSER, Role.VOTER} <= set(r.roles.values()),
    )
    proposer = next(p for p in r.proposers if r.roles[p.address] is Role.PROPOSER)
    voter = next(p for p in r.voters if r.roles[p.address] is Role.VOTER)
    # Execute / Assert
    with pytest.raises(NotSelected) as raised:
        voter.submit_update(r.task_id, r.round, b"\x01" * 32, 10)
    assert raised.value.args_by_name["required"] is Role.PROPOSER
    r.enter(Phase.COMMITTING)
    with pytest.raises(NoUpdates):
        voter.commit_vote(r.task_id, r.round, AGGREGATE, GOOD)
    with pytest.raises(NotSelected) as raised:
        proposer.commit_vote(r.task_id, r.round, AGGREGATE, GOOD)
    assert raised.value.args_by_name["required"] is Role.VOTER
    r.enter(Phase.REVEALING)
    never_committed = Vote(r.task_id, r.round, voter.address, AGGREGATE, GOOD, b"\0" * 32, b"")
    with pytest.raises(NoCommitment):
        voter.reveal_vote(never_committed)


def test_a_second_commit_raises_duplicate_vote(world: World) -> None:
    r = world.everyone_round()
    r.submit()
    r.commit([GOOD, None, None, None])
    with pytest.raises(DuplicateVote):
        world.people[0].commit_vote(r.task_id, r.round, AGGREGATE, GOOD, contributions=[FULL] * 4)


def test_invalid_task_parameters_are_named(world: World) -> None:
    with pytest.raises(InvalidTaskParameter) as raised:
        world.creator.create_task(TaskConfig(model_hash=b"\x01" * 32, unbonding_delay=10))
    assert raised.value.args_by_name == {"name": "unbondingDelay"}


def _commit_raw(
    voter: AllianceClient, r: RoundUnderTest, digest: bytes, score: int, cs: list[int]
) -> Vote:
    """Commit past the client's checks, as a buggy or hostile client would."""
    salt = b"\x05" * 32
    commitment = vote_commitment(r.task_id, r.round, voter.address, digest, score, salt, cs)
    voter.tx.send(voter.alliance.functions.commitVote(r.task_id, r.round, commitment), voter.signer)
    return Vote(r.task_id, r.round, voter.address, digest, score, salt, commitment, tuple(cs))


def test_bad_contributions_raise_named_errors_on_reveal(world: World) -> None:
    r = world.everyone_round()
    r.submit()
    r.enter(Phase.COMMITTING)
    short = _commit_raw(world.people[0], r, AGGREGATE, GOOD, [FULL] * 3)
    wild = _commit_raw(world.people[1], r, AGGREGATE, GOOD, [FULL] * 3 + [FULL + 1])
    r.enter(Phase.REVEALING)
    with pytest.raises(ContributionsMismatch) as mismatch:
        world.people[0].reveal_vote(short)
    assert mismatch.value.args_by_name == {
        "taskId": r.task_id,
        "round": r.round,
        "expected": 4,
        "actual": 3,
    }
    with pytest.raises(ContributionOutOfRange) as out_of_range:
        world.people[1].reveal_vote(wild)
    assert out_of_range.value.args_by_name == {"index": 3, "value": FULL + 1}
    assert "[-1, 1]" in str(out_of_range.value)


def test_a_score_out_of_range_and_a_zero_hash_are_named_reverts(world: World) -> None:
    # Prepare: two commitments the client would refuse to make
    r = world.everyone_round()
    r.submit()
    r.enter(Phase.COMMITTING)
    too_high = _commit_raw(world.people[0], r, AGGREGATE, FULL + 1, [FULL] * 4)
    no_hash = _commit_raw(world.people[1], r, b"\0" * 32, GOOD, [FULL] * 4)
    r.enter(Phase.REVEALING)
    # Execute / Assert
    with pytest.raises(ScoreOutOfRange) as raised:
        world.people[0].reveal_vote(too_high)
    assert raised.value.args_by_name == {"score": FULL + 1}
    assert "[-1, 1]" in str(raised.value)
    with pytest.raises(ZeroValue) as zero:
        world.people[1].reveal_vote(no_hash)
    assert zero.value.name == "ZeroValue" and "zero" in str(zero.value)
    for person in world.people[:2]:
        record = world.keeper.record_of(r.task_id, r.round, person.address)
        assert record.vote is VoteState.COMMITTED  # both stay unrevealed, hence slashable


def test_the_client_refuses_votes_it_could_not_reveal(world: World) -> None:
    r = world.everyone_round()
    r.submit()
    r.enter(Phase.COMMITTING)
    voter = world.people[0]
    full = [FULL] * 4
    with pytest.raises(ConfigError, match="contributions for"):
        voter.commit_vote(r.task_id, r.round, AGGREGATE, GOOD)  # accepting needs one per update
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        voter.commit_vote(r.task_id, r.round, AGGREGATE, GOOD, contributions=[-FULL - 1] * 4)
    with pytest.raises(ConfigError, match=r"score .*\[-1, 1\]"):
        voter.commit_vote(r.task_id, r.round, AGGREGATE, -FULL - 1, contributions=full)
    with pytest.raises(ConfigError, match="not zero"):
        voter.commit_vote(r.task_id, r.round, b"\0" * 32, GOOD, contributions=full)
    with pytest.raises(ConfigError, match="32 bytes"):
        voter.commit_vote(r.task_id, r.round, b"\x22" * 20, GOOD, contributions=full)
    assert voter.record_of(r.task_id, r.round).vote is VoteState.NONE  # nothing was sent
    vote, _ = voter.commit_vote(r.task_id, r.round, AGGREGATE, to_fixed(-0.1))  # rejecting
    assert vote.contributions == () and vote.aggregate_hash == AGGREGATE
