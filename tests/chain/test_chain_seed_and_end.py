"""Seeds drawn from a future block, registered datasets and the task's end, through the Python
client on py-evm and on anvil (both mine only on demand: the client mines what a seed needs)."""

from __future__ import annotations

import pytest
from chain_world import DATA, GOOD, SAMPLES, STAKE, World
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from flock_pipeline.chain import Phase, Role, SeedState
from flock_pipeline.chain.errors import (
    NotCreator,
    PendingSettlement,
    RoundInProgress,
    SeedNotReady,
    TaskEnded,
    TooManySamples,
)
from flock_pipeline.protocol.params import dataset_hash


def test_a_round_has_no_roles_until_its_future_block_seed_is_drawn(world: World) -> None:
    # Prepare
    task_id = world.open_task()
    round_, started = world.keeper.start_round(task_id, draw=False)
    # Assert: started, waiting, nobody has a role, the seed cannot be drawn yet
    assert world.keeper.phase_of(task_id, round_) is Phase.WAITING_FOR_SEED
    assert {p.role_of(task_id, round_) for p in world.people} == {Role.NONE}
    assert world.keeper.seed_state(task_id, round_)[0] is SeedState.PENDING
    with pytest.raises(SeedNotReady) as early:
        world.keeper.tx.send(
            world.keeper.alliance.functions.drawRound(task_id, round_), world.keeper.signer
        )
    assert early.value.args_by_name["state"] is SeedState.PENDING
    # Execute: the client mines the blocks the seed waits for, then draws
    drawn = world.keeper.draw_round(task_id, round_)
    # Assert: the seed is the target block's hash mixed with (alliance, task, round)
    target = int(
        world.keeper.seeds.functions.targetOf(world.keeper.alliance.address, task_id, round_).call()
    )
    assert target == started.block_number + 2 < drawn.block_number
    block_hash = bytes(world.chain.w3.eth.get_block(target)["hash"])
    expected = keccak(
        encode(
            ["bytes32", "address", "uint256", "uint256"],
            [block_hash, world.keeper.alliance.address, task_id, round_],
        )
    )
    info = world.keeper.round_info(task_id, round_)
    assert info.seed == expected
    assert world.keeper.phase_of(task_id, round_) is Phase.TRAINING
    draw_time = int(world.chain.w3.eth.get_block(drawn.block_number)["timestamp"])
    assert info.training_ends == draw_time + 3_600  # deadlines count from the draw


def test_a_lapsed_seed_request_is_renewed_and_the_round_still_opens(world: World) -> None:
    task_id = world.open_task()
    round_, _ = world.keeper.start_round(task_id, draw=False)
    world.chain.mine(300)  # past blockhash's 256 blocks: the target's hash is gone
    assert world.keeper.seed_state(task_id, round_)[0] is SeedState.LAPSED
    info = world.keeper.open_round(task_id, round_)  # renews, waits, draws
    assert info.seed != bytes(32)
    assert world.keeper.phase_of(task_id, round_) is Phase.TRAINING
    assert world.keeper.open_round(task_id, round_) == info  # again: nothing more to do


def test_an_update_claims_at_most_its_registered_samples(world: World) -> None:
    r = world.everyone_round()
    proposer = world.people[0]
    stake = proposer.participant_of(r.task_id)
    assert (stake.num_samples, stake.data_hash) == (
        SAMPLES,
        dataset_hash(f"{proposer.address}.dir"),
    )
    with pytest.raises(TooManySamples) as raised:
        proposer.submit_update(r.task_id, r.round, b"\x01" * 32, SAMPLES + 1)
    assert raised.value.args_by_name == {"claimed": SAMPLES + 1, "registered": SAMPLES}
    proposer.submit_update(r.task_id, r.round, b"\x01" * 32, SAMPLES)
    with pytest.raises(PendingSettlement):  # no new registration with a round unsettled
        proposer.stake(r.task_id, STAKE, 2 * SAMPLES, DATA)
    proposer.stake(r.task_id, STAKE)  # a top-up keeps the registration


def test_a_cancelled_task_returns_its_pool_and_takes_no_more_stake(world: World) -> None:
    # Prepare: one round played and paid
    r = world.everyone_round()
    with pytest.raises(RoundInProgress):
        world.creator.cancel_task(r.task_id)
    r.play([GOOD] * 4)
    # Execute
    with pytest.raises(NotCreator):
        world.keeper.cancel_task(r.task_id)
    world.creator.cancel_task(r.task_id)
    # Assert
    with pytest.raises(TaskEnded):
        world.people[0].stake(r.task_id, STAKE)
    with pytest.raises(TaskEnded):
        world.keeper.start_round(r.task_id)
    pool = world.keeper.task_state(r.task_id).pool
    assert pool > 0
    assert world.creator.reclaim_pool(r.task_id)[0] == pool
    paid = r.claim_all()
    assert sum(paid.values()) == world.keeper.round_info(r.task_id, r.round).reward
    assert world.keeper.task_state(r.task_id).pool == 0
    assert world.vault_balance() == world.bucket_total()
