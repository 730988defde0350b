"""The model registry: one MLflow run and model version per round, on a real SQLite backend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import mlflow
import pytest
import torch

from flock_pipeline.models.networks import build_network
from flock_pipeline.serialization import Weights, content_hash
from flock_pipeline.tracking import HASH_TAG, ModelRegistry, ModelVersionRef, TrackingError

SHAPE = (1, 8, 8)
CLASSES = 10


def _weights(seed: int) -> Weights:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_network("mlp", SHAPE, CLASSES).state_dict().items()}


def _log(registry: ModelRegistry, round: int, weights: Weights) -> ModelVersionRef:
    return registry.log_round_model(
        weights=weights,
        architecture="mlp",
        input_shape=SHAPE,
        num_classes=CLASSES,
        round=round,
        metrics={"accuracy": 0.5 + round / 10, "loss": 1.0 / round},
        params={"strategy": "fedavg", "clients": 4, "lr": 0.05},
        tags={"task": "digits", "accepted": "true", "round_hash": f"0x{round:064x}"},
        run_name=f"round-{round}",
    )


class Logged(NamedTuple):
    registry: ModelRegistry
    data_dir: Path
    weights: list[Weights]
    refs: list[ModelVersionRef]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """Two rounds logged once for the module (log_model is the slow part, ~1 s each)."""
    data_dir = tmp_path_factory.mktemp("flock") / "data"
    registry = ModelRegistry.open(None, data_dir, "digits-task", "digits-mlp")
    weights = [_weights(1), _weights(2)]
    refs = [_log(registry, r, w) for r, w in enumerate(weights, start=1)]
    return Logged(registry, data_dir, weights, refs)


def test_each_round_becomes_a_new_version_from_its_own_run(logged: Logged) -> None:
    registry, _, _, refs = logged
    assert [r.version for r in refs] == ["1", "2"]
    assert registry.versions() == refs
    assert refs[0].run_id != refs[1].run_id
    run = registry.client.get_run(refs[1].run_id)
    assert run.data.params == {"strategy": "fedavg", "clients": "4", "lr": "0.05"}
    assert run.data.metrics["accuracy"] == pytest.approx(0.7)
    assert run.data.tags["task"] == "digits"
    assert run.info.run_name == "round-2"


def test_versions_carry_the_round_tags_and_the_weights_content_hash(logged: Logged) -> None:
    registry, _, weights, refs = logged
    tags = registry.version_tags(refs[0].version)
    assert tags["task"] == "digits" and tags["accepted"] == "true"
    assert tags["round_hash"] == f"0x{1:064x}"
    assert tags["flock.round"] == "1" and tags["flock.architecture"] == "mlp"
    assert tags[HASH_TAG] == content_hash(weights[0])


def test_champion_alias_resolves_and_loads_the_same_tensors(logged: Logged) -> None:
    registry, _, weights, _ = logged
    registry.set_alias("champion", "2")
    version = registry.client.get_model_version_by_alias("digits-mlp", "champion")
    assert str(version.version) == "2"
    loaded = registry.load_weights("champion")
    assert loaded.keys() == weights[1].keys()
    assert all(torch.equal(loaded[k], weights[1][k]) for k in loaded)
    assert all(torch.equal(v, weights[0][k]) for k, v in registry.load_weights("1").items())


def test_the_logged_pytorch_model_loads_via_models_uri_and_predicts(logged: Logged) -> None:
    registry, _, weights, _ = logged
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        model = mlflow.pytorch.load_model("models:/digits-mlp@champion")
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to MLflow's default
    expected = build_network("mlp", SHAPE, CLASSES)
    expected.load_state_dict(weights[1])
    x = torch.randn(3, *SHAPE)
    assert torch.allclose(model(x), expected(x))


def test_everything_lives_in_the_data_dir(logged: Logged) -> None:
    registry, data_dir, _, _ = logged
    assert registry.tracking_uri == f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
    artifacts = list((data_dir / "mlartifacts").rglob("model.safetensors"))
    assert len(artifacts) == 2
    assert not Path("mlruns").exists()


def test_reopening_finds_the_same_experiment_and_versions(logged: Logged) -> None:
    registry, data_dir, _, refs = logged
    again = ModelRegistry.open(None, data_dir, "digits-task", "digits-mlp")
    assert again.experiment_id == registry.experiment_id
    assert again.versions() == refs


def test_a_corrupted_weights_artifact_is_refused(logged: Logged) -> None:
    registry, _, _, refs = logged
    run = registry.client.get_run(refs[0].run_id)
    path = Path(run.info.artifact_uri.removeprefix("file://")) / "weights" / "model.safetensors"
    original = path.read_bytes()
    path.write_bytes(original[:-4] + b"\0\0\0\0")
    try:
        with pytest.raises(TrackingError, match=r"version 1 .* content hash .* changed"):
            registry.load_weights("1")
    finally:
        path.write_bytes(original)


def test_an_unknown_version_or_alias_is_named(logged: Logged) -> None:
    registry, _, _, _ = logged
    with pytest.raises(TrackingError, match="'digits-mlp' has no version '9'"):
        registry.load_weights("9")
    with pytest.raises(TrackingError, match="has no alias 'nope'"):
        registry.version_tags("nope")


def test_weights_of_another_architecture_are_refused_before_logging(logged: Logged) -> None:
    registry, _, _, _ = logged
    with pytest.raises(TrackingError, match="do not fit a cnn"):
        registry.log_round_model(
            weights=_weights(3),
            architecture="cnn",
            input_shape=SHAPE,
            num_classes=CLASSES,
            round=3,
            metrics={},
            params={},
            tags={},
        )


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("bogus://x", "bogus://x"),
        ("sqlite:////nonexistent-dir/x.db", "folder /nonexistent-dir does not exist"),
        ("http://127.0.0.1:9", "cannot reach the MLflow tracking server"),
        ("sqlite:////etc/hostname/x.db", "folder /etc/hostname does not exist"),
    ],
)
def test_an_unusable_tracking_uri_fails_fast_at_open(uri: str, why: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(TrackingError, match=why) as caught:
        ModelRegistry.open(uri, tmp_path, "e", "m")
    assert repr(uri) in str(caught.value)
    assert time.monotonic() - started < 5
    assert not Path("/nonexistent-dir").exists()


def test_an_unwritable_sqlite_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(TrackingError, match="not writable"):
            ModelRegistry.open(f"sqlite:///{folder / 'x.db'}", tmp_path, "e", "m")
    finally:
        folder.chmod(0o700)


def test_the_model_flavor_is_imported_in_the_background() -> None:
    """A coordinator that trains nothing imports ``mlflow.pytorch`` (Lightning, torch's
    compiler) off its first round's path: in a fresh process the import is done once the
    background thread is."""
    code = (
        "import sys\n"
        "from flock_pipeline.tracking import preload_model_flavor\n"
        "assert 'mlflow.pytorch' not in sys.modules\n"
        "t = preload_model_flavor()\n"
        "assert t.daemon\n"
        "t.join()\n"
        "assert 'mlflow.pytorch' in sys.modules and 'pytorch_lightning' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
