"""What the benchmark scripts share: throw-away tool state and the machine they ran on."""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any


def isolate_tool_state(prefix: str) -> Path:
    """A throw-away folder, removed at exit, for Prefect's database and matplotlib's cache.

    Call it before prefect is imported: Prefect reads these settings on import.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ["MPLCONFIGDIR"] = str(tmp / "matplotlib")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # A loaded 2-core machine can miss Prefect's default 20 s for its ephemeral server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return tmp


def environment(
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Library versions, CPU and load (after: now, unless given): what a figure needs next to
    it; ``extra`` adds entries."""
    import torch

    after = load_after if load_after is not None else os.getloadavg()
    return {
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in after],
        **extra,
    }
