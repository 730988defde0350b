"""Bad input surfaces as named Python errors decoded from the contract's custom reverts."""

from __future__ import annotations

import pytest
from chain_world import STAKE, TOKEN, World

from flock_pipeline.chain import Phase, Role, TaskConfig, Vote, to_fixed
from flock_pipeline.chain.errors import (
    AggregateNotPosted,
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
from flock_pipeline.errors import FlockError


def test_a_reveal_that_does_not_match_its_commit_raises_reveal_mismatch(world: World) -> None:
    r = world.open_round()
    r.submit_all()
    r.post_aggregate()
    voter = r.voters[0]
    vote, _ = voter.commit_vote(r.task_id, r.round, to_fixed(0.1))
    r.enter(Phase.REVEALING)
    with pytest.raises(RevealMismatch):
        voter.reveal_vote(vote.__class__(**{**vote.__dict__, "score": to_fixed(-0.1)}))
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
    with pytest.raises(AggregateNotPosted):
        r.voters[0].commit_vote(r.task_id, r.round, 1)
    r.proposers[0].post_aggregate(r.task_id, r.round, b"\x33" * 32)
    r.voters[0].commit_vote(r.task_id, r.round, 1)
    with pytest.raises(DuplicateVote):
        r.voters[0].commit_vote(r.task_id, r.round, 1)
    with pytest.raises(NotSelected):
        r.proposers[0].commit_vote(r.task_id, r.round, 1)
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
