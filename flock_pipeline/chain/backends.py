"""Connections to a chain: in-process py-evm, a managed anvil, or any JSON-RPC endpoint."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3
from web3.providers import HTTPProvider
from web3.providers.rpc.utils import REQUEST_RETRY_ALLOWLIST, ExceptionRetryConfiguration
from web3.types import RPCEndpoint, Wei

from flock_pipeline.chain.errors import ChainSetupError
from flock_pipeline.chain.transactions import Signer

__all__ = [
    "DEFAULT_KEY_ENV",
    "Chain",
    "ChainKind",
    "connect",
    "dev_signers",
    "in_process",
    "signer_from_env",
]

ChainKind = Literal["py-evm", "anvil", "rpc"]
DEFAULT_KEY_ENV = "FLOCK_CHAIN_PRIVATE_KEY"
_DEV_FUNDING = 10 * 10**18  # gas money; anvil's funder (10,000 ETH) serves ~1,000 accounts


@dataclass
class Chain:
    """A web3 connection plus what its backend can do with time (dev chains travel, others wait)."""

    w3: Web3
    kind: ChainKind
    tester: Any = None
    session: requests.Session | None = None
    """The HTTP session of a JSON-RPC connection (None in process)."""

    @functools.cached_property
    def chain_id(self) -> int:
        """The chain id (asked once: it never changes under a connection)."""
        return int(self.w3.eth.chain_id)

    def timestamp(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_to(self, timestamp: int, poll: float = 2.0, limit: float = 3_600.0) -> None:
        """Make the next block's timestamp at least `timestamp`.

        Dev chains jump (py-evm time travel, anvil evm_setNextBlockTimestamp); a public chain
        can only be waited for, at most `limit` seconds.
        """
        if self.timestamp() >= timestamp:
            return
        if self.kind == "py-evm":
            self.tester.time_travel(timestamp)
        elif self.kind == "anvil":
            self.w3.provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [timestamp])
            self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        else:
            deadline = time.monotonic() + limit
            while self.timestamp() < timestamp:
                if time.monotonic() > deadline:
                    raise ChainSetupError(f"chain did not reach timestamp {timestamp} in time")
                time.sleep(poll)

    def advance(self, seconds: int) -> None:
        """advance_to(latest timestamp + seconds)."""
        self.advance_to(self.timestamp() + seconds)

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks on a dev chain (they mine only on demand); a public chain
        mines on its own and is left alone."""
        if blocks <= 0:
            return
        if self.kind == "py-evm":
            self.tester.mine_blocks(blocks)
        elif self.kind == "anvil":
            self.w3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(blocks)])

    def balance(self, address: str) -> int:
        """Native balance in wei."""
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))


def in_process() -> Chain:
    """A fresh in-process chain (eth-tester on py-evm): for unit tests, gone when dropped."""
    try:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider
    except ImportError as exc:  # pragma: no cover - eth-tester is a pinned dependency
        raise ChainSetupError("eth-tester and py-evm are needed for the in-process chain") from exc
    tester = EthereumTester(PyEVMBackend())
    return Chain(w3=Web3(EthereumTesterProvider(tester)), kind="py-evm", tester=tester)


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


_TRANSIENT = ExceptionRetryConfiguration(
    errors=(ConnectionError, requests.ConnectionError, requests.HTTPError, requests.Timeout),
    retries=5,
    backoff_factor=0.125,
    method_allowlist=[m for m in REQUEST_RETRY_ALLOWLIST if m != "eth_sendRawTransaction"],
)
"""Reads retried in transit, as web3 does by default, and also when the connection drops
(requests' ConnectionError is not the built-in one web3 lists). A transaction is not resent
here but by ``Transactor``, which knows its hash: a resend of one the node took answers
"already known" or "nonce too low", and is then looked up by that hash."""


def connect(url: str, kind: ChainKind = "rpc", timeout: float = 30.0) -> Chain:
    """Connect to a JSON-RPC endpoint (anvil, Base Sepolia, Base ...).

    The chain id is asked once per connection and thread (web3 validates it before every call
    and estimate), and a node on loopback is reached without the environment's proxy and netrc
    settings, which requests would otherwise look up on every request."""
    session = requests.Session()
    if urlparse(url).hostname in _LOOPBACK:
        session.trust_env = False
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": timeout},
        session=session,
        exception_retry_configuration=_TRANSIENT,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
        request_cache_validation_threshold=None,
    )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise ChainSetupError(
            f"no JSON-RPC node answers at {url}; start one (`flock chain up`) or fix the URL"
        )
    return Chain(w3=w3, kind=kind, session=session)


def signer_from_env(var: str = DEFAULT_KEY_ENV) -> Signer:
    """The signer whose private key is in environment variable `var` (never a file in a repo)."""
    key = os.environ.get(var, "").strip()
    if not key:
        raise ChainSetupError(
            f"environment variable {var} is not set: export it as the hex private key of the "
            "account to send from (or pass --key-env with the variable that holds it)"
        )
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError):
        # The key itself stays out of the message and the chained exception.
        raise ChainSetupError(
            f"environment variable {var} does not hold a private key: it must be 32 bytes as 64 "
            "hex characters (0x optional); export the account's key again"
        ) from None
    return Signer(account)


def dev_signers(
    chain: Chain, count: int, label: str = "flock-dev", fund: int = _DEV_FUNDING
) -> list[Signer]:
    """Deterministic throwaway accounts, funded with gas money from the dev chain's rich account.

    Only for dev chains (py-evm, anvil): their first account is unlocked and holds ether.
    """
    if chain.kind == "rpc":
        raise ChainSetupError("dev accounts exist only on dev chains; use signer_from_env")
    rich = chain.w3.eth.accounts[0]
    signers = []
    for index in range(count):
        account: LocalAccount = Account.from_key(keccak(f"{label}/{index}".encode()))
        signers.append(Signer(account))
        if chain.balance(account.address) < fund // 2:
            tx = chain.w3.eth.send_transaction(
                {"from": rich, "to": account.address, "value": Wei(fund)}
            )
            chain.w3.eth.wait_for_transaction_receipt(tx)
    return signers
