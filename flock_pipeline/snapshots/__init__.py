"""Snapshots adapter: participant datasets tracked by DVC, so every round records which data
version each participant trained on and training refuses data changed after its snapshot.

DVC is imported lazily: writing, hashing, verifying and loading never import it.
"""

from __future__ import annotations

from flock_pipeline.snapshots.store import (
    DataChangedError,
    DatasetSnapshots,
    Snapshot,
    content_hash,
    folder_files,
)

__all__ = ["DataChangedError", "DatasetSnapshots", "Snapshot", "content_hash", "folder_files"]
