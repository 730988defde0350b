"""FlockAlliance for one task as a Python state machine: stake, rounds, votes, settlement.

The simulation runs its rounds on it instead of a chain, and the differential test holds it
equal to the contract call by call: the same checks in the same order (a refused call raises
ProtocolRevert with the contract's error name and arguments and changes nothing), the same
integer arithmetic, the same four token buckets. Time is whatever the driver sets `now` to
(the block timestamp). The seed source is outside the model: request_round starts a round
(the contract's startRound), draw_round takes what the source answers (the chain's seed and
state, or one the simulation derives); start_round does both at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from eth_utils.address import to_checksum_address

from flock_pipeline.errors import FlockError
from flock_pipeline.protocol.roles import Role, role_of
from flock_pipeline.protocol.tally import (
    ZERO_HASH,
    Outcome,
    RevealedVote,
    RoundTally,
    Tally,
    UpdateResult,
    mul_div,
)
from flock_pipeline.protocol.trust import trust_scores
from flock_pipeline.protocol.vote import SCORE_SCALE, vote_commitment

__all__ = [
    "BPS",
    "MAX_UPDATES",
    "ZERO_ADDRESS",
    "Alliance",
    "NoShowReported",
    "Participant",
    "Phase",
    "ProtocolRevert",
    "Record",
    "Round",
    "RoundFinalized",
    "SeedState",
    "Settled",
    "Slashed",
    "TaskParams",
    "TaskState",
    "Update",
    "VoteState",
    "default_deadline",
    "role_weight",
]

BPS = 10_000
MAX_UPDATES = 256
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEADLINE_SLACK = 30 * 86_400
"""What a default deadline adds to four times the rounds' phases: a month of waiting."""


class ProtocolRevert(FlockError):
    """A call the contract refuses: `name` is the Solidity custom error, `error_args` its
    arguments in declaration order (enums as IntEnum, addresses checksummed)."""

    def __init__(self, name: str, args: tuple[Any, ...] = ()) -> None:
        super().__init__(name, args)
        self.name = name
        self.error_args = args

    def __str__(self) -> str:
        return f"{self.name}({', '.join(str(a) for a in self.error_args)})"


class Phase(IntEnum):
    """Where a round stands (FlockAlliance.Phase); WAITING_FOR_SEED: started, no roles yet."""

    NOT_STARTED = 0
    WAITING_FOR_SEED = 1
    TRAINING = 2
    COMMITTING = 3
    REVEALING = 4
    FINALIZABLE = 5
    FINALIZED = 6


class SeedState(IntEnum):
    """Where a round's seed request stands at its source (ISeedSource.SeedState)."""

    NONE = 0
    PENDING = 1
    READY = 2
    LAPSED = 3


class VoteState(IntEnum):
    """Where a participant's vote in a round stands (FlockAlliance.VoteState)."""

    NONE = 0
    COMMITTED = 1
    REVEALED = 2


@dataclass(frozen=True, kw_only=True)
class TaskParams:
    """A task's creation parameters (FlockAlliance.TaskParams); the field names of
    flock_pipeline.chain.TaskConfig, so one converts to the other field by field."""

    model_hash: bytes
    rounds: int = 3
    reward_pool: int = 1_000 * 10**18
    min_stake: int = 10 * 10**18
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
    """Timestamp from which no stake is taken and no round starts; 0: default_deadline."""
    metadata_uri: str = ""

    def as_abi(self) -> tuple[Any, ...]:
        """The TaskParams tuple in the contract's field order (createTask's argument)."""
        return (
            self.metadata_uri, self.model_hash, self.rounds, self.min_participants,
            self.max_participants, self.proposers_per_round, self.voters_per_round,
            self.slash_bps, self.penalty_bps, self.voter_slash_bps, self.finalizer_share_bps,
            self.proposer_reward_bps, self.training_duration, self.commit_duration,
            self.reveal_duration, self.unbonding_delay, self.deadline, self.min_stake,
            self.reward_pool,
        )  # fmt: skip

    def invalid(self, now: int = 0) -> str | None:
        """The first parameter createTask refuses at time `now` (its camelCase name), or None."""
        p = self
        checks = (
            ("rounds", p.rounds == 0),
            ("minParticipants", p.min_participants == 0),
            ("maxParticipants", p.max_participants < p.min_participants),
            ("proposersPerRound", p.proposers_per_round == 0),
            ("votersPerRound", p.voters_per_round == 0),
            ("slashBps", p.slash_bps > BPS),
            ("penaltyBps", p.penalty_bps > BPS),
            ("voterSlashBps", p.voter_slash_bps > BPS),
            ("finalizerShareBps", p.finalizer_share_bps > BPS),
            ("proposerRewardBps", p.proposer_reward_bps > BPS),
            ("trainingDuration", p.training_duration == 0),
            ("commitDuration", p.commit_duration == 0),
            ("revealDuration", p.reveal_duration == 0),
            (
                "unbondingDelay",
                p.unbonding_delay < p.training_duration + p.commit_duration + p.reveal_duration,
            ),
            ("deadline", p.deadline <= now),
            ("minStake", p.min_stake == 0),
        )
        return next((name for name, bad in checks if bad), None)


def default_deadline(
    now: int, rounds: int, training_duration: int, commit_duration: int, reveal_duration: int
) -> int:
    """A deadline that leaves every round four times its phases, plus DEADLINE_SLACK."""
    phases = training_duration + commit_duration + reveal_duration
    return now + 4 * rounds * phases + DEADLINE_SLACK


@dataclass
class TaskState:
    """A task's progress and its four token buckets (FlockAlliance.TaskState)."""

    creator: str
    rounds_started: int = 0
    participants: int = 0
    global_model_hash: bytes = ZERO_HASH
    pool: int = 0
    staked: int = 0
    allotted: int = 0
    claimable: int = 0


@dataclass
class Round:
    """One round (FlockAlliance.Round, same fields in the same order)."""

    seed: bytes = ZERO_HASH
    aggregate_hash: bytes = ZERO_HASH
    training_ends: int = 0
    commit_ends: int = 0
    reveal_ends: int = 0
    updates: int = 0
    total_stake: int = 0
    revealed_weight: int = 0
    reward: int = 0
    proposer_reward_left: int = 0
    voter_reward_left: int = 0
    voter_weight_left: int = 0
    contribution_total: int = 0
    contribution_left: int = 0
    finalizer: str = ZERO_ADDRESS
    finalized: bool = False
    outcome: Outcome = Outcome.PENDING


@dataclass
class Record:
    """One account's round, both roles (FlockAlliance.Record, same fields in the same order)."""

    submitted: bool = False
    update_index: int = 0
    vote: VoteState = VoteState.NONE
    accept: bool = False
    scored: bool = False
    no_show: bool = False
    settled: bool = False
    weight: int = 0
    commitment: bytes = ZERO_HASH
    aggregate_hash: bytes = ZERO_HASH


@dataclass
class Participant:
    """An account's stake and registered dataset (FlockAlliance.Participant); pending_round is
    1-based, 0: none; num_samples bounds its updates' sample counts, data_hash is keccak256 of
    its dataset's DVC hash string."""

    active: int = 0
    unbonding: int = 0
    release_at: int = 0
    pending_round: int = 0
    num_samples: int = 0
    data_hash: bytes = ZERO_HASH


@dataclass(frozen=True)
class Update:
    """One submitted update: its proposer and the proposer's round weight (role_weight with
    proposers_per_round)."""

    proposer: str
    weight: int


@dataclass(frozen=True)
class Settled:
    """An account's round was settled (event Settled)."""

    round: int
    account: str
    reward: int
    slashed: int


@dataclass(frozen=True)
class Slashed:
    """Stake was slashed; `cut` went to `beneficiary`, the rest to the pool (event Slashed)."""

    account: str
    amount: int
    beneficiary: str
    cut: int


@dataclass(frozen=True)
class NoShowReported:
    """A selected account that did not act was reported (event NoShowReported)."""

    round: int
    account: str
    reporter: str


@dataclass(frozen=True)
class RoundFinalized:
    """A round was tallied (event RoundFinalized)."""

    round: int
    outcome: Outcome
    aggregate_hash: bytes
    global_model_hash: bytes
    reward: int
    allotted: int
    accept_weight: int
    reject_weight: int
    finalizer: str


def _address(account: str) -> str:
    return str(to_checksum_address(account))


def role_weight(stake: int, total_stake: int, count: int) -> int:
    """A selected role's weight, Sortition.weight: max(stake, ceil(total_stake / count)).

    Selection odds are min(1, count * stake / total_stake), so the expected weight of an account
    in a role is its stake (up to a wei of rounding): stake counts once, not twice.
    """
    return max(stake, -(-total_stake // count))


def _push(trace: list[tuple[int, int]], key: int, value: int) -> None:
    """Checkpoints.push: a checkpoint per key, the latest write of a key wins."""
    if trace and trace[-1][0] == key:
        trace[-1] = (key, value)
    else:
        trace.append((key, value))


def _lookup(trace: list[tuple[int, int]], key: int) -> int:
    """Checkpoints.upperLookupRecent: the value of the last checkpoint at or before `key`."""
    for k, value in reversed(trace):
        if k <= key:
            return value
    return 0


class Alliance:
    """One task of FlockAlliance, call for call.

    Every mutating method takes the calling account first (msg.sender) where the contract reads
    it. `net_paid[account]` is what the contract paid the account minus what it took from it
    (stakes, the creator's reward pool), so a wallet's balance is its start plus that.
    """

    def __init__(self, params: TaskParams, creator: str, task_id: int = 1, now: int = 0) -> None:
        if params.deadline == 0:
            params = replace(
                params,
                deadline=default_deadline(
                    now, params.rounds, params.training_duration, params.commit_duration,
                    params.reveal_duration,
                ),
            )  # fmt: skip
        bad = params.invalid(now)
        if bad is not None:
            raise ProtocolRevert("InvalidTaskParameter", (bad.encode().ljust(32, b"\0"),))
        self.params = params
        self.task_id = task_id
        self.now = now
        creator = _address(creator)
        self.task = TaskState(
            creator=creator, global_model_hash=params.model_hash, pool=params.reward_pool
        )
        self.rounds: list[Round] = []
        self._updates: list[list[Update]] = []
        self._tallies: list[RoundTally] = []
        self._records: list[dict[str, Record]] = []
        self._participants: dict[str, Participant] = {}
        self._claimable: dict[str, int] = {}
        self._history: dict[str, list[tuple[int, int]]] = {}
        self._total: list[tuple[int, int]] = []
        self.net_paid: dict[str, int] = {creator: -params.reward_pool}
        self.deposited = params.reward_pool
        self.paid_out = 0
        self.settlements: list[Settled] = []
        self.slashes: list[Slashed] = []
        self.no_shows: list[NoShowReported] = []
        self.finalizations: list[RoundFinalized] = []

    # ------------------------------------------------------------------ stake

    def stake(
        self, account: str, amount: int, num_samples: int = 0, data_hash: bytes = ZERO_HASH
    ) -> None:
        """Add to the account's active stake; it counts for roles from the next round. The
        first stake registers the dataset (size, hash); a later one keeps it (zeros, or the
        same values) or replaces it while the account has no unsettled round."""
        account = _address(account)
        p = self.params
        if amount == 0:
            self._revert("ZeroValue")
        if self.task.rounds_started >= p.rounds:
            self._revert("TaskClosed", self.task_id)
        if self.now >= p.deadline:
            self._revert("TaskEnded", self.task_id, p.deadline)
        me = self._participant(account)
        data_hash = bytes(data_hash)
        change = (num_samples != 0 or data_hash != ZERO_HASH) and (
            num_samples != me.num_samples or data_hash != me.data_hash
        )
        if change:
            if num_samples == 0 or data_hash == ZERO_HASH:
                self._revert("ZeroValue")
            if me.pending_round != 0:
                self._revert("PendingSettlement", self.task_id, me.pending_round - 1, account)
        elif me.num_samples == 0:
            self._revert("ZeroValue")  # nothing registered yet
        active = me.active + amount
        if active < p.min_stake:
            self._revert("InsufficientStake", p.min_stake, active)
        if me.active == 0:
            if self.task.participants >= p.max_participants:
                self._revert("TaskFull", self.task_id, p.max_participants)
            self.task.participants += 1
        if change:
            me.num_samples, me.data_hash = num_samples, data_hash
        self._set_active(account, me, active)
        self.task.staked += amount
        self._transfer(account, -amount)

    def request_unstake(self, account: str, amount: int) -> None:
        """Move active stake to unbonding: no longer counted for roles, still slashable."""
        account = _address(account)
        p = self.params
        if amount == 0:
            self._revert("ZeroValue")
        me = self._participant(account)
        if amount > me.active:
            self._revert("InsufficientStake", amount, me.active)
        remaining = me.active - amount
        if remaining != 0 and remaining < p.min_stake:
            self._revert("InsufficientStake", p.min_stake, remaining)
        if remaining == 0:
            self.task.participants -= 1
        self._set_active(account, me, remaining)
        me.unbonding += amount
        me.release_at = self.now + p.unbonding_delay

    def withdraw(self, account: str) -> int:
        """Pay out all unbonded stake after the delay, settling the last round first."""
        account = _address(account)
        me = self._participant(account)
        with self._undo_settlement(account):
            if not self._settle(account) and me.pending_round != 0:
                self._revert("PendingSettlement", self.task_id, me.pending_round - 1, account)
            amount = me.unbonding
            if amount == 0:
                self._revert("ZeroValue")
            if self.now < me.release_at:
                self._revert("StillUnbonding", me.release_at)
        me.unbonding = 0
        self.task.staked -= amount
        self._transfer(account, amount)
        return amount

    # ------------------------------------------------------------------ rounds

    def request_round(self) -> int:
        """Start the next round (startRound): fix its stakes and ask for its seed; no roles
        until draw_round."""
        p = self.params
        index = self.task.rounds_started
        if index >= p.rounds:
            self._revert("TaskClosed", self.task_id)
        if self.now >= p.deadline:
            self._revert("TaskEnded", self.task_id, p.deadline)
        if index > 0 and not self.rounds[index - 1].finalized:
            self._revert(
                "WrongPhase", self.task_id, index - 1, Phase.FINALIZED, self.phase_of(index - 1)
            )
        if self.task.participants < p.min_participants:
            self._revert(
                "NotEnoughParticipants", self.task_id, self.task.participants, p.min_participants
            )
        self.task.rounds_started = index + 1
        self.rounds.append(Round(total_stake=self.total_stake()))
        self._updates.append([])
        self._tallies.append(RoundTally())
        self._records.append({})
        return index

    def draw_round(self, round_: int, seed: bytes, state: SeedState = SeedState.READY) -> None:
        """Draw a round waiting for its seed (drawRound), given what the seed source answers:
        the roles follow from `seed`, the phase deadlines count from now."""
        self._require_phase(round_, Phase.WAITING_FOR_SEED)
        p = self.params
        if self.now >= p.deadline:
            self._revert("TaskEnded", self.task_id, p.deadline)
        if state is not SeedState.READY or bytes(seed) == ZERO_HASH:
            self._revert("SeedNotReady", self.task_id, round_, int(state))
        r = self.rounds[round_]
        r.seed = bytes(seed)
        r.training_ends = self.now + p.training_duration
        r.commit_ends = r.training_ends + p.commit_duration
        r.reveal_ends = r.commit_ends + p.reveal_duration

    def renew_seed(self, round_: int, state: SeedState) -> None:
        """Ask the seed source again for a round whose request lapsed (renewSeed); `state` is
        the source's answer before."""
        self._require_phase(round_, Phase.WAITING_FOR_SEED)
        if state is not SeedState.LAPSED:
            self._revert("SeedNotLapsed", self.task_id, round_, int(state))

    def start_round(self, seed: bytes) -> int:
        """request_round then draw_round with `seed` at once: for a driver whose seed source
        answers immediately (the simulation derives its seeds)."""
        index = self.request_round()
        self.draw_round(index, seed)
        return index

    def cancel_task(self, caller: str) -> None:
        """The creator ends the task now (cancelTask): before its deadline, while no round is
        drawn and unfinalized; the deadline becomes now."""
        caller = _address(caller)
        p = self.params
        if caller != self.task.creator:
            self._revert("NotCreator", self.task_id, caller)
        if self.now >= p.deadline:
            self._revert("TaskEnded", self.task_id, p.deadline)
        self._require_idle()
        self.params = replace(p, deadline=self.now)

    def submit_update(self, account: str, round_: int, update_hash: bytes, num_samples: int) -> int:
        """A selected proposer commits to its update; returns its submission index."""
        account = _address(account)
        self._require_phase(round_, Phase.TRAINING)
        self._require_role(account, round_, Role.PROPOSER)
        rec = self._record(round_, account)
        if rec.submitted:
            self._revert("DuplicateSubmission", self.task_id, round_, account)
        if update_hash == ZERO_HASH or num_samples == 0:
            self._revert("ZeroValue")
        registered = self._participant(account).num_samples
        if num_samples > registered:
            self._revert("TooManySamples", num_samples, registered)
        r = self.rounds[round_]
        index = r.updates
        if index >= MAX_UPDATES:
            self._revert("RoundFull", self.task_id, round_, MAX_UPDATES)
        stake = self._enter(account, round_, rec)
        weight = role_weight(stake, r.total_stake, self.params.proposers_per_round)
        rec.submitted = True
        rec.update_index = index
        self._updates[round_].append(Update(account, weight))
        r.updates = index + 1
        return index

    def commit_vote(self, account: str, round_: int, commitment: bytes) -> None:
        """A selected voter commits to its hidden vote (see protocol.vote.vote_commitment)."""
        account = _address(account)
        self._require_phase(round_, Phase.COMMITTING)
        self._require_role(account, round_, Role.VOTER)
        if commitment == ZERO_HASH:
            self._revert("ZeroValue")
        if self.rounds[round_].updates == 0:
            self._revert("NoUpdates", self.task_id, round_)
        rec = self._record(round_, account)
        if rec.vote is not VoteState.NONE:
            self._revert("DuplicateVote", self.task_id, round_, account)
        self._enter(account, round_, rec)
        rec.vote = VoteState.COMMITTED
        rec.commitment = bytes(commitment)

    def reveal_vote(
        self,
        account: str,
        round_: int,
        aggregate_hash: bytes,
        score: int,
        contributions: Sequence[int],
        salt: bytes,
    ) -> None:
        """Reveal a committed vote: the aggregate hash, the score and the contributions."""
        account = _address(account)
        self._require_phase(round_, Phase.REVEALING)
        rec = self._record(round_, account)
        if rec.vote is not VoteState.COMMITTED:
            self._revert("NoCommitment", self.task_id, round_, account)
        values = tuple(contributions)
        digest = vote_commitment(self.task_id, round_, account, aggregate_hash, score, salt, values)
        if digest != rec.commitment:
            self._revert("RevealMismatch", self.task_id, round_, account)
        if aggregate_hash == ZERO_HASH:
            self._revert("ZeroValue")
        if not -SCORE_SCALE <= score <= SCORE_SCALE:
            self._revert("ScoreOutOfRange", score)
        r = self.rounds[round_]
        accept = score >= 0
        if len(values) != r.updates and (accept or values):
            self._revert("ContributionsMismatch", self.task_id, round_, r.updates, len(values))
        for index, c in enumerate(values):
            if not -SCORE_SCALE <= c <= SCORE_SCALE:
                self._revert("ContributionOutOfRange", index, c)
        rec.vote = VoteState.REVEALED
        rec.accept = accept
        rec.aggregate_hash = bytes(aggregate_hash)
        rec.scored = bool(values)
        tally = self._tallies[round_]
        own = rec.update_index if rec.submitted else None
        weight = self.voter_weight(round_, rec)
        tally.add(RevealedVote(account, weight, bytes(aggregate_hash), score, values, own))
        r.revealed_weight = tally.revealed_weight
        r.aggregate_hash = tally.leading

    def finalize_round(self, finalizer: str, round_: int) -> Outcome:
        """Decide the round after its reveal deadline and allot its reward (anyone, once)."""
        finalizer = _address(finalizer)
        p = self.params
        self._require_phase(round_, Phase.FINALIZABLE)
        r = self.rounds[round_]
        r.finalized = True
        r.finalizer = finalizer
        tally = self._tallies[round_]
        h = r.aggregate_hash
        leading = tally.tally(h)
        reward = self.task.pool // (p.rounds - round_)
        r.reward = reward
        outcome = tally.outcome()
        r.outcome = outcome
        allotted = 0
        if outcome is not Outcome.VOID:
            accepted = outcome is Outcome.ACCEPTED
            winners = leading.accept_weight if accepted else leading.reject_weight
            allotted = self._allot(round_, reward, winners)
        self.finalizations.append(
            RoundFinalized(
                round_, outcome, h, self.task.global_model_hash, reward, allotted,
                leading.accept_weight, leading.reject_weight, finalizer,
            )
        )  # fmt: skip
        return outcome

    def _allot(self, round_: int, reward: int, winners: int) -> int:
        """A decided round's allotments: each role's pot times its paid holders' weight over
        the round's total stake (the expected total weight of a role's holders), so expected
        pay is linear in stake; the pool covers more holders than expected, and both shrink in
        proportion when it falls short. Returns what left the pool."""
        p = self.params
        r = self.rounds[round_]
        tally = self._tallies[round_]
        stake = r.total_stake
        proposer_part = reward * p.proposer_reward_bps // BPS
        proposer_allot = 0
        if r.outcome is Outcome.ACCEPTED:
            results = tally.results(self._update_pairs(round_), r.outcome)
            total = sum(u.part for u in results)
            paid_weight = sum(u.weight for u in results if u.part > 0)
            r.contribution_total = total
            if total > 0:
                proposer_allot = mul_div(proposer_part, paid_weight, stake)
                r.contribution_left = total
            self.task.global_model_hash = r.aggregate_hash
        voter_allot = mul_div(reward - proposer_part, winners, stake)
        pool = self.task.pool
        if proposer_allot + voter_allot > pool:
            proposer_allot = mul_div(proposer_allot, pool, proposer_allot + voter_allot)
            voter_allot = pool - proposer_allot
        r.proposer_reward_left = proposer_allot
        r.voter_reward_left = voter_allot
        r.voter_weight_left = winners
        allotted = proposer_allot + voter_allot
        self.task.pool = pool - allotted
        self.task.allotted += allotted
        return allotted

    def report_no_show(self, reporter: str, round_: int, account: str) -> int:
        """Slash an account selected in a finalized round that did not do what its role asks;
        the reporter earns the finalizer's share. Returns the amount slashed."""
        reporter = _address(reporter)
        account = _address(account)
        self._require_phase(round_, Phase.FINALIZED)
        rec = self._record(round_, account)
        role = self.role_of(round_, account)
        missed_update = role.proposes and not rec.submitted
        missed_vote = role.votes and self.rounds[round_].updates > 0 and rec.vote is VoteState.NONE
        if rec.no_show or not (missed_update or missed_vote):
            self._revert("NotANoShow", self.task_id, round_, account)
        rec.no_show = True
        if not rec.submitted and rec.vote is VoteState.NONE:
            rec.settled = True  # nothing else of this round is left to settle
        self.no_shows.append(NoShowReported(round_, account, reporter))
        weight = self.stake_at(account, round_)
        return self._slash(account, weight, self.params.slash_bps, reporter)

    # ------------------------------------------------------------------ settlement

    def settle(self, account: str) -> bool:
        """Settle the account's pending round if it is finalized (anyone may call); returns
        whether nothing is left pending."""
        return self._settle(_address(account))

    def claim(self, account: str) -> int:
        """Pay the account everything settled for it, settling its pending round first."""
        account = _address(account)
        self._settle(account)
        amount = self._claimable.get(account, 0)
        if amount == 0:
            return 0
        self._claimable[account] = 0
        self.task.claimable -= amount
        self._transfer(account, amount)
        return amount

    def reclaim_pool(self, caller: str) -> int:
        """The creator takes what is left in the pool once the last round is finalized, or
        once the task has ended (deadline, cancel) and no round is drawn and unfinalized."""
        caller = _address(caller)
        last = self.params.rounds - 1
        if caller != self.task.creator:
            self._revert("NotCreator", self.task_id, caller)
        if self.now < self.params.deadline:
            self._require_phase(last, Phase.FINALIZED)
        else:
            self._require_idle()
        amount = self.task.pool
        self.task.pool = 0
        self._transfer(caller, amount)
        return amount

    # ------------------------------------------------------------------ views

    def phase_of(self, round_: int) -> Phase:
        """The phase a round is in at `now`."""
        if round_ >= self.task.rounds_started:
            return Phase.NOT_STARTED
        r = self.rounds[round_]
        if r.finalized:
            return Phase.FINALIZED
        if r.seed == ZERO_HASH:
            return Phase.WAITING_FOR_SEED
        if self.now < r.training_ends:
            return Phase.TRAINING
        if self.now < r.commit_ends:
            return Phase.COMMITTING
        if self.now < r.reveal_ends:
            return Phase.REVEALING
        return Phase.FINALIZABLE

    def task_state(self) -> TaskState:
        """The task's progress and token buckets (a copy)."""
        return replace(self.task)

    def round_info(self, round_: int) -> Round:
        """A round (a copy; all zero if not started)."""
        return replace(self.rounds[round_]) if round_ < len(self.rounds) else Round()

    def record_of(self, round_: int, account: str) -> Record:
        """What the account did in a round (a copy; all zero if nothing)."""
        if round_ >= len(self._records):
            return Record()
        found = self._records[round_].get(_address(account))
        return Record() if found is None else replace(found)

    def tally_of(self, round_: int, aggregate_hash: bytes) -> Tally:
        """The revealed stake behind one hash of a round."""
        if round_ >= len(self._tallies):
            return Tally()
        return self._tallies[round_].tally(bytes(aggregate_hash))

    def round_updates(self, round_: int) -> list[UpdateResult]:
        """Every update of a round under its current aggregate hash, with its flag and part
        (derived once the round is finalized and not Void)."""
        if round_ >= len(self.rounds):
            return []
        outcome = self.rounds[round_].outcome
        return self._tallies[round_].results(self._update_pairs(round_), outcome)

    def revealed_votes(self, round_: int) -> list[RevealedVote]:
        """A round's revealed votes in reveal order."""
        if round_ >= len(self._tallies):
            return []
        return list(self._tallies[round_].votes.values())

    def trust_scores(self, round_: int) -> dict[str, float]:
        """The screen's trust input of a round (see protocol.trust.trust_scores)."""
        proposers = [u.proposer for u in self._updates[round_]] if round_ < len(self.rounds) else []
        return trust_scores(self.revealed_votes(round_), proposers)

    def claimable_of(self, account: str) -> int:
        """Settled, unclaimed tokens of the account."""
        return self._claimable.get(_address(account), 0)

    def participant_of(self, account: str) -> Participant:
        """The account's stake (a copy)."""
        return replace(self._participants.get(_address(account), Participant()))

    def stake_at(self, account: str, round_: int) -> int:
        """The account's active stake as counted for a round's roles."""
        return _lookup(self._history.get(_address(account), []), round_)

    def role_of(self, round_: int, account: str) -> Role:
        """The role sortition gives the account in a started round."""
        if round_ >= len(self.rounds) or self.rounds[round_].seed == ZERO_HASH:
            return Role.NONE
        weight = self.stake_at(account, round_)
        if weight < self.params.min_stake:
            return Role.NONE
        r = self.rounds[round_]
        p = self.params
        return role_of(
            r.seed, account, weight, r.total_stake, p.proposers_per_round, p.voters_per_round
        )

    def voter_weight(self, round_: int, record: Record) -> int:
        """The weight of a record's vote: role_weight with voters_per_round."""
        r = self.rounds[round_]
        return role_weight(record.weight, r.total_stake, self.params.voters_per_round)

    def ended(self) -> bool:
        """Whether the task's deadline has passed (or it was cancelled)."""
        return self.now >= self.params.deadline

    def total_stake(self) -> int:
        """The task's total active stake now: the next round's totalStake."""
        return self._total[-1][1] if self._total else 0

    def balance(self) -> int:
        """The contract's tokens held for this task: the sum of the four buckets."""
        t = self.task
        return t.pool + t.staked + t.allotted + t.claimable

    def audit(self) -> list[str]:
        """The token invariants that do not hold (empty when the books balance)."""
        t = self.task
        stakes = [p.active + p.unbonding for p in self._participants.values()]
        left = sum(r.proposer_reward_left + r.voter_reward_left for r in self.rounds)
        checks = {
            "deposits - payouts == pool + staked + allotted + claimable": (
                self.deposited - self.paid_out == self.balance()
            ),
            "staked == sum of stakes": t.staked == sum(stakes),
            "claimable == sum of claimables": t.claimable == sum(self._claimable.values()),
            "allotted == rewards left in finalized rounds": t.allotted == left,
            "participants == accounts with active stake": (
                t.participants == sum(1 for p in self._participants.values() if p.active)
            ),
            "net payments == - balance": sum(self.net_paid.values()) == -self.balance(),
            "no bucket negative": min(t.pool, t.staked, t.allotted, t.claimable) >= 0,
        }
        return [name for name, ok in checks.items() if not ok]

    # ------------------------------------------------------------------ internals

    def _revert(self, name: str, *args: Any) -> None:
        raise ProtocolRevert(name, args)

    def _participant(self, account: str) -> Participant:
        return self._participants.setdefault(account, Participant())

    def _record(self, round_: int, account: str) -> Record:
        return self._records[round_].setdefault(account, Record())

    def _update_pairs(self, round_: int) -> list[tuple[str, int]]:
        return [(u.proposer, u.weight) for u in self._updates[round_]]

    def _transfer(self, account: str, amount: int) -> None:
        """Tokens out of (amount > 0) or into (amount < 0) the contract."""
        self.net_paid[account] = self.net_paid.get(account, 0) + amount
        if amount > 0:
            self.paid_out += amount
        else:
            self.deposited -= amount

    def _require_phase(self, round_: int, expected: Phase) -> None:
        actual = self.phase_of(round_)
        if actual is not expected:
            self._revert("WrongPhase", self.task_id, round_, expected, actual)

    def _require_idle(self) -> None:
        """RoundInProgress if the last started round is drawn and not finalized."""
        started = self.task.rounds_started
        if started:
            r = self.rounds[started - 1]
            if not r.finalized and r.seed != ZERO_HASH:
                self._revert("RoundInProgress", self.task_id, started - 1)

    def _require_role(self, account: str, round_: int, required: Role) -> None:
        actual = self.role_of(round_, account)
        if actual is not required and actual is not Role.BOTH:
            self._revert("NotSelected", self.task_id, round_, account, required)

    def _enter(self, account: str, round_: int, rec: Record) -> int:
        """The account's weight in the round, fixed by its first action there: its stake at the
        round's start capped by what is left to slash; settles its previous round first."""
        if rec.weight != 0:
            return rec.weight
        me = self._participant(account)
        with self._undo_settlement(account):
            self._settle(account)
            weight = min(self.stake_at(account, round_), me.active + me.unbonding)
            if weight == 0:
                self._revert("InsufficientStake", 1, 0)
        rec.weight = weight
        me.pending_round = round_ + 1
        return weight

    @contextmanager
    def _undo_settlement(self, account: str) -> Iterator[None]:
        """Put back what settling `account` changed when the call reverts after it (the
        contract's revert undoes the settlement it ran first)."""
        me = self._participant(account)
        touched: list[Any] = [self.task, me]
        if me.pending_round:
            touched += [
                self.rounds[me.pending_round - 1],
                self._record(me.pending_round - 1, account),
            ]
        saved = [replace(obj) for obj in touched]
        claimable = dict(self._claimable)
        history = list(self._history.get(account, []))
        total = list(self._total)
        events = (len(self.settlements), len(self.slashes))
        try:
            yield
        except ProtocolRevert:
            for obj, old in zip(touched, saved, strict=True):
                vars(obj).update(vars(old))
            self._claimable = claimable
            self._history[account] = history
            self._total = total
            del self.settlements[events[0] :]
            del self.slashes[events[1] :]
            raise

    def _settle(self, account: str) -> bool:
        """Settle the pending round if finalized; both roles in turn, rewards added up, each
        slash taking what is left. Returns whether nothing is pending."""
        me = self._participant(account)
        if me.pending_round == 0:
            return True
        round_ = me.pending_round - 1
        r = self.rounds[round_]
        if not r.finalized:
            return False
        me.pending_round = 0
        rec = self._record(round_, account)
        rec.settled = True
        p = self.params
        decided = r.outcome is not Outcome.VOID
        reward = 0
        slashed = 0
        if rec.submitted and decided:
            u = self._updates[round_][rec.update_index]
            result = self._tallies[round_].judge(rec.update_index, u.proposer, u.weight, r.outcome)
            if result.flagged:
                slashed = self._slash(account, rec.weight, p.penalty_bps, r.finalizer)
            elif result.part > 0:
                left = r.contribution_left
                reward = mul_div(r.proposer_reward_left, result.part, left)
                r.proposer_reward_left -= reward
                r.contribution_left = left - result.part
        if rec.vote is VoteState.COMMITTED:
            bps = max(p.voter_slash_bps, p.slash_bps)
            slashed += self._slash(account, rec.weight, bps, r.finalizer)
        elif rec.vote is VoteState.REVEALED and decided:
            if rec.aggregate_hash != r.aggregate_hash:
                # the aggregate is a deterministic function of committed data: another hash is
                # provably not the round's
                slashed += self._slash(account, rec.weight, p.voter_slash_bps, r.finalizer)
            elif rec.accept == (r.outcome is Outcome.ACCEPTED):
                weight = self.voter_weight(round_, rec)
                amount = r.voter_reward_left * weight // r.voter_weight_left
                r.voter_reward_left -= amount
                r.voter_weight_left -= weight
                reward += amount
            # the losing side of the judgement is unpaid, never slashed, either way: an honest
            # voter's own data can disagree with the majority's
        if reward > 0:
            self.task.allotted -= reward
            self.task.claimable += reward
            self._claimable[account] = self._claimable.get(account, 0) + reward
        self.settlements.append(Settled(round_, account, reward, slashed))
        return True

    def _slash(self, account: str, weight: int, bps: int, beneficiary: str) -> int:
        """Take bps of weight (capped by what is there), unbonding stake first; the beneficiary
        gets finalizerShareBps of it, the pool the rest."""
        me = self._participant(account)
        amount = min(weight * bps // BPS, me.active + me.unbonding)
        if amount == 0:
            return 0
        from_unbonding = min(amount, me.unbonding)
        me.unbonding -= from_unbonding
        if amount > from_unbonding:
            active = me.active - (amount - from_unbonding)
            if active == 0:
                self.task.participants -= 1
            self._set_active(account, me, active)
        cut = amount * self.params.finalizer_share_bps // BPS
        self.task.staked -= amount
        self.task.pool += amount - cut
        self.task.claimable += cut
        self._claimable[beneficiary] = self._claimable.get(beneficiary, 0) + cut
        self.slashes.append(Slashed(account, amount, beneficiary, cut))
        return amount

    def _set_active(self, account: str, me: Participant, active: int) -> None:
        """Set the active stake and checkpoint it (and the total) from the next round on."""
        key = self.task.rounds_started
        total = self.total_stake() + active - me.active
        _push(self._total, key, total)
        _push(self._history.setdefault(account, []), key, active)
        me.active = active
