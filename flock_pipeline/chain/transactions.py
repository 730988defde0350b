"""Sending transactions: local signing per participant, nonces, receipts, decoded reverts."""

from __future__ import annotations

import ast
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi.abi import decode, encode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.conversions import to_bytes
from web3 import Web3
from web3._utils.transactions import fill_transaction_defaults
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionIndexingInProgress,
    TransactionNotFound,
    Web3RPCError,
)

from flock_pipeline.chain.errors import (
    ChainError,
    ContractRevert,
    TransactionFailed,
    revert_class,
)
from flock_pipeline.chain.structs import TxResult

__all__ = [
    "ContractCalls",
    "EncodedCall",
    "RevertDecoder",
    "Signer",
    "Transactor",
    "in_transit_policy",
]

_GAS_MARGIN = 1.2
_FEE_TTL = 2.0
"""Seconds a fee quote (the tip and the latest base fee) is reused for the next transactions:
web3 asks for both on every transaction, two of its five requests. The fee cap is twice the
base fee plus the tip (web3's own rule), so a quote stays good while the base fee less than
doubles: at most 12.5% a block under EIP-1559, several full blocks in a row."""
_TAKEN = ("already known", "known transaction", "already imported", "nonce too low")
"""How nodes answer a resend of a transaction they took (anvil mines at once: its nonce is
then used)."""


def in_transit_policy(w3: Web3) -> tuple[int, tuple[type[BaseException], ...], float]:
    """The connection's own policy for a request lost in transit, as ``backends.connect`` set
    it on the provider: how many attempts, on which errors, with which backoff factor (the
    n-th retry waits factor x 2^n). One attempt for a provider without one (py-evm)."""
    retry = getattr(w3.provider, "exception_retry_configuration", None)
    if retry is None:
        return 1, (), 0.0
    return max(1, int(retry.retries)), tuple(retry.errors), float(retry.backoff_factor)


class Buildable(Protocol):
    """A contract function call or constructor, ready to estimate and build."""

    def estimate_gas(self, transaction: Any = ...) -> int: ...

    def build_transaction(self, transaction: Any = ...) -> Any: ...


def _normalizer(entry: dict[str, Any]) -> Callable[[Any], Any] | None:
    """What turns eth_abi's decoding of one ABI output into web3's: addresses checksummed,
    arrays as lists (None: the value is already right)."""
    kind = str(entry["type"])
    if kind.endswith("]"):
        inner = _normalizer({**entry, "type": kind[: kind.rindex("[")]})
        if inner is None:
            return list
        return lambda values: [inner(v) for v in values]
    if kind == "address":
        return to_checksum_address
    if kind == "tuple":
        parts = [_normalizer(c) for c in entry["components"]]
        if all(p is None for p in parts):
            return None
        return lambda values: tuple(
            v if p is None else p(v) for p, v in zip(parts, values, strict=True)
        )
    return None


@dataclass(frozen=True)
class _Function:
    """One ABI function: its selector, input and output types, and output normalizer."""

    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    normalize: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def of(cls, entry: dict[str, Any]) -> _Function:
        inputs = tuple(_abi_type(i) for i in entry["inputs"])
        return cls(
            selector=function_signature_to_4byte_selector(f"{entry['name']}({','.join(inputs)})"),
            inputs=inputs,
            outputs=tuple(_abi_type(o) for o in entry["outputs"]),
            normalize=tuple(_normalizer(o) for o in entry["outputs"]),
        )

    def decode(self, data: bytes) -> Any:
        """The call's result as web3 gives it: a single output unwrapped, else a tuple."""
        values = decode(self.outputs, data)
        fixed = tuple(v if n is None else n(v) for n, v in zip(self.normalize, values, strict=True))
        return fixed[0] if len(fixed) == 1 else fixed


class EncodedCall:
    """A contract call as calldata, encoded once from the ABI: web3's contract functions
    resolve the ABI and re-encode the arguments on every estimate, build and call (a few
    milliseconds of Python each, on every transaction and read of a round). It estimates,
    builds (web3's own defaults: fees, value) and calls as they do."""

    def __init__(self, w3: Web3, to: str, function: _Function, args: tuple[Any, ...]) -> None:
        self.w3 = w3
        self.to = to
        self.function = function
        self.data = function.selector + encode(function.inputs, args)

    def _with(self, transaction: Any) -> Any:
        return {**(transaction or {}), "to": self.to, "data": self.data}

    def estimate_gas(self, transaction: Any = None) -> int:
        return int(self.w3.eth.estimate_gas(self._with(transaction)))

    def build_transaction(self, transaction: Any = None) -> Any:
        return fill_transaction_defaults(self.w3, self._with({"value": 0, **(transaction or {})}))

    def request(self) -> Any:
        """The ``eth_call`` (also usable inside ``w3.batch_requests``)."""
        return self.w3.eth.call(self._with(None))

    def call(self) -> Any:
        return self.function.decode(bytes(self.request()))


class ContractCalls:
    """``calls.name(*args)``: an EncodedCall of function ``name`` of the contract at
    ``address`` (its ABI read once here)."""

    def __init__(self, w3: Web3, address: str, abi: Iterable[Any]) -> None:
        self._w3 = w3
        self._address = to_checksum_address(address)
        entries = [e for e in abi if e["type"] == "function"]
        self._functions = {e["name"]: _Function.of(e) for e in entries}
        if len(self._functions) != len(entries):  # by name alone an overload would be lost
            names = sorted(
                {e["name"] for e in entries if [x["name"] for x in entries].count(e["name"]) > 1}
            )
            raise ValueError(f"contract at {self._address} overloads {', '.join(names)}: "
                             "ContractCalls looks functions up by name only")  # fmt: skip

    def __getattr__(self, name: str) -> Callable[..., EncodedCall]:
        try:
            function = self._functions[name]
        except KeyError:
            raise AttributeError(name) from None
        return lambda *args: EncodedCall(self._w3, self._address, function, args)


class Signer:
    """One participant's key, held locally, and the next nonce it will use."""

    def __init__(self, account: LocalAccount) -> None:
        self.account = account
        self._next_nonce: int | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """The checksummed address."""
        return str(self.account.address)

    def __repr__(self) -> str:
        return f"Signer({self.address})"


def _abi_type(entry: dict[str, Any]) -> str:
    if entry["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in entry["components"])
        return f"({inner}){entry['type'][5:]}"
    return str(entry["type"])


class RevertDecoder:
    """Maps custom-error selectors of the given ABIs to named ContractRevert exceptions."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in item["inputs"]]
                selector = function_signature_to_4byte_selector(
                    f"{item['name']}({','.join(types)})"
                )
                names = [i["name"] or f"arg{n}" for n, i in enumerate(item["inputs"])]
                self._errors[selector] = (item["name"], names, types)

    def decode(self, data: bytes) -> ContractRevert | None:
        """The named exception for revert data, or None if the selector is unknown."""
        known = self._errors.get(data[:4])
        if known is None:
            return None
        name, names, types = known
        values = decode(types, data[4:])
        return revert_class(name)(name, dict(zip(names, values, strict=True)))

    def translate(self, exc: Exception) -> ChainError:
        """Turn whatever web3 or eth-tester raised on a revert into a ChainError."""
        data = _revert_data(exc)
        if data:
            named = self.decode(data)
            if named is not None:
                return named
        return TransactionFailed(f"transaction reverted: {exc}")


def _revert_data(exc: Exception) -> bytes | None:
    """Revert bytes from web3 (hex in .data) or eth-tester (bytes repr in the message)."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return to_bytes(hexstr=data)
    message = str(exc.args[0]) if exc.args else ""
    prefix = "execution reverted: "
    if message.startswith(prefix) and message[len(prefix) :].startswith(("b'", 'b"')):
        parsed = ast.literal_eval(message[len(prefix) :])
        return parsed if isinstance(parsed, bytes) else None
    return None


class _FeeTooLow(Exception):
    """A reused fee quote fell below the block's base fee."""


def _fee_too_low(exc: Exception) -> bool:
    """Whether a refused transaction's fee cap was below the base fee (the wording of geth,
    anvil and py-evm alike names the base fee)."""
    text = str(exc).lower()
    return "base fee" in text or "basefee" in text


def _revert_errors() -> tuple[type[Exception], ...]:
    """What a revert raises: eth-tester's own error too where the in-process chain runs. A
    process that never loaded eth-tester (an anvil or a public chain) cannot see it raised,
    and importing it loads py-evm (about a second of CPU)."""
    if "eth_tester" not in sys.modules:
        return (ContractLogicError, Web3RPCError)
    from eth_tester.exceptions import TransactionFailed as TesterFailed

    return (ContractLogicError, Web3RPCError, TesterFailed)


class Transactor:
    """Estimates, signs, sends and waits for transactions; raises named errors on reverts."""

    def __init__(self, w3: Web3, decoder: RevertDecoder, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self._reverts = _revert_errors()
        self._chain_id: int | None = None
        self._fees: tuple[float, int, int] | None = None  # (when, tip, cap)
        self._fee_lock = threading.Lock()

    @property
    def chain_id(self) -> int:
        """The connection's chain id, asked once: it never changes under a connection."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def _fee_quote(self, fresh: bool = False) -> tuple[int, int]:
        """(tip, fee cap) per gas for the next transaction, asked again after _FEE_TTL."""
        with self._fee_lock:
            now = time.monotonic()
            if fresh or self._fees is None or now - self._fees[0] > _FEE_TTL:
                tip = int(self.w3.eth.max_priority_fee)
                base = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
                self._fees = (now, tip, tip + 2 * base)
            return self._fees[1], self._fees[2]

    def send(self, call: Buildable, signer: Signer) -> TxResult:
        """Send `call` from `signer`; return the receipt of the successful transaction."""
        try:
            return self._send(call, signer, fresh_fees=False)
        except _FeeTooLow:  # the base fee rose past a reused quote: quote again, once
            return self._send(call, signer, fresh_fees=True)

    def _send(self, call: Buildable, signer: Signer, fresh_fees: bool) -> TxResult:
        with signer._lock:
            try:
                gas = call.estimate_gas({"from": signer.address})
            except self._reverts as exc:
                raise self.decoder.translate(exc) from None
            if signer._next_nonce is None:
                signer._next_nonce = self.w3.eth.get_transaction_count(
                    signer.account.address, "pending"
                )
            tip, cap = self._fee_quote(fresh_fees)
            tx = call.build_transaction(
                {
                    "from": signer.address,
                    "nonce": signer._next_nonce,
                    "gas": int(gas * _GAS_MARGIN) + 21_000,
                    "chainId": self.chain_id,
                    "maxPriorityFeePerGas": tip,
                    "maxFeePerGas": cap,
                }
            )
            signed = signer.account.sign_transaction(tx)
            try:
                tx_hash = self._broadcast(signed.raw_transaction, signed.hash)
            except self._reverts as exc:
                signer._next_nonce = None
                if not fresh_fees and _fee_too_low(exc):
                    raise _FeeTooLow() from None
                raise self.decoder.translate(exc) from None
            except Exception as exc:  # py-evm refuses a low fee cap with a ValidationError
                signer._next_nonce = None
                if not fresh_fees and _fee_too_low(exc):
                    raise _FeeTooLow() from None
                raise
            signer._next_nonce += 1
        receipt = self._receipt_of(tx_hash)
        if receipt["status"] != 1:
            raise TransactionFailed(
                f"transaction {tx_hash.to_0x_hex()} failed in block {receipt['blockNumber']} "
                f"(gas used {receipt['gasUsed']})"
            )
        return TxResult(
            tx_hash=tx_hash.to_0x_hex(),
            gas_used=int(receipt["gasUsed"]),
            block_number=int(receipt["blockNumber"]),
            logs=tuple(dict(log) for log in receipt["logs"]),
        )

    def _receipt_of(self, tx_hash: Any) -> Any:
        """Wait for a sent transaction's receipt: asked at once, then after 5 ms, doubling to
        at most 0.5 s between asks. A dev chain mines within milliseconds of the send (web3's
        own wait sleeps 0.1 s whenever the first ask comes too early: a tenth of a second on
        a third of the transactions); a public chain in its block time."""
        until = time.monotonic() + self.receipt_timeout
        pause = 0.005
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except (TransactionNotFound, TransactionIndexingInProgress):
                pass
            if time.monotonic() >= until:
                raise TimeExhausted(
                    f"transaction {tx_hash.to_0x_hex()} is not in the chain after "
                    f"{self.receipt_timeout:g} s"
                )
            time.sleep(pause)
            pause = min(2 * pause, 0.5)

    def _broadcast(self, raw: bytes, tx_hash: Any) -> Any:
        """Send a signed transaction; when the request or its answer is lost in transit, send
        the same bytes again. A resend cannot execute twice: it is the same transaction (one
        nonce, one hash), so a node that took the first answers that it knows it or that its
        nonce is used, and the receipt is then looked up by the hash. As often, on the same
        errors and with the same backoff as the connection retries a read
        (``in_transit_policy``); web3 never retries a transaction itself."""
        attempts, in_transit, backoff = in_transit_policy(self.w3)
        for attempt in range(attempts):
            try:
                return self.w3.eth.send_raw_transaction(raw)
            except in_transit:
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff * 2**attempt)
            except Exception as exc:
                if attempt > 0 and any(t in str(exc).lower() for t in _TAKEN):
                    return tx_hash  # an earlier send reached the node
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def receipt(self, tx_hash: str) -> Any:
        """The raw receipt of a mined transaction (for event decoding)."""
        return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
