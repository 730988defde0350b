"""Stake-weighted sortition, the same rule as contracts/src/Sortition.sol.

Anyone can compute an account's role from (seed, address, stake, total stake) without asking the
contract or knowing the other participants.
"""

from __future__ import annotations

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from flock_pipeline.chain.structs import Role

__all__ = ["draw", "role_of"]


def draw(seed: bytes, address: str) -> int:
    """The account's uniform draw in [0, 2**64): top 64 bits of keccak256(seed, address)."""
    digest = keccak(encode(["bytes32", "address"], [seed, to_checksum_address(address)]))
    return int.from_bytes(digest, "big") >> 192


def role_of(
    seed: bytes, address: str, stake: int, total_stake: int, proposers: int, voters: int
) -> Role:
    """Proposer with odds proposers*stake/total, else voter with odds voters*stake/total."""
    if stake == 0 or total_stake == 0:
        return Role.NONE
    scaled = draw(seed, address) * total_stake
    if scaled < (proposers * stake) << 64:
        return Role.PROPOSER
    if scaled < ((proposers + voters) * stake) << 64:
        return Role.VOTER
    return Role.NONE
