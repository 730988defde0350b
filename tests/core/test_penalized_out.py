"""A participant the protocol slashed to nothing takes no part in the rounds after.

Its round's stake checkpoint is taken before its slash settles (settlement is lazy: on its next
action), so sortition may still name it for the next round; the run must go on without it
instead of failing on a submission the contract refuses (InsufficientStake).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flock_pipeline.config import load_config
from flock_pipeline.report import RunReport
from flock_pipeline.simulation import run_simulation

TOKEN = 10**18


def test_a_free_rider_slashed_to_nothing_takes_no_part_in_later_rounds(tmp_path: Path) -> None:
    # Prepare: everyone both in every round (as many expected proposers and voters as
    # participants, equal stakes), the free rider penalized at 100 % in round 1
    config = {
        "participants": 4,
        "rounds": 2,
        "data_dir": str(tmp_path / "flock"),
        "data": {"dataset": "digits"},
        "partition": {"scheme": "iid"},
        "model": {"name": "mlp"},
        "training": {"local_epochs": 1},
        "privacy": {"enabled": False},
        "chain": {"proposers_per_round": 4, "voters_per_round": 4, "penalty_bps": 10_000},
        "attacks": {"p1": {"kind": "free_rider"}},
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))

    # Execute
    report = RunReport.model_validate(run_simulation(load_config(path)).summary)

    # Assert
    first, second = report.rounds
    (rider,) = (p for p in first.participants if p.id == "p1")
    assert rider.flagged and int(rider.slashed) == 100 * TOKEN
    (later,) = (p for p in second.participants if p.id == "p1")
    assert later.update_hash is None and later.vote is None
    assert later.reward == "0" and later.slashed == "0"
    assert "p1" not in second.screened  # it submitted nothing to screen
    assert {p.role for p in second.participants if p.id != "p1"} == {"both"}
