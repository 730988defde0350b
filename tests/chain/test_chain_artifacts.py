"""The packaged contract artifacts are what contracts/ compiles to."""

from __future__ import annotations

import json

from chain_world import repo_root

from flock_pipeline.chain.artifacts import ARTIFACTS_DIR, CONTRACT_NAMES, load_artifact
from flock_pipeline.chain.compile import compile_contracts, source_hash


def test_artifacts_are_not_stale_against_the_solidity_sources() -> None:
    current = source_hash(repo_root())
    for name in CONTRACT_NAMES:
        assert load_artifact(name).source_hash == current, (
            f"{name}.json is stale: run `python -m flock_pipeline.chain.compile` and commit"
        )


def test_recompiling_reproduces_the_committed_bytecode() -> None:
    fresh = compile_contracts(repo_root())
    for name in CONTRACT_NAMES:
        committed = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert fresh[name]["bytecode"] == committed["bytecode"]
        assert fresh[name]["abi"] == committed["abi"]
