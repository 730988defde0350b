"""summary.json is one pydantic model for both engines, and its exported JSON Schema is current."""

from __future__ import annotations

import json
from pathlib import Path

from flock_pipeline.report import SCHEMA_PATH, RunReport, schema

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_json_schema_is_the_report_models_schema():
    committed = json.loads((ROOT / SCHEMA_PATH).read_text())
    assert committed == schema(), "run `python -m flock_pipeline.report` and commit the schema"


def test_the_schema_names_what_a_round_decided_and_what_it_paid():
    props = schema()["$defs"]["RoundRecord"]["properties"]
    assert set(props["outcome"]["enum"]) == {"accepted", "rejected", "void"}
    participant = schema()["$defs"]["ParticipantRound"]["properties"]
    assert {"reward", "slashed", "vote", "flagged", "screened", "role"} <= set(participant)


def test_a_report_round_trips_through_json_with_the_global_key():
    data = {
        "task": {"engine": "simulation", "name": "s", "dataset": "digits", "participants": 1,
                 "rounds": 1, "data_dir": ".flock"},
        "config": {},
        "partition": {"p0": [1, 2]},
        "rounds": [{
            "round": 1, "outcome": "void", "accepted": False, "seed": "0x00",
            "global": {"loss": 2.3, "accuracy": 0.1}, "global_model_hash": "0x01",
            "seconds": 1.0,
            "participants": [{"id": "p0", "address": "0xabc", "role": "both"}],
        }],
        "claimed": {"p0": "0"},
        "final": {"accuracy": 0.1, "loss": 2.3, "model_hash": "0x01", "accepted_rounds": 0,
                  "void_rounds": 1, "honest_slashes": 0},
    }  # fmt: skip
    report = RunReport.model_validate(data)
    assert report.rounds[0].global_.accuracy == 0.1
    dumped = report.dump()
    assert dumped["rounds"][0]["global"] == {"loss": 2.3, "accuracy": 0.1}
    assert RunReport.model_validate(dumped) == report
