"""``data.validation: shared`` with participant workers: the coordinator publishes the shared
validation set through the task's blob store, and each participant's runtime fetches it,
snapshots it on its own machine and scores on it only if its DVC hash is the one the task
committed on chain. A set that was replaced, or a card that names another set, is refused by
name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eth_account import Account

from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import load_config
from flock_pipeline.data.folder import write_folder
from flock_pipeline.errors import DataError
from flock_pipeline.protocol.params import dev_key
from flock_pipeline.round import prepare_federation
from flock_pipeline.runtime.participant import open_participant
from flock_pipeline.runtime.task import VALIDATION, TaskCard
from flock_pipeline.runtime.world import open_world
from flock_pipeline.serialization import canonical_bytes
from flock_pipeline.storage import open_store

N = 2
KEY_ENV = "FLOCK_TEST_SHARED_KEY"


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A workers task with a shared validation set, opened by its coordinator on an anvil."""
    base = tmp_path_factory.mktemp("shared")
    node = AnvilNode(base / "anvil", port=0)
    node.up(owner="test")
    keys = [dev_key("flock-participant", i) for i in range(N)]
    members = [Account.from_key(k).address for k in keys]
    overrides = {
        "task": "shared-workers", "participants": N, "rounds": 1, "seed": 5,
        "data.dataset": "digits", "data.validation": "shared", "data.validation_per_class": 3,
        "model.name": "mlp", "privacy.enabled": False, "partition.scheme": "iid",
        "chain.url": node.status().url, "workers.pool": "shared-pool",
        "workers.members": members, "data_dir": str(base / "coordinator"),
    }  # fmt: skip
    cfg = load_config(None, overrides)
    fed = prepare_federation(cfg)
    folders = [write_folder(base / "owners" / p.id, p) for p in fed.participants]
    opened = open_world(cfg)
    try:
        yield base, cfg, keys, folders
    finally:
        opened.close()
        node.down()


def _card(cfg: Any) -> Path:
    return Path(cfg.data_dir) / "tasks" / "shared-workers" / "card.json"


def test_each_participant_scores_on_the_committed_set_snapshotted_on_its_own_machine(
    task: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    base, cfg, keys, folders = task
    card = TaskCard.read(_card(cfg))
    assert card.validation is not None and card.validation_blob is not None
    expected = prepare_federation(cfg)
    assert expected.x_validation is not None and expected.y_validation is not None

    # Execute: each participant opens its runtime in its own state folder
    opened = []
    for i in range(N):
        monkeypatch.setenv(KEY_ENV, keys[i].hex())
        state = base / "owners" / f"p{i}-state"
        opened.append(open_participant(_card(cfg), folders[i], KEY_ENV, state))

    # Assert: the same set for everyone, exactly the coordinator's, under the committed hash
    for p in opened:
        assert p.fed.x_validation is not None and p.fed.y_validation is not None
        assert np.array_equal(p.fed.x_validation, expected.x_validation)
        assert np.array_equal(p.fed.y_validation, expected.y_validation)
        snapshot = p.snapshots.recorded(VALIDATION)
        assert snapshot is not None and snapshot.hash == card.validation
        assert p.snapshots.root.is_relative_to(p.state)


def test_a_replaced_set_or_a_card_naming_another_set_is_refused_by_name(
    task: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare: a blob of other arrays in the task's store, and two doctored cards
    _, cfg, keys, folders = task
    card = TaskCard.read(_card(cfg))
    store = open_store(card.config["storage"]["url"], tmp_path)
    other = store.put(canonical_bytes({"x": torch.zeros(4, 1, 8, 8), "y": torch.zeros(4).long()}))
    replaced = tmp_path / "replaced" / "card.json"
    card.model_copy(update={"validation_blob": other}).write(replaced)
    renamed = tmp_path / "renamed" / "card.json"
    card.model_copy(update={"validation": "0" * 32 + ".dir"}).write(renamed)
    missing = tmp_path / "missing" / "card.json"
    card.model_copy(update={"validation_blob": "0x" + "ab" * 32}).write(missing)
    monkeypatch.setenv(KEY_ENV, keys[0].hex())

    # Execute / Assert
    cases = [(replaced, "it was replaced"), (renamed, "the task on chain commits"),
             (missing, "is not in its blob store")]  # fmt: skip
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            open_participant(path, folders[0], KEY_ENV, tmp_path / f"state-{path.parent.name}")
