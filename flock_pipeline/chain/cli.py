"""`flock chain up | down | status | deploy`: the managed local anvil and its contracts, and
whatever server a run left running in the data folder."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from flock_pipeline.chain.anvil import AnvilNode, AnvilStatus
from flock_pipeline.chain.backends import dev_signers
from flock_pipeline.chain.client import load_or_deploy
from flock_pipeline.processes import ServerRegistry

__all__ = ["chain_app", "reap_leftovers"]

chain_app = typer.Typer(
    help="The local chain: a managed anvil on 127.0.0.1, its state kept under the data folder.",
    no_args_is_help=True,
    add_completion=False,
)

DataDirOpt = Annotated[
    Path, typer.Option("--data-dir", help="data folder; the chain lives in <data-dir>/chain")
]


def _anvil(status: AnvilStatus) -> str:
    owner = f"`{status.owner}`" + (f" pid {status.owner_pid}" if status.owner_pid else "")
    if status.orphaned:
        owner += " (ended)"
    return f"anvil (pid {status.pid}, port {status.port}) started by {owner}"


def reap_leftovers(data_dir: Path) -> list[str]:
    """Stop what an ended run left running in ``data_dir`` (its anvil, its Prefect temporary
    server); one line naming each."""
    lines = []
    node = AnvilNode(data_dir)
    status = node.status()
    if status.orphaned and node.down():
        lines.append(f"stopped {_anvil(status)}, state saved")
    lines += [f"stopped {r.describe()}" for r in ServerRegistry(data_dir).reap()]
    return lines


@chain_app.command()
def up(
    data_dir: DataDirOpt = Path(".flock"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 8545,
) -> None:
    """Start the local chain (or report the one already running), continuing its saved state."""
    status = AnvilNode(data_dir, port=port).up()
    typer.echo(f"anvil running at {status.url} (pid {status.pid}, block {status.block_number})")
    if status.owner_pid is not None:
        typer.echo(f"started by `{status.owner}` pid {status.owner_pid}, which stops it at its end")


@chain_app.command()
def down(data_dir: DataDirOpt = Path(".flock")) -> None:
    """Stop the local chain by its recorded PID (its state is saved for the next `up`), and
    any server an ended run left behind; name each, and any a running run still uses."""
    node = AnvilNode(data_dir)
    status = node.status()
    if node.down():
        typer.echo(f"anvil stopped, state saved: {_anvil(status)}")
    else:
        typer.echo("anvil was not running")
    registry = ServerRegistry(data_dir)
    for record in registry.reap():
        typer.echo(f"stopped {record.describe()}")
    for record in registry.records():
        typer.echo(f"left running {record.describe()}: that run stops it when it ends")


@chain_app.command()
def status(
    data_dir: DataDirOpt = Path(".flock"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Whether the local chain runs, where, how far it is, who started it, the deployed
    contracts, and the other servers runs started in this data folder."""
    node = AnvilNode(data_dir)
    report: dict[str, object] = asdict(node.status())
    deployment = node.dir / "deployment.json"
    report["deployment"] = json.loads(deployment.read_text()) if deployment.exists() else None
    records = ServerRegistry(data_dir).records()
    if as_json:
        report["servers"] = [asdict(r) | {"orphaned": r.orphaned} for r in records]
    else:
        report["servers"] = "; ".join(r.describe() for r in records) or None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        typer.echo(f"{key:>13}: {value}")


@chain_app.command()
def deploy(data_dir: DataDirOpt = Path(".flock")) -> None:
    """Deploy FlockToken and FlockAlliance on the local chain (once; reused afterwards)."""
    node = AnvilNode(data_dir)
    chain = node.chain()
    (deployer,) = dev_signers(chain, 1, label="flock-deployer")
    deployment = load_or_deploy(chain, deployer, node.dir / "deployment.json")
    typer.echo(f"token {deployment.token}\nalliance {deployment.alliance}")
