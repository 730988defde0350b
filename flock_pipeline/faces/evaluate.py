"""The `evaluate` stage: the champion model on the global test split, and per-round metrics.

Reads a task's summary.json and its MLflow registry; writes metrics.json (for `dvc metrics`) and
rounds.csv (for `dvc plots`). Same inputs, same bytes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flock_pipeline.config import FlockConfig
from flock_pipeline.errors import DataError
from flock_pipeline.evaluation import evaluate
from flock_pipeline.models import build_network
from flock_pipeline.report import RunReport
from flock_pipeline.round import prepare_federation
from flock_pipeline.tracking import ModelRegistry

__all__ = ["evaluate_task"]


def _load_summary(path: Path) -> RunReport:
    try:
        return RunReport.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; run the federate stage first") from None
    except ValidationError as exc:
        raise DataError(
            f"{path} is not a task report (docs/report.schema.json): {exc.errors()[0]['msg']}"
        ) from None


def evaluate_task(cfg: FlockConfig, summary_path: Path, out: Path) -> dict[str, Any]:
    summary = _load_summary(summary_path)
    rounds = summary.rounds
    metrics: dict[str, Any] = {
        "final_accuracy": summary.final.accuracy,
        "final_loss": summary.final.loss,
        "accepted_rounds": summary.final.accepted_rounds,
        "void_rounds": summary.final.void_rounds,
        "honest_slashes": summary.final.honest_slashes,
        "rounds": len(rounds),
        "max_epsilon": max((p.epsilon or 0.0 for r in rounds for p in r.participants), default=0.0),
        "rewards_paid": str(sum(int(v) for v in summary.claimed.values())),
    }
    if summary.final.champion_version is not None:
        registry = ModelRegistry.open(
            cfg.tracking.uri, cfg.data_dir, cfg.tracking.experiment, cfg.registered_name
        )
        fed = prepare_federation(cfg)
        net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
        ev = evaluate(net, registry.load_weights("champion"), fed.x_test, fed.y_test)
        metrics["champion"] = {
            "version": summary.final.champion_version,
            "accuracy": ev.accuracy,
            "loss": ev.loss,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with (out / "rounds.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["round", "accuracy", "loss", "outcome"])
        for r in rounds:
            g = r.global_
            writer.writerow(
                [r.round, f"{g.accuracy or 0.0:.6f}", f"{g.loss or 0.0:.6f}", r.outcome]
            )
    return metrics
