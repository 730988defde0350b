"""Protocol efficiency: what the round protocol costs against a plain FedAvg loop, per round.

Two workloads:

- ``anchor``: the field's anchor (``_common.ANCHOR``): 10 participants, MNIST 5k, Dirichlet
  alpha = 0.5, the CNN, 1 local epoch, batch 32, lr 0.05, momentum 0.9, local DP off, FedAvg
  without the screen, 10 rounds (--quick: 3), seed 0
- ``default``: ``load_config()`` as it ships (4 participants, 3 rounds, DP-SGD on)

Parts, each run on every workload and kept in the results file on its own (``--parts`` runs
some and keeps the figures of the others):

- ``a``: the plain FedAvg loop: every participant trains every round
  (``flock_pipeline.round``: ``train_participant``, ``submitted_updates``, ``aggregate``), the
  aggregate becomes the global model; no votes, so ``accepted`` is None and nobody is slashed.
  It reports what the engines' reports hold of every round's model, and evaluates it as they do
  (``evaluate_round``): on the test split and on every participant's held-out split (federated
  evaluation, as Flower's FedAvg does by default)
- ``b``: ``flock simulate``: ``flock_pipeline.simulation.run_simulation``, the protocol with
  sortition, every voter's judgement and contribution scores, the protocol model's tally and
  settlement, no orchestration
- ``c``: ``flock run``: ``flows.federated.federated_task``, the Prefect flow on a managed anvil
  (started and stopped by the flow) with DVC snapshots, the blob store and MLflow versions.
  Prefect's ephemeral API server is started once, by a no-op flow, before the first timed run

One local training and one evaluation run first, untimed (``_warm_up``): the first in a
process pays Lightning's import and torch's first kernels, which fell on part a's first round
(3.0 s against 0.8 s for the next) and made the simulation look cheaper against it than it is.
Every run gets a fresh ``data_dir`` in the bench's throw-away tool state. Per round every part
records the global test accuracy and loss, the outcome (None where no vote decides), the
slashes of honest participants (no attack configured, slashed > 0) and the wall seconds of the
round (``RunReport.rounds[].seconds`` for b and c). The wall ratios divide the rounds' summed
wall time (set-up, data loading and the final report are outside every round); the whole runs'
ratios are reported next to them.

    .venv/bin/python bench/protocol_efficiency.py                 # every part, both workloads
    .venv/bin/python bench/protocol_efficiency.py --quick         # anchor 3 rounds
    .venv/bin/python bench/protocol_efficiency.py --parts a --workloads anchor

Results: bench/results/protocol_efficiency.json (--quick: protocol_efficiency_quick.json). The
last stdout line is one JSON object with the headline: the rounds the flow accepted on the
anchor workload (goal: at least 9 of 10), with the other goals next to it: the flow's final
accuracy within 2 points of the plain loop's, no honest participant slashed, and the wall
ratios simulation / plain (<= 1.2) and flow / simulation (<= 1.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import ANCHOR, environment, isolate_tool_state, markdown  # noqa: E402

_TMP = isolate_tool_state("flock-protocol-efficiency-bench-")

from rich.console import Console  # noqa: E402

from flock_pipeline.config import FlockConfig, load_config  # noqa: E402
from flock_pipeline.faces.plots import plot_report  # noqa: E402
from flock_pipeline.privacy import PrivacyLedger  # noqa: E402
from flock_pipeline.round import (  # noqa: E402
    aggregate,
    build_aggregator,
    build_screen,
    evaluate_round,
    initial_weights,
    prepare_federation,
    submitted_updates,
    train_participant,
)
from flock_pipeline.seeding import derive_seed  # noqa: E402
from flock_pipeline.simulation import run_simulation  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "protocol_efficiency.json"
GOAL = 0.9  # the plain loop's final accuracy on the anchor: the reference the parts are held to
ACCEPTED_SHARE_MIN = 0.9  # of the flow's rounds on the anchor
ACCURACY_GAP_MAX = 2.0  # points between the flow's and the plain loop's final accuracy
SIM_OVER_PLAIN_MAX = 1.2
FLOW_OVER_SIM_MAX = 1.5

WORKLOADS: dict[str, dict[str, Any]] = {"anchor": ANCHOR, "default": {}}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config(workload: str, quick: bool, data_dir: Path) -> FlockConfig:
    overrides = dict(WORKLOADS[workload])
    if quick and workload == "anchor":
        overrides["rounds"] = 3
    return load_config(None, {**overrides, "data_dir": str(data_dir)})


# ---------------------------------------------------------------- part (a)


def plain_loop(cfg: FlockConfig) -> dict[str, Any]:
    """Every participant trains every round; the aggregate always becomes the global model.

    Training is seeded by the engines' 0-based round index, so while (b) and (c) accept every
    round they train and aggregate exactly what (a) does."""
    fed = prepare_federation(cfg)
    ids = [p.id for p in fed.participants]
    ledgers = {
        pid: PrivacyLedger(pid, cfg.privacy.delta, cfg.privacy.epsilon_budget)
        if cfg.privacy.enabled
        else None
        for pid in ids
    }
    strategy, screen = build_aggregator(cfg), build_screen(cfg)
    weights = initial_weights(cfg, fed)
    state: dict[str, Any] = {}
    start = evaluate_round(cfg, fed, weights).global_eval
    rounds: list[dict[str, Any]] = []
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        index = r - 1  # the round on chain, as the engines number it
        trained = [
            train_participant(cfg, fed, i, weights, index, ledgers[pid])
            for i, pid in enumerate(ids)
        ]
        t1 = time.perf_counter()
        updates = submitted_updates(cfg, trained, weights, index)
        agg = aggregate(strategy, updates, weights, state, derive_seed(cfg.seed, "agg", r), screen)
        weights, state = dict(agg.weights), dict(agg.state)
        t2 = time.perf_counter()
        evaluated = evaluate_round(cfg, fed, weights)
        result = evaluated.global_eval
        t3 = time.perf_counter()
        epsilons = [u.epsilon for u in updates if u.epsilon is not None]
        rounds.append(
            {
                "round": r,
                "accuracy": result.accuracy,
                "loss": result.loss,
                "accepted": None,
                "honest_slashes": 0,
                "wall_seconds": round(t3 - t0, 3),
                "train_seconds": round(t1 - t0, 3),
                "aggregate_seconds": round(t2 - t1, 3),
                "evaluate_seconds": round(t3 - t2, 3),
                "trained": len(updates),
                "flagged": dict(agg.flagged),
                "max_epsilon": max(epsilons) if epsilons else None,
                "holdout_accuracy": {pid: e.accuracy for pid, e in evaluated.holdout.items()},
            }
        )
        _log(
            f"  round {r}/{cfg.rounds}: accuracy {result.accuracy:.4f}, loss {result.loss:.4f}, "
            f"{t3 - t0:.1f} s"
        )
    return {
        "initial_accuracy": start.accuracy,
        "rounds": rounds,
        "final_accuracy": rounds[-1]["accuracy"],
        "accepted_rounds": None,
        "honest_slashes": 0,
    }


# ---------------------------------------------------------------- parts (b) and (c)


def _from_report(summary: dict[str, Any]) -> dict[str, Any]:
    """The per-round figures of a ``RunReport`` (summary.json), in the plain loop's shape."""
    rounds: list[dict[str, Any]] = []
    for r in summary["rounds"]:
        people = r["participants"]
        honest = [p["id"] for p in people if p["attack"] is None and int(p["slashed"]) > 0]
        epsilons = [p["epsilon"] for p in people if p["epsilon"] is not None]
        rounds.append(
            {
                "round": r["round"],
                "accuracy": r["global"]["accuracy"],
                "loss": r["global"]["loss"],
                "outcome": r["outcome"],
                "accepted": r["accepted"],
                "honest_slashes": len(honest),
                "honest_slashed": honest,
                "wall_seconds": r["seconds"],
                "proposers": sum(p["role"] in ("proposer", "both") for p in people),
                "voters": sum(p["role"] in ("voter", "both") for p in people),
                "accept_weight": r["accept_weight"],
                "reject_weight": r["reject_weight"],
                "screened": r["screened"],
                "flagged": [p["id"] for p in people if p["flagged"]],
                "max_epsilon": max(epsilons) if epsilons else None,
            }
        )
    final = summary["final"]
    counted = sum(r["honest_slashes"] for r in rounds)
    if counted != final["honest_slashes"]:
        raise RuntimeError(
            f"report says {final['honest_slashes']} honest slashes, its rounds {counted}"
        )
    return {
        "rounds": rounds,
        "final_accuracy": final["accuracy"],
        "accepted_rounds": final["accepted_rounds"],
        "void_rounds": final["void_rounds"],
        "honest_slashes": final["honest_slashes"],
    }


def simulation_run(cfg: FlockConfig) -> dict[str, Any]:
    """``flock simulate``: the protocol without orchestration, report written as the CLI does."""
    out = cfg.data_dir.parent / "out"
    result = run_simulation(cfg, out, Console(stderr=True, quiet=True))
    plot_report(result.report, out)
    return _from_report(result.summary)


_PREFECT: dict[str, float] = {}


def _start_prefect() -> None:
    """Start Prefect's ephemeral API server (once per process) with a no-op flow, so no timed
    flow run pays the one-off start-up."""
    if _PREFECT:
        return
    t0 = time.perf_counter()
    from prefect import flow as prefect_flow

    import flows.federated  # noqa: F401  # prefect, MLflow and web3: only when part c runs

    _PREFECT["import_seconds"] = round(time.perf_counter() - t0, 3)

    @prefect_flow(name="bench-noop")
    def noop() -> int:
        return 1

    t0 = time.perf_counter()
    noop()
    _PREFECT["startup_seconds"] = round(time.perf_counter() - t0, 3)


def flow_run(cfg: FlockConfig) -> dict[str, Any]:
    """``flock run``: the Prefect flow, a new task on its own anvil in ``cfg.data_dir``."""
    import flows.federated as federated
    from flock_pipeline.chain.anvil import AnvilNode

    summary = federated.federated_task(config=cfg, out_dir=str(cfg.data_dir.parent / "out"))
    if AnvilNode(cfg.data_dir).status().running:
        raise RuntimeError("the flow left its anvil running")
    return {**_from_report(summary), "prefect": dict(_PREFECT)}


class Part(NamedTuple):
    description: str
    run: Callable[[FlockConfig], dict[str, Any]]
    setup: Callable[[], None] | None = None  # before the timed run


PARTS: dict[str, Part] = {
    "a": Part("plain FedAvg loop: every participant trains every round, no votes", plain_loop),
    "b": Part("flock simulate: run_simulation, the protocol without orchestration", simulation_run),
    "c": Part("flock run: federated_task, the Prefect flow on a managed anvil", flow_run,
              _start_prefect),
}  # fmt: skip


# ---------------------------------------------------------------- results


def _warm_up(workload: str, quick: bool) -> None:
    """One local training and one evaluation, not measured: the first in a process pays for
    Lightning's import and torch's first kernels (2 s here), which would otherwise fall on
    whichever part runs first."""
    folder = Path(tempfile.mkdtemp(prefix="warm-up-", dir=_TMP))
    cfg = _config(workload, quick, folder / "data")
    fed = prepare_federation(cfg)
    weights = initial_weights(cfg, fed)
    train_participant(cfg, fed, 0, weights, 0, None)
    evaluate_round(cfg, fed, weights)


def _run_part(part: str, workload: str, quick: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"{workload}-{part}-", dir=_TMP))
    cfg = _config(workload, quick, folder / "data")
    spec = PARTS[part]
    if spec.setup is not None:
        spec.setup()
    _log(f"part {part} on {workload}: {cfg.participants} participants, {cfg.rounds} rounds")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = spec.run(cfg)
    seconds = time.perf_counter() - t0
    walls = [r["wall_seconds"] for r in result["rounds"]]
    for r in result["rounds"]:
        _log(
            f"  round {r['round']}: accuracy {r['accuracy']:.4f}, {r.get('outcome') or 'applied'}"
            f", honest slashes {r['honest_slashes']}, {r['wall_seconds']:.1f} s"
        )
    return {
        "description": spec.description,
        "config": cfg.model_dump(mode="json", exclude={"data_dir"}),
        **result,
        "rounds_seconds": round(sum(walls), 3),
        "mean_round_seconds": round(sum(walls) / len(walls), 3),
        "seconds_total": round(seconds, 1),
        "environment": environment(load_before),
    }


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None, key: str) -> float | None:
    """``num[key] / den[key]`` of two parts' figures, None when either part has not run."""
    if num is None or den is None or not den[key]:
        return None
    return round(float(num[key]) / float(den[key]), 4)


def _goal(value: Any, goal: str, met: bool | None) -> dict[str, Any]:
    return {"value": value, "goal": goal, "met": met}


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def headline(payload: dict[str, Any]) -> dict[str, Any]:
    """The anchor's goals, from the stored figures of its three parts (None where a part has
    not run)."""
    parts = payload["workloads"].get("anchor", {}).get("parts", {})
    a, b, c = (parts.get(k) for k in "abc")
    rounds = accepted = need = slashes = enough = gap = None
    if c is not None:
        rounds, accepted, slashes = len(c["rounds"]), c["accepted_rounds"], c["honest_slashes"]
        need = math.ceil(ACCEPTED_SHARE_MIN * rounds)
        enough = accepted >= need
        if a is not None:
            gap = round(100 * (c["final_accuracy"] - a["final_accuracy"]), 2)
    sim_plain = _ratio(b, a, "rounds_seconds")
    flow_sim = _ratio(c, b, "rounds_seconds")
    return {
        "metric": "anchor_rounds_accepted_flow",
        "value": accepted,
        "goal": need,
        "better": "higher",
        "met": enough,
        "rounds": rounds,
        "goal_rounds_accepted_flow": _goal(accepted, f">= {need} of {rounds}", enough),
        "goal_accuracy_flow_minus_plain_points": _goal(
            gap,
            f"within {ACCURACY_GAP_MAX:g}",
            _at_most(None if gap is None else abs(gap), ACCURACY_GAP_MAX),
        ),
        "goal_honest_slashes_flow": _goal(slashes, "0", None if slashes is None else slashes == 0),
        "goal_wall_ratio_sim_over_plain": _goal(
            sim_plain, f"<= {SIM_OVER_PLAIN_MAX}", _at_most(sim_plain, SIM_OVER_PLAIN_MAX)
        ),
        "goal_wall_ratio_flow_over_sim": _goal(
            flow_sim, f"<= {FLOW_OVER_SIM_MAX}", _at_most(flow_sim, FLOW_OVER_SIM_MAX)
        ),
        "final_accuracy": {
            k: None if v is None else round(v["final_accuracy"], 4)
            for k, v in (("a", a), ("b", b), ("c", c))
        },
        "rounds_accepted_sim": None if b is None else b["accepted_rounds"],
        "honest_slashes_sim": None if b is None else b["honest_slashes"],
        "whole_run_ratio_sim_over_plain": _ratio(b, a, "seconds_total"),
        "whole_run_ratio_flow_over_sim": _ratio(c, b, "seconds_total"),
        "quick": payload["quick"],
    }


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(payload: dict[str, Any], head: dict[str, Any]) -> list[dict[str, str]]:
    """The goals, one row per workload and part, and the rounds of each workload side by side."""
    goals = [
        [name.removeprefix("goal_").replace("_", " "), _cell(g["value"]), g["goal"],
         "n/a" if g["met"] is None else ("**yes**" if g["met"] else "**no**")]
        for name, g in head.items() if name.startswith("goal_")
    ]  # fmt: skip
    out = [
        {
            "title": "Goals (anchor workload)",
            "markdown": markdown(["goal", "measured", "target", "met"], goals, "lrll"),
            "note": "Wall ratios divide the rounds' summed wall time; accuracy in points, "
            "+ is the flow above the plain loop.",
        }
    ]
    rows = []
    for workload, entry in payload["workloads"].items():
        for part, res in sorted(entry["parts"].items()):
            load = res["environment"]["loadavg_before"][0]
            rows.append([
                workload, part, _cell(res["final_accuracy"]),
                "n/a" if res["accepted_rounds"] is None
                else f"{res['accepted_rounds']} / {len(res['rounds'])}",
                _cell(res["honest_slashes"]), _cell(res["rounds_seconds"], 1),
                _cell(res["seconds_total"], 1), _cell(load, 2),
            ])  # fmt: skip
    header = ["workload", "part", "final accuracy", "rounds accepted", "honest slashes",
              "rounds wall s", "run wall s", "load average"]  # fmt: skip
    out.append({
        "title": "Per workload and part",
        "markdown": markdown(header, rows, "llrrrrrr"),
        "note": "; ".join(f"{k}: {p.description}" for k, p in PARTS.items()) + ". Load "
        "average: the 1-minute load of the 2-core machine when the part started.",
    })  # fmt: skip
    for workload, entry in payload["workloads"].items():
        parts = dict(sorted(entry["parts"].items()))
        n = max(len(p["rounds"]) for p in parts.values())
        header, rows = ["round"], [[str(i + 1)] for i in range(n)]
        for part, res in parts.items():
            voted = res["rounds"][0].get("outcome") is not None
            header += (
                [f"{part} accuracy"]
                + ([f"{part} outcome (voters)", f"{part} honest slashes"] if voted else [])
                + [f"{part} s"]
            )
            for i, row in enumerate(rows):
                r = res["rounds"][i] if i < len(res["rounds"]) else None
                if r is None:
                    row += ["", "", "", ""] if voted else ["", ""]
                    continue
                row.append(_cell(r["accuracy"]))
                if voted:
                    row += [f"{r['outcome']} ({r['voters']})", str(r["honest_slashes"])]
                row.append(_cell(r["wall_seconds"], 2))
        out.append({
            "title": f"Per round, {workload} workload",
            "markdown": markdown(header, rows),
            "note": "Accuracy on the global test split after the round; (a) applies every "
            "aggregate, (b) and (c) keep it only when the votes accept the round.",
        })  # fmt: skip
    return out


def _merge(path: Path, runs: dict[str, dict[str, dict[str, Any]]], quick: bool) -> dict[str, Any]:
    """The results file with ``runs`` (workload -> part -> figures) put in, other parts kept."""
    payload: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    payload.update({"benchmark": "protocol_efficiency", "quick": quick})
    workloads = payload.setdefault("workloads", {})
    for workload, parts in runs.items():
        workloads.setdefault(workload, {}).setdefault("parts", {}).update(parts)
    for entry in workloads.values():  # figures stored before the rounds' sum was
        for res in entry["parts"].values():
            res.setdefault(
                "rounds_seconds", round(sum(r["wall_seconds"] for r in res["rounds"]), 3)
            )
    payload["parts"] = {name: p.description for name, p in PARTS.items()}
    payload["goal_anchor_final_accuracy_min"] = GOAL
    head = headline(payload)
    payload["headline"] = head
    payload["tables"] = tables(payload, head)
    return payload


def _part_list(text: str) -> list[str]:
    """argparse type: comma-separated part names, each one this bench has."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {unknown or text!r}; available: {','.join(PARTS)}"
        )
    return parts


def _workload_list(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {unknown or text!r}; available: {','.join(WORKLOADS)}"
        )
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="anchor workload with 3 rounds")
    parser.add_argument("--parts", type=_part_list, default=list(PARTS), help="e.g. a or a,b,c")
    parser.add_argument("--workloads", type=_workload_list, default=list(WORKLOADS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    # The models are small: on a shared 2-core machine one thread is faster than two fighting.
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    out = args.out or RESULTS.with_name(
        "protocol_efficiency" + ("_quick" if args.quick else "") + ".json"
    )
    _warm_up(args.workloads[0], args.quick)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in args.workloads:
        for part in args.parts:
            runs.setdefault(workload, {})[part] = _run_part(part, workload, args.quick)
            # Written after every run, so a failing later run keeps the earlier figures.
            payload = _merge(out, runs, args.quick)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(payload, indent=2) + "\n")

    payload = json.loads(out.read_text())
    for table in payload["tables"]:
        print(f"\n{table['title']}\n\n{table['markdown']}")
    print()
    print(json.dumps(payload["headline"]))


if __name__ == "__main__":
    main()
