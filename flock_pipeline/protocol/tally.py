"""A round's revealed votes tallied as FlockAlliance tallies them: per aggregate hash, in reveal
order, with the outcome rule and each update's flag and part.

Integers only, with the contract's arithmetic (mulDiv is floor(a * b / c)), so the simulation,
the flows and the contract reach the same decisions from the same votes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from flock_pipeline.protocol.vote import SCORE_SCALE

__all__ = [
    "ZERO_HASH",
    "Outcome",
    "RevealedVote",
    "RoundTally",
    "Score",
    "Tally",
    "UpdateResult",
    "flag_denominator",
    "judge_update",
    "mul_div",
    "outcome_of",
    "pay_denominator",
    "tally_votes",
]

ZERO_HASH = bytes(32)


class Outcome(IntEnum):
    """How a round ended (FlockAlliance.Outcome)."""

    PENDING = 0
    ACCEPTED = 1
    REJECTED = 2
    VOID = 3


def mul_div(a: int, b: int, c: int) -> int:
    """floor(a * b / c) of non-negative integers, as OpenZeppelin's Math.mulDiv."""
    return a * b // c


@dataclass(frozen=True)
class RevealedVote:
    """One revealed vote: the voter's weight (its round weight), the aggregate hash it computed,
    its score, its contributions (one per update by submission index, or none for a rejecting
    vote) and the submission index of its own update if it also proposed (own_index)."""

    voter: str
    weight: int
    aggregate_hash: bytes
    score: int
    contributions: tuple[int, ...] = ()
    own_index: int | None = None

    @property
    def accept(self) -> bool:
        """A score of zero accepts: only a harmful aggregate is rejected."""
        return self.score >= 0

    @property
    def scored(self) -> bool:
        """Whether the vote carried contributions, and so takes part in the flag vote."""
        return bool(self.contributions)


@dataclass
class Tally:
    """The revealed stake behind one aggregate hash (FlockAlliance.Tally)."""

    weight: int = 0
    accept_weight: int = 0
    reject_weight: int = 0
    flag_voter_weight: int = 0


@dataclass
class Score:
    """What one hash's voters said of one update: sum of weight * contribution over accepting
    voters, and the stake of the voters (either side) that flagged it (FlockAlliance.Score)."""

    contribution: int = 0
    flag_weight: int = 0


@dataclass(frozen=True)
class UpdateResult:
    """One update as roundUpdates reports it (FlockAlliance.UpdateView)."""

    proposer: str
    weight: int
    contribution: int
    flag_weight: int
    flagged: bool
    part: int


def outcome_of(revealed_weight: int, leading: Tally) -> Outcome:
    """The outcome rule: Void without reveals, without a strict majority hash or on an
    accept/reject tie of that hash; else its voters' stake decides."""
    if (
        revealed_weight == 0
        or 2 * leading.weight <= revealed_weight
        or leading.accept_weight == leading.reject_weight
    ):
        return Outcome.VOID
    return Outcome.ACCEPTED if leading.accept_weight > leading.reject_weight else Outcome.REJECTED


def _self_vote(vote: RevealedVote | None, aggregate_hash: bytes) -> RevealedVote | None:
    """The proposer's own vote if it revealed the aggregate: it leaves both denominators."""
    if vote is not None and vote.aggregate_hash == aggregate_hash:
        return vote
    return None


def flag_denominator(
    tally: Tally, proposer_vote: RevealedVote | None, aggregate_hash: bytes
) -> int:
    """The scoring stake of the aggregate's voters other than the proposer itself."""
    own = _self_vote(proposer_vote, aggregate_hash)
    return tally.flag_voter_weight - (own.weight if own is not None and own.scored else 0)


def pay_denominator(tally: Tally, proposer_vote: RevealedVote | None, aggregate_hash: bytes) -> int:
    """The accepting stake of the aggregate's voters other than the proposer itself."""
    own = _self_vote(proposer_vote, aggregate_hash)
    return tally.accept_weight - (own.weight if own is not None and own.accept else 0)


def judge_update(
    outcome: Outcome,
    tally: Tally,
    score: Score,
    weight: int,
    proposer_vote: RevealedVote | None,
    aggregate_hash: bytes,
) -> tuple[bool, int]:
    """(flagged, part) of one update of a round with this outcome and aggregate.

    Flagged: more than half of the other scoring stake gave it exactly -SCORE_SCALE. Part: in an
    accepted round, an unflagged update with a positive score gets its proposer's weight times
    the stake-weighted mean contribution of the other accepting voters (SCORE_SCALE fixed point).
    Nothing is derived before finalize or in a Void round.
    """
    if outcome in (Outcome.PENDING, Outcome.VOID):
        return False, 0
    flagged = 2 * score.flag_weight > flag_denominator(tally, proposer_vote, aggregate_hash)
    pay_den = pay_denominator(tally, proposer_vote, aggregate_hash)
    if outcome is Outcome.ACCEPTED and not flagged and score.contribution > 0 and pay_den > 0:
        return flagged, mul_div(weight, score.contribution, pay_den)
    return flagged, 0


@dataclass
class RoundTally:
    """One round's reveals in reveal order, accumulated as revealVote accumulates them.

    `leading` is the contract's Round.aggregateHash: a hash takes the lead only with strictly
    more weight than the leader, so on a tie the first to reach the weight keeps it.
    """

    tallies: dict[bytes, Tally] = field(default_factory=dict)
    scores: dict[bytes, dict[int, Score]] = field(default_factory=dict)
    votes: dict[str, RevealedVote] = field(default_factory=dict)
    revealed_weight: int = 0
    leading: bytes = ZERO_HASH

    def add(self, vote: RevealedVote) -> None:
        """Count one vote (already checked as revealVote checks it)."""
        tally = self.tallies.setdefault(vote.aggregate_hash, Tally())
        tally.weight += vote.weight
        self.revealed_weight += vote.weight
        if vote.accept:
            tally.accept_weight += vote.weight
        else:
            tally.reject_weight += vote.weight
        if vote.scored:
            tally.flag_voter_weight += vote.weight
            scores = self.scores.setdefault(vote.aggregate_hash, {})
            for index, c in enumerate(vote.contributions):
                if index == vote.own_index:
                    continue  # nobody scores its own update
                s = scores.setdefault(index, Score())
                if c == -SCORE_SCALE:
                    s.flag_weight += vote.weight
                if vote.accept:
                    s.contribution += vote.weight * c
        if tally.weight > self.tally(self.leading).weight:
            self.leading = vote.aggregate_hash
        self.votes[vote.voter] = vote

    def tally(self, aggregate_hash: bytes) -> Tally:
        """The tally of one hash (zero if nobody revealed it)."""
        found = self.tallies.get(aggregate_hash)
        return Tally() if found is None else replace(found)

    def score(self, aggregate_hash: bytes, index: int) -> Score:
        """What the voters of one hash said of update `index` (zero if nobody scored it)."""
        found = self.scores.get(aggregate_hash, {}).get(index)
        return Score() if found is None else replace(found)

    def outcome(self) -> Outcome:
        """The outcome finalizeRound would decide from these reveals."""
        return outcome_of(self.revealed_weight, self.tally(self.leading))

    def judge(self, index: int, proposer: str, weight: int, outcome: Outcome) -> UpdateResult:
        """Update `index` (its proposer and weight) judged under the leading hash, for a round
        finalized with `outcome` (Pending: not finalized, nothing derived)."""
        h = self.leading
        s = self.score(h, index)
        flagged, part = judge_update(outcome, self.tally(h), s, weight, self.votes.get(proposer), h)
        return UpdateResult(proposer, weight, s.contribution, s.flag_weight, flagged, part)

    def results(
        self, updates: Sequence[tuple[str, int]], outcome: Outcome | None = None
    ) -> list[UpdateResult]:
        """Each update, (proposer, weight) by submission index, judged under the leading hash;
        `outcome` defaults to the one these reveals decide."""
        decided = self.outcome() if outcome is None else outcome
        return [self.judge(i, p, w, decided) for i, (p, w) in enumerate(updates)]


def tally_votes(votes: Iterable[RevealedVote]) -> RoundTally:
    """The tally of a round's revealed votes, in reveal order."""
    tally = RoundTally()
    for vote in votes:
        tally.add(vote)
    return tally
