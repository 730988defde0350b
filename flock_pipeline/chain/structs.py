"""Typed mirrors of the FlockAlliance structs and enums, as the Python client returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "Action",
    "Majority",
    "ParticipantStake",
    "Phase",
    "Record",
    "Role",
    "RoundInfo",
    "TaskConfig",
    "TaskState",
    "TxResult",
    "UpdateInfo",
]

TOKEN = 10**18


class Phase(IntEnum):
    """Where a round stands (FlockAlliance.Phase)."""

    NOT_STARTED = 0
    TRAINING = 1
    COMMITTING = 2
    REVEALING = 3
    FINALIZABLE = 4
    FINALIZED = 5


class Role(IntEnum):
    """A participant's role in a round (Sortition.Role)."""

    NONE = 0
    PROPOSER = 1
    VOTER = 2


class Action(IntEnum):
    """What a participant did in a round (FlockAlliance.Action)."""

    NONE = 0
    SUBMITTED = 1
    COMMITTED = 2
    REVEALED = 3
    NO_SHOW = 4


class Majority(IntEnum):
    """Which side of a round's vote won."""

    NONE = 0
    ACCEPT = 1
    REJECT = 2


@dataclass(frozen=True)
class TaskConfig:
    """Parameters of a new FL Alliance task; amounts in the token's smallest unit."""

    model_hash: bytes
    rounds: int = 3
    reward_pool: int = 1_000 * TOKEN
    min_stake: int = 10 * TOKEN
    min_participants: int = 2
    max_participants: int = 64
    proposers_per_round: int = 2
    voters_per_round: int = 2
    slash_bps: int = 1_000
    penalty_bps: int = 10_000
    voter_slash_bps: int = 7_000
    finalizer_share_bps: int = 1_000
    proposer_reward_bps: int = 5_000
    training_duration: int = 3_600
    commit_duration: int = 600
    reveal_duration: int = 600
    unbonding_delay: int = 86_400
    metadata_uri: str = ""

    def as_abi(self) -> tuple[Any, ...]:
        """The TaskParams tuple in ABI field order."""
        return (
            self.metadata_uri,
            self.model_hash,
            self.rounds,
            self.min_participants,
            self.max_participants,
            self.proposers_per_round,
            self.voters_per_round,
            self.slash_bps,
            self.penalty_bps,
            self.voter_slash_bps,
            self.finalizer_share_bps,
            self.proposer_reward_bps,
            self.training_duration,
            self.commit_duration,
            self.reveal_duration,
            self.unbonding_delay,
            self.min_stake,
            self.reward_pool,
        )

    @classmethod
    def from_abi(cls, values: tuple[Any, ...]) -> TaskConfig:
        """Build from the TaskParams tuple the contract returns."""
        (uri, model, rounds, min_p, max_p, props, voters, slash, penalty, voter_slash, fin,
         prop_bps, train, commit, reveal, unbond, min_stake, pool) = values  # fmt: skip
        return cls(
            model_hash=bytes(model), rounds=rounds, reward_pool=pool, min_stake=min_stake,
            min_participants=min_p, max_participants=max_p, proposers_per_round=props,
            voters_per_round=voters, slash_bps=slash, penalty_bps=penalty,
            voter_slash_bps=voter_slash, finalizer_share_bps=fin,
            proposer_reward_bps=prop_bps, training_duration=train, commit_duration=commit,
            reveal_duration=reveal, unbonding_delay=unbond, metadata_uri=uri,
        )  # fmt: skip


@dataclass(frozen=True)
class TaskState:
    """A task's progress and its token buckets (pool, staked, allotted, claimable)."""

    creator: str
    rounds_started: int
    participants: int
    global_model_hash: bytes
    pool: int
    staked: int
    allotted: int
    claimable: int


@dataclass(frozen=True)
class RoundInfo:
    """A round's seed, deadlines, stake-weighted accumulators and settlement record.

    contribution_total is sum over updates of proposerWeight * max(0, C) (C: an update's
    contribution accumulator); contribution_left is what of it is not settled yet (set by
    finalize only when the proposers' pot is allotted). flag_voter_weight is the stake of the
    voters (accepting or rejecting) that revealed one contribution per update: an update is
    flagged if more than half of it scored the update exactly -1 (2 * flag_weight >
    flag_voter_weight).
    """

    seed: bytes
    aggregate_hash: bytes
    training_ends: int
    commit_ends: int
    reveal_ends: int
    updates: int
    total_stake: int
    proposer_weight: int
    commit_weight: int
    accept_weight: int
    reject_weight: int
    flag_voter_weight: int
    weighted_score: int
    contribution_total: int
    contribution_left: int
    reward: int
    proposer_reward_left: int
    voter_reward_left: int
    voter_weight_left: int
    finalizer: str
    finalized: bool
    accepted: bool
    majority: Majority = field(default=Majority.NONE)


@dataclass(frozen=True)
class Record:
    """What one participant did in one round; update_index: its update's submission index."""

    action: Action
    accept: bool
    settled: bool
    weight: int
    commitment: bytes
    update_index: int = 0


@dataclass(frozen=True)
class UpdateInfo:
    """Update `index` of a round: its proposer and weight, the contribution accumulated
    from accepting voters (sum of voterWeight * contribution, contributions in 1e18 fixed
    point) and flag_weight, the stake of the voters (either side) that scored it exactly -1;
    proposer is the zero address if there is no such update."""

    index: int
    proposer: str
    weight: int
    contribution: int
    flag_weight: int = 0

    def flagged(self, flag_voter_weight: int) -> bool:
        """Whether the flag vote flags it, given the round's RoundInfo.flag_voter_weight."""
        return 2 * self.flag_weight > flag_voter_weight


@dataclass(frozen=True)
class ParticipantStake:
    """A participant's stake in a task; pending_round is 1-based (0: nothing to settle)."""

    active: int
    unbonding: int
    release_at: int
    pending_round: int


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    gas_used: int
    block_number: int
    logs: tuple[dict[str, Any], ...] = ()
