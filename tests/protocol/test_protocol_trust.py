"""The screen's trust input: per aggregate hash, both sides, nobody scoring itself."""

from __future__ import annotations

from fractions import Fraction

from protocol_helpers import FLAG, FULL, H2, H

from flock_pipeline.protocol import RevealedVote, trust_scores

P0 = "0x00000000000000000000000000000000000000A0"
P1 = "0x00000000000000000000000000000000000000A1"


def vote(
    voter: str, weight: int, score: int, contributions: tuple[int, ...], h: bytes = H
) -> RevealedVote:
    return RevealedVote(voter, weight, h, score, contributions)


def test_mean_over_both_sides_of_the_aggregate_each_voter_skipping_its_own_update() -> None:
    votes = [
        vote(
            P0, 5, FULL, (FULL, FULL // 3)
        ),  # P0 proposed update 0: its 1.0 for itself is left out
        vote("0x00000000000000000000000000000000000000b1", 3, FULL, (FULL // 2, FLAG)),
        vote("0x00000000000000000000000000000000000000b2", 2, -FULL, (FLAG, FULL)),
        vote("0x00000000000000000000000000000000000000b3", 9, FULL, (FULL, FULL), H2),  # minority
        vote("0x00000000000000000000000000000000000000b4", 1, -1, ()),  # no contributions
    ]
    scores = trust_scores(votes, [P0.lower(), P1])
    s = Fraction(FULL)
    assert scores[P0.lower()] == float((3 * Fraction(FULL // 2) - 2 * s) / (5 * s))
    assert scores[P1] == float((5 * Fraction(FULL // 3) - 3 * s + 2 * s) / (10 * s))


def test_a_void_round_and_a_round_without_updates_give_nothing() -> None:
    tie = [vote(P0, 2, FULL, (FULL,)), vote(P1, 2, -1, (FULL,))]
    assert trust_scores(tie, [P0]) == {}
    assert trust_scores([], [P0]) == {}
    assert trust_scores([vote(P0, 2, FULL, ())], []) == {}


def test_a_proposer_scored_only_by_itself_is_left_out() -> None:
    votes = [vote(P0, 5, FULL, (FULL, FULL)), vote(P1, 1, FULL, (FULL, 0))]
    assert trust_scores(votes, [P0, "0x00000000000000000000000000000000000000c0"]) == {
        P0: 1.0,
        "0x00000000000000000000000000000000000000c0": 5 / 6,
    }
    assert trust_scores([vote(P0, 5, FULL, (FULL,))], [P0]) == {}
