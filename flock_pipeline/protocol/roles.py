"""Stake-weighted sortition of a round's roles, the same rule as contracts/src/Sortition.sol.

Two independent draws per account and round, one per role, so an account can be proposer,
voter, both or neither. Anyone can compute a role from (seed, address, stake, total stake)
without asking the contract or knowing the other participants.
"""

from __future__ import annotations

from enum import IntEnum

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

__all__ = [
    "PROPOSER_DOMAIN",
    "VOTER_DOMAIN",
    "Role",
    "draw",
    "is_proposer",
    "is_voter",
    "role_of",
]

PROPOSER_DOMAIN = 0
VOTER_DOMAIN = 1


class Role(IntEnum):
    """A participant's role in a round (Sortition.Role)."""

    NONE = 0
    PROPOSER = 1
    VOTER = 2
    BOTH = 3

    @property
    def proposes(self) -> bool:
        """Whether the role may submit an update (Proposer or Both)."""
        return self in (Role.PROPOSER, Role.BOTH)

    @property
    def votes(self) -> bool:
        """Whether the role may commit a vote (Voter or Both)."""
        return self in (Role.VOTER, Role.BOTH)


def draw(seed: bytes, address: str, domain: int) -> int:
    """The account's uniform draw in [0, 2**64) for one role: the top 64 bits of
    keccak256(abi.encode(seed, address, uint8 domain)); distinct domains keep the roles
    independent."""
    digest = keccak(
        encode(["bytes32", "address", "uint8"], [seed, to_checksum_address(address), domain])
    )
    return int.from_bytes(digest, "big") >> 192


def _selected(
    seed: bytes, address: str, domain: int, stake: int, total_stake: int, expected: int
) -> bool:
    """Odds expected * stake / total_stake, exact in integers as the contract computes them."""
    if stake == 0 or total_stake == 0:
        return False
    return draw(seed, address, domain) * total_stake < (expected * stake) << 64


def is_proposer(seed: bytes, address: str, stake: int, total_stake: int, proposers: int) -> bool:
    """Whether sortition makes the account a proposer (about `proposers` of them per round)."""
    return _selected(seed, address, PROPOSER_DOMAIN, stake, total_stake, proposers)


def is_voter(seed: bytes, address: str, stake: int, total_stake: int, voters: int) -> bool:
    """Whether sortition makes the account a voter (about `voters` of them per round)."""
    return _selected(seed, address, VOTER_DOMAIN, stake, total_stake, voters)


def role_of(
    seed: bytes, address: str, stake: int, total_stake: int, proposers: int, voters: int
) -> Role:
    """The account's role, both draws combined (Sortition.roleOf)."""
    proposes = is_proposer(seed, address, stake, total_stake, proposers)
    votes = is_voter(seed, address, stake, total_stake, voters)
    return Role(int(proposes) | int(votes) << 1)
