"""`flock chain up | down | status | deploy`: the managed local anvil and its contracts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.chain.backends import dev_signers
from flock_pipeline.chain.client import load_or_deploy

__all__ = ["chain_app"]

chain_app = typer.Typer(
    help="The local chain: a managed anvil on 127.0.0.1, its state kept under the data folder.",
    no_args_is_help=True,
    add_completion=False,
)

DataDirOpt = Annotated[
    Path, typer.Option("--data-dir", help="data folder; the chain lives in <data-dir>/chain")
]


@chain_app.command()
def up(
    data_dir: DataDirOpt = Path(".flock"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 8545,
) -> None:
    """Start the local chain (or report the one already running), continuing its saved state."""
    status = AnvilNode(data_dir, port=port).up()
    typer.echo(f"anvil running at {status.url} (pid {status.pid}, block {status.block_number})")


@chain_app.command()
def down(data_dir: DataDirOpt = Path(".flock")) -> None:
    """Stop the local chain by its recorded PID; its state is saved for the next `up`."""
    stopped = AnvilNode(data_dir).down()
    typer.echo("anvil stopped, state saved" if stopped else "anvil was not running")


@chain_app.command()
def status(
    data_dir: DataDirOpt = Path(".flock"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Whether the local chain runs, where, how far it is, and the deployed contracts."""
    node = AnvilNode(data_dir)
    report: dict[str, object] = asdict(node.status())
    deployment = node.dir / "deployment.json"
    report["deployment"] = json.loads(deployment.read_text()) if deployment.exists() else None
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
