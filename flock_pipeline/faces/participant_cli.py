"""``flock participant ...``: what a participant runs on its own machine, next to its data.

``check`` validates a data folder against the task's schema before the participant stakes on it:
the schema comes from the task's metadata (``<data-dir>/tasks/<task>/task.json``) or from a
config file. Nothing is written: the content hash is computed the way ``dvc add`` would record
it, without creating a DVC repo.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flock_pipeline.config import DataSchema, FlockConfig, format_validation_error, load_config
from flock_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from flock_pipeline.data.folder import FolderReport

__all__ = ["participant_app", "task_data_schema"]

participant_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
_err = Console(stderr=True)
_TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_BAR = 30


def task_data_schema(data_dir: Path, task: str) -> DataSchema:
    """The data schema a task declared in its metadata (``tasks/<task>/task.json``)."""
    if not _TASK_NAME.match(task):
        raise ConfigError(
            f"invalid task name {task!r}: use letters, digits, '_', '-', '.' and do not start "
            "with '.' or '-'"
        )
    tasks = data_dir / "tasks"
    meta_file = tasks / task / "task.json"
    if not meta_file.is_file():
        known = sorted(p.parent.name for p in tasks.glob("*/task.json"))
        where = f"tasks there: {', '.join(known)}" if known else "it holds no tasks"
        raise ConfigError(
            f"no task {task!r} in {tasks} ({where}); name a task that exists, or pass "
            "--data-dir with the folder the task was created in"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{meta_file} is not readable JSON ({exc}); restore it") from None
    if not isinstance(meta, dict) or meta.get("schema") is None:
        raise ConfigError(
            f"{meta_file} declares no data schema (the task was created before tasks did); "
            "pass the task's config with -c instead of --task"
        )
    try:
        return DataSchema.model_validate(meta["schema"])
    except ValidationError as exc:
        text = format_validation_error(exc).replace("invalid configuration", "invalid schema")
        raise ConfigError(f"{meta_file}: {text}") from None


def _schema(config: Path | None, task: str | None, data_dir: Path | None) -> tuple[
    DataSchema, FlockConfig
]:  # fmt: skip
    if config is None and task is None:
        raise ConfigError(
            "no schema to check against: name the task (--task T) or its config (-c FILE)"
        )
    cfg = load_config(config, {"data_dir": data_dir} if data_dir is not None else None)
    if task is not None:
        return task_data_schema(cfg.data_dir, task), cfg
    from flock_pipeline.data.schema import task_schema

    return task_schema(cfg), cfg


def _print_report(report: FolderReport, schema: DataSchema) -> None:
    holdout = (
        f"{report.holdout_samples} in {report.holdout_file}"
        if report.holdout_file
        else f"{report.holdout_samples} cut from {report.train_file}"
    )
    _err.print(
        f"[bold green]ok[/] {report.folder} ({report.format}): {report.samples} samples in "
        f"{report.train_file} -> {report.train_samples} for training, holdout {holdout}",
        highlight=False,
        soft_wrap=True,
    )
    present = report.classes_present
    _err.print(f"classes present: {len(present)} of {schema.num_classes}", highlight=False)
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("class")
    table.add_column("samples", justify="right")
    table.add_column("")
    top = max(report.label_counts) or 1
    for c, n in enumerate(report.label_counts):
        name = schema.label_name(c)
        label = str(c) if name == str(c) else f"{c} {name}"
        table.add_row(label, str(n), "█" * round(_BAR * n / top))
    _err.print(table)
    _err.print(f"content hash (DVC md5): {report.content_hash}", highlight=False)


@participant_app.command()
def check(
    data: Annotated[Path, typer.Option("--data", help="the participant's data folder")],
    task: Annotated[
        str | None, typer.Option(help="task whose schema to check against (its task.json)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config of the task")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="state folder holding the task (.flock)")
    ] = None,
) -> None:
    """Check a data folder against a task's schema before staking on it (docs/data.md): prints
    samples, classes and the folder's content hash; exits 2 naming the problem if it does not
    fit."""
    schema, cfg = _schema(config, task, data_dir)
    from flock_pipeline.data.folder import check_folder

    report = check_folder(data, schema, holdout_fraction=cfg.data.holdout_fraction)
    _print_report(report, schema)
    line = report.model_dump(mode="json")
    line["classes_present"] = report.classes_present
    print(json.dumps(line))


@participant_app.command()
def start(
    task: Annotated[
        Path, typer.Option("--task", help="the task's card.json (from the task's creator)")
    ],
    data: Annotated[Path, typer.Option("--data", help="this participant's data folder")],
    key_env: Annotated[
        str, typer.Option("--key-env", help="environment variable holding this participant's key")
    ],
    pool: Annotated[str, typer.Option("--pool", help="the task's Prefect process work pool")],
    state: Annotated[
        Path | None,
        typer.Option("--state", help="this participant's state folder (default: .flock-<id>)"),
    ] = None,
    rpc: Annotated[
        str | None, typer.Option("--rpc", help="JSON-RPC URL (default: the card's)")
    ] = None,
) -> None:
    """Join a task and serve this participant's duties (train, validate, reveal, claim) from a
    Prefect process worker on its own work queue, until interrupted. Only this machine holds
    the key and the data; the coordinator receives hashes and updates."""
    from flock_pipeline.chain import signer_from_env
    from flock_pipeline.runtime.task import TaskCard

    card = TaskCard.read(task)
    pid = card.participant_of(signer_from_env(key_env).address)
    folder = state or Path(f".flock-{pid}")
    _err.print(f"{pid} of task {card.name}: state in {folder}, pool {pool}")
    from flows.workers import serve_participant

    serve_participant(task, data, key_env, pool, folder, rpc)
