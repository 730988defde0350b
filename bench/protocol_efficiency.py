"""Protocol efficiency: what the round protocol costs against a plain FedAvg loop, per round.

Two workloads:

- ``anchor``: the field's anchor: 10 participants, MNIST 5k, Dirichlet alpha = 0.5, the CNN,
  1 local epoch, batch 32, lr 0.05, momentum 0.9, local DP off, FedAvg without the screen,
  10 rounds (--quick: 3), seed 0
- ``default``: ``load_config()`` as it ships (4 participants, 3 rounds, DP-SGD on)

Parts, each run on every workload and kept in the results file on its own (``--parts`` runs
some and keeps the figures of the others):

- ``a``: the plain FedAvg loop: every participant trains every round
  (``flock_pipeline.round``: ``train_participant``, ``submitted_updates``, ``aggregate``), the
  aggregate becomes the global model; no votes, so ``accepted`` is None and nobody is slashed

Per round every part records the global test accuracy and loss, ``accepted`` (None where no
vote decides), the slashes of honest participants and the wall seconds of the round.

    .venv/bin/python bench/protocol_efficiency.py                 # every part, both workloads
    .venv/bin/python bench/protocol_efficiency.py --quick         # anchor 3 rounds
    .venv/bin/python bench/protocol_efficiency.py --parts a --workloads anchor

Results: bench/results/protocol_efficiency.json (--quick: protocol_efficiency_quick.json). The
last stdout line is one JSON object with the headline: the anchor workload's final test
accuracy in the plain loop (goal >= 0.9: the reference the protocol's parts are held to).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import environment, isolate_tool_state  # noqa: E402

_TMP = isolate_tool_state("flock-protocol-efficiency-bench-")

from flock_pipeline.config import FlockConfig, load_config  # noqa: E402
from flock_pipeline.evaluation import evaluate  # noqa: E402
from flock_pipeline.models import build_network  # noqa: E402
from flock_pipeline.privacy import PrivacyLedger  # noqa: E402
from flock_pipeline.round import (  # noqa: E402
    aggregate,
    build_aggregator,
    build_screen,
    initial_weights,
    prepare_federation,
    submitted_updates,
    train_participant,
)
from flock_pipeline.seeding import derive_seed  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "protocol_efficiency.json"
GOAL = 0.9

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
    """Every participant trains every round; the aggregate always becomes the global model."""
    fed = prepare_federation(cfg)
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
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
    start = evaluate(net, weights, fed.x_test, fed.y_test)
    rounds: list[dict[str, Any]] = []
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        trained = [
            train_participant(cfg, fed, i, weights, r, ledgers[pid]) for i, pid in enumerate(ids)
        ]
        t1 = time.perf_counter()
        updates = submitted_updates(cfg, trained, weights, r)
        agg = aggregate(strategy, updates, weights, state, derive_seed(cfg.seed, "agg", r), screen)
        weights, state = dict(agg.weights), dict(agg.state)
        t2 = time.perf_counter()
        result = evaluate(net, weights, fed.x_test, fed.y_test)
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


PARTS: dict[str, tuple[str, Callable[[FlockConfig], dict[str, Any]]]] = {
    "a": ("plain FedAvg loop: every participant trains every round, no votes", plain_loop),
}
"""Part name -> (what it measures, its run on one workload's config)."""


# ---------------------------------------------------------------- results


def _run_part(part: str, workload: str, quick: bool) -> dict[str, Any]:
    cfg = _config(workload, quick, Path(tempfile.mkdtemp(prefix=f"{workload}-", dir=_TMP)))
    _log(f"part {part} on {workload}: {cfg.participants} participants, {cfg.rounds} rounds")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = PARTS[part][1](cfg)
    seconds = time.perf_counter() - t0
    walls = [r["wall_seconds"] for r in result["rounds"]]
    return {
        "description": PARTS[part][0],
        "config": cfg.model_dump(mode="json", exclude={"data_dir"}),
        **result,
        "mean_round_seconds": round(sum(walls) / len(walls), 3),
        "seconds_total": round(seconds, 1),
        "environment": environment(load_before),
    }


def _merge(path: Path, runs: dict[str, dict[str, dict[str, Any]]], quick: bool) -> dict[str, Any]:
    """The results file with ``runs`` (workload -> part -> figures) put in, other parts kept."""
    payload: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    payload.update({"benchmark": "protocol_efficiency", "quick": quick})
    workloads = payload.setdefault("workloads", {})
    for workload, parts in runs.items():
        workloads.setdefault(workload, {}).setdefault("parts", {}).update(parts)
    payload["parts"] = {name: desc for name, (desc, _) in PARTS.items()}
    payload["goal_anchor_final_accuracy_min"] = GOAL
    return payload


def _table(payload: dict[str, Any]) -> str:
    lines = [
        "| workload | part | round | accuracy | accepted | honest slashes | wall s |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for workload, entry in payload["workloads"].items():
        for part, res in sorted(entry["parts"].items()):
            for r in res["rounds"]:
                lines.append(
                    f"| {workload} | {part} | {r['round']} | {r['accuracy']:.4f} | "
                    f"{r['accepted']} | {r['honest_slashes']} | {r['wall_seconds']:.2f} |"
                )
    return "\n".join(lines)


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
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in args.workloads:
        for part in args.parts:
            runs.setdefault(workload, {})[part] = _run_part(part, workload, args.quick)
            # Written after every run, so a failing later run keeps the earlier figures.
            payload = _merge(out, runs, args.quick)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(payload, indent=2) + "\n")

    payload = json.loads(out.read_text())
    print(_table(payload))
    for workload, entry in payload["workloads"].items():
        for part, res in sorted(entry["parts"].items()):
            print(
                f"{workload} part {part}: final accuracy {res['final_accuracy']:.4f}, "
                f"mean round {res['mean_round_seconds']:.2f} s, total {res['seconds_total']} s"
            )
    anchor = payload["workloads"].get("anchor", {}).get("parts", {}).get("a")
    print(
        json.dumps(
            {
                "metric": "anchor_final_accuracy_plain",
                "value": None if anchor is None else round(anchor["final_accuracy"], 4),
                "goal": GOAL,
                "better": "higher",
                "mean_round_seconds": None if anchor is None else anchor["mean_round_seconds"],
                "rounds": None if anchor is None else len(anchor["rounds"]),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
