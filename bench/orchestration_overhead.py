"""Orchestration overhead: the same federated task as the plain simulation and as the Prefect flow.

Runs ``flock_pipeline.simulation.run_simulation`` (no orchestration) and
``flows.federated.federated_task`` (Prefect flow + DVC snapshots + managed anvil chain settlement
+ local blob store + MLflow model versions) in this process on the same configuration: the
project defaults (MNIST 5k, CNN, DP-SGD on) with 4 participants x 3 rounds. Every flow run gets a
fresh ``data_dir`` (a new task, its own anvil under ``data_dir/chain``, stopped at the end).

The two are not the same amount of training: the flow trains only each round's proposers (on-chain
sortition, about half the participants), the plain run trains every participant every round. So
the headline compares like with like: the flow's wall time divided by the plain run's wall time
with the plain run's training replaced by the training the flow actually did (both measured with
timers around ``train_participant``). Raw wall ratio and per-training-job ratio are reported too.

The first Prefect call in a process starts the ephemeral API server; that one-off start-up is
measured on its own (a no-op flow), and the cold ratio (first runs in a fresh process, start-up
included) is reported next to the steady-state headline. Where the flow's time goes is measured
with timers wrapped around the adapters in this process only (no project code is changed).

    .venv/bin/python bench/orchestration_overhead.py            # 3 repeats
    .venv/bin/python bench/orchestration_overhead.py --quick    # 1 repeat, 2 rounds, < 3 min

The last stdout line is one JSON object with the headline metric (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "orchestration_overhead.json"
GOAL = 1.15

from _common import environment, isolate_tool_state  # noqa: E402

_TMP = isolate_tool_state("flock-orch-bench-")  # before prefect is imported

_T0 = time.perf_counter()
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

import flock_pipeline.simulation as simulation  # noqa: E402
from flock_pipeline.config import FlockConfig, load_config  # noqa: E402

_IMPORT_CORE = time.perf_counter() - _T0
_T0 = time.perf_counter()
import mlflow.pytorch  # noqa: E402
import web3.providers.rpc  # noqa: E402
from prefect import flow  # noqa: E402

import flows.federated as federated  # noqa: E402
import flows.world as world  # noqa: E402
from flock_pipeline.chain import AllianceClient, Chain  # noqa: E402
from flock_pipeline.chain.anvil import AnvilNode  # noqa: E402
from flock_pipeline.snapshots import DatasetSnapshots  # noqa: E402
from flock_pipeline.storage.local import LocalBlobStore  # noqa: E402
from flock_pipeline.tracking import ModelRegistry  # noqa: E402

_IMPORT_FLOW = time.perf_counter() - _T0


# ---------------------------------------------------------------- timers


class Timers:
    """Wall time per category, counting only the outermost timed call of each thread.

    So categories never overlap and their sum is at most the run's wall time; the rest of the
    flow's time is Prefect (task/flow runs, state, result persistence, logging) and glue.
    ``detail`` timers are always counted, also when nested, and are not part of that sum.
    """

    def __init__(self) -> None:
        self.local = threading.local()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.detail: dict[str, float] = defaultdict(float)
        self.detail_calls: dict[str, int] = defaultdict(int)
        self.jobs: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.detail.clear()
        self.detail_calls.clear()
        self.jobs.clear()

    def wrap(self, fn: Callable[..., Any], category: str, detail: bool = False) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self.local, "depth", 0)
            if detail:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.detail[category] += time.perf_counter() - t0
                    self.detail_calls[category] += 1
            if depth:
                return fn(*args, **kwargs)
            self.local.depth = 1
            t0 = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self.local.depth = 0
                self.seconds[category] += elapsed
                self.calls[category] += 1
            if category == "train":
                self.jobs.append(
                    {"participant": result.participant, "samples": result.num_samples,
                     "seconds": round(elapsed, 4)}
                )  # fmt: skip
            return result

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def patch(self, owner: Any, name: str, category: str, detail: bool = False) -> None:
        raw = inspect.getattr_static(owner, name)
        if isinstance(raw, classmethod):
            setattr(owner, name, classmethod(self.wrap(raw.__func__, category, detail)))
        elif isinstance(raw, staticmethod):
            setattr(owner, name, staticmethod(self.wrap(raw.__func__, category, detail)))
        else:
            setattr(owner, name, self.wrap(raw, category, detail))

    def snapshot(self) -> dict[str, Any]:
        return {
            "seconds": {k: round(v, 4) for k, v in sorted(self.seconds.items())},
            "calls": dict(sorted(self.calls.items())),
            "detail_seconds": {k: round(v, 4) for k, v in sorted(self.detail.items())},
            "detail_calls": dict(sorted(self.detail_calls.items())),
            "jobs": list(self.jobs),
        }


TIMERS = Timers()


def _install_timers() -> None:
    t = TIMERS
    # Same work in both runs.
    for mod in (simulation, federated):
        t.patch(mod, "train_participant", "train")
    t.patch(simulation, "evaluate_round", "evaluate")
    t.patch(federated, "evaluate", "evaluate")  # the round's test eval and the voters' scoring
    t.patch(simulation, "aggregate", "aggregate")
    t.patch(federated, "aggregate_updates", "aggregate")  # the aggregator and every voter
    # Flow only, but protocol work rather than orchestration: every voter's leave-one-out
    # contribution scores (reported apart in the breakdown).
    t.patch(federated, "contributions", "contribution_scoring")
    for mod in (simulation, world):
        t.patch(mod, "prepare_federation", "data")
        t.patch(mod, "initial_weights", "data")
    for name in ("plot_accuracy", "plot_partition", "write_weights"):
        t.patch(simulation, name, "report")
    t.patch(federated, "write_report", "report")
    # Only the flow.
    for name, raw in vars(AllianceClient).items():
        if not name.startswith("_") and inspect.isfunction(raw):
            t.patch(AllianceClient, name, "chain")
    t.patch(world, "load_or_deploy", "chain")
    t.patch(world, "dev_signers", "chain")
    t.patch(Chain, "advance_to", "chain")
    t.patch(web3.providers.rpc.HTTPProvider, "make_request", "chain")  # receipts, logs ...
    t.patch(AnvilNode, "up", "anvil_start_stop")
    t.patch(AnvilNode, "down", "anvil_start_stop")
    for name in ("write", "snapshot", "verify"):
        t.patch(DatasetSnapshots, name, "dvc")
    t.patch(LocalBlobStore, "put", "blobs")
    t.patch(LocalBlobStore, "get", "blobs")
    for name in ("open", "log_round_model", "versions", "version_tags", "set_alias"):
        t.patch(ModelRegistry, name, "mlflow")
    t.patch(federated, "create_table_artifact", "prefect_artifact")
    # Nested details (not in the exclusive sum).
    t.patch(mlflow.pytorch, "log_model", "mlflow.pytorch.log_model", detail=True)
    t.patch(web3.providers.rpc.HTTPProvider, "make_request", "rpc_requests", detail=True)


# ---------------------------------------------------------------- runs


def _config(data_dir: Path, rounds: int, participants: int) -> FlockConfig:
    return load_config(
        None, {"data_dir": str(data_dir), "rounds": rounds, "participants": participants}
    )


@contextlib.contextmanager
def _fresh_dir(label: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=_TMP))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _finish(kind: str, wall: float, cpu: float, summary: dict[str, Any]) -> dict[str, Any]:
    timers = TIMERS.snapshot()
    exclusive = sum(timers["seconds"].values())
    train = timers["seconds"].get("train", 0.0)
    jobs = timers["jobs"]
    if kind == "flow":
        proposers = sum(
            p["role"] == "proposer" for r in summary["rounds"] for p in r["participants"]
        )
        if proposers != len(jobs):
            raise RuntimeError(f"flow summary has {proposers} proposers, timed {len(jobs)} jobs")
        roles = [
            {p["id"]: p["role"] for p in r["participants"]} for r in summary["rounds"]
        ]  # fmt: skip
        accepted = [bool(r["accepted"]) for r in summary["rounds"]]
    else:
        roles, accepted = None, None
    return {
        "wall": wall,
        "cpu": cpu,
        "train_seconds": train,
        "train_jobs": len(jobs),
        "train_samples": sum(j["samples"] for j in jobs),
        "non_train_seconds": wall - train,
        "residual_seconds": wall - exclusive,
        "final_accuracy": summary["final"]["accuracy"],
        "roles": roles,
        "accepted": accepted,
        **timers,
    }


def run_plain(rounds: int, participants: int) -> dict[str, Any]:
    with _fresh_dir("plain") as d:
        cfg = _config(d / "data", rounds, participants)
        TIMERS.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = simulation.run_simulation(cfg, d / "out", Console(stderr=True, quiet=True))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return _finish("plain", wall, cpu, result.summary)


def run_flow(rounds: int, participants: int) -> dict[str, Any]:
    with _fresh_dir("flow") as d:
        cfg = _config(d / "data", rounds, participants)
        TIMERS.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        summary = federated.federated_task(config=cfg, out_dir=str(d / "out"))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if AnvilNode(cfg.data_dir).status().running:
            raise RuntimeError("the flow left its anvil running")
        return _finish("flow", wall, cpu, summary)


@flow(name="bench-noop")
def _noop() -> int:
    return 1


def _time_noop() -> float:
    t0 = time.perf_counter()
    _noop()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- figures


def _matched(flow: dict[str, Any], plain: dict[str, Any]) -> float:
    """Flow wall / (plain wall with its training swapped for the training the flow did)."""
    return float(flow["wall"] / (plain["non_train_seconds"] + flow["train_seconds"]))


def _matched_plain_work(flow: dict[str, Any], plain: dict[str, Any]) -> float:
    """(Plain wall + the flow's extra non-training time) / plain wall: the flow had it trained
    every participant every round, as the plain run does."""
    extra = flow["non_train_seconds"] - plain["non_train_seconds"]
    return float((plain["wall"] + extra) / plain["wall"])


def _per_job(run: dict[str, Any]) -> float:
    return float(run["wall"] / run["train_jobs"]) if run["train_jobs"] else float("nan")


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _median_breakdown(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for r in runs for k in r["seconds"]})
    out = {k: round(statistics.median(r["seconds"].get(k, 0.0) for r in runs), 3) for k in keys}
    out["residual (prefect + glue)"] = round(_median(runs, "residual_seconds"), 3)
    return out


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 rounds (< 3 min)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    n = args.participants

    _install_timers()
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    # Cold: the first run of each in this process. The plain run goes first, so it also pays the
    # process's first-use costs shared by both (data set load, torch/Opacus warm-up).
    cold_plain = run_plain(rounds, n)
    startup = _time_noop()  # the ephemeral Prefect API server starts here
    noop_warm = statistics.median(_time_noop() for _ in range(3))
    cold_flow = run_flow(rounds, n)
    print(
        f"warm-up: plain {cold_plain['wall']:.1f}s, prefect start-up {startup:.1f}s, "
        f"flow {cold_flow['wall']:.1f}s",
        file=sys.stderr,
    )

    plain_runs: list[dict[str, Any]] = []
    flow_runs: list[dict[str, Any]] = []
    loads = []
    for i in range(repeats):
        plain_runs.append(run_plain(rounds, n))
        flow_runs.append(run_flow(rounds, n))
        loads.append([round(v, 2) for v in os.getloadavg()])
        print(
            f"repeat {i + 1}/{repeats}: plain {plain_runs[-1]['wall']:.1f}s, "
            f"flow {flow_runs[-1]['wall']:.1f}s",
            file=sys.stderr,
        )
    load_after = os.getloadavg()
    total = time.perf_counter() - t_start

    plain_wall = _median(plain_runs, "wall")
    flow_wall = _median(flow_runs, "wall")
    pairs = list(zip(flow_runs, plain_runs, strict=True))
    matched = statistics.median(_matched(f, p) for f, p in pairs)
    matched_plain = statistics.median(_matched_plain_work(f, p) for f, p in pairs)
    raw = statistics.median(f["wall"] / p["wall"] for f, p in pairs)
    per_job = statistics.median(_per_job(f) / _per_job(p) for f, p in pairs)
    cold_flow_wall = startup + cold_flow["wall"]
    cold_extra = startup + cold_flow["non_train_seconds"] - cold_plain["non_train_seconds"]
    cold = {
        "plain_wall": round(cold_plain["wall"], 3),
        "prefect_startup": round(startup, 3),
        "flow_wall_excl_startup": round(cold_flow["wall"], 3),
        "flow_wall_incl_startup": round(cold_flow_wall, 3),
        "ratio_raw": round(cold_flow_wall / cold_plain["wall"], 4),
        "ratio_matched": round(
            cold_flow_wall / (cold_plain["non_train_seconds"] + cold_flow["train_seconds"]), 4
        ),
        "ratio_matched_plain_work": round(cold_extra / cold_plain["wall"] + 1.0, 4),
    }
    flow_extra = _median(flow_runs, "non_train_seconds") - _median(plain_runs, "non_train_seconds")

    payload: dict[str, Any] = {
        "benchmark": "orchestration_overhead",
        "quick": args.quick,
        "settings": {
            "dataset": "mnist5k",
            "participants": n,
            "rounds": rounds,
            "repeats": repeats,
            "warmup": 1,
            "order": "plain warm-up, prefect start-up (no-op flow), flow warm-up, then "
            "alternating plain/flow per repeat",
            "config": json.loads(_config(Path("<tmp>"), rounds, n).model_dump_json()),
            "timed": {
                "plain": "flock_pipeline.simulation.run_simulation(cfg, out_dir) wall time",
                "flow": "flows.federated.federated_task(config=cfg, out_dir=...) wall time, "
                "fresh data_dir per run (new task, own anvil, DVC repo, MLflow sqlite)",
            },
            "in_process": True,
        },
        "fairness": (
            "The flow trains only the proposers of each round (on-chain sortition, "
            f"{_median(flow_runs, 'train_jobs'):.0f} jobs), the plain run trains every participant "
            f"every round ({_median(plain_runs, 'train_jobs'):.0f} jobs), and participants hold "
            "different amounts of data (Dirichlet partition), so neither the raw wall ratio nor "
            "the per-job ratio isolates orchestration. Headline (ratio_matched): flow wall / "
            "(plain wall - plain training time + flow training time), i.e. the flow against a "
            "plain run that did exactly the flow's training; both training times are measured "
            "around train_participant. ratio_matched_plain_work holds training at the plain "
            "run's amount instead: (plain wall + flow non-training - plain non-training) / plain "
            "wall. Both keep training equal; the headline is the stricter one when the flow "
            "trains less, since a long training phase in the denominator would hide the fixed "
            "orchestration cost. Sortition draws each participant independently (expected "
            "proposers = participants/2, can be 0 in a round: then nothing trains and the round "
            "is rejected). Median of the per-repeat pairs."
        ),
        "steady_state": {
            "ratio_matched": round(matched, 4),
            "ratio_matched_plain_work": round(matched_plain, 4),
            "ratio_raw_wall": round(raw, 4),
            "ratio_per_train_job": round(per_job, 4),
            "plain_wall_median": round(plain_wall, 3),
            "flow_wall_median": round(flow_wall, 3),
            "plain_train_seconds_median": round(_median(plain_runs, "train_seconds"), 3),
            "flow_train_seconds_median": round(_median(flow_runs, "train_seconds"), 3),
            "plain_train_jobs": int(_median(plain_runs, "train_jobs")),
            "flow_train_jobs": int(_median(flow_runs, "train_jobs")),
            "plain_seconds_per_train_job": round(statistics.median(map(_per_job, plain_runs)), 3),
            "flow_seconds_per_train_job": round(statistics.median(map(_per_job, flow_runs)), 3),
            "plain_train_seconds_per_job": round(
                statistics.median(r["train_seconds"] / r["train_jobs"] for r in plain_runs), 3
            ),
            "flow_train_seconds_per_job": round(
                statistics.median(r["train_seconds"] / r["train_jobs"] for r in flow_runs), 3
            ),
            "flow_non_train_minus_plain_non_train": round(flow_extra, 3),
        },
        "cold": cold,
        "prefect": {
            "startup_seconds": round(startup, 3),
            "noop_flow_seconds_warm": round(noop_warm, 4),
            "import_seconds_core": round(_IMPORT_CORE, 3),
            "import_seconds_prefect_mlflow_web3_flows": round(_IMPORT_FLOW, 3),
        },
        "breakdown_median_seconds": {
            "plain": _median_breakdown(plain_runs),
            "flow": _median_breakdown(flow_runs),
            "note": "exclusive categories (outermost timed call only); residual = wall - sum. "
            "chain = AllianceClient calls + deploy/signers + time travel + raw RPC; "
            "dvc = DatasetSnapshots write/snapshot/verify; mlflow = ModelRegistry calls; "
            "evaluate/aggregate in the flow include the voters' recomputation and scoring.",
        },
        "runs": {
            "cold_plain": _strip(cold_plain),
            "cold_flow": _strip(cold_flow),
            "plain": [_strip(r) for r in plain_runs],
            "flow": [_strip(r) for r in flow_runs],
        },
        "environment": environment(
            load_before,
            load_after,
            prefect=__import__("prefect").__version__,
            mlflow=mlflow.__version__,
            loadavg_after_each_repeat=loads,
            total_seconds=round(total, 1),
        ),
        "goal_ratio_max": GOAL,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")

    s = payload["steady_state"]
    print(f"participants={n} rounds={rounds} repeats={repeats} threads={torch.get_num_threads()}")
    print(f"{'':<24} {'plain':>8} {'flow':>8} {'ratio':>7}")
    print(f"{'wall s (median)':<24} {plain_wall:>8.2f} {flow_wall:>8.2f} {raw:>7.3f}")
    print(
        f"{'train jobs':<24} {s['plain_train_jobs']:>8d} {s['flow_train_jobs']:>8d} "
        f"{'':>7}\n{'wall s / train job':<24} {s['plain_seconds_per_train_job']:>8.2f} "
        f"{s['flow_seconds_per_train_job']:>8.2f} {per_job:>7.3f}"
    )
    print(
        f"{'training s':<24} {s['plain_train_seconds_median']:>8.2f} "
        f"{s['flow_train_seconds_median']:>8.2f}"
    )
    print(f"{'matched-work ratio':<24} {'':>8} {'':>8} {matched:>7.3f}  (headline, goal <= {GOAL})")
    print(f"{'  at plain-run training':<24} {'':>8} {'':>8} {matched_plain:>7.3f}")
    print(f"{'flow extra non-train s':<24} {'':>8} {'':>8} {flow_extra:>7.2f}")
    print(
        f"{'cold (first run)':<24} {cold['plain_wall']:>8.2f} "
        f"{cold['flow_wall_incl_startup']:>8.2f} {cold['ratio_raw']:>7.3f}  "
        f"(matched {cold['ratio_matched']:.3f}; prefect start-up {startup:.2f}s)"
    )
    bp = payload["breakdown_median_seconds"]["plain"]
    bf = payload["breakdown_median_seconds"]["flow"]
    print(f"{'breakdown s':<24} {'plain':>8} {'flow':>8}")
    for key in sorted(set(bp) | set(bf)):
        print(f"  {key:<22} {bp.get(key, 0.0):>8.2f} {bf.get(key, 0.0):>8.2f}")
    print(
        json.dumps(
            {
                "metric": "orchestration_time_ratio_matched",
                "value": round(matched, 4),
                "goal": GOAL,
                "better": "lower",
                "ratio_matched_plain_work": round(matched_plain, 4),
                "ratio_raw_wall": round(raw, 4),
                "ratio_per_train_job": round(per_job, 4),
                "flow_extra_non_train_s": round(flow_extra, 3),
                "cold_ratio_raw": cold["ratio_raw"],
                "cold_ratio_matched": cold["ratio_matched"],
                "prefect_startup_s": round(startup, 3),
                "plain_wall_s": round(plain_wall, 3),
                "flow_wall_s": round(flow_wall, 3),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
