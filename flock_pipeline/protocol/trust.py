"""The screen's trust input of a finalized round: what the round's voters said of each update."""

from __future__ import annotations

from collections.abc import Sequence

from flock_pipeline.protocol.tally import Outcome, RevealedVote, tally_votes
from flock_pipeline.protocol.vote import SCORE_SCALE

__all__ = ["trust_scores"]


def trust_scores(
    votes: Sequence[RevealedVote], proposers_by_index: Sequence[str]
) -> dict[str, float]:
    """Each proposer's stake-weighted mean contribution (in [-1, 1]) over the voters that
    revealed the round's aggregate hash with one contribution per update, accepting or
    rejecting, each voter's own update left out.

    `votes` in reveal order (the aggregate is the leading hash, as the contract tracks it);
    `proposers_by_index` are the round's proposers by submission index, and a voter's own
    update is the one it proposed (addresses compared case-insensitively). A rejected round says
    as much about its updates as an accepted one (label flippers mostly get their rounds
    rejected), so both count; a Void round has no aggregate and gives nothing, and a proposer
    that only scored itself is left out. Sums are integers and each mean is one correctly
    rounded division, so every reader gets the same floats.
    """
    count = len(proposers_by_index)
    tally = tally_votes(votes)
    if count == 0 or tally.outcome() is Outcome.VOID:
        return {}
    scoring = [
        v for v in votes if v.aggregate_hash == tally.leading and len(v.contributions) == count
    ]
    owner = {p.lower(): i for i, p in enumerate(proposers_by_index)}
    out: dict[str, float] = {}
    for index, proposer in enumerate(proposers_by_index):
        peers = [v for v in scoring if owner.get(v.voter.lower()) != index]
        weight = sum(v.weight for v in peers)
        if weight:
            total = sum(v.weight * v.contributions[index] for v in peers)
            out[proposer] = total / (weight * SCORE_SCALE)
    return out
