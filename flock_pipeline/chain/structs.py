"""Typed mirrors of the FlockAlliance structs and enums, as the Python client returns them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The enums are the protocol model's own, so a value read from the chain and one computed by
# the model are the same type.
from flock_pipeline.protocol.roles import Role
from flock_pipeline.protocol.settlement import Phase, SeedState, VoteState
from flock_pipeline.protocol.tally import Outcome

__all__ = [
    "Outcome",
    "ParticipantStake",
    "Phase",
    "Record",
    "Role",
    "RoundInfo",
    "SeedState",
    "Tally",
    "TaskConfig",
    "TaskState",
    "TxResult",
    "UpdateView",
    "VoteState",
]

TOKEN = 10**18


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
    deadline: int = 0
    """Timestamp from which no stake is taken and no round starts; 0: create_task picks
    protocol.default_deadline from the chain's clock."""
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
            self.deadline,
            self.min_stake,
            self.reward_pool,
        )

    @classmethod
    def from_abi(cls, values: tuple[Any, ...]) -> TaskConfig:
        """Build from the TaskParams tuple the contract returns."""
        (uri, model, rounds, min_p, max_p, props, voters, slash, penalty, voter_slash, fin,
         prop_bps, train, commit, reveal, unbond, deadline, min_stake, pool) = values  # fmt: skip
        return cls(
            model_hash=bytes(model), rounds=rounds, reward_pool=pool, min_stake=min_stake,
            min_participants=min_p, max_participants=max_p, proposers_per_round=props,
            voters_per_round=voters, slash_bps=slash, penalty_bps=penalty,
            voter_slash_bps=voter_slash, finalizer_share_bps=fin,
            proposer_reward_bps=prop_bps, training_duration=train, commit_duration=commit,
            reveal_duration=reveal, unbonding_delay=unbond, deadline=deadline, metadata_uri=uri,
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
    """A round's seed, deadlines, accumulators and settlement (FlockAlliance.Round).

    total_stake is fixed when the round starts; seed and the deadlines when it is drawn (zero
    while it waits for its seed).

    aggregate_hash is the leading revealed hash and, once finalized, the round's aggregate
    (meaningful unless the outcome is Void). revealed_weight is the stake of every revealed
    vote, whatever its hash. reward and the *_left pots are fixed at finalize; the settlers
    draw them down, the last one taking the exact remainder.
    """

    seed: bytes
    aggregate_hash: bytes
    training_ends: int
    commit_ends: int
    reveal_ends: int
    updates: int
    total_stake: int
    revealed_weight: int
    reward: int
    proposer_reward_left: int
    voter_reward_left: int
    voter_weight_left: int
    contribution_total: int
    contribution_left: int
    finalizer: str
    finalized: bool
    outcome: Outcome


@dataclass(frozen=True)
class Record:
    """What one account did in one round, both roles in one record (FlockAlliance.Record).

    weight is its stake at the round's start, capped by what there is to slash; aggregate_hash
    is the hash its revealed vote named; scored: the vote carried one contribution per update.
    """

    submitted: bool
    update_index: int
    vote: VoteState
    accept: bool
    scored: bool
    no_show: bool
    settled: bool
    weight: int
    commitment: bytes
    aggregate_hash: bytes


@dataclass(frozen=True)
class Tally:
    """The revealed votes naming one aggregate hash in one round (FlockAlliance.Tally).

    flag_voter_weight is the stake of those of them that scored every update: the electorate
    of the flag vote on that hash's updates.
    """

    weight: int
    accept_weight: int
    reject_weight: int
    flag_voter_weight: int


@dataclass(frozen=True)
class UpdateView:
    """Update `index` (submission order) of a round, read for the round's leading hash.

    contribution is the sum of voter weight * contribution over the accepting voters of that
    hash (18-decimal fixed point), flag_weight the stake that scored it exactly -1. flagged
    and part (proposer weight times the mean contribution, the share of the proposers' pot)
    are false and 0 before finalize and in a Void round.
    """

    index: int
    proposer: str
    weight: int
    contribution: int
    flag_weight: int
    flagged: bool
    part: int


@dataclass(frozen=True)
class ParticipantStake:
    """A participant's stake in a task and its registered dataset; pending_round is 1-based
    (0: nothing to settle), num_samples bounds its updates' sample counts, data_hash is
    keccak256 of its dataset's DVC hash string (see data_hash)."""

    active: int
    unbonding: int
    release_at: int
    pending_round: int
    num_samples: int = 0
    data_hash: bytes = bytes(32)


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    gas_used: int
    block_number: int
    logs: tuple[dict[str, Any], ...] = ()
