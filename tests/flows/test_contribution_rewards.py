"""Contribution-based rewards through the real flow: a free rider and a copier are flagged by
every voter, paid nothing and penalized on chain whether their round is accepted or rejected,
while honest proposers are paid by stake x contribution."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml
from flow_helpers import load_summary, open_chain, run_flock

TOKEN = 10**18
ATTACKERS = {"p1": "free_rider", "p2": "copier"}
# Six participants on digits, three proposers and three voters expected per round, DP off.
TASK = {
    "participants": 6,
    "data": {"dataset": "digits"},
    "partition": {"scheme": "iid"},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 2},
    "privacy": {"enabled": False},
    "chain": {"proposers_per_round": 3, "voters_per_round": 3},
}


def _run_task(tmp_path, config: dict) -> dict:
    """`flock run` on ``config`` (a task file); its summary.json."""
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    proc = run_flock(tmp_path, "run", "-c", str(path), "--data-dir", str(tmp_path / "d"),
                     "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_summary(out)


@pytest.mark.slow
def test_free_riders_and_copiers_are_flagged_unpaid_and_penalized(tmp_path):
    config = {
        **TASK,
        "rounds": 3,
        "seed": 4,
        "attacks": {"p1": {"kind": "free_rider"}, "p2": {"kind": "copier", "copy_from": None}},
    }
    summary = _run_task(tmp_path, config)

    penalized = {True: 0, False: 0}  # by round outcome
    paid_honest = 0
    stake = 100 * TOKEN
    stakes = {f"p{i}": stake for i in range(config["participants"])}  # at each round's start
    for r in summary["rounds"]:
        proposers = [p for p in r["participants"] if p["role"] == "proposer"]
        copier_had_a_source = any(p["id"] != "p2" for p in proposers)
        for p in proposers:
            kind = ATTACKERS.get(p["id"])
            if kind == "free_rider" or (kind == "copier" and copier_had_a_source):
                # every voter flags it, before the strategy sees it
                assert p["flagged"] == ("free_rider" if kind == "free_rider" else "copy")
                assert r["flagged"][p["id"]] == p["flagged"]
                if r["accepted"]:
                    assert p["contribution"] == -1.0  # the accepting voters' stake-weighted mean
                # the flag vote of every voter penalizes it, accepted round or not
                assert p["reward"] == "0"
                assert int(p["slashed"]) == stake  # penalty_bps 100%: all of its round stake
                penalized[r["accepted"]] += 1
            elif kind is None:
                assert p["flagged"] is None
                if r["accepted"] and p["contribution"] > 0:
                    assert int(p["reward"]) > 0
                    paid_honest += 1
        # rewards split exactly as stake x on-chain contribution
        paid = [p for p in proposers if int(p["reward"]) > 0]
        for a, b in itertools.pairwise(paid):
            ratio = int(a["reward"]) / int(b["reward"])
            expected = (stakes[a["id"]] * a["contribution"]) / (stakes[b["id"]] * b["contribution"])
            assert ratio == pytest.approx(expected, rel=1e-6)
        for p in r["participants"]:  # slashes settle after the round: they count from the next
            stakes[p["id"]] -= int(p["slashed"])
        for v in r["participants"]:
            if v["role"] == "voter" and v["vote"] and v["vote"]["accept"]:
                scores = v["vote"]["contributions"]
                assert set(scores) == {p["id"] for p in proposers}
    # seed 4: one of them proposes in a rejected round, the other in an accepted one; once
    # penalized they have no stake left, hence no role
    assert penalized == {False: 1, True: 1}
    assert paid_honest >= 1


@pytest.mark.slow
def test_label_flippers_lose_the_trust_of_later_rounds(tmp_path):
    """The flow's trust check reads every revealing voter's contributions on chain, accepting or
    rejecting: in every round, the proposers left out as distrusted are exactly those whose
    trust scores of earlier rounds (as summary.json reports them) put their trust below
    min_trust, and rejected rounds count."""
    from flock_pipeline.aggregation.screen import Screen

    config = {
        **TASK,
        "rounds": 5,
        "seed": 4,
        "attacks": {"p1": {"kind": "label_flip"}, "p2": {"kind": "label_flip"}},
    }
    summary = _run_task(tmp_path, config)

    # Sortition draws each role independently, so who can be judged when depends on the seed.
    screen, history = Screen(), []
    distrusted, rejected_scored = [], False
    for r in summary["rounds"]:
        proposers = {p["id"]: p for p in r["participants"] if p["role"] == "proposer"}
        expected = {
            pid for pid in proposers
            if (t := screen.trust(history, pid)) is not None and t < screen.min_trust
        }  # fmt: skip
        flagged = {pid for pid, reason in r["flagged"].items() if reason == "distrusted"}
        assert flagged == expected, (r["round"], history)
        for pid in flagged:
            assert proposers[pid]["flagged"] == "distrusted"
            assert proposers[pid]["reward"] == "0"  # left out: unpaid
            distrusted.append(pid)
        scored = {pid: p["trust_score"] for pid, p in proposers.items()
                  if p["trust_score"] is not None}  # fmt: skip
        if scored:
            history.append(scored)
            rejected_scored = rejected_scored or not r["accepted"]
    assert distrusted and set(distrusted) <= {"p1", "p2"}, distrusted
    assert rejected_scored  # a rejected round's scores are part of the history


@pytest.mark.slow
def test_on_a_shared_validation_set_a_reversed_vote_is_always_the_losing_one(tmp_path):
    """``data.validation: shared``: the task commits its validation set's DVC hash on chain,
    every honest voter measures the same score and contributions, so a dishonest voter is on
    the losing side (unpaid, slashed) whenever its reversed vote differs."""
    from flows.world import validation_hash

    config = {
        **TASK,
        "rounds": 3,
        "seed": 4,
        "data": {"dataset": "digits", "validation": "shared", "validation_per_class": 30},
        "attacks": {"p1": {"kind": "dishonest_voter"}},
    }
    summary = _run_task(tmp_path, config)

    committed = summary["task"]["validation_dataset_hash"]
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", committed)  # DVC's hash of a folder
    node, client = open_chain(tmp_path / "d")
    try:
        uri = client.task_config(summary["task"]["task_id"]).metadata_uri
    finally:
        node.down()
    assert validation_hash(uri) == committed

    reversed_votes = 0
    for r in summary["rounds"]:
        voters = {p["id"]: p for p in r["participants"] if p["role"] == "voter" and p["vote"]}
        honest = [v["vote"] for pid, v in voters.items() if pid != "p1"]
        for vote in honest[1:]:
            assert vote["score"] == honest[0]["score"]
            assert vote["contributions"] == honest[0]["contributions"]
        liar = voters.get("p1")
        if liar is not None and honest and liar["vote"]["accept"] != honest[0]["accept"]:
            assert liar["reward"] == "0" and int(liar["slashed"]) > 0
            reversed_votes += 1
    assert reversed_votes >= 1
