"""``flock participant start`` refuses a bad key or a card it cannot use by name, with the fix,
before it starts anything: no server, no worker, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flock_pipeline.config import DataSchema
from flock_pipeline.runtime.task import TaskCard

ROSTER = {"p0": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}
"""anvil's first dev account (public key; its private key is public test material)."""
ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def _card(tmp_path: Path) -> Path:
    card = TaskCard(
        name="t1", chain_id=31337, chain_url="http://127.0.0.1:9", alliance="0x" + "11" * 20,
        token="0x" + "22" * 20, deployment={}, task_id=1, from_block=0,
        initial_model="0x" + "00" * 32,
        schema=DataSchema(feature_shape=(1, 4, 4), num_classes=3), config={}, roster=ROSTER,
    )  # fmt: skip
    path = tmp_path / "card.json"
    card.write(path)
    return path


def _start(tmp_path: Path, card: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "FLOCK_TEST_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "flock_pipeline", "participant", "start", "--task", str(card),
         "--data", str(tmp_path / "data"), "--key-env", "FLOCK_TEST_KEY", "--pool", "t1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**clean, **env},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "environment variable FLOCK_TEST_KEY is not set: export it"),
        ({"FLOCK_TEST_KEY": "0x1234"}, "does not hold a private key: it must be 32 bytes"),
        ({"FLOCK_TEST_KEY": "not a key at all, not even hex"}, "64 hex characters"),
        ({"FLOCK_TEST_KEY": ANVIL_KEY_1}, "is not on the roster of task 't1'"),
    ],
)
def test_a_bad_key_is_refused_by_name_with_the_fix(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    out = _start(tmp_path, _card(tmp_path), env)

    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / ".flock-p0").exists()  # refused before any state was made
    value = env.get("FLOCK_TEST_KEY")
    if value and len(value) > 8:
        assert value not in out.stderr  # a key never reaches the terminal


def test_a_card_that_is_not_a_task_card_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "card.json"
    bad.write_text('{"name": "t1"}')

    out = _start(tmp_path, bad, {"FLOCK_TEST_KEY": ANVIL_KEY_0})

    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not a task card" in out.stderr and "get a fresh copy" in out.stderr
