"""FlockAlliance on the in-process py-evm chain, driven at the eth-tester level for the
differential test: one task, a creator and a few funded participants, reset between examples.
The deployment is the real one (token, vault, FutureBlockSeed, AllianceLogic, alliance).

Reproducible: the genesis block is dated 2100-01-01, ahead of any wall clock, so every block
is exactly one second after its parent, and each block's prevrandao comes from a counter
instead of the operating system, so round seeds (and with them the roles) are the same on
every run. A call is first run against the pending block (same state, same timestamp as the
transaction will see) to read a revert's custom error, then sent and mined.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import eth_tester.backends.pyevm.main as pyevm_main
import pytest
from eth_abi.abi import decode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import event_signature_to_log_topic, function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.conversions import to_bytes
from eth_utils.crypto import keccak
from eth_utils.hexadecimal import encode_hex
from web3 import EthereumTesterProvider, Web3

from flock_pipeline.chain import Chain, deploy, dev_signers
from flock_pipeline.chain.artifacts import load_artifact
from flock_pipeline.protocol import TaskParams

GENESIS_TIME = 4_102_444_800
TOKEN = 10**18
_GAS = 6_000_000


class CountingEntropy:
    """Stands in for `os` in eth-tester's py-evm backend, which reads only os.urandom (for
    each mined block's prevrandao): a counter's keccak instead of the system's entropy."""

    def __init__(self) -> None:
        self.count = 0

    def urandom(self, size: int) -> bytes:
        self.count += 1
        return keccak(self.count.to_bytes(32, "big"))[:size]


class Reverted(Exception):
    """A call reverted with a custom error of the contracts' ABIs."""

    def __init__(self, name: str, args: tuple[Any, ...]) -> None:
        super().__init__(name, args)
        self.name = name
        self.error_args = args


def _checksummed(value: Any) -> Any:
    """Decoded values with addresses checksummed (eth-abi gives them in lower case)."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return type(value)(_checksummed(v) for v in value)
    return value


def _abi_type(entry: dict[str, Any]) -> str:
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in entry['components'])}){kind[5:]}"
    return kind


@dataclass(frozen=True)
class _Event:
    name: str
    names: list[str]
    indexed: list[bool]
    types: list[str]


class EvmTask:
    """Task 1 of a freshly deployed FlockAlliance; `reset` returns to the state after creation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, params: TaskParams, people: int) -> None:
        self.entropy = CountingEntropy()
        monkeypatch.setattr(pyevm_main, "os", self.entropy)
        genesis = PyEVMBackend.generate_genesis_params(overrides={"timestamp": GENESIS_TIME})
        self.tester = EthereumTester(PyEVMBackend(genesis_parameters=genesis))
        chain = Chain(
            w3=Web3(EthereumTesterProvider(self.tester)), kind="py-evm", tester=self.tester
        )
        creator, *others = dev_signers(chain, 1 + people, label="protocol-differential")
        deployment = deploy(chain, creator)
        self.creator = creator.address
        self.people = [s.address for s in others]
        for signer in (creator, *others):
            self.tester.add_account(encode_hex(signer.account.key))
        alliance_abi = load_artifact("FlockAlliance").abi
        token_abi = load_artifact("FlockToken").abi
        seed_abi = load_artifact("FutureBlockSeed").abi
        self.alliance = chain.w3.eth.contract(address=deployment.alliance, abi=alliance_abi)
        self.token = chain.w3.eth.contract(address=deployment.token, abi=token_abi)
        self.seeds = chain.w3.eth.contract(address=deployment.seed_source, abi=seed_abi)
        self.address = deployment.alliance
        self.vault = deployment.vault
        self._outputs = {
            e["name"]: [_abi_type(o) for o in e["outputs"]]
            for abi in (alliance_abi, token_abi, seed_abi)
            for e in abi
            if e["type"] == "function"
        }
        self._errors = {
            function_signature_to_4byte_selector(
                f"{e['name']}({','.join(_abi_type(i) for i in e['inputs'])})"
            ): (e["name"], [_abi_type(i) for i in e["inputs"]])
            for abi in (alliance_abi, token_abi)
            for e in abi
            if e["type"] == "error"
        }
        self._events = {
            event_signature_to_log_topic(
                f"{e['name']}({','.join(_abi_type(i) for i in e['inputs'])})"
            ): _Event(
                e["name"],
                [i["name"] for i in e["inputs"]],
                [bool(i["indexed"]) for i in e["inputs"]],
                [_abi_type(i) for i in e["inputs"]],
            )
            for e in alliance_abi
            if e["type"] == "event"
        }
        for account in [*self.people, self.creator]:
            if account != self.creator:
                self._send(self.creator, self.token, "mint", account, 100_000 * TOKEN)
            self._send(account, self.token, "approve", self.address, 2**255)
        self._send(self.creator, self.token, "mint", self.creator, params.reward_pool)
        self.start_balances = {a: self.balance_of(a) for a in [self.creator, *self.people]}
        self._send(self.creator, self.alliance, "createTask", params.as_abi())
        self._snapshot = self.tester.take_snapshot()
        self._entropy_at_snapshot = self.entropy.count

    def reset(self) -> None:
        """Back to the freshly created task (same blocks, same timestamps, same seeds)."""
        self.tester.revert_to_snapshot(self._snapshot)
        self.entropy.count = self._entropy_at_snapshot

    # -------------------------------------------------------------- calls

    def send(self, sender: str, function: str, *args: Any) -> list[tuple[str, dict[str, Any]]]:
        """Mine one alliance transaction; its decoded events, or Reverted."""
        return self._send(sender, self.alliance, function, *args)

    def _send(
        self, sender: str, contract: Any, function: str, *args: Any
    ) -> list[tuple[str, dict[str, Any]]]:
        tx = {
            "from": sender,
            "to": contract.address,
            "data": contract.encode_abi(function, list(args)),
            "gas": _GAS,
        }
        try:
            self.tester.call(tx, "pending")
        except TransactionFailed as exc:
            raise self._decode_revert(exc) from None
        receipt = self.tester.get_transaction_receipt(self.tester.send_transaction(tx))
        assert receipt["status"] == 1, f"{function} passed the pending call but failed mined"
        return [self._decode_log(log) for log in receipt["logs"] if log["address"] == self.address]

    def view(self, function: str, *args: Any, contract: Any = None, block: str = "latest") -> Any:
        """A view's decoded result (a tuple for a struct, a list for an array; a tuple of all
        outputs for a function with several)."""
        target = self.alliance if contract is None else contract
        tx = {
            "from": self.creator,
            "to": target.address,
            "data": target.encode_abi(function, list(args)),
        }
        values = decode(self._outputs[function], to_bytes(hexstr=self.tester.call(tx, block)))
        return _checksummed(values[0] if len(values) == 1 else tuple(values))

    def seed_of(self, round_: int) -> tuple[int, bytes]:
        """The seed source's (state, seed) for the task's round as the next transaction sees
        it (in the pending block)."""
        state, seed = self.view(
            "seedOf", self.address, 1, round_, contract=self.seeds, block="pending"
        )
        return int(state), bytes(seed)

    def mine(self, blocks: int) -> None:
        """Mine empty blocks (a second apart): what a future-block seed waits for."""
        self.tester.mine_blocks(blocks)

    def balance_of(self, account: str) -> int:
        return int(self.view("balanceOf", account, contract=self.token))

    def timestamp(self) -> int:
        """The latest block's timestamp; the next transaction runs one second later."""
        return int(self.tester.get_block_by_number("latest")["timestamp"])

    def next_at(self, when: int) -> None:
        """Make the next transaction run at `when` (if that is still ahead)."""
        if when > self.timestamp() + 1:
            self.tester.time_travel(when)  # the pending block's timestamp

    # -------------------------------------------------------------- decoding

    def _decode_revert(self, exc: TransactionFailed) -> Exception:
        message = exc.args[0] if exc.args else b""
        data = ast.literal_eval(message) if isinstance(message, str) else message
        if not isinstance(data, bytes) or data[:4] not in self._errors:
            return AssertionError(f"revert without a custom error: {exc!r}")
        name, types = self._errors[data[:4]]
        return Reverted(name, _checksummed(tuple(decode(types, data[4:]))))

    def _decode_log(self, log: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        topics = [to_bytes(hexstr=t) if isinstance(t, str) else bytes(t) for t in log["topics"]]
        event = self._events[topics[0]]
        data = log["data"]
        plain = decode(
            [t for t, i in zip(event.types, event.indexed, strict=True) if not i],
            to_bytes(hexstr=data) if isinstance(data, str) else bytes(data),
        )
        indexed = iter(topics[1:])
        values = iter(plain)
        out = {}
        for name, is_indexed, kind in zip(event.names, event.indexed, event.types, strict=True):
            out[name] = decode([kind], next(indexed))[0] if is_indexed else next(values)
        return event.name, {key: _checksummed(value) for key, value in out.items()}
