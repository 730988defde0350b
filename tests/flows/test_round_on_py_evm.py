"""One full round of the task flow in the fast suite: a real Prefect flow run (ephemeral API),
DVC snapshots, an MLflow registry and the contracts on an in-process py-evm chain, with a tiny
model on sklearn's digits.

Roles are fixed by the configuration: with as many expected proposers and voters as
participants and equal stakes, sortition makes every participant both (its odds are capped at
one), whatever the chain's seed. So the test does not depend on which block hash a machine got.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flow_helpers import tiny_py_evm_config
from mlflow.tracking import MlflowClient

from flock_pipeline.config import FlockConfig
from flock_pipeline.report import RunReport
from flock_pipeline.tracking import ModelRegistry

TOKEN = 10**18


def _config(data_dir: Path, **extra: object) -> FlockConfig:
    return tiny_py_evm_config(data_dir, **extra)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with its schema migrated: creating one runs MLflow's
    alembic migrations (several seconds), once per session instead of once per test."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def test_one_round_of_the_flow_on_py_evm_pays_every_honest_participant_and_slashes_none(
    tmp_path: Path, migrated_mlflow_db: Path
) -> None:
    # Prepare
    from flows.federated import federated_task

    cfg = _config(tmp_path / "flock")
    (tmp_path / "flock").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_path / "flock" / "mlflow.db")

    # Execute
    summary = federated_task(config=cfg, out_dir=str(tmp_path / "out"))

    # Assert
    report = RunReport.model_validate(summary)
    (round_,) = report.rounds
    assert report.task.engine == "flow"
    assert {p.role for p in round_.participants} == {"both"}
    assert round_.outcome == "accepted"
    assert round_.aggregate_hash == round_.global_model_hash
    votes = [p.vote for p in round_.participants]
    assert all(v is not None and v.accept for v in votes)
    assert {v.aggregate_hash for v in votes if v is not None} == {round_.aggregate_hash}
    assert all(p.slashed == "0" for p in round_.participants)
    assert report.final.honest_slashes == 0
    # Every participant proposed a useful update and voted with the majority: each is paid, and
    # the report's per-round rewards are what each claimed.
    assert all(int(p.reward) > 0 for p in round_.participants)
    assert {p.id: p.reward for p in round_.participants} == report.claimed
    assert (tmp_path / "out" / "summary.json").exists()
    registry = ModelRegistry.open(
        None,
        cfg.data_dir,
        cfg.tracking.experiment,
        cfg.registered_name,  # type: ignore[attr-defined]
    )
    assert round_.model is not None
    tags = registry.version_tags(round_.model.version)
    assert tags["global_model_hash"] == round_.global_model_hash
    assert report.final.champion_version == round_.model.version
