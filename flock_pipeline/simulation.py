"""The plain simulation: N participants, R rounds, no orchestration, no chain.

It composes the same round steps (``flock_pipeline.round``) the Prefect flows call. Results go to
``out_dir``: summary.json, accuracy.png, partition.png and the final model as safetensors.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flock_pipeline.aggregation import Aggregate, CentralDP, Strategy, StrategyState
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.attacks import tamper_contributions
from flock_pipeline.config import FlockConfig
from flock_pipeline.contribution import contribution_table
from flock_pipeline.data import Federation
from flock_pipeline.evaluation import evaluate
from flock_pipeline.models import build_network
from flock_pipeline.privacy import LedgerStore
from flock_pipeline.reporting import partition_table, plot_accuracy, plot_partition
from flock_pipeline.round import (
    aggregate,
    build_aggregator,
    build_screen,
    evaluate_round,
    initial_weights,
    prepare_federation,
    submitted_updates,
    train_participant,
)
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, content_hash, write_weights
from flock_pipeline.update import Update

__all__ = ["SimulationResult", "run_simulation"]


@dataclass
class SimulationResult:
    summary: dict[str, Any]
    final_weights: Weights
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return float(self.summary["final"]["accuracy"])


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)


def _score_round(
    cfg: FlockConfig,
    fed: Federation,
    strategy: Strategy,
    updates: list[Update],
    weights: Weights,
    state: StrategyState,
    seed: int,
    screen: Screen | None,
    agg: Aggregate,
    history: list[dict[str, float]],
) -> dict[str, float]:
    """Every participant votes as a validator would: scores each update's contribution on its
    own held-out split, or on the task's shared validation set (``data.validation: shared``;
    then every honest voter measures the same, so the table is computed once); a dishonest
    voter negates them. The round's score of an update is the mean over the voters (equal
    stakes), as the contract's stake-weighted mean would be."""
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    # On a shared set every voter measures the same: one column of scores serves them all.
    voters = range(1 if fed.shared_validation else len(fed.participants))
    losses = {
        fed.participants[i].id: (lambda w, i=i: evaluate(net, w, *fed.voter_data(i)).loss)
        for i in voters
    }
    table = contribution_table(
        strategy, updates, weights, state, seed, screen, losses, agg, history
    )
    if fed.shared_validation:
        (scores,) = table.values()
        table = {p.id: scores for p in fed.participants}
    voted = [tamper_contributions(scores, cfg.attacks.get(v)) for v, scores in table.items()]
    return {
        u.participant: sum(col) / len(col)
        for u, col in zip(updates, zip(*voted, strict=True), strict=True)
    }


def run_simulation(
    cfg: FlockConfig,
    out_dir: Path | None = None,
    console: Console | None = None,
    fed: Federation | None = None,
) -> SimulationResult:
    """Run the task; with ``out_dir``, write the report there (its privacy ledgers start fresh)."""
    console = console or Console(stderr=True, quiet=out_dir is None)
    fed = fed or prepare_federation(cfg)
    ids = [p.id for p in fed.participants]
    console.print(partition_table(fed.counts, ids))

    # A simulation's participants exist for one run, so their ledgers do too; rounds within the
    # run accumulate on disk like a real participant's would.
    ledger_dir = (out_dir or cfg.data_dir / "simulation") / "privacy"
    shutil.rmtree(ledger_dir, ignore_errors=True)
    store = LedgerStore(ledger_dir)
    ledgers = {
        pid: store.load(pid, cfg.privacy.delta, cfg.privacy.epsilon_budget)
        if cfg.privacy.enabled
        else None
        for pid in ids
    }

    weights = initial_weights(cfg, fed)
    strategy = build_aggregator(cfg)
    screen = build_screen(cfg)
    central = strategy.accountant() if isinstance(strategy, CentralDP) else None
    state: StrategyState = {}
    # The screen's trust check needs the validators' contribution scores of earlier rounds.
    scoring = screen is not None and screen.min_trust is not None
    history: list[dict[str, float]] = []
    rounds: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        job = progress.add_task("local training", total=cfg.rounds * len(ids))
        for r in range(1, cfg.rounds + 1):
            trained = []
            for i, pid in enumerate(ids):
                progress.update(job, description=f"round {r}/{cfg.rounds} · {pid} training")
                ledger = ledgers[pid]
                trained.append(train_participant(cfg, fed, i, weights, r, ledger))
                if ledger is not None:
                    store.save(ledger)
                progress.advance(job)
            updates = submitted_updates(cfg, trained, weights, r)
            seed = derive_seed(cfg.seed, "agg", r)
            agg = aggregate(strategy, updates, weights, state, seed, screen, history)
            scores = (
                _score_round(cfg, fed, strategy, updates, weights, state, seed, screen, agg,
                             history)
                if scoring else {}
            )  # fmt: skip
            if scores:
                history.append(scores)
            weights, state = agg.weights, dict(agg.state)
            if central is not None:
                central.step(label=str(r))
            outcome = evaluate_round(cfg, fed, weights)
            rounds.append(
                {
                    "round": r,
                    "global": {
                        "accuracy": outcome.global_eval.accuracy,
                        "loss": outcome.global_eval.loss,
                    },
                    "aggregate_hash": content_hash(weights),
                    "selected": list(agg.selected),
                    "flagged": dict(agg.flagged),
                    "central_epsilon": None
                    if central is None
                    else central.epsilon(cfg.privacy.delta),
                    "participants": [
                        {
                            "id": u.participant,
                            "update_hash": u.hash,
                            "num_samples": u.num_samples,
                            "train_loss": _finite(u.metrics.get("train_loss_last")),
                            "holdout": {
                                "accuracy": outcome.holdout[u.participant].accuracy,
                                "loss": outcome.holdout[u.participant].loss,
                            },
                            "attack": None
                            if (spec := cfg.attacks.get(u.participant)) is None
                            else spec.kind,
                            "flagged": agg.flagged.get(u.participant),
                            "contribution": scores.get(u.participant),
                            "epsilon": u.epsilon,
                            "delta": u.delta,
                        }
                        for u in updates
                    ],
                }
            )
            console.print(
                f"round {r}: global accuracy {outcome.global_eval.accuracy:.4f}, "
                f"loss {outcome.global_eval.loss:.4f}"
            )

    last = rounds[-1]["global"]
    summary: dict[str, Any] = {
        "task": {
            "name": "simulation",
            "dataset": fed.dataset,
            "participants": len(ids),
            "rounds": cfg.rounds,
            "data_dir": str(cfg.data_dir),
        },
        "config": json.loads(cfg.model_dump_json()),
        "partition": {pid: [int(v) for v in row] for pid, row in zip(ids, fed.counts, strict=True)},
        "rounds": rounds,
        "final": {
            "accuracy": last["accuracy"],
            "loss": last["loss"],
            "model_hash": rounds[-1]["aggregate_hash"],
        },
    }
    result = SimulationResult(summary, weights, out_dir)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.files = {
            "summary": out_dir / "summary.json",
            "accuracy_plot": out_dir / "accuracy.png",
            "partition_plot": out_dir / "partition.png",
            "model": out_dir / "model.safetensors",
        }
        result.files["summary"].write_text(json.dumps(summary, indent=2) + "\n")
        plot_accuracy(
            [x["round"] for x in rounds],
            [x["global"]["accuracy"] for x in rounds],
            {
                pid: [x["participants"][i]["holdout"]["accuracy"] for x in rounds]
                for i, pid in enumerate(ids)
            },
            result.files["accuracy_plot"],
        )
        plot_partition(fed.counts, ids, result.files["partition_plot"])
        write_weights(weights, result.files["model"])
    return result
