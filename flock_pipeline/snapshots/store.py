"""Participant datasets as DVC-tracked folders: write, snapshot, verify, load.

Layout under ``root``: one folder per participant holding ``<name>.npy`` files, one
``<participant>.dvc`` file per snapshot, and a self-contained DVC repo (``--no-scm``) whose cache,
site cache and state all live in ``root/.dvc``. Hashes are DVC's own (``<md5>.dir``), so
``dvc status`` / ``dvc checkout`` run in ``root`` agree with this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from flock_pipeline.errors import DataError

__all__ = ["DataChangedError", "DatasetSnapshots", "Snapshot", "content_hash", "folder_files"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SKIP_DIRS = frozenset({".git", ".hg", ".dvc"})  # DVC's default ignore patterns
_CHUNK = 1 << 20
_DVC_LOCK = threading.Lock()  # DVC's Repo is not thread-safe within one process


class DataChangedError(DataError):
    """A participant's data differs from the snapshot it is supposed to train on."""

    def __init__(self, participant: str, folder: Path, recorded: str, current: str) -> None:
        self.participant, self.folder = participant, folder
        self.recorded, self.current = recorded, current
        super().__init__(
            f"data of participant {participant!r} in {folder} changed after its snapshot: "
            f"recorded {recorded}, current {current}. Fix: restore the snapshot with "
            f"`{self.restore_command}` (it discards the changes), or take a new snapshot if "
            "the change is intended (a new task takes its own)."
        )

    @property
    def restore_command(self) -> str:
        """The shell command that puts the snapshot's bytes back. ``--force``: DVC refuses to
        overwrite changed files without it."""
        root = shlex.quote(str(self.folder.parent))
        return f"cd {root} && dvc checkout --force {shlex.quote(self.folder.name + '.dvc')}"


@dataclass(frozen=True)
class Snapshot:
    """One data version: DVC's md5 of the participant folder (``<md5>.dir``)."""

    participant: str
    path: Path
    hash: str


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(posix relpath, path) of every file DVC would track in ``folder``."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        base = Path(dirpath)
        for name in filenames:
            path = base / name
            yield path.relative_to(folder).as_posix(), path


def _dir_hash(entries: dict[str, str]) -> str:
    """DVC 3's directory hash: md5 of its sorted JSON listing, plus ``.dir``."""
    listing = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(entries.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def folder_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file DVC would track in ``folder``, by posix relpath: hash them with
    :func:`content_hash` and parse the same bytes, and the hash covers exactly what was read."""
    return {rel: path.read_bytes() for rel, path in _files(folder)}


def content_hash(files: Mapping[str, bytes]) -> str:
    """DVC's hash (``<md5>.dir``) of a folder holding exactly ``files`` (posix relpath → bytes):
    what ``dvc add`` records for it."""
    return _dir_hash({rel: hashlib.md5(blob).hexdigest() for rel, blob in files.items()})


def _npy_bytes(array: npt.NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    # A new inode each time: never writes through a link into DVC's cache.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DatasetSnapshots:
    """Participant datasets under ``root``, versioned by a local, self-contained DVC repo."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._site_cache = self.root / ".dvc" / "site"
        self._ready = False

    # -- folders and hashes (no DVC import) --------------------------------------------------

    def folder(self, participant: str) -> Path:
        """The participant's data folder (it may not exist yet)."""
        if not _NAME.match(participant):
            raise DataError(
                f"invalid participant id {participant!r}: use letters, digits, '_', '-', '.' "
                "and do not start with '.' or '-'"
            )
        return self.root / participant

    def _existing(self, participant: str) -> Path:
        folder = self.folder(participant)
        if not folder.is_dir():
            raise DataError(
                f"no data folder for participant {participant!r} at {folder}: "
                "write its data first (DatasetSnapshots.write)"
            )
        return folder

    def write(self, participant: str, arrays: dict[str, npt.NDArray[Any]]) -> Path:
        """Write ``<name>.npy`` per array (same arrays → same bytes); drop other ``.npy`` files."""
        if not arrays:
            raise DataError(f"no arrays given for participant {participant!r}")
        for name in arrays:
            if not _NAME.match(name):
                raise DataError(f"invalid array name {name!r} for participant {participant!r}")
        folder = self.folder(participant)
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            _atomic_write(folder / f"{name}.npy", _npy_bytes(array))
        for stale in folder.glob("*.npy"):
            if stale.stem not in arrays:
                stale.unlink()
        return folder

    def current_hash(self, participant: str) -> str:
        """DVC's md5 of the folder as it is now, without touching DVC's cache."""
        folder = self._existing(participant)
        return _dir_hash({rel: _md5_file(path) for rel, path in _files(folder)})

    def recorded(self, participant: str) -> Snapshot | None:
        """The last snapshot recorded in ``<participant>.dvc``, if any."""
        dvc_file = self.root / f"{self.folder(participant).name}.dvc"
        if not dvc_file.is_file():
            return None
        try:
            doc = yaml.safe_load(dvc_file.read_text())
            value = doc["outs"][0]["md5"]
        except (yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
            raise DataError(
                f"{dvc_file} is not a valid DVC file ({exc}): delete it and take a new snapshot"
            ) from exc
        return Snapshot(participant, self.root / participant, str(value))

    def verify(self, snapshot: Snapshot) -> None:
        """Raise DataChangedError unless the folder still has the snapshot's hash."""
        current = self.current_hash(snapshot.participant)
        if current != snapshot.hash:
            raise DataChangedError(
                snapshot.participant, self.folder(snapshot.participant), snapshot.hash, current
            )

    def load(
        self, participant: str, snapshot: Snapshot | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Arrays by name; with a snapshot, exactly the bytes that were hashed and verified."""
        folder = self._existing(participant)
        if snapshot is not None and snapshot.participant != participant:
            raise DataError(
                f"snapshot of {snapshot.participant!r} given to load data of {participant!r}"
            )
        blobs = {rel: path.read_bytes() for rel, path in _files(folder)}
        if snapshot is not None:
            current = _dir_hash({rel: hashlib.md5(b).hexdigest() for rel, b in blobs.items()})
            if current != snapshot.hash:
                raise DataChangedError(participant, folder, snapshot.hash, current)
        arrays: dict[str, npt.NDArray[Any]] = {}
        for rel, blob in sorted(blobs.items()):
            if "/" in rel or not rel.endswith(".npy"):
                continue
            try:
                arrays[rel[: -len(".npy")]] = np.load(io.BytesIO(blob), allow_pickle=False)
            except ValueError as exc:
                raise DataError(f"{folder / rel} is not a valid .npy file: {exc}") from exc
        return arrays

    def status(self) -> dict[str, bool]:
        """Participant → changed since its last snapshot (never snapshotted or deleted: True)."""
        if not self.root.is_dir():
            return {}
        names = {p.stem for p in self.root.glob("*.dvc") if p.is_file()}
        names |= {p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)}
        result: dict[str, bool] = {}
        for name in sorted(names):
            last = self.recorded(name)
            folder = self.root / name
            if last is None or not folder.is_dir():
                result[name] = True
            else:
                result[name] = self.current_hash(name) != last.hash
        return result

    # -- DVC -----------------------------------------------------------------------------------

    def snapshot(self, participant: str) -> Snapshot:
        """``dvc add`` the folder; returns DVC's hash. Unchanged data adds nothing to the cache."""
        return self.snapshot_many([participant])[participant]

    def snapshot_many(self, participants: list[str]) -> dict[str, Snapshot]:
        """``dvc add`` several folders at once (one repo open, one add: what ``snapshot`` does
        for each, at a fraction of the cost); returns each one's DVC hash."""
        folders = [self._existing(p) for p in participants]
        if not folders:
            return {}
        from dvc.exceptions import DvcException

        with _DVC_LOCK:
            self._ensure_repo()
            try:
                with self._open() as repo:
                    repo.add([str(f) for f in folders])
            except DvcException as exc:
                names = " ".join(str(f) for f in folders)
                raise DataError(f"`dvc add {names}` failed: {exc}") from exc
        found = {}
        for participant, folder in zip(participants, folders, strict=True):
            recorded = self.recorded(participant)
            if recorded is None:
                raise DataError(f"`dvc add {folder}` wrote no {participant}.dvc file")
            current = self.current_hash(participant)
            if current != recorded.hash:
                raise DataError(
                    f"DVC recorded {recorded.hash} for {folder} but it hashes to {current} now: "
                    "the data changed during the snapshot or a .dvcignore rule hides files; "
                    "remove such rules and take the snapshot again"
                )
            found[participant] = recorded
        return found

    def _open(self) -> Any:
        from dvc.repo import Repo

        # The override keeps state/index out of /var/tmp/dvc even if config.local is stale.
        return Repo(str(self.root), config={"core": {"site_cache_dir": str(self._site_cache)}})

    def _ensure_repo(self) -> None:
        """Create the DVC repo (no SCM) without ever opening it on the default site cache."""
        if self._ready:
            return
        from dvc.config import Config
        from dvc.ignore import init as init_dvcignore

        dvc_dir = self.root / ".dvc"
        if not (dvc_dir / "config").is_file():
            # What `dvc init --no-scm` does, minus opening the repo before it is configured.
            dvc_dir.mkdir(parents=True, exist_ok=True)
            config = Config.init(str(dvc_dir))
            with config.edit("repo") as conf:
                conf["core"]["no_scm"] = True
                conf["core"]["analytics"] = False
                conf["core"]["check_update"] = False
            init_dvcignore(str(self.root))
        config = Config(str(dvc_dir), validate=False)
        if config["core"].get("site_cache_dir") != str(self._site_cache):
            # Machine-specific absolute path: config.local, also read by the `dvc` CLI.
            with config.edit("local") as conf:
                conf["core"]["site_cache_dir"] = str(self._site_cache)
        self._ready = True
