"""The Solidity test suite (unit, fuzz and invariant tests under contracts/test) passes, its
gas stays what contracts/.gas-snapshot records, and every deployed contract keeps room under
EIP-170's size limit."""

from __future__ import annotations

import os
import subprocess

from chain_world import repo_root

from flock_pipeline.chain.artifacts import CONTRACT_NAMES, load_artifact
from flock_pipeline.chain.compile import EIP170_LIMIT, MIN_MARGIN

FORGE = repo_root() / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"
GAS_TOLERANCE = "1"
"""Percent: fuzz runs vary their inputs a little from run to run, and their mean gas with them."""


def _forge(*args: str) -> subprocess.CompletedProcess[str]:
    root = repo_root()
    home = root / ".flock" / "forge-home"  # forge writes ~/.foundry and ~/.svm: keep them here
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(FORGE), *args, "--offline"],
        cwd=root / "contracts",
        env={**os.environ, "HOME": str(home), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_forge_unit_fuzz_and_invariant_tests_pass() -> None:
    done = _forge("test")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "invariant_TokensAreConserved" in done.stdout
    assert "invariant_NoPoolLockedPastItsDeadline" in done.stdout
    assert "0 failed" in done.stdout


def test_gas_stays_what_the_snapshot_records() -> None:
    """The gas gate: `forge snapshot --check` against contracts/.gas-snapshot (regenerate it
    with `forge snapshot --no-match-contract Invariants` after a deliberate change). Invariant
    runs report calls, not gas, so they are left out."""
    done = _forge("snapshot", "--check", "--tolerance", GAS_TOLERANCE, "--no-match-contract",
                  "Invariants")  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_every_deployed_contract_keeps_4_kb_under_eip_170() -> None:
    sizes = {name: load_artifact(name).deployed_size for name in CONTRACT_NAMES}
    assert all(size > 0 for size in sizes.values()), sizes
    tight = {
        name: EIP170_LIMIT - size
        for name, size in sizes.items()
        if size + MIN_MARGIN > EIP170_LIMIT
    }
    assert not tight, f"less than {MIN_MARGIN} B of room under EIP-170: {tight} (sizes {sizes})"
