"""Bad input surfaces as named Python errors decoded from the contract's custom reverts."""

from __future__ import annotations

import pytest
from chain_world import FULL, STAKE, TOKEN, RoundUnderTest, World

from flock_pipeline.chain import (
    AllianceClient,
    Phase,
    Role,
    TaskConfig,
    Vote,
    to_fixed,
    vote_commitment,
)
from flock_pipeline.chain.errors import (
    AggregateNotPosted,
    ContributionOutOfRange,
    ContributionsMismatch,
    DuplicateSubmission,
    DuplicateVote,
    InsufficientStake,
    InvalidTaskParameter,
    NoCommitment,
    NotSelected,
    RevealMismatch,
    UnknownTask,
    WrongPhase,
)
from flock_pipeline.errors import ConfigError, FlockError


def test_a_reveal_that_does_not_match_its_commit_raises_reveal_mismatch(world: World) -> None:
    r = world.open_round()
    r.submit_all()
    r.post_aggregate()
    voter = r.voters[0]
    full = [FULL] * len(r.proposers)
    vote, _ = voter.commit_vote(r.task_id, r.round, to_fixed(0.1), contributions=full)
    r.enter(Phase.REVEALING)
    with pytest.raises(RevealMismatch):
        voter.reveal_vote(vote.__class__(**{**vote.__dict__, "score": to_fixed(-0.1)}))
    with pytest.raises(RevealMismatch):
        voter.reveal_vote(vote.__class__(**{**vote.__dict__, "contributions": (0,) * len(full)}))
    voter.reveal_vote(vote)  # the honest reveal still goes through


def test_calls_out_of_phase_raise_wrong_phase_naming_both_phases(world: World) -> None:
    r = world.open_round()
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
        world.people[0].stake(task_id, 10 * TOKEN - 1)
    assert raised.value.args_by_name == {"required": 10 * TOKEN, "actual": 10 * TOKEN - 1}


def test_a_second_submission_raises_duplicate_submission(world: World) -> None:
    r = world.open_round()
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


def test_roles_are_enforced_and_votes_need_an_aggregate_and_a_commit(world: World) -> None:
    r = world.open_round()
    with pytest.raises(NotSelected) as raised:
        r.voters[0].submit_update(r.task_id, r.round, b"\x01" * 32, 10)
    assert raised.value.args_by_name["required"] is Role.PROPOSER
    r.submit_all()
    r.enter(Phase.COMMITTING)
    full = [FULL] * len(r.proposers)
    with pytest.raises(AggregateNotPosted):
        r.voters[0].commit_vote(r.task_id, r.round, 1, contributions=full)
    r.proposers[0].post_aggregate(r.task_id, r.round, b"\x33" * 32)
    r.voters[0].commit_vote(r.task_id, r.round, 1, contributions=full)
    with pytest.raises(DuplicateVote):
        r.voters[0].commit_vote(r.task_id, r.round, 1, contributions=full)
    with pytest.raises(NotSelected):
        r.proposers[0].commit_vote(r.task_id, r.round, 1, contributions=full)
    r.enter(Phase.REVEALING)
    never_committed = Vote(r.task_id, r.round, r.voters[-1].address, 1, b"\0" * 32, b"")
    with pytest.raises(NoCommitment):
        r.voters[-1].reveal_vote(never_committed) if len(r.voters) > 1 else r.proposers[
            0
        ].reveal_vote(never_committed)


def test_invalid_task_parameters_are_named(world: World) -> None:
    with pytest.raises(InvalidTaskParameter) as raised:
        world.creator.create_task(TaskConfig(model_hash=b"\x01" * 32, unbonding_delay=10))
    assert raised.value.args_by_name == {"name": "unbondingDelay"}


def _commit_raw(voter: AllianceClient, r: RoundUnderTest, score: int, cs: list[int]) -> Vote:
    """Commit past the client's checks, as a buggy or hostile client would."""
    salt = b"\x05" * 32
    commitment = vote_commitment(r.task_id, r.round, voter.address, score, salt, cs)
    voter.tx.send(voter.alliance.functions.commitVote(r.task_id, r.round, commitment), voter.signer)
    return Vote(r.task_id, r.round, voter.address, score, salt, commitment, tuple(cs))


def test_bad_contributions_raise_named_errors_on_reveal(world: World) -> None:
    r = world.open_round(min_proposers=1, min_voters=2)
    r.submit_all()
    r.post_aggregate()
    n = len(r.proposers)
    short = _commit_raw(r.voters[0], r, to_fixed(0.1), [FULL] * (n - 1))
    wild = _commit_raw(r.voters[1], r, to_fixed(0.1), [FULL] * (n - 1) + [FULL + 1])
    r.enter(Phase.REVEALING)
    with pytest.raises(ContributionsMismatch) as mismatch:
        r.voters[0].reveal_vote(short)
    assert mismatch.value.args_by_name == {
        "taskId": r.task_id,
        "round": r.round,
        "expected": n,
        "actual": n - 1,
    }
    with pytest.raises(ContributionOutOfRange) as out_of_range:
        r.voters[1].reveal_vote(wild)
    assert out_of_range.value.args_by_name == {"index": n - 1, "value": FULL + 1}
    assert "[-1, 1]" in str(out_of_range.value)


def test_the_client_refuses_contributions_it_could_not_reveal(world: World) -> None:
    r = world.open_round(min_proposers=1, min_voters=1)
    r.submit_all()
    r.post_aggregate()
    voter, n = r.voters[0], len(r.proposers)
    with pytest.raises(ConfigError, match="contributions for"):
        voter.commit_vote(r.task_id, r.round, to_fixed(0.1))  # accepting needs one per update
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        voter.commit_vote(r.task_id, r.round, to_fixed(0.1), contributions=[-FULL - 1] * n)
    assert voter.record_of(r.task_id, r.round).action.name == "NONE"  # nothing was sent
    vote, _ = voter.commit_vote(r.task_id, r.round, to_fixed(-0.1))  # rejecting: none is fine
    assert vote.contributions == ()
