"""The report of a task run (summary.json), defined once for both engines.

``flock simulate`` and ``flock run`` run the same protocol and write this same model; the
simulation leaves out what only the real systems have (addresses on a chain, transactions,
MLflow versions, DVC hashes). Token amounts are decimal strings of the smallest unit. The JSON
Schema is exported to docs/report.schema.json (``python -m flock_pipeline.report``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_PATH",
    "FinalInfo",
    "Metrics",
    "ModelVersion",
    "ParticipantRound",
    "RoundRecord",
    "RunReport",
    "TaskInfo",
    "VoteRecord",
    "schema",
    "totals",
]

SCHEMA_PATH = Path("docs") / "report.schema.json"

RoleName = Literal["none", "proposer", "voter", "both"]
OutcomeName = Literal["accepted", "rejected", "void"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metrics(_Model):
    """Loss and accuracy of a model on one labelled set (None when the set is empty)."""

    loss: float | None
    accuracy: float | None


class VoteRecord(_Model):
    """What a voter revealed: the aggregate it recomputed, its judgement and its scores."""

    aggregate_hash: str
    score: float = Field(description="the judgement's score; >= 0 accepts")
    accept: bool
    contributions: dict[str, float] = Field(description="proposer id -> contribution score")


class ParticipantRound(_Model):
    """One participant in one round."""

    id: str
    address: str
    role: RoleName
    attack: str | None = None
    update_hash: str | None = None
    num_samples: int | None = None
    train_loss: float | None = None
    dataset_hash: str | None = Field(None, description="DVC hash of its data (flow only)")
    epsilon: float | None = None
    delta: float | None = None
    holdout: Metrics | None = Field(None, description="the new global model on its held-out split")
    vote: VoteRecord | None = None
    screened: str | None = Field(None, description="why the screen left its update out, if it did")
    flagged: bool = Field(False, description="flagged by most of the scoring stake")
    contribution: float | None = Field(
        None, description="stake-weighted mean contribution over the accepting voters"
    )
    trust_score: float | None = Field(None, description="mean contribution over all scorers")
    reward: str = "0"
    slashed: str = "0"


class ModelVersion(_Model):
    registered_name: str
    version: str
    run_id: str


class RoundRecord(_Model):
    """One round: who did what, the outcome the votes decided, what it paid and slashed."""

    round: int = Field(description="1-based")
    outcome: OutcomeName
    accepted: bool
    seed: str
    global_: Metrics = Field(alias="global", description="the global model after the round")
    aggregate_hash: str | None = Field(None, description="the hash most voting stake revealed")
    global_model_hash: str
    selected: list[str] = Field(default_factory=list)
    screened: dict[str, str] = Field(default_factory=dict)
    strategy_state: str | None = None
    central_epsilon: float | None = None
    accept_weight: str = "0"
    reject_weight: str = "0"
    finalize_tx: str | None = None
    finalize_gas: int | None = None
    model: ModelVersion | None = None
    seconds: float = Field(description="wall time of the round")
    participants: list[ParticipantRound]


class TaskInfo(_Model):
    engine: Literal["simulation", "flow", "workers"]
    name: str
    dataset: str
    participants: int
    rounds: int
    data_dir: str
    chain_id: int | None = None
    task_address: str | None = None
    token_address: str | None = None
    task_id: int | None = None
    validation_dataset_hash: str | None = None


class FinalInfo(_Model):
    accuracy: float | None
    loss: float | None
    model_hash: str
    accepted_rounds: int
    void_rounds: int
    honest_slashes: int = Field(description="participant-rounds of honest participants slashed")
    champion_version: str | None = None
    registered_name: str | None = None


class RunReport(_Model):
    """summary.json."""

    task: TaskInfo
    config: dict[str, Any]
    partition: dict[str, list[int]]
    rounds: list[RoundRecord]
    claimed: dict[str, str] = Field(description="participant id -> tokens claimed at the end")
    final: FinalInfo

    def dump(self) -> dict[str, Any]:
        """The report as plain JSON data, with the field names summary.json uses."""
        return dict(json.loads(self.model_dump_json(by_alias=True)))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.dump(), indent=2) + "\n")


def totals(rounds: list[RoundRecord]) -> dict[str, tuple[int, int]]:
    """Participant id -> (tokens paid, tokens slashed) over all rounds, in report order."""
    out: dict[str, tuple[int, int]] = {}
    for r in rounds:
        for p in r.participants:
            paid, slashed = out.get(p.id, (0, 0))
            out[p.id] = (paid + int(p.reward), slashed + int(p.slashed))
    return out


def schema() -> dict[str, Any]:
    """The JSON Schema of summary.json."""
    return RunReport.model_json_schema(by_alias=True)


def honest_slashes(rounds: list[RoundRecord]) -> int:
    """Participant-rounds in which a participant without a configured attack lost stake."""
    return sum(1 for r in rounds for p in r.participants if p.attack is None and int(p.slashed) > 0)


if __name__ == "__main__":  # python -m flock_pipeline.report [PATH]: export the schema
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH
    target.write_text(json.dumps(schema(), indent=2) + "\n")
    print(target)
