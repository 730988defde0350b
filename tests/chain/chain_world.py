"""Chain test helpers: a deployed alliance, four participants, rounds driven step by step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flock_pipeline.chain import AllianceClient, Chain, Phase, Role, TaskConfig, Vote, to_fixed
from flock_pipeline.protocol.params import dataset_hash

TOKEN = 10**18
FULL = 10**18  # a contribution of 1.0
STAKE = 100 * TOKEN
MODEL = b"\x11" * 32
AGGREGATE = b"\x22" * 32
BOGUS = b"\x66" * 32
GOOD = to_fixed(0.05)
BAD = to_fixed(-0.02)
SAMPLES = 1_000
"""Each participant's registered dataset size: the most samples an update of its may claim."""
DATA = dataset_hash("0123456789abcdef0123456789abcdef.dir")
"""A registered dataset hash (keccak256 of a DVC directory hash)."""
EVERYONE = {"proposers_per_round": 64, "voters_per_round": 64}
"""Odds 64 * stake / total stake: every one of four participants proposes and votes."""


@dataclass
class RoundUnderTest:
    """A started round, every participant's role in it, and steps to drive it."""

    world: World
    task_id: int
    round: int
    roles: dict[str, Role]
    block: int
    """The block that started the round: event queries start there."""
    votes: dict[str, Vote] = field(default_factory=dict)

    @property
    def proposers(self) -> list[AllianceClient]:
        return [p for p in self.world.people if self.roles[p.address].proposes]

    @property
    def voters(self) -> list[AllianceClient]:
        return [p for p in self.world.people if self.roles[p.address].votes]

    @property
    def others(self) -> list[AllianceClient]:
        return [p for p in self.world.people if self.roles[p.address] is Role.NONE]

    def enter(self, phase: Phase) -> None:
        """Advance the clock to the start of `phase`."""
        info = self.world.keeper.round_info(self.task_id, self.round)
        ends = {
            Phase.COMMITTING: info.training_ends,
            Phase.REVEALING: info.commit_ends,
            Phase.FINALIZABLE: info.reveal_ends,
        }
        self.world.chain.advance_to(ends[phase])

    def submit(self, who: Sequence[AllianceClient] | None = None) -> None:
        """The given proposers (all by default) submit, each its own update hash."""
        for proposer in self.proposers if who is None else who:
            index = self.world.people.index(proposer)
            proposer.submit_update(self.task_id, self.round, bytes([index + 1]) * 32, 100)

    def commit(
        self,
        scores: Sequence[int | None],
        contributions: Sequence[Sequence[int]] | None = None,
        hashes: Sequence[bytes] | None = None,
    ) -> None:
        """Voter i commits scores[i] for hashes[i] (AGGREGATE by default) with
        contributions[i]; None means it does not vote at all.

        Without `contributions`, accepting voters give every update full credit (1.0) and
        rejecting voters none.
        """
        self.enter(Phase.COMMITTING)
        updates = self.world.keeper.round_info(self.task_id, self.round).updates
        for index, (voter, score) in enumerate(zip(self.voters, scores, strict=True)):
            if score is None:
                continue
            if contributions is not None:
                given: Sequence[int] = contributions[index]
            else:
                given = [FULL] * updates if score >= 0 else []
            digest = AGGREGATE if hashes is None else hashes[index]
            self.votes[voter.address], _ = voter.commit_vote(
                self.task_id, self.round, digest, score, contributions=given
            )

    def reveal(self, who: Sequence[AllianceClient] | None = None) -> None:
        self.enter(Phase.REVEALING)
        for voter in self.voters if who is None else who:
            if voter.address in self.votes:
                voter.reveal_vote(self.votes[voter.address])

    def finalize(self) -> None:
        self.enter(Phase.FINALIZABLE)
        self.world.keeper.finalize_round(self.task_id, self.round)

    def play(
        self,
        scores: Sequence[int | None],
        revealers: Sequence[AllianceClient] | None = None,
        contributions: Sequence[Sequence[int]] | None = None,
        hashes: Sequence[bytes] | None = None,
    ) -> None:
        """Every proposer submits, the voters commit and reveal, the keeper finalizes."""
        self.submit()
        self.commit(scores, contributions, hashes)
        self.reveal(revealers)
        self.finalize()

    def claim_all(self) -> dict[str, int]:
        """Every participant and the keeper claim; what each was paid, by address."""
        paid = {p.address: p.claim(self.task_id)[0] for p in self.world.people}
        paid[self.world.keeper.address] = self.world.keeper.claim(self.task_id)[0]
        return paid

    def active(self, person: AllianceClient) -> int:
        return self.world.keeper.participant_of(self.task_id, person.address).active

    def weight(self, person: AllianceClient) -> int:
        return self.world.keeper.record_of(self.task_id, self.round, person.address).weight


@dataclass
class World:
    """Deployed contracts, a task creator, a keeper (finalizes, reports) and four participants."""

    chain: Chain
    creator: AllianceClient
    keeper: AllianceClient
    people: list[AllianceClient]

    def open_task(self, stakes: Sequence[int] | None = None, **config: Any) -> int:
        """A new task with every participant staked."""
        task_id, _ = self.creator.create_task(TaskConfig(model_hash=MODEL, **config))
        for person, amount in zip(self.people, stakes or [STAKE] * len(self.people), strict=True):
            person.stake(task_id, amount, SAMPLES, dataset_hash(f"{person.address}.dir"))
        return task_id

    def start(self, task_id: int) -> RoundUnderTest:
        """Start the task's next round and read every participant's role from the contract."""
        round_, started = self.keeper.start_round(task_id)
        roles = {p.address: p.role_of(task_id, round_) for p in self.people}
        return RoundUnderTest(self, task_id, round_, roles, started.block_number)

    def open_round(
        self,
        min_proposers: int = 1,
        min_voters: int = 1,
        stakes: Sequence[int] | None = None,
        want: Callable[[RoundUnderTest], bool] = lambda r: True,
        **config: Any,
    ) -> RoundUnderTest:
        """Create tasks until sortition gives the first round the roles the test needs."""
        for _ in range(40):
            r = self.start(self.open_task(stakes, **config))
            if len(r.proposers) >= min_proposers and len(r.voters) >= min_voters and want(r):
                return r
        raise AssertionError("sortition never produced the wanted roles")

    def everyone_round(self, stakes: Sequence[int] | None = None, **config: Any) -> RoundUnderTest:
        """A round in which every participant is both a proposer and a voter."""
        r = self.start(self.open_task(stakes, **{**EVERYONE, **config}))
        assert set(r.roles.values()) == {Role.BOTH}
        return r

    def vault_balance(self) -> int:
        """The tokens the StakeVault holds: every task's tokens."""
        return self.keeper.balance_of(self.keeper.deployment.vault)

    def bucket_total(self) -> int:
        """stakes + pool + allotted + claimable over every task: must equal the balance."""
        count = int(self.keeper.alliance.functions.taskCount().call())
        total = 0
        for task_id in range(1, count + 1):
            state = self.keeper.task_state(task_id)
            total += state.staked + state.pool + state.allotted + state.claimable
        return total


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
