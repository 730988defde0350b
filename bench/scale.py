"""Many participants in a round: wall time and peak memory of one round of the flow at 10, 50,
100 and 200 participants, with the proposers trained one at a time (``runner.kind:
sequential``) and on a local Dask cluster through prefect-dask (``runner.kind: dask``, two
worker processes of one thread: the machine's two cores).

Each run is a fresh `flock run` process (its own managed anvil, MLflow store, temporary Prefect
server): one round of the MLP on MNIST 5k, IID, every participant proposes, 10 voters drawn,
DP off, 25 training samples per participant (``data.max_samples`` = 25 n, so each
participant's work is the same at every size and a linear cost shows as a constant per
participant). Peak memory is the largest sum of the resident sets of the run's process tree
(the flow, its servers, its Dask workers), sampled every 0.2 s.

    .venv/bin/python bench/scale.py            # 10, 50, 100, 200 participants
    .venv/bin/python bench/scale.py --quick    # 10 and 50

The last stdout line is one JSON object with the headline: the seconds per participant of the
better runner at 100 participants (at the largest size run with --quick), its peak memory, and
whether the cost grew linearly (seconds per participant at the largest size at most 1.5x that
at the smallest above 10, which is dominated by fixed start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import environment, markdown, write_results  # noqa: E402

RUNNERS = ("sequential", "dask")
MEMORY_GOAL_GIB = 24.0


def _config(n: int, runner: str, data_dir: Path) -> dict[str, Any]:
    return {
        "participants": n, "rounds": 1, "seed": 0, "data_dir": str(data_dir),
        "data": {"dataset": "mnist5k", "max_samples": 25 * n},
        "partition": {"scheme": "iid"}, "model": {"name": "mlp"},
        "training": {"local_epochs": 1, "batch_size": 25},
        "privacy": {"enabled": False},
        "chain": {"proposers_per_round": n, "voters_per_round": 10},
        "aggregation": {"screen": {"min_trust": None}},
        "runner": {"kind": runner, "processes": 2, "threads_per_process": 1},
    }  # fmt: skip


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_once(n: int, runner: str, base: Path) -> dict[str, Any]:
    """One round of a fresh task; wall seconds, peak tree RSS, the round's outcome."""
    home = base / f"{runner}-{n}"
    home.mkdir(parents=True)
    (home / "task.yaml").write_text(yaml.safe_dump(_config(n, runner, home / "flock")))
    env = dict(os.environ, PREFECT_HOME=str(home / "prefect"), MPLCONFIGDIR=str(home / "mpl"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1", OMP_NUM_THREADS="1")  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    began = time.perf_counter()
    with (home / "run.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flock_pipeline", "run", "-c", str(home / "task.yaml"),
             "--out", str(home / "out")],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        watched = psutil.Process(proc.pid)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], _tree_rss(watched))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    seconds = time.perf_counter() - began
    if code != 0:
        tail = (home / "run.log").read_text()[-3000:]
        raise RuntimeError(f"{runner} at {n} participants failed ({code}):\n{tail}")
    summary = json.loads((home / "out" / "summary.json").read_text())
    (round_,) = summary["rounds"]
    return {
        "participants": n, "runner": runner, "seconds": round(seconds, 1),
        "seconds_per_participant": round(seconds / n, 3),
        "round_seconds": round(float(round_["seconds"]), 1),
        "peak_rss_gib": round(peak[0] / 2**30, 2), "outcome": round_["outcome"],
        "updates": sum(1 for p in round_["participants"] if p["update_hash"]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 50 participants")
    parser.add_argument("--sizes", type=int, nargs="*", help="participants per round")
    args = parser.parse_args()
    sizes = args.sizes or ([10, 50] if args.quick else [10, 50, 100, 200])
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="flock-scale-") as tmp:
        for n in sizes:
            for runner in RUNNERS:
                row = run_once(n, runner, Path(tmp))
                print(json.dumps(row), flush=True)
                rows.append(row)
    target = 100 if 100 in sizes else max(sizes)
    at = {r["runner"]: r for r in rows if r["participants"] == target}
    best = min(at.values(), key=lambda r: r["seconds"])
    mine = [r for r in rows if r["runner"] == best["runner"]]
    small = [r for r in mine if r["participants"] > 10] or mine
    ratio = mine[-1]["seconds_per_participant"] / small[0]["seconds_per_participant"]
    headline = {
        "metric": f"seconds_per_participant_at_{target}", "value": best["seconds_per_participant"],
        "runner": best["runner"], "peak_rss_gib": best["peak_rss_gib"],
        "memory_goal_gib": MEMORY_GOAL_GIB, "within_memory": best["peak_rss_gib"] <= 24,
        "linear": ratio <= 1.5, "per_participant_growth": round(ratio, 2),
        "speedup_vs_other": round(max(r["seconds"] for r in at.values()) / best["seconds"], 2),
        "better": "lower", "quick": args.quick,
    }  # fmt: skip
    table = markdown(
        ["participants", "runner", "wall s", "round s", "s / participant", "peak RSS GiB",
         "outcome", "updates"],
        [[r["participants"], r["runner"], r["seconds"], r["round_seconds"],
          r["seconds_per_participant"], r["peak_rss_gib"], r["outcome"], r["updates"]]
         for r in rows],
    )  # fmt: skip
    out = {
        "benchmark": "scale", "quick": args.quick, "headline": headline, "rows": rows,
        "tables": [{"title": "One round at each size", "markdown": table,
                    "note": "wall s: the whole `flock run` (start-up, task creation, staking, "
                            "the round, payout); round s: the round alone."}],
        "environment": environment(load),
        "command": "python bench/scale.py" + (" --quick" if args.quick else ""),
    }  # fmt: skip
    write_results("scale", args.quick, out)


if __name__ == "__main__":
    main()
