"""A resumed proposer never derives a second update for a round: with DP the noise is secret and
fresh, so a retrain would release a different update and spend its budget again. The flow's
train-and-submit task runs for real (Prefect, DVC snapshots, MLflow, contracts on an in-process
py-evm chain) with DP-SGD on; a crash is a process dying between two steps, stood in for by an
error raised by the chain client at the commit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flock_pipeline.config import load_config


@pytest.fixture(scope="module")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with its schema migrated (several seconds, once)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


class Killed(Exception):
    """The process dying at the commit: not a network error, so the task is not retried."""


def test_a_resumed_proposer_submits_the_update_it_kept_and_never_trains_again(
    tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a task with DP-SGD on, round 1 started; count the trainings
    import flows.federated as federated
    from flock_pipeline.runtime.world import open_world

    cfg = load_config(
        None,
        {
            "participants": 2,
            "rounds": 1,
            "data_dir": str(tmp_path / "flock"),
            "data.dataset": "digits",
            "model.name": "mlp",
            "privacy.enabled": True,
            "training.local_epochs": 1,
            "chain.url": "py-evm",
            "chain.proposers_per_round": 2,
            "chain.voters_per_round": 2,
            "partition.scheme": "iid",
        },
    )
    (tmp_path / "flock").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_path / "flock" / "mlflow.db")
    import flock_pipeline.runtime.participant as runtime

    trained: list[str] = []
    real_train = runtime.train_participant

    def counting_train(*args: Any, **kwargs: Any) -> Any:
        trained.append(args[1].participants[0].id)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runtime, "train_participant", counting_train)
    opened = open_world(cfg)
    w = opened.coordinator
    try:
        federated.start_round.fn(w, 0)
        global_hash = w.global_hash()
        p0, p1 = opened.participant("p0"), opened.participant("p1")

        # Execute: p1 dies after its upload, before its commit; p0 commits; both are resumed
        def killed(*args: Any, **kwargs: Any) -> Any:
            raise Killed("killed between the upload and the commit")

        with monkeypatch.context() as crash:
            crash.setattr(p1.client, "submit_update", killed)
            with pytest.raises(Killed):
                federated.train_and_submit(p1, 0, global_hash)
        uploaded = (w.folder / "updates" / "1-p1.json").read_text()
        first = federated.train_and_submit(p0, 0, global_hash)
        again = federated.train_and_submit(p0, 0, global_hash)
        resumed = federated.train_and_submit(p1, 0, global_hash)

        # Assert: one training each; the resumed run returns and commits what the first made
        assert sorted(trained) == ["p0", "p1"]
        assert again == first and first["train_loss"] is not None
        assert resumed["update_hash"] in uploaded and w.store.exists(resumed["update_hash"])
        committed = {"0x" + bytes(e["updateHash"]).hex() for e in w.view.submissions(0)}
        assert committed == {first["update_hash"], resumed["update_hash"]}
        for m, result in ((p0, first), (p1, resumed)):
            assert m.ledger is not None and len(m.ledger.history) == 1  # spent once
            assert result["epsilon"] == pytest.approx(m.ledger.epsilon)
        # the store has the update: the proposer's local copy of the bytes is gone
        assert not list((w.folder / "updates").glob("*.bin"))
    finally:
        w.close()
