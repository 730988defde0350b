"""Chain test helpers: a deployed alliance, four participants, rounds driven step by step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flock_pipeline.chain import AllianceClient, Chain, Phase, Role, TaskConfig, Vote

TOKEN = 10**18
FULL = 10**18  # a contribution of 1.0
STAKE = 100 * TOKEN
MODEL = b"\x11" * 32
AGGREGATE = b"\x22" * 32


@dataclass
class RoundUnderTest:
    """A started round with its selected proposers and voters, and steps to drive it."""

    world: World
    task_id: int
    round: int
    proposers: list[AllianceClient]
    voters: list[AllianceClient]
    others: list[AllianceClient]
    votes: dict[str, Vote] = field(default_factory=dict)

    def enter(self, phase: Phase) -> None:
        """Advance the clock to the start of `phase`."""
        info = self.world.keeper.round_info(self.task_id, self.round)
        ends = {
            Phase.COMMITTING: info.training_ends,
            Phase.REVEALING: info.commit_ends,
            Phase.FINALIZABLE: info.reveal_ends,
        }
        self.world.chain.advance_to(ends[phase])

    def submit_all(self) -> None:
        for index, proposer in enumerate(self.proposers):
            proposer.submit_update(self.task_id, self.round, bytes([index + 1]) * 32, 100)

    def post_aggregate(self) -> None:
        self.enter(Phase.COMMITTING)
        self.proposers[0].post_aggregate(self.task_id, self.round, AGGREGATE)

    def commit(
        self,
        scores: list[int | None],
        contributions: list[Sequence[int]] | None = None,
    ) -> None:
        """Voter i commits scores[i] with contributions[i]; None means it does not vote at all.

        Without `contributions`, accepting voters give every update full credit (1.0) and
        rejecting voters none.
        """
        updates = self.world.keeper.round_info(self.task_id, self.round).updates
        for index, (voter, score) in enumerate(zip(self.voters, scores, strict=True)):
            if score is None:
                continue
            if contributions is not None:
                given: Sequence[int] = contributions[index]
            else:
                given = [FULL] * updates if score > 0 else []
            self.votes[voter.address], _ = voter.commit_vote(
                self.task_id, self.round, score, contributions=given
            )

    def reveal(self, who: list[AllianceClient] | None = None) -> None:
        self.enter(Phase.REVEALING)
        for voter in self.voters if who is None else who:
            if voter.address in self.votes:
                voter.reveal_vote(self.votes[voter.address])

    def finalize(self) -> None:
        self.enter(Phase.FINALIZABLE)
        self.world.keeper.finalize_round(self.task_id, self.round)

    def play(
        self,
        scores: list[int | None],
        revealers: list[AllianceClient] | None = None,
        contributions: list[Sequence[int]] | None = None,
    ) -> None:
        """Submit every update, post the aggregate, vote, reveal and finalize."""
        self.submit_all()
        self.post_aggregate()
        self.commit(scores, contributions)
        self.reveal(revealers)
        self.finalize()


@dataclass
class World:
    """Deployed contracts, a task creator, a keeper (finalizes, reports) and four participants."""

    chain: Chain
    creator: AllianceClient
    keeper: AllianceClient
    people: list[AllianceClient]

    def open_round(
        self,
        min_proposers: int = 1,
        min_voters: int = 1,
        stakes: list[int] | None = None,
        **config: int,
    ) -> RoundUnderTest:
        """Create tasks until sortition gives the first round enough proposers and voters."""
        stakes = stakes or [STAKE] * len(self.people)
        for _ in range(40):
            task_id, _ = self.creator.create_task(TaskConfig(model_hash=MODEL, **config))
            for person, amount in zip(self.people, stakes, strict=True):
                person.stake(task_id, amount)
            round_, _ = self.keeper.start_round(task_id)
            roles = {p.address: p.role_of(task_id, round_) for p in self.people}
            proposers = [p for p in self.people if roles[p.address] is Role.PROPOSER]
            voters = [p for p in self.people if roles[p.address] is Role.VOTER]
            others = [p for p in self.people if roles[p.address] is Role.NONE]
            if len(proposers) >= min_proposers and len(voters) >= min_voters:
                return RoundUnderTest(self, task_id, round_, proposers, voters, others)
        raise AssertionError("sortition never produced the wanted roles")

    def alliance_balance(self) -> int:
        return self.keeper.balance_of(self.keeper.deployment.alliance)

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
