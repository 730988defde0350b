"""A task's protocol parameters from its configuration, the same for both engines.

The flow creates the task on chain with these parameters; the simulation runs the protocol model
with them. Dev accounts are the same in both: the simulation's participants have the addresses
the flow's dev signers get, so the same seed gives the same roles.
"""

from __future__ import annotations

from eth_abi.abi import encode
from eth_account import Account
from eth_utils.crypto import keccak

from flock_pipeline.config import FlockConfig
from flock_pipeline.protocol.settlement import TaskParams

__all__ = [
    "TOKEN",
    "dataset_hash",
    "dev_address",
    "dev_key",
    "simulation_seed",
    "task_params",
]

TOKEN = 10**18


def task_params(cfg: FlockConfig, model_hash: bytes, metadata_uri: str = "") -> TaskParams:
    """The FlockAlliance TaskParams of ``cfg``'s task."""
    n = cfg.participants
    proposers, voters = cfg.committee
    c = cfg.chain
    phases = c.training_seconds + c.commit_seconds + c.reveal_seconds
    return TaskParams(
        model_hash=model_hash,
        rounds=cfg.rounds,
        reward_pool=c.reward_pool * TOKEN,
        min_stake=c.min_stake * TOKEN,
        min_participants=min(n, 2),
        max_participants=max(n, 2),
        proposers_per_round=proposers,
        voters_per_round=voters,
        slash_bps=c.slash_bps,
        penalty_bps=c.penalty_bps,
        voter_slash_bps=c.voter_slash_bps,
        finalizer_share_bps=c.finalizer_share_bps,
        training_duration=c.training_seconds,
        commit_duration=c.commit_seconds,
        reveal_duration=c.reveal_seconds,
        unbonding_delay=2 * phases,
        metadata_uri=metadata_uri,
    )


def dataset_hash(dvc_hash: str) -> bytes:
    """What a participant registers on chain for its dataset when it stakes: keccak256 of the
    UTF-8 DVC hash string (DVC 3's directory md5, ``<md5>.dir``) that the task's metadata
    records, so anyone holding the data can check the registration."""
    return keccak(dvc_hash.encode())


def dev_key(label: str, index: int) -> bytes:
    """The throwaway key of dev account ``label/index`` (public: for dev chains only)."""
    return keccak(f"{label}/{index}".encode())


def dev_address(label: str, index: int) -> str:
    """The address of :func:`dev_key`."""
    return str(Account.from_key(dev_key(label, index)).address)


def simulation_seed(task_seed: int, round_index: int) -> bytes:
    """A round's sortition seed in the simulation, where no chain draws one: public, like the
    chain's."""
    return keccak(encode(["string", "int256", "uint256"], ["flock-round", task_seed, round_index]))
