"""Participant datasets tracked by real DVC: each snapshot names a data version, and data that
changed after its snapshot is refused until it is snapshotted again or restored."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from flock_pipeline.errors import DataError
from flock_pipeline.snapshots import DataChangedError, DatasetSnapshots, Snapshot

DVC = str(Path(sys.executable).with_name("dvc"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME (and no XDG overrides), so any write to ~ shows up in the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "DVC_SITE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture()
def store(tmp_path: Path) -> DatasetSnapshots:
    return DatasetSnapshots(tmp_path / "datasets")


def arrays(seed: int = 0, n: int = 64) -> dict[str, npt.NDArray[Any]]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.random((n, 28, 28), dtype=np.float32),
        "y_train": rng.integers(0, 10, n, dtype=np.int64),
        "x_holdout": rng.random((n // 4, 28, 28), dtype=np.float32),
        "y_holdout": rng.integers(0, 10, n // 4, dtype=np.int64),
    }


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run(
        [DVC, *args], cwd=root, capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout + done.stderr


def cache_files(root: Path) -> set[Path]:
    return {p for p in (root / ".dvc" / "cache").rglob("*") if p.is_file()}


def dvc_file_hash(root: Path, participant: str) -> str:
    doc = yaml.safe_load((root / f"{participant}.dvc").read_text())
    return str(doc["outs"][0]["md5"])


def test_snapshot_hash_is_the_one_dvc_records_in_the_dvc_file(store: DatasetSnapshots) -> None:
    folder = store.write("p0", arrays())
    snap = store.snapshot("p0")
    assert snap == Snapshot("p0", folder, dvc_file_hash(store.root, "p0"))
    assert snap.hash.endswith(".dir")
    assert store.current_hash("p0") == snap.hash
    assert sorted(p.name for p in folder.iterdir()) == [
        "x_holdout.npy",
        "x_train.npy",
        "y_holdout.npy",
        "y_train.npy",
    ]


def test_same_data_gives_the_same_hash_and_no_new_cache_entries(
    store: DatasetSnapshots,
) -> None:
    store.write("p0", arrays())
    first = store.snapshot("p0")
    cached = cache_files(store.root)
    store.write("p0", arrays())  # rewritten from scratch: same bytes
    second = store.snapshot("p0")
    assert second.hash == first.hash
    assert cache_files(store.root) == cached


def test_write_is_deterministic_across_memory_layouts(store: DatasetSnapshots) -> None:
    x = arrays()["x_train"]
    store.write("c", {"x": x})
    store.write("f", {"x": np.asfortranarray(x)})
    assert store.current_hash("c") == store.current_hash("f")


def test_write_replaces_the_arrays_of_a_participant(store: DatasetSnapshots) -> None:
    store.write("p0", arrays())
    store.write("p0", {"x_train": np.zeros(3, dtype=np.float32)})
    assert list(store.load("p0")) == ["x_train"]


def test_load_with_a_snapshot_returns_the_written_arrays(store: DatasetSnapshots) -> None:
    data = arrays()
    store.write("p0", data)
    loaded = store.load("p0", store.snapshot("p0"))
    assert sorted(loaded) == sorted(data)
    for name, array in data.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_changed_data_is_refused_naming_participant_folder_hashes_and_fix(
    store: DatasetSnapshots,
) -> None:
    data = arrays()
    folder = store.write("p0", data)
    snap = store.snapshot("p0")
    data["y_train"][0] = (data["y_train"][0] + 1) % 10
    store.write("p0", data)
    current = store.current_hash("p0")
    assert current != snap.hash

    with pytest.raises(DataChangedError) as caught:
        store.verify(snap)
    message = str(caught.value)
    for part in ("p0", str(folder), snap.hash, current, "snapshot", "dvc checkout"):
        assert part in message
    assert isinstance(caught.value, DataError)
    with pytest.raises(DataChangedError):
        store.load("p0", snap)


def test_the_restore_command_the_error_gives_works_with_the_real_dvc(
    store: DatasetSnapshots, tmp_path: Path
) -> None:
    # Prepare: a snapshot, then a changed file and an extra one (what DVC refuses to overwrite
    # or remove without --force)
    data = arrays()
    folder = store.write("p0", data)
    snap = store.snapshot("p0")
    (folder / "x_train.npy").write_bytes(b"edited by hand")
    (folder / "notes.npy").write_bytes(b"not part of the snapshot")
    with pytest.raises(DataChangedError) as caught:
        store.verify(snap)
    command = re.search(r"restore the snapshot with `([^`]+)`", str(caught.value))
    assert command is not None, str(caught.value)
    # Execute: the command as printed, in a shell elsewhere, with the venv's dvc on PATH
    env = dict(os.environ, PATH=f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", command.group(1)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    store.verify(snap)
    restored = store.load("p0", snap)
    assert set(restored) == set(data)
    for name, array in data.items():
        np.testing.assert_array_equal(restored[name], array)


def test_dvc_status_cli_agrees_about_changes(store: DatasetSnapshots) -> None:
    data = arrays()
    store.write("p0", data)
    store.write("p1", arrays(seed=1))
    store.snapshot("p0")
    store.snapshot("p1")
    assert store.status() == {"p0": False, "p1": False}
    assert "up to date" in dvc(store.root, "status")

    data["x_train"][0, 0, 0] += 1.0
    store.write("p0", data)
    assert store.status() == {"p0": True, "p1": False}
    out = dvc(store.root, "status")
    assert "p0.dvc" in out and "modified" in out
    assert "p1.dvc" not in out


def test_status_reports_never_snapshotted_and_deleted_data_as_changed(
    store: DatasetSnapshots,
) -> None:
    assert store.status() == {}
    store.write("p0", arrays())
    assert store.status() == {"p0": True}
    store.snapshot("p0")
    for f in (store.root / "p0").iterdir():
        f.unlink()
    (store.root / "p0").rmdir()
    assert store.status() == {"p0": True}


def test_resnapshot_keeps_the_old_version_restorable_with_dvc_checkout(
    store: DatasetSnapshots,
) -> None:
    old_data = arrays(seed=0)
    store.write("p0", old_data)
    old = store.snapshot("p0")
    old_dvc_file = (store.root / "p0.dvc").read_text()

    store.write("p0", arrays(seed=1))
    new = store.snapshot("p0")
    assert new.hash != old.hash
    assert dvc_file_hash(store.root, "p0") == new.hash
    store.verify(new)

    (store.root / "p0.dvc").write_text(old_dvc_file)
    dvc(store.root, "checkout", "p0.dvc")
    store.verify(old)
    restored = store.load("p0", old)
    for name, array in old_data.items():
        np.testing.assert_array_equal(restored[name], array)


def test_a_missing_participant_is_a_data_error_naming_it(store: DatasetSnapshots) -> None:
    store.write("p0", arrays())
    for call in (store.snapshot, store.current_hash, store.load):
        with pytest.raises(DataError, match="'p7'"):
            call("p7")
    with pytest.raises(DataError, match="'p7'"):
        store.verify(Snapshot("p7", store.root / "p7", "0" * 32 + ".dir"))


def test_a_snapshot_of_another_participant_is_refused(store: DatasetSnapshots) -> None:
    store.write("p0", arrays())
    store.write("p1", arrays())
    with pytest.raises(DataError, match="'p0'"):
        store.load("p1", store.snapshot("p0"))


@pytest.mark.parametrize("bad", ["", "../escape", ".dvc", "a/b"])
def test_participant_ids_cannot_leave_the_root(store: DatasetSnapshots, bad: str) -> None:
    with pytest.raises(DataError, match="invalid participant id"):
        store.write(bad, arrays())


def test_snapshots_from_several_threads_do_not_collide(store: DatasetSnapshots) -> None:
    ids = [f"p{i}" for i in range(4)]
    for i, pid in enumerate(ids):
        store.write(pid, arrays(seed=i))
    results: dict[str, Snapshot] = {}
    errors: list[BaseException] = []

    def take(pid: str) -> None:
        try:
            results[pid] = store.snapshot(pid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(pid,)) for pid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {pid: s.hash for pid, s in results.items()} == {
        pid: dvc_file_hash(store.root, pid) for pid in ids
    }


def test_dvc_state_stays_inside_the_root_and_home_is_untouched(
    store: DatasetSnapshots, home: Path
) -> None:
    store.write("p0", arrays())
    store.snapshot("p0")
    dvc(store.root, "status")
    doctor = dvc(store.root, "doctor")
    site = next(line for line in doctor.splitlines() if "Repo.site_cache_dir" in line)
    assert str(store.root / ".dvc") in site

    from dvc.repo import Repo

    with Repo(str(store.root)) as repo:
        assert Path(repo.site_cache_dir).is_relative_to(store.root)
    assert list(home.rglob("*")) == []
    assert os.environ["HOME"] == str(home)


def test_one_dvc_add_of_many_folders_records_what_one_add_each_records(
    tmp_path: Path,
) -> None:
    # Prepare: the same three data sets under two roots.
    one, many = DatasetSnapshots(tmp_path / "one"), DatasetSnapshots(tmp_path / "many")
    names = ["p0", "p1", "p2"]
    for i, name in enumerate(names):
        one.write(name, arrays(seed=i))
        many.write(name, arrays(seed=i))
    # Execute
    each = {name: one.snapshot(name) for name in names}
    together = many.snapshot_many(names)
    # Assert: the same hashes, each recorded in its own .dvc file, and DVC agrees.
    assert {n: s.hash for n, s in together.items()} == {n: s.hash for n, s in each.items()}
    assert len({s.hash for s in together.values()}) == 3
    for name in names:
        assert many.recorded(name) == together[name]
        many.verify(together[name])
    assert "up to date" in dvc(many.root, "status")
