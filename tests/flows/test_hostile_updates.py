"""A hostile or failing participant never halts a task: the real flow on the in-process chain.

Each test runs the whole task flow (Prefect, DVC snapshots, MLflow, the contracts on py-evm)
with a tiny model on sklearn's digits. Roles are fixed by the configuration (as many expected
proposers and voters as participants, equal stakes: every participant is both), so the attacker
p1 proposes and the honest p0 and p2 vote, whatever the chain's seed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from flow_helpers import tiny_py_evm_config
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from flock_pipeline.aggregation import fedavg
from flock_pipeline.config import FlockConfig
from flock_pipeline.errors import GlobalModelUnavailable
from flock_pipeline.report import ParticipantRound, RunReport
from flock_pipeline.serialization import content_hash, from_bytes
from flock_pipeline.storage import LocalBlobStore
from flock_pipeline.update import Update

TOKEN = 10**18
STAKE = 100 * TOKEN  # chain.stake's default, in the smallest unit


@pytest.fixture(scope="module")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database with its schema migrated, once for the module (a migration
    takes seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def _config(data_dir: Path, **extra: object) -> FlockConfig:
    return tiny_py_evm_config(data_dir, **extra)


def _run(tmp_path: Path, db: Path, **extra: object) -> tuple[FlockConfig, RunReport]:
    from flows.federated import federated_task

    cfg = _config(tmp_path / "flock", **extra)
    (tmp_path / "flock").mkdir()
    shutil.copy(db, tmp_path / "flock" / "mlflow.db")
    summary = federated_task(config=cfg, out_dir=str(tmp_path / "out"))
    return cfg, RunReport.model_validate(summary)


def _by_id(participants: list[ParticipantRound]) -> dict[str, ParticipantRound]:
    return {p.id: p for p in participants}


def _before_validation(before: Callable[[Any, int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``before(voter's runtime, round)`` ahead of every voter's validate-and-commit, then
    the real task: a fault injected into a real run, nothing else changed."""
    import flows.federated as federated

    original = federated.validate_and_commit

    @task(name=original.name, cache_policy=NO_CACHE)
    def wrapped(p: Any, r: int, state_hash: str | None) -> Any:
        before(p, r)
        return original.fn(p, r, state_hash)

    monkeypatch.setattr(federated, "validate_and_commit", wrapped)


def _before_round(before: Callable[[Any, int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``before(coordinator, round)`` ahead of each round's start-round task."""
    import flows.federated as federated

    original = federated.start_round

    @task(name=original.name, cache_policy=NO_CACHE)
    def wrapped(c: Any, r: int) -> Any:
        before(c, r)
        return original.fn(c, r)

    monkeypatch.setattr(federated, "start_round", wrapped)


def _store(cfg: FlockConfig) -> LocalBlobStore:
    return LocalBlobStore(cfg.data_dir / "blobs")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("corrupt_update", "invalid:not_safetensors"),
        ("nan_update", "invalid:not_finite"),
        ("wrong_shape", "invalid:wrong_shape"),
        ("unsigned", "invalid:unsigned"),
        ("foreign_signature", "invalid:wrong_signer"),
    ],
)
def test_an_invalid_update_is_flagged_its_proposer_penalized_and_the_task_completes(
    tmp_path: Path, migrated_mlflow_db: Path, kind: str, reason: str
) -> None:
    # Execute
    _, report = _run(tmp_path, migrated_mlflow_db, attacks={"p1": {"kind": kind}})

    # Assert: the honest voters agree on the aggregate of the valid updates and flag p1
    (round_,) = report.rounds
    people = _by_id(round_.participants)
    assert round_.outcome == "accepted"
    assert round_.screened == {"p1": reason}
    assert people["p1"].screened == reason and people["p1"].flagged
    assert people["p1"].slashed == str(STAKE)  # penalty_bps 100 %
    for pid in ("p0", "p2"):
        vote = people[pid].vote
        assert vote is not None and vote.aggregate_hash == round_.aggregate_hash
        assert vote.contributions["p1"] == -1.0
        assert not people[pid].flagged and people[pid].slashed == "0"
        assert int(people[pid].reward) > 0
    assert round_.aggregate_hash == round_.global_model_hash
    assert report.final.honest_slashes == 0


def test_an_inflated_sample_count_is_refused_or_gets_no_more_than_the_weight_cap(
    tmp_path: Path, migrated_mlflow_db: Path
) -> None:
    # Execute
    cfg, report = _run(tmp_path, migrated_mlflow_db,
                       attacks={"p1": {"kind": "inflated_samples", "factor": 1e6}})  # fmt: skip

    # Assert: the round goes on with the honest updates, and nobody is slashed
    (round_,) = report.rounds
    people = _by_id(round_.participants)
    assert round_.outcome == "accepted" and round_.screened == {}
    assert all(p.slashed == "0" for p in round_.participants)
    assert report.final.honest_slashes == 0
    if people["p1"].update_hash is None:
        # The chain knows p1's registered data set size and refuses the claim outright.
        assert {pid for pid, p in people.items() if p.update_hash} == {"p0", "p2"}
        return
    # Where the chain does not bound the claim, the aggregate does not follow it: p1 carries
    # half of the weight (the cap), the two others share the rest by their counts.
    claims = {pid: p.num_samples or 0 for pid, p in people.items()}
    assert claims["p1"] > 10**5 * claims["p0"]
    store = _store(cfg)
    updates = [
        Update(pid, from_bytes(store.get(p.update_hash or "")), claims[pid])
        for pid, p in people.items()
    ]
    reference = updates[0].weights
    capped = fedavg(updates, reference, max_weight_share=cfg.aggregation.max_weight_share)
    assert content_hash(capped) == round_.aggregate_hash
    assert content_hash(fedavg(updates, reference)) != round_.aggregate_hash
    by = {u.participant: u.weights for u in updates}
    n0, n2 = claims["p0"], claims["p2"]
    for name, t in capped.items():
        if t.is_floating_point():
            expected = 0.5 * by["p1"][name].double() + 0.5 * (
                n0 * by["p0"][name].double() + n2 * by["p2"][name].double()
            ) / (n0 + n2)
            assert torch.allclose(t.double(), expected, atol=1e-6)


def test_an_update_lost_from_the_store_after_its_commit_counts_as_unavailable(
    tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: p1's committed update disappears before any voter fetches it
    def lose_p1(p: Any, r: int) -> None:
        for ev in p.view.submissions(r):
            if p.view.id_of(str(ev["proposer"])) == "p1":
                _store(p.cfg).path("0x" + bytes(ev["updateHash"]).hex()).unlink(missing_ok=True)

    _before_validation(lose_p1, monkeypatch)

    # Execute
    _, report = _run(tmp_path, migrated_mlflow_db)

    # Assert: a protocol outcome, not an error: p1 is flagged (nobody can check its update)
    (round_,) = report.rounds
    people = _by_id(round_.participants)
    assert round_.outcome == "accepted"
    assert round_.screened == {"p1": "invalid:unavailable"}
    assert people["p1"].flagged and people["p1"].slashed == str(STAKE)
    assert all(people[pid].slashed == "0" and int(people[pid].reward) > 0 for pid in ("p0", "p2"))
    assert report.final.honest_slashes == 1  # p1 was honest: losing its file cost it its stake


@pytest.mark.slow  # two rounds of the flow
def test_a_global_model_lost_from_the_store_is_restored_and_the_task_goes_on(
    tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: before each round the current global model vanishes from the store (round 1:
    # the initial model; round 2: round 1's aggregate, registered in MLflow)
    lost: list[str] = []

    def lose_global(c: Any, r: int) -> None:
        digest = c.global_hash()
        _store(c.cfg).path(digest).unlink()
        lost.append(digest)

    _before_round(lose_global, monkeypatch)

    # Execute
    cfg, report = _run(tmp_path, migrated_mlflow_db, rounds=2)

    # Assert
    assert [r.outcome for r in report.rounds] == ["accepted", "accepted"]
    assert lost[1] == report.rounds[0].global_model_hash != lost[0]
    assert all(_store(cfg).exists(digest) for digest in lost)  # put back
    assert report.final.honest_slashes == 0


@pytest.mark.slow  # two rounds of the flow
def test_a_global_model_lost_everywhere_names_its_hash_its_path_and_the_fix(
    tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: before round 2, round 1's model leaves the store and MLflow's artifacts go too
    lost: list[str] = []

    def lose_everything(c: Any, r: int) -> None:
        if r == 1:
            digest = c.global_hash()
            _store(c.cfg).path(digest).unlink()
            shutil.rmtree(c.cfg.data_dir / "mlartifacts")
            lost.append(digest)

    _before_round(lose_everything, monkeypatch)

    # Execute / Assert
    with pytest.raises(GlobalModelUnavailable) as caught:
        _run(tmp_path, migrated_mlflow_db, rounds=2)
    message = str(caught.value)
    (digest,) = lost
    assert digest in message
    assert str(_store(_config(tmp_path / "flock")).path(digest)) in message
    assert "copy a backup" in message


def test_a_participant_over_its_training_time_abstains_and_the_task_completes(
    tmp_path: Path, migrated_mlflow_db: Path
) -> None:
    # Execute: a limit no training meets, so every proposer abstains
    _, report = _run(tmp_path, migrated_mlflow_db, **{"training.timeout_minutes": 1e-9})

    # Assert: a void round (nothing to vote on), nobody paid or slashed
    (round_,) = report.rounds
    assert round_.outcome == "void"
    assert all(p.update_hash is None and p.vote is None for p in round_.participants)
    assert all(p.slashed == "0" for p in round_.participants)
    assert report.final.honest_slashes == 0
