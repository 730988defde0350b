"""The managed local anvil: up, status, deploy, down, and a chain that survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flock_pipeline.chain.anvil import BLOCK_INTERVAL, AnvilNode
from flock_pipeline.chain.cli import chain_app

runner = CliRunner()


def flock_chain(*args: str) -> str:
    result = runner.invoke(chain_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_local_chain_keeps_its_state_and_contracts_across_restarts(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    try:
        # Prepare: start, deploy
        assert "anvil running at http://127.0.0.1:" in flock_chain(
            "up", "--data-dir", data, "--port", "0"
        )
        flock_chain("deploy", "--data-dir", data)
        before = json.loads(flock_chain("status", "--data-dir", data, "--json"))
        # Execute: stop and start again
        assert "state saved" in flock_chain("down", "--data-dir", data)
        stopped = json.loads(flock_chain("status", "--data-dir", data, "--json"))
        flock_chain("up", "--data-dir", data, "--port", "0")
        after = json.loads(flock_chain("status", "--data-dir", data, "--json"))
        redeploy = flock_chain("deploy", "--data-dir", data)
    finally:
        AnvilNode(Path(data)).down()
    # Assert
    assert before["running"] and not stopped["running"] and after["running"]
    assert after["pid"] != before["pid"]
    assert after["block_number"] >= before["block_number"] > 0
    assert after["deployment"] == before["deployment"]
    assert before["deployment"]["alliance"] in redeploy  # same contracts, not deployed again
    assert Path(before["state_file"]).exists()


def test_down_without_a_running_chain_says_so(tmp_path: Path) -> None:
    assert "not running" in flock_chain("down", "--data-dir", str(tmp_path))
    assert not AnvilNode(tmp_path).status().running


def test_block_time_continues_from_the_saved_chain_after_a_restart(tmp_path: Path) -> None:
    # A restarted node must not jump to the wall clock: that would pass every open round's
    # deadline while the flow that resumes it is still training.
    node = AnvilNode(tmp_path / "data", port=0)
    try:
        node.up()
        w3 = node.chain().w3
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        before = int(w3.eth.get_block("latest")["timestamp"])
        node.down()
        node.up()
        w3 = node.chain().w3
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        last = w3.eth.block_number
        after = [int(w3.eth.get_block(n)["timestamp"]) for n in (last - 1, last)]
    finally:
        node.down()
    assert after[0] - before == BLOCK_INTERVAL
    assert after[1] - after[0] == BLOCK_INTERVAL
