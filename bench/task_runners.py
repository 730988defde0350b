"""Dask or Ray for many simulated participants: the same proposers' training jobs (the
``train-proposers`` subflow the flow runs with ``runner.kind: dask``) on prefect-dask's
``DaskTaskRunner`` and on prefect-ray's ``RayTaskRunner``, each on a local cluster of two
single-threaded workers, next to one at a time in this process.

Each job is one participant's local training of one round: the MLP on 25 MNIST 5k samples, one
epoch (``runtime.participant.TrainingJob``). Reported per runner and size: the cluster's
start-up, the wall time of the subflow, and the jobs per second. prefect-ray is not a
dependency of the project (the bench keeps the better runner, Dask): install it to a folder of
its own to measure it,

    pip install --target .flock/raypkgs --no-deps ray==2.52.1 prefect-ray==0.6.0
    PYTHONPATH=.flock/raypkgs .venv/bin/python bench/task_runners.py [--quick]

Without it the Ray rows are left out. --quick: 20 and 50 jobs (else 50, 100 and 200). The last
stdout line is one JSON object: the faster runner at the largest size and its speed-up over
the other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import environment, isolate_tool_state, markdown, write_results  # noqa: E402

_TMP = isolate_tool_state("flock-runners-bench-")
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

from flock_pipeline.config import RunnerConfig, load_config  # noqa: E402
from flock_pipeline.round import initial_weights, prepare_federation  # noqa: E402
from flock_pipeline.runtime.participant import TrainingJob, local_federation  # noqa: E402
from flock_pipeline.runtime.runners import DaskCluster  # noqa: E402


def _jobs(n: int) -> list[TrainingJob]:
    cfg = load_config(None, {
        "participants": n, "data.dataset": "mnist5k", "data.max_samples": 25 * n,
        "partition.scheme": "iid", "model.name": "mlp", "privacy.enabled": False,
        "training.batch_size": 25, "data_dir": str(_TMP / "data"),
    })  # fmt: skip
    fed = prepare_federation(cfg)
    weights = initial_weights(cfg, fed)
    shape, classes = fed.input_shape, fed.num_classes
    return [
        TrainingJob(cfg, local_federation(cfg, p, shape, classes), weights, 0, None, p.id)
        for p in fed.participants
    ]


def _time(runner: Any, jobs: list[TrainingJob], tasks: int) -> float:
    """Wall seconds of the ``train-proposers`` subflow on ``runner``, the jobs in ``tasks``
    task runs (two shares per worker: ``tasks`` = 2 x workers)."""
    from flows.federated import train_proposers

    began = time.perf_counter()
    results = train_proposers.with_options(task_runner=runner)(jobs, 1, max(1, tasks // 2))
    assert len(results) == len(jobs) and all(r.update is not None for r in results)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [20, 50] if args.quick else [50, 100, 200]
    load = os.getloadavg()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    from prefect.task_runners import ThreadPoolTaskRunner

    for n in sizes:
        jobs = _jobs(n)
        seconds = _time(ThreadPoolTaskRunner(max_workers=1), jobs, 2)
        rows.append({"runner": "sequential", "jobs": n, "tasks": 2, "startup_s": 0.0,
                     "seconds": round(seconds, 2)})  # fmt: skip
        for tasks in (n, 4):  # one task per job; two shares per worker (what the flow runs)
            began = time.perf_counter()
            with DaskCluster.start(RunnerConfig(kind="dask", processes=2)) as cluster:
                startup = time.perf_counter() - began
                seconds = _time(cluster.task_runner(), jobs, tasks)
            rows.append({"runner": "dask", "jobs": n, "tasks": tasks,
                         "startup_s": round(startup, 2), "seconds": round(seconds, 2)})  # fmt: skip
        try:
            from prefect_ray.task_runners import RayTaskRunner
        except ImportError:
            continue
        import ray

        for tasks in (n, 4):
            began = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - began
            try:
                address = ray.get_runtime_context().gcs_address
                seconds = _time(RayTaskRunner(address=address), jobs, tasks)
            finally:
                ray.shutdown()
            rows.append({"runner": "ray", "jobs": n, "tasks": tasks,
                         "startup_s": round(startup, 2), "seconds": round(seconds, 2)})  # fmt: skip
        print(json.dumps(rows[-5:]), flush=True)
    for row in rows:
        row["jobs_per_s"] = round(row["jobs"] / row["seconds"], 2)
    largest = [r for r in rows if r["jobs"] == max(sizes) and r["runner"] != "sequential"
               and r["tasks"] == 4]  # fmt: skip
    best = min(largest, key=lambda r: r["seconds"])
    other = max(largest, key=lambda r: r["seconds"])
    headline = {
        "metric": f"faster_runner_at_{max(sizes)}_jobs", "value": best["runner"],
        "speedup_vs_other": round(other["seconds"] / best["seconds"], 2),
        "speedup_vs_sequential": round(
            next(r["seconds"] for r in rows if r["jobs"] == max(sizes)
                 and r["runner"] == "sequential") / best["seconds"], 2),
        "quick": args.quick,
    }  # fmt: skip
    table = markdown(["runner", "jobs", "task runs", "cluster start s", "wall s", "jobs / s"],
                     [[r["runner"], r["jobs"], r["tasks"], r["startup_s"], r["seconds"],
                       r["jobs_per_s"]] for r in rows])  # fmt: skip
    out = {"benchmark": "task_runners", "quick": args.quick, "headline": headline, "rows": rows,
           "tables": [{"title": "Training jobs per runner", "markdown": table,
                       "note": "two single-threaded worker processes each; wall s excludes the "
                               "cluster's start-up. task runs: one per job, or 4 (two shares "
                               "of the jobs per worker, what the flow runs)"}],
           "environment": environment(load),
           "command": "PYTHONPATH=.flock/raypkgs python bench/task_runners.py"
                      + (" --quick" if args.quick else "")}  # fmt: skip
    write_results("task_runners", args.quick, out)


if __name__ == "__main__":
    main()
