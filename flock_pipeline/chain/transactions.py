"""Sending transactions: local signing per participant, nonces, receipts, decoded reverts."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from eth_abi.abi import decode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.conversions import to_bytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from flock_pipeline.chain.errors import (
    ChainError,
    ContractRevert,
    TransactionFailed,
    revert_class,
)
from flock_pipeline.chain.structs import TxResult

__all__ = ["RevertDecoder", "Signer", "Transactor"]

_GAS_MARGIN = 1.2


class Buildable(Protocol):
    """A contract function call or constructor, ready to estimate and build."""

    def estimate_gas(self, transaction: Any = ...) -> int: ...

    def build_transaction(self, transaction: Any = ...) -> Any: ...


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


def _revert_errors() -> tuple[type[Exception], ...]:
    try:
        from eth_tester.exceptions import TransactionFailed as TesterFailed
    except ImportError:  # eth-tester is only needed for the in-process chain
        return (ContractLogicError, Web3RPCError)
    return (ContractLogicError, Web3RPCError, TesterFailed)


class Transactor:
    """Estimates, signs, sends and waits for transactions; raises named errors on reverts."""

    def __init__(self, w3: Web3, decoder: RevertDecoder, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self._reverts = _revert_errors()
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        """The connection's chain id, asked once: it never changes under a connection."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def send(self, call: Buildable, signer: Signer) -> TxResult:
        """Send `call` from `signer`; return the receipt of the successful transaction."""
        with signer._lock:
            try:
                gas = call.estimate_gas({"from": signer.address})
            except self._reverts as exc:
                raise self.decoder.translate(exc) from None
            if signer._next_nonce is None:
                signer._next_nonce = self.w3.eth.get_transaction_count(
                    signer.account.address, "pending"
                )
            tx = call.build_transaction(
                {
                    "from": signer.address,
                    "nonce": signer._next_nonce,
                    "gas": int(gas * _GAS_MARGIN) + 21_000,
                    "chainId": self.chain_id,
                }
            )
            signed = signer.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except self._reverts as exc:
                signer._next_nonce = None
                raise self.decoder.translate(exc) from None
            except Exception:
                signer._next_nonce = None
                raise
            signer._next_nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
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

    def receipt(self, tx_hash: str) -> Any:
        """The raw receipt of a mined transaction (for event decoding)."""
        return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
