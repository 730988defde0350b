"""Plots and tables worth looking at: the partition, accuracy per round."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from rich.table import Table

from flock_pipeline.protocol.params import TOKEN
from flock_pipeline.report import RunReport, totals

__all__ = ["partition_table", "plot_accuracy", "plot_partition", "plot_report", "plot_rewards"]


def partition_table(counts: npt.NDArray[np.int64], ids: Sequence[str]) -> Table:
    table = Table(title="Training samples per class per participant")
    table.add_column("participant")
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right", style="bold")
    for pid, row in zip(ids, counts, strict=True):
        table.add_row(pid, *(str(int(v)) for v in row), str(int(row.sum())))
    return table


def plot_partition(counts: npt.NDArray[np.int64], ids: Sequence[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(ids), 4))
    bottom = np.zeros(len(ids))
    cmap = plt.get_cmap("tab10" if counts.shape[1] <= 10 else "tab20")
    for c in range(counts.shape[1]):
        ax.bar(ids, counts[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c))
        bottom += counts[:, c]
    ax.set_xlabel("participant")
    ax.set_ylabel("training samples")
    ax.set_title("Partition: samples per class")
    ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy(
    rounds: Sequence[int],
    global_acc: Sequence[float],
    holdout_acc: dict[str, Sequence[float]],
    path: Path,
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for pid, accs in holdout_acc.items():
        ax.plot(rounds, accs, marker=".", alpha=0.5, linewidth=1, label=f"{pid} held-out")
    ax.plot(rounds, global_acc, marker="o", color="black", linewidth=2, label="global test")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(list(rounds))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Accuracy of the global model per round")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_rewards(
    ids: Sequence[str], rewards: Sequence[float], slashed: Sequence[float], path: Path
) -> Path:
    """FLOCK earned and slashed per participant over the whole task."""
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(ids), 4))
    x = np.arange(len(ids))
    ax.bar(x - 0.2, rewards, width=0.4, color="tab:green", label="rewarded")
    ax.bar(x + 0.2, [-s for s in slashed], width=0.4, color="tab:red", label="slashed")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, list(ids))
    ax.set_xlabel("participant")
    ax.set_ylabel("FLOCK")
    ax.set_title("Rewards and slashes per participant")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_report(
    report: RunReport, out: Path, counts: npt.NDArray[np.int64] | None = None
) -> dict[str, Path]:
    """A run's figures next to its summary.json, the same for both engines: accuracy.png (the
    global model's test accuracy per round, with each participant's held-out accuracy where
    the report has it for every round), rewards.png (FLOCK paid and slashed per participant)
    and, given the partition's ``counts``, partition.png. Name -> path of what it drew."""
    rounds = report.rounds
    if not rounds:
        return {}
    ids = [p.id for p in rounds[0].participants]
    holdout: dict[str, Sequence[float]] = {}
    for i, pid in enumerate(ids):
        accs = [h.accuracy if (h := r.participants[i].holdout) else None for r in rounds]
        if all(a is not None for a in accs):
            holdout[pid] = [float(a) for a in accs if a is not None]
    files = {
        "accuracy_plot": plot_accuracy(
            [r.round for r in rounds],
            [r.global_.accuracy or 0.0 for r in rounds],
            holdout,
            out / "accuracy.png",
        )
    }
    money = totals(rounds)
    files["rewards_plot"] = plot_rewards(
        ids,
        [money[i][0] / TOKEN for i in ids],
        [money[i][1] / TOKEN for i in ids],
        out / "rewards.png",
    )
    if counts is not None:
        files["partition_plot"] = plot_partition(counts, ids, out / "partition.png")
    return files
