"""DP-SGD overhead of local training: throughput with and without differential privacy.

Runs the project's real local-training path (``flock_pipeline.training.train_local``: Lightning
trainer, Opacus PrivacyEngine, Poisson DPDataLoader, ledger check/record) on one participant's
slice of MNIST 5k, once private and once non-private, same model, data, epochs and seed.
Only the ``train_local`` call is timed; each configuration is warmed up once, then repeated and
the median taken. Throughput is ``samples * epochs / seconds``.

    .venv/bin/python bench/dp_overhead.py            # fuller run
    .venv/bin/python bench/dp_overhead.py --quick    # < 60 s

The last stdout line is one JSON object with the headline metric (non-private throughput divided
by private throughput for the CNN; goal <= 2.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import environment  # noqa: E402

from flock_pipeline.config import PrivacyConfig, TrainingConfig  # noqa: E402
from flock_pipeline.data import load_dataset  # noqa: E402
from flock_pipeline.models import build_network  # noqa: E402
from flock_pipeline.privacy import PrivacyLedger  # noqa: E402
from flock_pipeline.training import train_local  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dp_overhead.json"
GOAL = 2.0


def _time_one(
    model: str,
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    input_shape: tuple[int, int, int],
    num_classes: int,
    training: TrainingConfig,
    privacy: PrivacyConfig,
    seed: int,
) -> dict[str, Any]:
    """One timed ``train_local`` call from a fresh network (network init is not timed)."""
    torch.manual_seed(seed)
    net = build_network(model, input_shape, num_classes)
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ledger = PrivacyLedger("bench", delta=privacy.delta, budget=None) if privacy.enabled else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    update = train_local("bench", net, weights, x, y, training, privacy, ledger, seed=seed)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    run: dict[str, Any] = {
        "wall": wall,
        "cpu": cpu,
        "weights": update.weights,
        "steps": int(update.metrics["steps"]),
        "train_loss_last": update.metrics["train_loss_last"],
        "epsilon": update.epsilon,
    }
    if ledger is not None:
        spend = ledger.history[-1]
        run["ledger"] = {
            "noise_multiplier": spend.noise_multiplier,
            "sample_rate": spend.sample_rate,
            "steps": spend.steps,
        }
    return run


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _summary(runs: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    walls = [r["wall"] for r in runs]
    median = statistics.median(walls)
    last = runs[-1]
    out: dict[str, Any] = {
        "samples_per_s": samples / median,
        "seconds_median": median,
        "seconds_min": min(walls),
        "seconds_all": [round(w, 4) for w in walls],
        "cpu_seconds_median": statistics.median(r["cpu"] for r in runs),
        "steps_last_run": last["steps"],
        "train_loss_last": last["train_loss_last"],
        # Every repeat uses the same seed: without DP every repeat must give bit-identical
        # weights; with DP the noise is secret and fresh, so no two repeats may agree.
        "deterministic": all(_same_weights(runs[0]["weights"], r["weights"]) for r in runs[1:]),
        "all_distinct": all(
            not _same_weights(a["weights"], b["weights"])
            for i, a in enumerate(runs)
            for b in runs[i + 1 :]
        ),
    }
    if "ledger" in last:
        out["ledger"] = last["ledger"]
        out["epsilon"] = last["epsilon"]
    return out


def _measure_model(
    model: str,
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    input_shape: tuple[int, int, int],
    num_classes: int,
    training: TrainingConfig,
    configs: dict[str, PrivacyConfig],
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """Warm up each configuration once, then alternate them ``repeats`` times.

    Alternating (rather than all non-private runs, then all private ones) makes both see the same
    machine conditions, which matters on a shared CPU.
    """
    for cfg in configs.values():
        _time_one(model, x, y, input_shape, num_classes, training, cfg, seed)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
    for _ in range(repeats):
        for label, cfg in configs.items():
            runs[label].append(
                _time_one(model, x, y, input_shape, num_classes, training, cfg, seed)
            )
    samples = len(y) * training.local_epochs
    row: dict[str, Any] = {label: _summary(r, samples) for label, r in runs.items()}
    row["ratio"] = row["non_private"]["samples_per_s"] / row["private"]["samples_per_s"]
    pair_ratios = [
        p["wall"] / q["wall"] for p, q in zip(runs["private"], runs["non_private"], strict=True)
    ]
    row["ratio_pairwise_median"] = statistics.median(pair_ratios)
    row["ratio_min_times"] = row["private"]["seconds_min"] / row["non_private"]["seconds_min"]
    row["ratio_cpu"] = (
        row["private"]["cpu_seconds_median"] / row["non_private"]["cpu_seconds_median"]
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller data (<60s)")
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=["cnn", "mlp"])
    parser.add_argument("--samples", type=int, default=None, help="participant training samples")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=TrainingConfig().batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    samples = args.samples or (1000 if args.quick else 2000)
    epochs = args.epochs or TrainingConfig().local_epochs  # the project default (3)
    repeats = args.repeats or (3 if args.quick else 7)

    data = load_dataset("mnist5k")
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(data))[:samples]
    x = np.ascontiguousarray(data.x[idx])
    y = np.ascontiguousarray(data.y[idx])

    training = TrainingConfig(local_epochs=epochs, batch_size=args.batch_size)
    private = PrivacyConfig(enabled=True, epsilon_budget=None)
    public = PrivacyConfig(enabled=False, epsilon_budget=None)

    configs = {"non_private": public, "private": private}
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        model: _measure_model(
            model, x, y, data.input_shape, data.num_classes, training, configs, repeats, args.seed
        )
        for model in args.models
    }
    load_after = os.getloadavg()

    payload: dict[str, Any] = {
        "benchmark": "dp_overhead",
        "quick": args.quick,
        "settings": {
            "dataset": "mnist5k",
            "samples": samples,
            "epochs": epochs,
            "repeats": repeats,
            "warmup": 1,
            "order": "interleaved non-private/private per repeat",
            "seed": args.seed,
            "training": training.model_dump(),
            "privacy": private.model_dump(mode="json"),
            "timed": "flock_pipeline.training.train_local (median of repeats)",
        },
        "environment": environment(load_before, load_after),
        "models": results,
        "goal_ratio_max": GOAL,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")

    print(f"samples={samples} epochs={epochs} repeats={repeats} threads={torch.get_num_threads()}")
    print(f"{'model':<6} {'non-private/s':>14} {'private/s':>10} {'ratio':>6} {'pairwise':>9}")
    for model, row in results.items():
        print(
            f"{model:<6} {row['non_private']['samples_per_s']:>14.0f} "
            f"{row['private']['samples_per_s']:>10.0f} {row['ratio']:>6.2f} "
            f"{row['ratio_pairwise_median']:>9.2f}"
        )
    head = results.get("cnn") or next(iter(results.values()))
    print(
        json.dumps(
            {
                "metric": "dp_time_ratio_cnn" if "cnn" in results else "dp_time_ratio",
                "value": round(head["ratio"], 4),
                "goal": GOAL,
                "better": "lower",
                "private_samples_per_s": round(head["private"]["samples_per_s"], 1),
                "non_private_samples_per_s": round(head["non_private"]["samples_per_s"], 1),
                "ratio_pairwise_median": round(head["ratio_pairwise_median"], 4),
                "deterministic_without_dp": bool(head["non_private"]["deterministic"]),
                "secret_noise_with_dp": bool(head["private"]["all_distinct"]),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
