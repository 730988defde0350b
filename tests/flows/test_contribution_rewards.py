"""Contribution-based rewards through the real flow (`flock run`, anvil): a free rider and a
copier are flagged by the voters, earn nothing for their updates and lose their stake whether
their round is accepted or rejected, honest proposers are paid by stake x contribution, label
flippers lose the trust of later rounds, and a dishonest voter is never paid for its vote.

Each situation is constructed, not found on one machine's trajectory: with as many expected
proposers and voters as participants and equal stakes, sortition makes every participant both
in every round whatever the chain's seed (its odds are capped at one; the only slashes here take
a participant below min_stake, which leaves the others' stakes equal). IID partitions make every
honest voter judge alike; a round is rejected by adding an unscreened Gaussian-noise update that
wrecks any aggregate it is part of.
"""

from __future__ import annotations

import itertools
import re

import pytest
from flow_helpers import BPS, TOKEN, check_settlements, open_chain, run_task

from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.attacks.votes import VOTE_RESOLUTION
from flock_pipeline.chain import VoteState

# `flock` subprocesses use the session's Prefect server (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("prefect_api")

N = 6
STAKE = 100 * TOKEN
TASK = {
    "participants": N,
    "rounds": 1,
    "data": {"dataset": "digits"},
    "partition": {"scheme": "iid"},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 5},
    "privacy": {"enabled": False},
    "chain": {"proposers_per_round": N, "voters_per_round": N},
}
PENALIZED = {"p1": "free_rider", "p2": "copy"}
NOISE = {"kind": "gaussian_noise", "sigma": 1.0}
# Without the two outlier checks the screen keeps the noise update: the aggregate carries a
# sixth of N(0, 1) per weight, which every honest voter measures as far worse than the model.
UNSCREENED = {"screen": {"max_norm_ratio": None, "min_cosine": None}}


def _settle(tmp_path, summary):
    node, client = open_chain(tmp_path / "d")
    try:
        split = check_settlements(summary, client, STAKE)
        task_id = summary["task"]["task_id"]
        records = {
            (r["round"], p["id"]): client.record_of(task_id, r["round"] - 1, p["address"])
            for r in summary["rounds"]
            for p in r["participants"]
        }
    finally:
        node.down()
    return split, records


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["accepted", "rejected"])
def test_free_riders_and_copiers_are_flagged_unpaid_and_penalized(tmp_path, outcome):
    attacks = {"p1": {"kind": "free_rider"}, "p2": {"kind": "copier", "copy_from": None}}
    config = {**TASK, "attacks": attacks}
    if outcome == "rejected":
        config = {**config, "attacks": {**attacks, "p3": NOISE}, "aggregation": UNSCREENED}
    summary = run_task(tmp_path, config)
    split, records = _settle(tmp_path, summary)

    (r,) = summary["rounds"]
    assert r["outcome"] == outcome
    people = {p["id"]: p for p in r["participants"]}
    assert {p["role"] for p in people.values()} == {"both"}
    assert summary["final"]["honest_slashes"] == 0
    penalty = STAKE * summary["config"]["chain"]["penalty_bps"] // BPS
    for pid, p in people.items():
        mine = split[(1, p["address"].lower())]
        if pid in PENALIZED:
            # The screen left it out and every voter scored it -1: flagged by the stake.
            assert p["screened"] == PENALIZED[pid] == r["screened"][pid]
            assert p["flagged"] is True
            assert mine.proposer_reward == 0  # nothing for its update, accepted or rejected
            assert int(p["slashed"]) == penalty  # penalty_bps of its round stake
        else:
            assert p["flagged"] is False
            assert p["slashed"] == "0"
        # every voter judged alike (the round's aggregate, the winning side): all paid as voters
        assert records[(1, pid)].vote is VoteState.REVEALED
        assert p["vote"]["aggregate_hash"] == r["aggregate_hash"]
        assert p["vote"]["accept"] == (outcome == "accepted")
        assert mine.voter_reward > 0

    proposers = set(people)
    for v in people.values():
        if v["vote"]["accept"]:  # an accepting voter scores every other proposer
            assert set(v["vote"]["contributions"]) == proposers
            assert v["vote"]["contributions"][v["id"]] == 0.0  # nobody scores itself
            assert records[(1, v["id"])].scored

    # Honest proposers are paid by stake x contribution (their stakes are equal, so by
    # contribution alone), exactly the positive ones and only in an accepted round.
    paid = {pid: split[(1, p["address"].lower())].proposer_reward for pid, p in people.items()}
    for pid, p in people.items():
        deserves = outcome == "accepted" and not p["flagged"] and (p["contribution"] or 0) > 0
        assert (paid[pid] > 0) == deserves, (pid, p["contribution"], paid[pid])
    weights = {pid: records[(1, pid)].weight for pid in people}
    assert set(weights.values()) == {STAKE}
    for a, b in itertools.pairwise(sorted(pid for pid in paid if paid[pid] > 0)):
        share_a = weights[a] * people[a]["contribution"]
        share_b = weights[b] * people[b]["contribution"]
        assert paid[a] / paid[b] == pytest.approx(share_a / share_b, rel=1e-6)


@pytest.mark.slow
def test_label_flippers_lose_the_trust_of_later_rounds(tmp_path):
    """The flow's trust check reads every revealing voter's contributions on chain: in every
    round, the proposers left out as distrusted are exactly those whose trust scores of earlier
    rounds (as summary.json reports them) put their trust below min_trust."""
    config = {
        **TASK,
        "rounds": 5,
        "attacks": {"p1": {"kind": "label_flip"}, "p2": {"kind": "label_flip"}},
        # Flippers measure about -1.3..-2 per round here, honest proposers +0.5..+0.9: a
        # threshold halfway leaves neither side near it.
        "aggregation": {"screen": {"min_trust": -0.5}},
    }
    summary = run_task(tmp_path, config)
    split, _ = _settle(tmp_path, summary)

    screen = Screen(**{k: v for k, v in summary["config"]["aggregation"]["screen"].items()
                       if k != "enabled"})  # fmt: skip
    assert screen.min_trust == -0.5
    history: list[dict[str, float]] = []
    distrusted = []
    for r in summary["rounds"]:
        people = {p["id"]: p for p in r["participants"]}
        assert {p["role"] for p in people.values()} == {"both"}
        expected = {
            pid for pid in people
            if (t := screen.trust(history, pid)) is not None and t < screen.min_trust
        }  # fmt: skip
        left_out = {pid for pid, reason in r["screened"].items() if reason == "distrusted"}
        assert left_out == expected, (r["round"], history)
        for pid in left_out:
            assert people[pid]["screened"] == "distrusted"
            assert people[pid]["flagged"] is False  # left out, not penalized
            assert people[pid]["slashed"] == "0"
            assert split[(r["round"], people[pid]["address"].lower())].proposer_reward == 0
            distrusted.append(pid)
        scored = {pid: p["trust_score"] for pid, p in people.items()
                  if p["trust_score"] is not None}  # fmt: skip
        if scored:
            history.append(scored)
    assert distrusted and set(distrusted) <= {"p1", "p2"}, distrusted
    assert summary["final"]["honest_slashes"] == 0


@pytest.mark.slow
def test_on_a_shared_validation_set_a_reversed_vote_is_never_paid(tmp_path):
    """``data.validation: shared``: the task commits its validation set's DVC hash on chain and
    every honest voter measures the same score and contributions on it, so the dishonest voter's
    reversed vote is on the losing side whenever it differs: never paid, and never slashed (it
    revealed the same aggregate; only its judgement differs)."""
    from flock_pipeline.runtime.world import validation_hash

    config = {
        **TASK,
        "rounds": 3,
        "data": {"dataset": "digits", "validation": "shared", "validation_per_class": 30},
        "attacks": {"p1": {"kind": "dishonest_voter"}},
        "aggregation": {"screen": {"min_trust": None}},  # the votes alone, no trust exclusions
    }
    summary = run_task(tmp_path, config)

    committed = summary["task"]["validation_dataset_hash"]
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", committed)  # DVC's hash of a folder
    node, client = open_chain(tmp_path / "d")
    try:
        uri = client.task_config(summary["task"]["task_id"]).metadata_uri
    finally:
        node.down()
    assert validation_hash(uri) == committed
    split, _ = _settle(tmp_path, summary)

    reversed_votes = 0
    for r in summary["rounds"]:
        people = {p["id"]: p for p in r["participants"]}
        honest = {pid: p for pid, p in people.items() if pid != "p1"}
        for (a, va), (b, vb) in itertools.combinations(honest.items(), 2):
            assert va["vote"]["score"] == vb["vote"]["score"]
            assert va["vote"]["aggregate_hash"] == vb["vote"]["aggregate_hash"]
            ca, cb = va["vote"]["contributions"], vb["vote"]["contributions"]
            # each leaves only its own update unscored
            assert {k: v for k, v in ca.items() if k not in (a, b)} == {
                k: v for k, v in cb.items() if k not in (a, b)
            }
        for p in honest.values():
            assert p["role"] == "both" and p["slashed"] == "0"
            assert split[(r["round"], p["address"].lower())].voter_reward > 0  # the majority
        liar = people["p1"]
        if liar["vote"] is None:  # slashed below min_stake in an earlier round: no role
            assert liar["role"] == "none"
            continue
        measured = next(iter(honest.values()))["vote"]
        lied = liar["vote"]
        assert lied["aggregate_hash"] == measured["aggregate_hash"]
        if abs(measured["score"]) < VOTE_RESOLUTION:
            continue  # rounds to a zero score: the reversal may land on the same side
        reversed_votes += 1
        assert lied["score"] == -measured["score"]
        assert lied["accept"] != measured["accept"] == (r["outcome"] == "accepted")
        assert split[(r["round"], liar["address"].lower())].voter_reward == 0
        assert int(liar["slashed"]) == 0
    assert reversed_votes >= 1
