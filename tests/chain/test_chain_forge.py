"""The Solidity test suite (unit, fuzz and invariant tests under contracts/test) passes."""

from __future__ import annotations

import os
import subprocess

from chain_world import repo_root

FORGE = repo_root() / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"


def test_forge_unit_fuzz_and_invariant_tests_pass() -> None:
    root = repo_root()
    home = root / ".flock" / "forge-home"  # forge writes ~/.foundry and ~/.svm: keep them here
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(FORGE), "test", "--offline"],
        cwd=root / "contracts",
        env={**os.environ, "HOME": str(home), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "invariant_TokensAreConserved" in done.stdout
    assert "0 failed" in done.stdout
