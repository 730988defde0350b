"""The client's calls, encoded from the ABI once, read and fail exactly as web3's contract
functions do, on both backends; the batched reads agree with the single ones."""

from __future__ import annotations

import time
from typing import Any

import pytest
from chain_world import BOGUS, World

from flock_pipeline.chain import ContractRevert, Phase


def _reads(world: World, task_id: int, round_: int) -> list[tuple[str, tuple[Any, ...]]]:
    someone = world.people[0].address
    return [
        ("taskParams", (task_id,)),
        ("taskState", (task_id,)),
        ("roundInfo", (task_id, round_)),
        ("recordOf", (task_id, round_, someone)),
        ("participantOf", (task_id, someone)),
        ("roleOf", (task_id, round_, someone)),
        ("phaseOf", (task_id, round_)),
        ("roundUpdates", (task_id, round_)),  # an array of structs
        ("claimableOf", (task_id, someone)),
        ("tallyOf", (task_id, round_, BOGUS)),
    ]


def test_encoded_reads_return_what_web3_contract_functions_return(world: World) -> None:
    # Prepare: a round with every update submitted, so the struct arrays are not empty.
    rut = world.everyone_round()
    rut.submit()
    creator = world.creator
    # Execute / Assert
    for name, args in _reads(world, rut.task_id, rut.round):
        expected = getattr(creator.alliance.functions, name)(*args).call()
        assert getattr(creator._calls["alliance"], name)(*args).call() == expected, name
    token = creator.token.functions.balanceOf(world.people[0].address).call()
    assert creator.balance_of(world.people[0].address) == token


def test_batched_reads_agree_with_single_reads(world: World) -> None:
    rut = world.everyone_round()
    accounts = [p.address for p in world.people]
    stakes = world.creator.participants_of(rut.task_id, accounts)
    roles = world.creator.roles_of(rut.task_id, rut.round, accounts)
    assert stakes == [world.creator.participant_of(rut.task_id, a) for a in accounts]
    assert roles == [world.creator.role_of(rut.task_id, rut.round, a) for a in accounts]
    assert world.creator.participants_of(rut.task_id, []) == []
    head = world.chain.w3.eth.block_number
    blocks = [head, rut.block, head, 0]
    stamps = world.creator.block_timestamps(blocks)
    assert stamps == {n: world.creator.block_timestamp(n) for n in (0, rut.block, head)}
    assert world.creator.block_timestamps([]) == {}


def test_an_encoded_transaction_that_would_revert_raises_its_named_error(world: World) -> None:
    # A round past its training phase refuses an update: the estimate reverts with the
    # contract's custom error, decoded by name, and nothing is sent.
    rut = world.everyone_round()
    rut.enter(Phase.COMMITTING)
    proposer = rut.proposers[0]
    nonce = world.chain.w3.eth.get_transaction_count(proposer.signer.address)
    with pytest.raises(ContractRevert) as caught:
        proposer.submit_update(rut.task_id, rut.round, BOGUS, 1)
    assert caught.value.name
    assert world.chain.w3.eth.get_transaction_count(proposer.signer.address) == nonce


def test_an_abi_with_an_overloaded_function_is_refused_not_half_read() -> None:
    from web3 import Web3

    from flock_pipeline.chain.transactions import ContractCalls

    def fn(*inputs: str) -> dict[str, Any]:
        return {"type": "function", "name": "f", "outputs": [],
                "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(inputs)]}  # fmt: skip

    ContractCalls(Web3(), "0x" + "11" * 20, [fn("uint256")])  # one of each name: fine
    with pytest.raises(ValueError, match="overloads f"):
        ContractCalls(Web3(), "0x" + "11" * 20, [fn("uint256"), fn("address")])


def test_a_reused_fee_quote_below_the_base_fee_is_quoted_again_and_the_transaction_goes(
    world: World,
) -> None:
    # Prepare: a quote as if taken long ago, when the base fee was far lower than now.
    client = world.people[0]
    base = int(world.chain.w3.eth.get_block("latest")["baseFeePerGas"])
    assert base > 1  # a quote below it exists
    client.tx._fees = (time.monotonic() + 3600, 0, 1)  # never stale by age, cap 1 wei per gas
    before = client.balance_of(world.people[1].address)
    # Execute
    result = client.transfer(world.people[1].address, 7)
    # Assert: sent once, with a fresh quote that covers the base fee
    assert client.balance_of(world.people[1].address) == before + 7
    tx = world.chain.w3.eth.get_transaction(result.tx_hash)  # type: ignore[arg-type]
    assert tx["maxFeePerGas"] >= base
    assert client.tx._fees is not None and client.tx._fees[2] > 1


def test_a_batch_of_reads_that_fails_in_transit_is_read_again(world: World, monkeypatch) -> None:
    if world.chain.kind == "py-evm":
        pytest.skip("py-evm reads one at a time, in process")
    import requests

    rut = world.everyone_round()
    accounts = [p.address for p in world.people]
    expected = world.creator.participants_of(rut.task_id, accounts)
    sessions = world.chain.w3.provider._request_session_manager  # type: ignore[attr-defined]
    real, failures = sessions.make_post_request, []

    def drops_once(uri: str, data: bytes, **kwargs: Any) -> Any:
        if data.lstrip().startswith(b"[") and not failures:  # the batch, the first time
            failures.append(1)
            raise requests.ConnectionError("Connection aborted.")
        return real(uri, data, **kwargs)

    monkeypatch.setattr(sessions, "make_post_request", drops_once)
    # Execute / Assert: the dropped batch is sent again and reads what it would have
    assert world.creator.participants_of(rut.task_id, accounts) == expected
    assert failures == [1]


@pytest.mark.parametrize("lost", ["request", "answer"])
def test_a_transaction_whose_send_is_lost_in_transit_is_sent_again_and_executes_once(
    world: World, monkeypatch, lost: str
) -> None:
    if world.chain.kind == "py-evm":
        pytest.skip("py-evm takes transactions in process")
    import requests

    client, someone = world.creator, world.people[0].address
    before = client.balance_of(someone)
    nonce = world.chain.w3.eth.get_transaction_count(client.address)  # type: ignore[arg-type]
    sessions = world.chain.w3.provider._request_session_manager  # type: ignore[attr-defined]
    real, sends = sessions.make_post_request, []

    def loses_the_first_send(uri: str, data: bytes, **kwargs: Any) -> Any:
        if b"eth_sendRawTransaction" in data:
            sends.append(1)
            if len(sends) == 1:
                if lost == "answer":  # the node took it; its answer never came back
                    real(uri, data, **kwargs)
                raise requests.ConnectionError("Connection aborted.")
        return real(uri, data, **kwargs)

    monkeypatch.setattr(sessions, "make_post_request", loses_the_first_send)
    # Execute
    result = client.mint(someone, 7)
    # Assert: sent twice, executed once, under one nonce
    assert len(sends) == 2
    assert client.balance_of(someone) == before + 7
    assert world.chain.w3.eth.get_transaction_count(client.address) == nonce + 1  # type: ignore[arg-type]
    assert world.chain.w3.eth.get_transaction(result.tx_hash)["nonce"] == nonce  # type: ignore[arg-type]
