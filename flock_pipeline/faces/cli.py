"""The ``flock`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flock_pipeline.chain.cli import chain_app
from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.errors import FlockError
from flock_pipeline.faces.participant_cli import participant_app
from flock_pipeline.limits import check_flow_limits, check_limits

__all__ = ["UserErrorFilter", "app", "main", "quiet_user_errors"]

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


class UserErrorFilter(logging.Filter):
    """Drops the traceback from a log record of a user error (FlockError): Prefect logs a
    failed task or flow run with its traceback, but a user error's message names the problem
    and the fix, and the CLI prints it once more as its last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FlockError):
            record.exc_info, record.exc_text = None, None
        return True


_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def quiet_user_errors() -> None:
    """Install UserErrorFilter on Prefect's flow-run and task-run loggers (once)."""
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorFilter) for f in logger.filters):
            logger.addFilter(UserErrorFilter())


def _start_run(cfg: FlockConfig, command: str) -> None:
    """What `flock run` and `flock serve` do before their first flow run: stop what an ended
    run left behind in the data folder, and start Prefect's temporary server bound to this
    process (so it dies with it) unless PREFECT_API_URL names a server."""
    from flock_pipeline.chain.cli import reap_leftovers
    from flock_pipeline.processes import bind_prefect_temporary_server

    for line in reap_leftovers(cfg.data_dir):
        err.print(f"{line}: an earlier run left it behind", highlight=False)
    quiet_user_errors()
    bind_prefect_temporary_server(cfg.data_dir, command)


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _cli_config(
    config: Path | None,
    rounds: int | None,
    participants: int | None,
    seed: int | None,
    dataset: str | None,
    model: str | None,
    dp: bool | None,
    task: str | None = None,
    data_dir: Path | None = None,
) -> FlockConfig:
    return load_config(
        config,
        _overrides(
            rounds=rounds,
            participants=participants,
            seed=seed,
            task=task,
            data_dir=data_dir,
            **{"data.dataset": dataset, "model.name": model, "privacy.enabled": dp},
        ),
    )


RoundsOpt = Annotated[int | None, typer.Option(help="number of rounds")]
ParticipantsOpt = Annotated[int | None, typer.Option(help="number of participants")]
SeedOpt = Annotated[int | None, typer.Option(help="task seed")]
DatasetOpt = Annotated[str | None, typer.Option(help="mnist5k | digits | fashion_mnist")]
ModelOpt = Annotated[str | None, typer.Option(help="mlp | cnn | package.module:factory")]
DpOpt = Annotated[bool | None, typer.Option("--dp/--no-dp", help="local DP-SGD on or off")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="state folder (.flock)")]


@app.command()
def run(
    config: ConfigOpt = None,
    out: OutOpt = None,
    rounds: RoundsOpt = None,
    participants: ParticipantsOpt = None,
    seed: SeedOpt = None,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    dp: DpOpt = None,
    task: Annotated[str | None, typer.Option(help="task name (default: resume or new)")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run a federated task as a Prefect flow: DVC snapshots, DP training, on-chain settlement,
    MLflow versions. Resumes the unfinished task of the same config after a crash."""
    cfg = _cli_config(config, rounds, participants, seed, dataset, model, dp, task, data_dir)
    check_flow_limits(cfg)  # arithmetic only: before the imports below take seconds
    # Prefect's ephemeral API server gets 20 s to start by default, which a busy 2-core machine
    # (training, anvil, the server itself) can miss; a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flock_pipeline.runtime.world import preflight
    from flows.federated import federated_task

    preflight(cfg)
    _start_run(cfg, "flock run")
    summary = federated_task(config=cfg, out_dir=str(out) if out else None)
    final = summary["final"]
    out_dir = out or cfg.data_dir / "runs" / summary["task"]["name"]
    err.print(f"summary: {out_dir / 'summary.json'}")
    line = {
        "task": summary["task"]["name"],
        "accuracy": final["accuracy"],
        "champion_version": final["champion_version"],
        "out": str(out_dir),
    }
    print(json.dumps(line))


@app.command()
def simulate(
    config: ConfigOpt = None,
    out: OutOpt = None,
    rounds: RoundsOpt = None,
    participants: ParticipantsOpt = None,
    seed: SeedOpt = None,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    dp: DpOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The plain simulation: same rounds, no orchestration, chain, registry or snapshots."""
    cfg = _cli_config(config, rounds, participants, seed, dataset, model, dp, None, data_dir)
    check_limits(cfg)
    from flock_pipeline.faces.plots import partition_table, plot_report
    from flock_pipeline.round import prepare_federation
    from flock_pipeline.simulation import run_simulation

    out_dir = out or cfg.data_dir / "runs" / "simulation"
    fed = prepare_federation(cfg)
    err.print(partition_table(fed.counts, [p.id for p in fed.participants]))
    result = run_simulation(cfg, out_dir, console=err, fed=fed)
    result.files.update(plot_report(result.report, out_dir, fed.counts))
    for name, path in result.files.items():
        err.print(f"{name}: {path}")
    final = result.summary["final"]
    print(json.dumps({"accuracy": final["accuracy"], "loss": final["loss"], "out": str(out_dir)}))


@app.command()
def partition(
    config: ConfigOpt = None,
    out: OutOpt = None,
    export: Annotated[
        Path | None,
        typer.Option(help="write each participant's data folder (p0/train.npz, ...) here"),
    ] = None,
) -> None:
    """Show how the data set is split among participants (table; with --out also
    partition.json and partition.png; with --export one data folder per participant, for
    trying participant workers on one machine: docs/workers.md)."""
    cfg = load_config(config)
    check_limits(cfg)
    from flock_pipeline.faces.plots import partition_table, plot_partition
    from flock_pipeline.round import prepare_federation

    fed = prepare_federation(cfg)
    ids = [p.id for p in fed.participants]
    Console(stderr=True).print(partition_table(fed.counts, ids))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        counts = {pid: [int(v) for v in row] for pid, row in zip(ids, fed.counts, strict=True)}
        (out / "partition.json").write_text(json.dumps(counts, indent=2) + "\n")
        err.print(f"partition plot: {plot_partition(fed.counts, ids, out / 'partition.png')}")
    if export is not None:
        from flock_pipeline.data.folder import write_folder

        for p in fed.participants:
            err.print(f"{p.id}: {write_folder(export / p.id, p)}")


@app.command("evaluate")
def evaluate_cmd(
    summary: Annotated[Path, typer.Option(help="summary.json of a task run")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for metrics.json, rounds.csv")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate a finished task: its champion on the global test split, metrics per round."""
    from flock_pipeline.faces.evaluate import evaluate_task

    cfg = load_config(config, _overrides(data_dir=data_dir))
    print(json.dumps(evaluate_task(cfg, summary, out), sort_keys=True))


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the fully resolved configuration (defaults < file < FLOCK_* env)."""
    print(load_config(config).model_dump_json(indent=2))


@app.command()
def serve(
    config: ConfigOpt = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "nightly",
    cron: Annotated[str, typer.Option(help="cron schedule")] = "0 3 * * *",
    timezone: Annotated[str, typer.Option(help="IANA timezone of the schedule")] = "UTC",
    data_dir: DataDirOpt = None,
) -> None:
    """Serve federated_task as a scheduled Prefect deployment (typed form in the UI) until
    Ctrl-C. Set PREFECT_API_URL to the server of `flock ui` to see and trigger it there."""
    from flock_pipeline.faces.serve import check_schedule, serve_deployment

    cfg = load_config(config, _overrides(data_dir=data_dir))
    check_flow_limits(cfg)
    check_schedule(cron, timezone)
    _start_run(cfg, "flock serve")
    serve_deployment(cfg, name=name, cron=cron, timezone=timezone, console=err)


@app.command()
def ui(
    data_dir: DataDirOpt = None,
    prefect_port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
) -> None:
    """Start the Prefect UI and the MLflow UI on 127.0.0.1 over the runs' stores; Ctrl-C stops."""
    from flock_pipeline.faces.serve import run_ui

    run_ui(data_dir or load_config().data_dir, prefect_port, mlflow_port, console=err)


app.add_typer(chain_app, name="chain", help="The local chain: up, down, status, deploy.")
app.add_typer(participant_app, name="participant", help="A participant's side: check its data.")


def main() -> None:
    try:
        app()
    except FlockError as exc:
        # No hard wraps: a path or a command in the message must stay one piece to copy.
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
