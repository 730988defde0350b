"""Python and Solidity compute the same EIP-712 digest of a signed update, and the chain's
ecrecover recovers the Python signer (contracts/test/UpdateDigestHarness.sol over
contracts/src/UpdateDigest.sol, deployed on each backend of the `chain` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chain_world import repo_root
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flock_pipeline.chain import Chain
from flock_pipeline.chain.compile import compile_test_contract
from flock_pipeline.signing import sign_update, update_digest, update_nonce

HARNESS = Path("contracts") / "test" / "UpdateDigestHarness.sol"
UINT = st.integers(0, 2**256 - 1)
SMALL = st.integers(0, 2**64)
ADDRESS = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
HASH = st.binary(min_size=32, max_size=32)
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def harness_code() -> tuple[list[dict[str, Any]], str]:
    """Compiled once for both backends."""
    return compile_test_contract(HARNESS, "UpdateDigestHarness", repo_root())


@pytest.fixture(scope="module")
def harness(chain: Chain, harness_code: tuple[list[dict[str, Any]], str]) -> Any:
    abi, bytecode = harness_code
    deployer = chain.w3.eth.accounts[0]
    tx = (
        chain.w3.eth.contract(abi=abi, bytecode=bytecode).constructor().transact({"from": deployer})
    )
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx)
    return chain.w3.eth.contract(address=receipt["contractAddress"], abi=abi)


@EXAMPLES
@given(alliance=ADDRESS, task=UINT, round_=UINT, content=HASH, samples=UINT, nonce=UINT,
       deadline=UINT)  # fmt: skip
def test_python_and_solidity_compute_the_same_digest(
    chain: Chain,
    harness: Any,
    alliance: str,
    task: int,
    round_: int,
    content: bytes,
    samples: int,
    nonce: int,
    deadline: int,
) -> None:
    fields = (task, round_, content, samples, nonce, deadline)

    on_chain = harness.functions.digest(alliance, *fields).call()
    in_python = update_digest(chain_id=chain.chain_id, contract=alliance, task_id=task,
                              round_=round_, content_hash=content, num_samples=samples,
                              nonce=nonce, deadline=deadline)  # fmt: skip

    assert bytes(on_chain) == in_python


def test_the_domain_is_bound_to_the_chain_id_the_node_reports(chain: Chain, harness: Any) -> None:
    alliance = to_checksum_address("0x" + "a1" * 20)

    def digest(chain_id: int) -> bytes:
        return update_digest(chain_id=chain_id, contract=alliance, task_id=1, round_=2,
                             content_hash=b"\x07" * 32, num_samples=3, nonce=2,
                             deadline=4)  # fmt: skip

    on_chain = bytes(harness.functions.digest(alliance, 1, 2, b"\x07" * 32, 3, 2, 4).call())

    assert on_chain == digest(chain.chain_id)
    assert on_chain != digest(chain.chain_id + 1)


@EXAMPLES
@given(alliance=ADDRESS, task=SMALL, round_=SMALL, content=HASH, samples=SMALL,
       deadline=SMALL)  # fmt: skip
def test_the_chain_recovers_the_python_signer(
    chain: Chain,
    harness: Any,
    alliance: str,
    task: int,
    round_: int,
    content: bytes,
    samples: int,
    deadline: int,
) -> None:
    key = Account.create()  # a throwaway test key from the OS's CSPRNG
    signed = sign_update(key, chain_id=chain.chain_id, contract=alliance, task_id=task,
                         round_=round_, content_hash=content, num_samples=samples,
                         deadline=deadline)  # fmt: skip
    fields = (task, round_, content, samples, update_nonce(task, round_), deadline)

    recovered = harness.functions.signer(alliance, *fields, signed.signature).call()
    tampered = harness.functions.signer(alliance, task, round_ + 1, *fields[2:],
                                        signed.signature).call()  # fmt: skip

    assert recovered == key.address
    assert tampered != key.address
