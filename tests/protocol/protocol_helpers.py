"""Protocol test helpers: a task on the Python model with staked accounts, played round by round.

`Play` picks a round seed that gives each named account the role a test needs (searching
keccak seeds in order, so the situation is the same on every machine) and checks the token
books after every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from flock_pipeline.protocol import (
    SCORE_SCALE,
    Alliance,
    Outcome,
    Phase,
    Role,
    Settled,
    TaskParams,
    role_of,
    vote_commitment,
)

TOKEN = 10**18
FULL = SCORE_SCALE  # a contribution of 1.0
FLAG = -SCORE_SCALE  # the flag: a contribution of exactly -1.0
STAKE = 100 * TOKEN
SAMPLES = 1_000  # every account's registered dataset size
DATA = keccak(b"dataset.dir")  # and its registered dataset hash
MODEL = b"\x11" * 32
H = b"\xaa" * 32  # the aggregate most voters compute
H2 = b"\xbb" * 32  # another aggregate


def addresses(count: int, label: str = "protocol") -> list[str]:
    """Deterministic distinct addresses."""
    return [to_checksum_address(keccak(f"{label}/{i}".encode())[12:]) for i in range(count)]


CREATOR = addresses(1, "creator")[0]
FINALIZER = addresses(1, "finalizer")[0]


def make_params(**overrides: Any) -> TaskParams:
    """Small durations and distinct rates, so every slash and share is told apart."""
    base: dict[str, Any] = dict(
        model_hash=MODEL,
        rounds=3,
        reward_pool=1_200 * TOKEN,
        min_stake=10 * TOKEN,
        min_participants=2,
        max_participants=300,
        proposers_per_round=2,
        voters_per_round=3,
        slash_bps=1_000,
        penalty_bps=5_000,
        voter_slash_bps=3_000,
        finalizer_share_bps=1_000,
        proposer_reward_bps=6_000,
        training_duration=100,
        commit_duration=50,
        reveal_duration=50,
        unbonding_delay=400,
    )
    base.update(overrides)
    return TaskParams(**base)


@dataclass
class Ballot:
    """A committed vote kept for its reveal."""

    aggregate_hash: bytes
    score: int
    contributions: tuple[int, ...]
    salt: bytes


@dataclass
class Play:
    """A task with `people` staked (STAKE each unless `stakes`), driven by the tests."""

    people: list[str]
    alliance: Alliance
    ballots: dict[tuple[int, str], Ballot] = field(default_factory=dict)
    round: int = -1
    allotment: tuple[int, int] = (0, 0)

    @classmethod
    def open(cls, count: int = 5, stakes: Sequence[int] | None = None, **params: Any) -> Play:
        people = addresses(count)
        play = cls(people, Alliance(make_params(**params), CREATOR, now=1_000))
        for account, amount in zip(people, stakes or [STAKE] * count, strict=True):
            play.call("stake", account, amount, SAMPLES, DATA)
        return play

    def call(self, name: str, *args: Any) -> Any:
        """Call the model and check the books balance afterwards (also after a revert)."""
        try:
            return getattr(self.alliance, name)(*args)
        finally:
            assert self.alliance.audit() == []

    def seed_for(self, roles: dict[str, Role]) -> bytes:
        """The first seed keccak(i) that gives each named account its role in the next round."""
        a = self.alliance
        p = a.params
        upcoming = a.task.rounds_started
        total = a.total_stake()
        for i in range(200_000):
            seed = keccak(i.to_bytes(32, "big"))
            if all(
                role_of(
                    seed,
                    account,
                    s if (s := a.stake_at(account, upcoming)) >= p.min_stake else 0,
                    total,
                    p.proposers_per_round,
                    p.voters_per_round,
                )
                is role
                for account, role in roles.items()
            ):
                return seed
        raise AssertionError(f"no seed gives {roles}")

    def start(self, roles: dict[str, Role] | None = None) -> int:
        """Start the next round with these roles (the others as the seed falls)."""
        self.round = self.call("start_round", self.seed_for(roles or {}))
        for account, role in (roles or {}).items():
            assert self.alliance.role_of(self.round, account) is role
        return self.round

    def enter(self, phase: Phase) -> None:
        """Move the clock to the first second of `phase` of the current round."""
        r = self.alliance.rounds[self.round]
        starts = {
            Phase.COMMITTING: r.training_ends,
            Phase.REVEALING: r.commit_ends,
            Phase.FINALIZABLE: r.reveal_ends,
        }
        self.alliance.now = max(self.alliance.now, starts[phase])
        assert self.alliance.phase_of(self.round) is phase

    def submit(self, *who: str) -> None:
        for account in who:
            self.call("submit_update", account, self.round, keccak(account.encode()), 100)

    def commit(
        self,
        account: str,
        score: int,
        contributions: Sequence[int] = (),
        aggregate_hash: bytes = H,
    ) -> None:
        """Commit a vote (moves to the commit phase if still training)."""
        if self.alliance.phase_of(self.round) is Phase.TRAINING:
            self.enter(Phase.COMMITTING)
        salt = keccak(f"salt/{self.round}/{account}".encode())
        values = tuple(contributions)
        digest = vote_commitment(
            self.alliance.task_id, self.round, account, aggregate_hash, score, salt, values
        )
        self.call("commit_vote", account, self.round, digest)
        self.ballots[(self.round, account)] = Ballot(aggregate_hash, score, values, salt)

    def reveal(self, *who: str) -> None:
        """Reveal the named ballots (all of the round's, in commit order, by default)."""
        if self.alliance.phase_of(self.round) is Phase.COMMITTING:
            self.enter(Phase.REVEALING)
        keys = [(self.round, a) for a in who] or [k for k in self.ballots if k[0] == self.round]
        for key in keys:
            b = self.ballots[key]
            self.call(
                "reveal_vote", key[1], key[0], b.aggregate_hash, b.score, b.contributions, b.salt
            )

    def finalize(self) -> Outcome:
        """Finalize the round; `allotment` keeps what it allotted (proposers, voters)."""
        if self.alliance.phase_of(self.round) is not Phase.FINALIZABLE:
            self.enter(Phase.FINALIZABLE)
        outcome: Outcome = self.call("finalize_round", FINALIZER, self.round)
        r = self.alliance.rounds[self.round]
        self.allotment = (r.proposer_reward_left, r.voter_reward_left)
        return outcome

    def settle_all(self) -> dict[str, Settled]:
        """Settle everyone; each account's settlement of the current round."""
        for account in self.people:
            self.call("settle", account)
        return {s.account: s for s in self.alliance.settlements if s.round == self.round}

    def weight(self, account: str) -> int:
        """The account's stake in the round (the base of its slashes)."""
        return self.alliance.record_of(self.round, account).weight

    def voter_weight(self, account: str) -> int:
        """The weight of the account's vote in the round."""
        return self.alliance.voter_weight(self.round, self.alliance.record_of(self.round, account))
