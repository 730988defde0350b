"""What the benchmark scripts share: the anchor workload, throw-away tool state, the machine they
ran on and markdown tables for the results files."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ANCHOR: dict[str, Any] = {
    "participants": 10,
    "rounds": 10,
    "data.dataset": "mnist5k",
    "partition.scheme": "dirichlet",
    "partition.alpha": 0.5,
    "model.name": "cnn",
    "training.local_epochs": 1,
    "training.batch_size": 32,
    "training.lr": 0.05,
    "training.momentum": 0.9,
    "privacy.enabled": False,
    "aggregation.strategy": "fedavg",
    "aggregation.screen.enabled": False,
    "seed": 0,
}
"""The field's anchor workload as config overrides: 10 participants, MNIST 5k, Dirichlet
alpha = 0.5, the CNN, 1 local epoch, batch 32, lr 0.05, momentum 0.9, local DP off, FedAvg
without the screen, 10 rounds, seed 0. The benches that compare engines run it, so their
figures are of one workload."""


def isolate_tool_state(prefix: str) -> Path:
    """A throw-away folder, removed at exit, for Prefect's database and matplotlib's cache.

    Call it before prefect is imported: Prefect reads these settings on import.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("BENCH_KEEP"):  # its logs, to read after the run
        print(f"keeping {tmp}", file=sys.stderr)
    else:
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


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table of already formatted cells; ``align`` has one letter per column, ``l``
    or ``r`` (default: the first column left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    lines = ["| " + " | ".join(header) + " |", "|" + rule]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def write_results(benchmark: str, quick: bool, out: dict[str, Any]) -> None:
    """Write ``out`` to bench/results/<benchmark>[_quick].json and print its headline as the
    last stdout line."""
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = f"{benchmark}_quick.json" if quick else f"{benchmark}.json"
    (results / name).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["headline"]))
