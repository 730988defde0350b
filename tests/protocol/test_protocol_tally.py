"""The tally rules on plain vote lists: leading hash, outcome, flags and parts."""

from __future__ import annotations

import pytest
from protocol_helpers import FLAG, FULL, H2, H

from flock_pipeline.protocol import (
    ZERO_HASH,
    Outcome,
    RevealedVote,
    Tally,
    outcome_of,
    tally_votes,
)

H3 = b"\xcc" * 32


def vote(
    voter: str,
    weight: int,
    score: int = FULL,
    contributions: tuple[int, ...] = (),
    aggregate_hash: bytes = H,
    own_index: int | None = None,
) -> RevealedVote:
    return RevealedVote(voter, weight, aggregate_hash, score, contributions, own_index)


def test_the_first_hash_to_reach_a_weight_keeps_the_lead() -> None:
    assert tally_votes([vote("a", 5), vote("b", 5, aggregate_hash=H2)]).leading == H
    assert tally_votes([vote("b", 5, aggregate_hash=H2), vote("a", 5)]).leading == H2
    # a hash takes the lead only with strictly more weight
    later = tally_votes(
        [vote("a", 5), vote("b", 3, aggregate_hash=H2), vote("c", 3, aggregate_hash=H2)]
    )
    assert later.leading == H2
    assert tally_votes([]).leading == ZERO_HASH


@pytest.mark.parametrize(
    ("revealed", "leading", "expected"),
    [
        (0, Tally(), Outcome.VOID),  # nobody revealed
        (10, Tally(5, 5, 0, 0), Outcome.VOID),  # exactly half is no majority
        (10, Tally(6, 3, 3, 0), Outcome.VOID),  # accept/reject tie on the majority hash
        (10, Tally(6, 4, 2, 0), Outcome.ACCEPTED),
        (10, Tally(6, 2, 4, 0), Outcome.REJECTED),
        (6, Tally(6, 6, 0, 6), Outcome.ACCEPTED),
    ],
)
def test_outcome_rule(revealed: int, leading: Tally, expected: Outcome) -> None:
    assert outcome_of(revealed, leading) is expected


def test_a_zero_score_accepts() -> None:
    assert vote("a", 1, score=0).accept and not vote("a", 1, score=-1).accept


def test_each_hash_keeps_its_own_tally_and_scores() -> None:
    t = tally_votes(
        [
            vote("a", 4, FULL, (FULL, FULL // 2)),
            vote("b", 3, -1, (FLAG, 0)),  # rejecting voter of H: flags, adds no contribution
            vote("c", 2, FULL, (FLAG, FULL), aggregate_hash=H2),
            vote("d", 1, -1),  # rejecting without contributions: not in the flag vote
        ]
    )
    assert t.tally(H) == Tally(weight=8, accept_weight=4, reject_weight=4, flag_voter_weight=7)
    assert t.tally(H2) == Tally(weight=2, accept_weight=2, reject_weight=0, flag_voter_weight=2)
    assert t.revealed_weight == 10
    assert (t.score(H, 0).contribution, t.score(H, 0).flag_weight) == (4 * FULL, 3)
    assert (t.score(H, 1).contribution, t.score(H, 1).flag_weight) == (4 * (FULL // 2), 0)
    assert (t.score(H2, 0).contribution, t.score(H2, 0).flag_weight) == (-2 * FULL, 2)
    assert t.tally(H3) == Tally()


def test_nobody_scores_its_own_update() -> None:
    t = tally_votes([vote("p", 5, FULL, (FULL, FLAG), own_index=1), vote("q", 1, FULL, (0, 0))])
    # p's 1.0 for update 0 counts, its flag of its own update 1 does not
    assert t.score(H, 0).contribution == 5 * FULL
    assert t.score(H, 1).flag_weight == 0 and t.score(H, 1).contribution == 0


def test_part_is_weight_times_mean_contribution_of_the_other_accepting_voters() -> None:
    # p proposed update 0 and voted for H; it scored itself 1.0, which is skipped
    votes = [
        vote("p", 7, FULL, (FULL, FULL), own_index=0),
        vote("v", 3, FULL, (FULL // 2, FULL)),
        vote("w", 2, FULL, (FULL // 4, 0)),
        vote("r", 1, -FULL, (FULL, FULL)),  # rejecting: no contribution, no pay denominator
    ]
    t = tally_votes(votes)
    (u0, u1) = t.results([("p", 70), ("q", 40)], Outcome.ACCEPTED)
    # update 0: mean over v and w, (3 * 0.5 + 2 * 0.25) / 5 = 0.4, times weight 70
    assert u0.contribution == 3 * (FULL // 2) + 2 * (FULL // 4)
    assert u0.part == 70 * u0.contribution // 5 == 28 * FULL
    # update 1: q did not vote, so all accepting voters count: (7 + 3) / 12
    assert u1.part == 40 * (10 * FULL) // 12
    assert not u0.flagged and not u1.flagged


def test_flagged_needs_more_than_half_of_the_other_scoring_stake() -> None:
    # a rejecting voter's flag counts in the flag vote, not in the contribution
    half = tally_votes([vote("a", 2, -1, (FLAG,)), vote("b", 2, FULL, (FULL,))])
    (u,) = half.results([("p", 10)], Outcome.ACCEPTED)
    assert not u.flagged and u.part == 10 * (2 * FULL) // 2
    more = tally_votes([vote("a", 3, -1, (FLAG,)), vote("b", 2, FULL, (FULL,))])
    (u,) = more.results([("p", 10)], Outcome.ACCEPTED)
    assert u.flagged and u.part == 0
    # the proposer's own scoring stake leaves the denominator: 2 of the other 3 flag it
    own = tally_votes(
        [
            vote("p", 4, FULL, (FULL,), own_index=0),
            vote("a", 2, -1, (FLAG,)),
            vote("b", 1, FULL, (0,)),
        ]
    )
    (u,) = own.results([("p", 10)], Outcome.REJECTED)
    assert u.flagged and u.part == 0


def test_nothing_is_derived_before_finalize_in_a_void_or_for_a_rejected_round() -> None:
    t = tally_votes([vote("a", 3, FULL, (FLAG,)), vote("b", 1, FULL, (FULL,))])
    for outcome in (Outcome.PENDING, Outcome.VOID):
        (u,) = t.results([("p", 10)], outcome)
        assert not u.flagged and u.part == 0
    (u,) = t.results([("p", 10)], Outcome.REJECTED)
    assert u.flagged and u.part == 0  # flags count in a rejected round, parts do not
    (u,) = tally_votes([vote("b", 1, FULL, (FULL,))]).results([("p", 10)], Outcome.REJECTED)
    assert not u.flagged and u.part == 0


def test_an_update_nobody_else_accepted_has_no_part() -> None:
    t = tally_votes([vote("p", 5, FULL, (FULL,), own_index=0), vote("r", 1, -1, (FULL,))])
    (u,) = t.results([("p", 50)], Outcome.ACCEPTED)
    assert u.contribution == 0 and u.part == 0 and not u.flagged
