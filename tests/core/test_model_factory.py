"""A model named by dotted path ``package.module:factory`` trains like a built-in one, and every
way such a name can be wrong is refused by name when the config loads, not in a round."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flock_pipeline.config import DataSchema, PrivacyConfig, TrainingConfig, load_config
from flock_pipeline.errors import ConfigError
from flock_pipeline.models import MODELS, build_network
from flock_pipeline.models.custom import BUILTIN_MODELS
from flock_pipeline.training.local import train_local

_HERE = Path(__file__).resolve().parent  # custom_models.py lives here; pytest puts it on sys.path
_TABULAR = {"feature_shape": [12], "num_classes": 3, "min_samples": 4}


def test_the_builtin_names_the_config_accepts_are_the_networks_there_are():
    assert set(BUILTIN_MODELS) == set(MODELS)


def test_a_dotted_path_model_loads_builds_and_trains_one_step():
    # Prepare
    cfg = load_config(
        overrides={"model.name": "custom_models:tiny", "data.folder_schema": _TABULAR}
    )
    schema = cfg.data.folder_schema
    assert schema is not None
    net = build_network(cfg.model.name, schema.feature_shape, schema.num_classes)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.random((16, 12), dtype=np.float32)
    y = rng.integers(0, 3, 16).astype(np.int64)
    training = TrainingConfig(local_epochs=1, batch_size=16, lr=0.5)
    # Execute
    update = train_local("p0", net, start, x, y, training, PrivacyConfig(enabled=False))
    # Assert
    assert update.num_samples == 16 and update.metrics["steps"] == 1.0
    assert set(update.weights) == set(start)
    assert any(not torch.equal(update.weights[k], start[k]) for k in start)


def test_a_factory_reached_through_an_attribute_path_and_an_int64_schema_load():
    load_config(overrides={"model.name": "custom_models:Factories.tiny"})
    codes = {"feature_shape": [6], "dtype": "int64", "num_classes": 4}
    cfg = load_config(
        overrides={"model.name": "custom_models:Embedder", "data.folder_schema": codes}
    )
    assert cfg.model.name == "custom_models:Embedder"


def test_a_dotted_model_name_makes_a_valid_mlflow_registered_name():
    cfg = load_config(overrides={"model.name": "custom_models:tiny"})
    assert ":" not in cfg.registered_name and "custom_models" in cfg.registered_name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet", "neither a built-in model"),
        ("custom_models:", "neither a built-in model"),
        ("custom models:tiny", "neither a built-in model"),
        ("no_such_package.models:tiny", "cannot import module 'no_such_package.models'"),
        (
            "custom_models_broken:tiny",
            "importing module 'custom_models_broken' raised RuntimeError",
        ),
        ("custom_models:absent", "has no attribute 'absent'"),
        ("custom_models:NOT_CALLABLE", "is a int, not a callable"),
        ("custom_models:not_a_module", "returned a dict, not a torch.nn.Module"),
        ("custom_models:raises", "the factory raised ValueError: this factory only builds"),
        ("custom_models:wrong_output", "expected logits of shape [2, 10]"),
        ("custom_models:wrong_input", "fails on a batch of shape [2, 1, 28, 28]"),
        ("custom_models:no_parameters", "no trainable parameters"),
        ("custom_models:with_batchnorm", "cannot be trained with DP-SGD"),
    ],
)
def test_a_bad_model_name_is_refused_by_name_at_config_load(name, message):
    with pytest.raises(ConfigError, match="model") as info:
        load_config(overrides={"model.name": name})
    assert message in str(info.value)
    assert name in str(info.value)


def test_batchnorm_is_fine_without_dp():
    cfg = load_config(
        overrides={"model.name": "custom_models:with_batchnorm", "privacy.enabled": False}
    )
    assert cfg.model.name == "custom_models:with_batchnorm"


def test_a_builtin_model_is_refused_for_data_it_cannot_take():
    with pytest.raises(ConfigError, match=r"model 'cnn' takes float32 images.*\[12\]"):
        load_config(overrides={"data.folder_schema": _TABULAR})
    codes = {"feature_shape": [1, 8, 8], "dtype": "int64", "num_classes": 10}
    with pytest.raises(ConfigError, match="int64 features"):
        load_config(overrides={"model.name": "mlp", "data.folder_schema": codes})
    assert load_config(
        overrides={"data.folder_schema": {"feature_shape": [3, 8, 8], "num_classes": 5}}
    )


def test_a_declared_schema_is_a_frozen_json_round_trip():
    declared = {**_TABULAR, "class_names": ["a", "b", "c"]}
    cfg = load_config(
        overrides={"model.name": "custom_models:tiny", "data.folder_schema": declared}
    )
    schema = cfg.data.folder_schema
    assert schema is not None
    assert DataSchema.model_validate_json(schema.model_dump_json()) == schema
    with pytest.raises(Exception, match="frozen"):
        schema.num_classes = 4  # type: ignore[misc]


def test_loading_a_config_with_a_builtin_model_imports_no_torch():
    code = (
        "import sys; from flock_pipeline.config import load_config; load_config(); "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_the_cli_refuses_a_bad_factory_without_a_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: custom_models:not_a_module\n")
    env = {**os.environ, "PYTHONPATH": str(_HERE)}
    proc = subprocess.run(
        [sys.executable, "-m", "flock_pipeline", "config", "-c", str(cfg)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "not a torch.nn.Module" in proc.stderr and "Traceback" not in proc.stderr
