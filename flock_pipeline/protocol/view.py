"""What a finalized round means for each participant, as the report shows it.

Both engines build it from the same inputs, the round's outcome, its submissions (proposer by
index) and its revealed votes in reveal order, so the simulation's report and the flow's say
the same for the same votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flock_pipeline.protocol.tally import Outcome, RevealedVote, pay_denominator, tally_votes
from flock_pipeline.protocol.trust import trust_scores
from flock_pipeline.protocol.vote import SCORE_SCALE

__all__ = ["RoundView"]


@dataclass(frozen=True)
class RoundView:
    outcome: Outcome
    aggregate_hash: str
    """The hash with most of the revealed voting stake (0x00.. when nobody revealed)."""
    accept_weight: int
    reject_weight: int
    flagged: dict[str, bool]
    """Proposer id -> flagged by more than half of the other scoring stake."""
    contribution: dict[str, float | None]
    """Proposer id -> stake-weighted mean contribution over the other accepting voters
    (None when nobody else accepted)."""
    trust: dict[str, float]
    """Proposer id -> the screen's trust score of this round (empty when nobody scored)."""

    @classmethod
    def of(
        cls,
        outcome: Outcome,
        aggregate_hash: bytes,
        proposers: Sequence[str],
        reveals: Sequence[RevealedVote],
    ) -> RoundView:
        """The view of a round whose chain record says ``outcome`` and ``aggregate_hash``;
        ``proposers`` are the update indices' proposers, ``reveals`` in reveal order. A
        leading hash that the reveals do not give back is a reading error, not a vote."""
        tally = tally_votes(reveals)
        if reveals and tally.leading != bytes(aggregate_hash):
            raise RuntimeError(
                f"the reveals lead with 0x{tally.leading.hex()}, the chain records "
                f"0x{bytes(aggregate_hash).hex()}: the events read are not the round's"
            )
        h = tally.leading
        lead = tally.tally(h)
        results = tally.results([(p, 0) for p in proposers], outcome)
        contribution: dict[str, float | None] = {}
        for index, pid in enumerate(proposers):
            den = pay_denominator(lead, tally.votes.get(pid), h)
            score = tally.score(h, index)
            contribution[pid] = score.contribution / (den * SCORE_SCALE) if den > 0 else None
        trusted = (
            {} if outcome in (Outcome.VOID, Outcome.PENDING) else trust_scores(reveals, proposers)
        )
        return cls(
            outcome=outcome,
            aggregate_hash="0x" + h.hex(),
            accept_weight=lead.accept_weight,
            reject_weight=lead.reject_weight,
            flagged={pid: r.flagged for pid, r in zip(proposers, results, strict=True)},
            contribution=contribution,
            trust=trusted,
        )
