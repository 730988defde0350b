"""Compiled contracts shipped with the package (see flock_pipeline.chain.compile)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACTS_DIR", "CONTRACT_NAMES", "Artifact", "load_artifact"]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
CONTRACT_NAMES = ("FlockToken", "FlockAlliance")


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one contract, with the hash of the sources it came from."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source_hash: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load a packaged artifact by contract name."""
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(
        name=name, abi=data["abi"], bytecode=data["bytecode"], source_hash=data["sourceHash"]
    )
