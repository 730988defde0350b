"""The ``flock`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flock_pipeline.chain.cli import chain_app
from flock_pipeline.config import load_config
from flock_pipeline.errors import FlockError

__all__ = ["app", "main"]

app = typer.Typer(
    help="flock_pipeline: federated learning with differential privacy and on-chain incentives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (see README)")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="output folder")]


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def run(
    config: ConfigOpt = None,
    out: OutOpt = None,
    rounds: Annotated[int | None, typer.Option(help="number of rounds")] = None,
    participants: Annotated[int | None, typer.Option(help="number of participants")] = None,
    seed: Annotated[int | None, typer.Option(help="task seed")] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist5k | digits | fashion_mnist")] = None,
    model: Annotated[str | None, typer.Option(help="mlp | cnn")] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp", help="local DP-SGD on or off")] = None,
) -> None:
    """Run a federated task on the embedded defaults and write summary.json and plots."""
    from flock_pipeline.simulation import run_simulation

    cfg = load_config(
        config,
        _overrides(
            rounds=rounds,
            participants=participants,
            seed=seed,
            **{"data.dataset": dataset, "model.name": model, "privacy.enabled": dp},
        ),
    )
    out_dir = out or cfg.data_dir / "runs" / "latest"
    result = run_simulation(cfg, out_dir, console=err)
    for name, path in result.files.items():
        err.print(f"{name}: {path}")
    final = result.summary["final"]
    print(json.dumps({"accuracy": final["accuracy"], "loss": final["loss"], "out": str(out_dir)}))


@app.command()
def partition(config: ConfigOpt = None, out: OutOpt = None) -> None:
    """Show how the data set is split among participants (table, and a PNG with --out)."""
    from flock_pipeline.reporting import partition_table, plot_partition
    from flock_pipeline.round import prepare_federation

    cfg = load_config(config)
    fed = prepare_federation(cfg)
    ids = [p.id for p in fed.participants]
    Console().print(partition_table(fed.counts, ids))
    if out is not None:
        err.print(f"partition plot: {plot_partition(fed.counts, ids, out / 'partition.png')}")


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the fully resolved configuration (defaults < file < FLOCK_* env)."""
    print(load_config(config).model_dump_json(indent=2))


app.add_typer(chain_app, name="chain", help="The local chain: up, down, status, deploy.")


def main() -> None:
    try:
        app()
    except FlockError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
