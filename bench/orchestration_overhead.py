"""Orchestration overhead: the same federated task as the simulation and as the Prefect flow.

Runs ``flock_pipeline.simulation.run_simulation`` (``flock simulate``: the protocol with the
protocol model for a chain, no orchestration) and ``flows.federated.federated_task``
(``flock run``: Prefect flow + DVC snapshots + managed anvil chain + local blob store + MLflow
model versions) in this process on the anchor workload (``_common.ANCHOR``: 10 participants,
MNIST 5k, Dirichlet alpha = 0.5, the CNN, DP off, FedAvg, 10 rounds; --quick: 3 rounds, 1
repeat). Every run gets a fresh ``data_dir`` (a flow run: a new task on its own anvil under
``data_dir/chain``, stopped at the end).

Both engines run the same protocol: every participant proposes and trains, a committee drawn by
sortition votes, each voter recomputes the aggregate, judges it and scores every update. So the
headline is the plain ratio of wall times: the median over repeats of flow wall / simulation
wall. The two draw their sortition from different seeds (the simulation's from the task seed,
the flow's from the chain), so a round's committee differs in size between the two: the voters
each engine had are reported next to the ratio.

The first Prefect call in a process starts the ephemeral API server; that one-off start-up is
measured on its own (a no-op flow), and the cold ratio (first runs in a fresh process, start-up
included) is reported next to the steady-state headline. Where the time goes is measured with
timers wrapped around the package's functions in this process only (no project code changes).

    .venv/bin/python bench/orchestration_overhead.py            # 3 repeats
    .venv/bin/python bench/orchestration_overhead.py --quick    # 1 repeat, 3 rounds

The last stdout line is one JSON object with the headline metric (goal <= 1.5).
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
GOAL = 1.5

from _common import ANCHOR, environment, isolate_tool_state, markdown  # noqa: E402

_TMP = isolate_tool_state("flock-orch-bench-")  # before prefect is imported

_T0 = time.perf_counter()
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

import flock_pipeline.faces.plots as plots  # noqa: E402
import flock_pipeline.simulation as simulation  # noqa: E402
from flock_pipeline.config import FlockConfig, load_config  # noqa: E402
from flock_pipeline.evaluation import GroupLosses  # noqa: E402
from flock_pipeline.protocol.settlement import Alliance  # noqa: E402
from flock_pipeline.report import RunReport  # noqa: E402

_IMPORT_CORE = time.perf_counter() - _T0
_T0 = time.perf_counter()
import mlflow.pytorch  # noqa: E402
import web3.providers.rpc  # noqa: E402
from prefect import flow  # noqa: E402

import flock_pipeline.runtime.coordinator as coordinator_rt  # noqa: E402
import flock_pipeline.runtime.participant as participant_rt  # noqa: E402
import flock_pipeline.runtime.world as world  # noqa: E402
import flows.federated as federated  # noqa: E402
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
            if threading.current_thread().name.startswith(BACKGROUND):
                # Overlaps the main thread's work: a detail, outside the exclusive sum.
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    key = f"background.{category}"
                    self.detail[key] += time.perf_counter() - t0
                    self.detail_calls[key] += 1
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
BACKGROUND = "flock-tracking"
"""The thread name prefix of the work flows.world starts in the background (the tracking
store's opening): timed as ``background.<category>`` details, not in the exclusive sum."""

CATEGORIES = {
    "train": "train_participant: local training of every proposer",
    "aggregate": "the round's aggregate (the simulation once, the flow once per voter)",
    "judgement": "each voter's paired held-out loss test of the aggregate (the flow: "
    "judgement_score per voter; the simulation: GroupLosses.per_sample for all voters at once)",
    "contribution_scoring": "each voter's leave-one-out contribution scores (the simulation "
    "builds every counterfactual aggregate once for all voters, the flow once per voter)",
    "evaluate": "the new global model on the test split and every held-out split",
    "chain": "the simulation: the protocol model (settlement.Alliance); the flow: "
    "AllianceClient calls, deploy, dev signers, time travel and raw RPC",
    "anvil_start_stop": "AnvilNode up and down",
    "dvc": "DatasetSnapshots write, snapshot and verify",
    "blobs": "LocalBlobStore put and get",
    "mlflow": "ModelRegistry open, log_round_model, find_version, set_alias (the flow "
    "opens the store in the background while it sets up the chain: see background.mlflow)",
    "prefect_artifact": "the round's Prefect table artifact",
    "data": "prepare_federation and initial_weights",
    "report": "summary.json, plots and the final model",
    "residual (prefect + glue)": "wall minus every category: Prefect task and flow runs, "
    "state, result persistence, logging, and glue",
}


def _patch_public(t: Timers, owner: type, category: str, detail: str | None = None) -> None:
    """Time every public method of ``owner`` under ``category``; with ``detail``, also each
    method on its own as ``detail.<name>`` (nested calls included)."""
    for name, raw in list(vars(owner).items()):
        if not name.startswith("_") and inspect.isfunction(raw):
            if detail is not None:
                t.patch(owner, name, f"{detail}.{name}", detail=True)
            t.patch(owner, name, category)


def _install_timers() -> None:
    t = TIMERS
    # The same work in both engines.
    for mod in (simulation, participant_rt):
        t.patch(mod, "train_participant", "train")
    t.patch(participant_rt, "judgement_score", "judgement")
    # The simulation judges for all voters at once: each model's per-sample losses on every
    # voter's set in one batch (the judgement itself is arithmetic on those).
    t.patch(GroupLosses, "per_sample", "judgement")
    t.patch(simulation, "aggregate", "aggregate")
    t.patch(participant_rt, "aggregate_updates", "aggregate")
    t.patch(coordinator_rt, "aggregate_updates", "aggregate")  # its own check of the winner
    t.patch(simulation, "contribution_table", "contribution_scoring")
    t.patch(participant_rt, "contributions", "contribution_scoring")  # losses call evaluate
    t.patch(simulation, "evaluate_round", "evaluate")
    t.patch(coordinator_rt, "evaluate", "evaluate")  # the round's test evaluation
    t.patch(participant_rt, "evaluate", "evaluate")  # held-out evaluations
    _patch_public(t, Alliance, "chain")
    for mod in (simulation, world):
        t.patch(mod, "prepare_federation", "data")
        t.patch(mod, "initial_weights", "data")
    t.patch(simulation, "write_weights", "report")
    t.patch(plots, "plot_report", "report")
    t.patch(RunReport, "write", "report")
    t.patch(federated, "write_report", "report")
    # Only the flow.
    _patch_public(t, AllianceClient, "chain", detail="AllianceClient")
    for owner, name in ((world, "load_or_deploy"), (world, "dev_signers"), (Chain, "advance_to")):
        t.patch(owner, name, f"{owner.__name__}.{name}", detail=True)
        t.patch(owner, name, "chain")
    t.patch(web3.providers.rpc.HTTPProvider, "make_request", "chain")  # receipts, logs ...
    t.patch(AnvilNode, "up", "anvil_start_stop")
    t.patch(AnvilNode, "down", "anvil_start_stop")
    for name in ("write", "snapshot", "verify"):
        t.patch(DatasetSnapshots, name, "dvc")
    t.patch(LocalBlobStore, "put", "blobs")
    t.patch(LocalBlobStore, "get", "blobs")
    for name in ("open", "log_round_model", "find_version", "set_alias"):
        t.patch(ModelRegistry, name, "mlflow")
    t.patch(federated, "create_table_artifact", "prefect_artifact")
    # Nested details (not in the exclusive sum).
    t.patch(mlflow.pytorch, "log_model", "mlflow.pytorch.log_model", detail=True)
    # The HTTP request itself: web3's cache (the chain id) answers inside make_request.
    t.patch(web3.providers.rpc.HTTPProvider, "_make_request", "rpc_requests", detail=True)
    t.patch(web3.providers.rpc.HTTPProvider, "make_batch_request", "rpc_batches", detail=True)
    _count_rpc_methods(t)


def _count_rpc_methods(t: Timers) -> None:
    """A detail timer per JSON-RPC method (``rpc.<method>``): what a transaction or a read
    costs in requests to anvil (HTTP requests only, not the answers of web3's cache)."""
    provider = web3.providers.rpc.HTTPProvider
    raw = provider._make_request

    def counted(self: Any, method: Any, request_data: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return raw(self, method, request_data)
        finally:
            key = f"rpc.{method}"
            t.detail[key] += time.perf_counter() - t0
            t.detail_calls[key] += 1

    provider._make_request = counted  # type: ignore[method-assign]


# ---------------------------------------------------------------- runs


def _config(data_dir: Path, rounds: int, participants: int) -> FlockConfig:
    overrides = {**ANCHOR, "rounds": rounds, "participants": participants}
    return load_config(None, {**overrides, "data_dir": str(data_dir)})


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
    jobs = timers["jobs"]
    rounds = summary["rounds"]
    proposers = sum(p["role"] in ("proposer", "both") for r in rounds for p in r["participants"])
    if proposers != len(jobs):
        raise RuntimeError(f"{kind} report has {proposers} proposals, timed {len(jobs)} jobs")
    return {
        "wall": wall,
        "cpu": cpu,
        "rounds_seconds": sum(r["seconds"] for r in rounds),
        "round_seconds": [r["seconds"] for r in rounds],
        "train_jobs": len(jobs),
        "votes": sum(p["role"] in ("voter", "both") for r in rounds for p in r["participants"]),
        "residual_seconds": wall - exclusive,
        "final_accuracy": summary["final"]["accuracy"],
        "accepted_rounds": summary["final"]["accepted_rounds"],
        "honest_slashes": summary["final"]["honest_slashes"],
        "outcomes": [r["outcome"] for r in rounds],
        "roles": [{p["id"]: p["role"] for p in r["participants"]} for r in rounds],
        **timers,
    }


def run_simulation(rounds: int, participants: int) -> dict[str, Any]:
    with _fresh_dir("simulation") as d:
        cfg = _config(d / "data", rounds, participants)
        TIMERS.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = simulation.run_simulation(cfg, d / "out", Console(stderr=True, quiet=True))
        plots.plot_report(result.report, d / "out")  # the figures, as the flow draws them
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return _finish("simulation", wall, cpu, result.summary)


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


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _median_breakdown(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for r in runs for k in r["seconds"]})
    out = {k: round(statistics.median(r["seconds"].get(k, 0.0) for r in runs), 3) for k in keys}
    out["residual (prefect + glue)"] = round(_median(runs, "residual_seconds"), 3)
    return out


def _median_details(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median seconds and calls per detail timer (nested calls included), largest first."""
    keys = {k for r in runs for k in r["detail_seconds"]}
    rows = {
        k: {
            "seconds": round(statistics.median(r["detail_seconds"].get(k, 0.0) for r in runs), 3),
            "calls": int(statistics.median(r["detail_calls"].get(k, 0) for r in runs)),
        }
        for k in keys
    }
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["seconds"]))


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _tables(payload: dict[str, Any]) -> list[dict[str, str]]:
    s, st = payload["settings"], payload["steady_state"]
    rows = [
        ["wall time (s, median)", _fmt(st["simulation_wall_median"]),
         _fmt(st["flow_wall_median"]), f"**{_fmt(st['ratio_wall'], 3)}**"],
        ["rounds' wall time (s, median)", _fmt(st["simulation_rounds_seconds_median"]),
         _fmt(st["flow_rounds_seconds_median"]), _fmt(st["ratio_rounds"], 3)],
        ["per round (s, median of the runs' means)", _fmt(st["simulation_round_seconds"]),
         _fmt(st["flow_round_seconds"]), ""],
        ["local training jobs", str(st["simulation_train_jobs"]), str(st["flow_train_jobs"]), ""],
        ["votes (voter-rounds)", str(st["simulation_votes"]), str(st["flow_votes"]), ""],
        ["final accuracy", _fmt(st["simulation_final_accuracy"], 4),
         _fmt(st["flow_final_accuracy"], 4), ""],
        ["rounds accepted", str(st["simulation_accepted_rounds"]),
         str(st["flow_accepted_rounds"]), ""],
    ]  # fmt: skip
    note = (
        f"Anchor workload, {s['participants']} participants x {s['rounds']} rounds, median of "
        f"{s['repeats']} repeats (ratio: median of the per-repeat ratios). 1-minute load "
        f"average {payload['environment']['loadavg_before'][0]} before, "
        f"{payload['environment']['loadavg_after'][0]} after, on 2 shared cores."
    )
    out = [
        {
            "title": "Simulation against the flow",
            "markdown": markdown(["", "simulation", "flow", "ratio"], rows),
            "note": note,
        }
    ]
    sim, fl = (payload["breakdown_median_seconds"][k] for k in ("simulation", "flow"))
    keys = [k for k in CATEGORIES if k in sim or k in fl]
    rows = [[k, _fmt(sim.get(k)), _fmt(fl.get(k)), _fmt(fl.get(k, 0.0) - sim.get(k, 0.0)),
             CATEGORIES[k]] for k in keys]  # fmt: skip
    rows.append(["**wall**", _fmt(st["simulation_wall_median"]), _fmt(st["flow_wall_median"]),
                 _fmt(st["flow_wall_median"] - st["simulation_wall_median"]), ""])  # fmt: skip
    out.append({
        "title": "Where the time goes (s, median per run)",
        "markdown": markdown(["part", "simulation", "flow", "flow - simulation", "what"], rows,
                             "lrrrl"),
        "note": "Exclusive categories (outermost timed call only, so nothing is counted twice); "
        "a category's median is taken over the runs on its own, so the rows need not add up to "
        "the wall's median exactly.",
    })  # fmt: skip
    details = payload["flow_details_median"]
    rounds = s["rounds"]
    rows = [[f"`{k}`", _fmt(d["seconds"]), str(d["calls"]), _fmt(d["seconds"] / rounds, 3)]
            for k, d in details.items() if d["seconds"] >= 0.01]  # fmt: skip
    out.append({
        "title": "The flow's chain and MLflow calls (s, median per run)",
        "markdown": markdown(["call", "seconds", "calls", "seconds per round"], rows),
        "note": "Each call timed on its own, nested calls included (rpc_requests: every "
        "JSON-RPC HTTP request to anvil, inside the calls above, not the chain ids web3's "
        "cache answers; rpc_batches: the batched reads, one request each; rpc.<method>: "
        "rpc_requests by method); deploy and dev signers are once per run.",
    })  # fmt: skip
    cold = payload["cold"]
    rows = [[k.replace("_", " "), f"{v:.3f}" if isinstance(v, float) else str(v)]
            for k, v in cold.items()]  # fmt: skip
    out.append({"title": "First run in a fresh process", "markdown": markdown(["", "value"], rows),
                "note": "The simulation runs first and also pays the process's first-use "
                "costs (data set load, torch warm-up)."})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default: the anchor's 10")
    parser.add_argument("--participants", type=int, default=int(ANCHOR["participants"]))
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else int(ANCHOR["rounds"]))
    repeats = args.repeats or (1 if args.quick else 3)
    n = args.participants
    out = args.out or RESULTS.with_name(
        "orchestration_overhead" + ("_quick" if args.quick else "") + ".json"
    )
    # The models are small: on a shared 2-core machine one thread is faster than two fighting.
    torch.set_num_threads(args.threads)

    _install_timers()
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    # Cold: the first run of each in this process. The simulation goes first, so it also pays
    # the process's first-use costs shared by both (data set load, torch warm-up).
    cold_sim = run_simulation(rounds, n)
    startup = _time_noop()  # the ephemeral Prefect API server starts here
    noop_warm = statistics.median(_time_noop() for _ in range(3))
    cold_flow = run_flow(rounds, n)
    print(
        f"warm-up: simulation {cold_sim['wall']:.1f}s, prefect start-up {startup:.1f}s, "
        f"flow {cold_flow['wall']:.1f}s",
        file=sys.stderr,
    )

    sim_runs: list[dict[str, Any]] = []
    flow_runs: list[dict[str, Any]] = []
    loads = []
    for i in range(repeats):
        sim_runs.append(run_simulation(rounds, n))
        flow_runs.append(run_flow(rounds, n))
        loads.append([round(v, 2) for v in os.getloadavg()])
        print(
            f"repeat {i + 1}/{repeats}: simulation {sim_runs[-1]['wall']:.1f}s, "
            f"flow {flow_runs[-1]['wall']:.1f}s, load {loads[-1][0]}",
            file=sys.stderr,
        )
    load_after = os.getloadavg()
    total = time.perf_counter() - t_start

    pairs = list(zip(flow_runs, sim_runs, strict=True))
    ratio = statistics.median(f["wall"] / s["wall"] for f, s in pairs)
    ratio_rounds = statistics.median(f["rounds_seconds"] / s["rounds_seconds"] for f, s in pairs)
    cold_flow_wall = startup + cold_flow["wall"]
    cold = {
        "simulation_wall": round(cold_sim["wall"], 3),
        "prefect_startup": round(startup, 3),
        "flow_wall_excl_startup": round(cold_flow["wall"], 3),
        "flow_wall_incl_startup": round(cold_flow_wall, 3),
        "ratio_incl_startup": round(cold_flow_wall / cold_sim["wall"], 4),
        "ratio_excl_startup": round(cold_flow["wall"] / cold_sim["wall"], 4),
    }

    def per_round(runs: list[dict[str, Any]]) -> float:
        means = [float(r["rounds_seconds"]) / len(r["round_seconds"]) for r in runs]
        return round(statistics.median(means), 3)

    steady = {
        "ratio_wall": round(ratio, 4),
        "ratio_rounds": round(ratio_rounds, 4),
        "ratio_of_medians": round(_median(flow_runs, "wall") / _median(sim_runs, "wall"), 4),
        "simulation_wall_median": round(_median(sim_runs, "wall"), 3),
        "flow_wall_median": round(_median(flow_runs, "wall"), 3),
        "simulation_rounds_seconds_median": round(_median(sim_runs, "rounds_seconds"), 3),
        "flow_rounds_seconds_median": round(_median(flow_runs, "rounds_seconds"), 3),
        "simulation_round_seconds": per_round(sim_runs),
        "flow_round_seconds": per_round(flow_runs),
        "flow_minus_simulation_per_round": round(per_round(flow_runs) - per_round(sim_runs), 3),
        "simulation_train_jobs": int(_median(sim_runs, "train_jobs")),
        "flow_train_jobs": int(_median(flow_runs, "train_jobs")),
        "simulation_votes": int(_median(sim_runs, "votes")),
        "flow_votes": int(_median(flow_runs, "votes")),
        "simulation_final_accuracy": _median(sim_runs, "final_accuracy"),
        "flow_final_accuracy": _median(flow_runs, "final_accuracy"),
        "simulation_accepted_rounds": int(_median(sim_runs, "accepted_rounds")),
        "flow_accepted_rounds": int(_median(flow_runs, "accepted_rounds")),
    }
    payload: dict[str, Any] = {
        "benchmark": "orchestration_overhead",
        "quick": args.quick,
        "settings": {
            "workload": "anchor (bench/_common.py ANCHOR)",
            "participants": n,
            "rounds": rounds,
            "repeats": repeats,
            "warmup": 1,
            "order": "simulation warm-up, prefect start-up (no-op flow), flow warm-up, then "
            "alternating simulation/flow per repeat",
            "config": json.loads(_config(Path("<tmp>"), rounds, n).model_dump_json()),
            "timed": {
                "simulation": "flock_pipeline.simulation.run_simulation(cfg, out_dir) wall time",
                "flow": "flows.federated.federated_task(config=cfg, out_dir=...) wall time, "
                "fresh data_dir per run (new task, own anvil, DVC repo, MLflow sqlite)",
            },
            "in_process": True,
        },
        "steady_state": steady,
        "cold": cold,
        "prefect": {
            "startup_seconds": round(startup, 3),
            "noop_flow_seconds_warm": round(noop_warm, 4),
            "import_seconds_core": round(_IMPORT_CORE, 3),
            "import_seconds_prefect_mlflow_web3_flows": round(_IMPORT_FLOW, 3),
        },
        "breakdown_median_seconds": {
            "simulation": _median_breakdown(sim_runs),
            "flow": _median_breakdown(flow_runs),
            "categories": CATEGORIES,
        },
        "flow_details_median": _median_details(flow_runs),
        "runs": {
            "cold_simulation": _strip(cold_sim),
            "cold_flow": _strip(cold_flow),
            "simulation": [_strip(r) for r in sim_runs],
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
    head = {
        "metric": "orchestration_time_ratio",
        "value": steady["ratio_wall"],
        "goal": GOAL,
        "better": "lower",
        "ratio_rounds": steady["ratio_rounds"],
        "simulation_wall_s": steady["simulation_wall_median"],
        "flow_wall_s": steady["flow_wall_median"],
        "flow_minus_simulation_per_round_s": steady["flow_minus_simulation_per_round"],
        "cold_ratio_incl_startup": cold["ratio_incl_startup"],
        "prefect_startup_s": cold["prefect_startup"],
        "rounds": rounds,
        "repeats": repeats,
        "quick": args.quick,
    }
    payload["headline"] = head
    payload["tables"] = _tables(payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")

    print(f"participants={n} rounds={rounds} repeats={repeats} threads={torch.get_num_threads()}")
    for table in payload["tables"]:
        print(f"\n{table['title']}\n\n{table['markdown']}")
    print()
    print(json.dumps(head))


if __name__ == "__main__":
    main()
