"""Keep every tool's state inside a temporary folder, never in the user's home."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLCONFIGDIR", str(_ROOT / ".flock" / "matplotlib"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Prefect stops its temporary server at interpreter exit and logs that to a stream pytest has
# already closed; without this every run ends with a "--- Logging error ---" dump.
logging.raiseExceptions = False


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "flock"
