"""Compiled contracts shipped with the package (see flock_pipeline.chain.compile)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACTS_DIR", "CONTRACT_NAMES", "Artifact", "load_artifact"]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
CONTRACT_NAMES = (
    "FlockToken",
    "StakeVault",
    "FutureBlockSeed",
    "VRFSeedSource",
    "AllianceLogic",
    "FlockAlliance",
)
"""Every contract a deployment may create, in deployment order (libraries before their users)."""


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one contract, with the hash of the sources it came from.

    link_references names, per library ("AllianceLogic"), the byte offsets in `bytecode` where
    the library's address goes (solc's placeholders); `linked` fills them in.
    """

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source_hash: str
    deployed_size: int = 0
    link_references: dict[str, list[int]] = field(default_factory=dict)

    def linked(self, libraries: dict[str, str]) -> str:
        """The creation bytecode with each library's placeholders replaced by its address."""
        code = self.bytecode
        for name, offsets in self.link_references.items():
            address = libraries[name].lower().removeprefix("0x")
            for start in offsets:
                at = 2 + 2 * start
                code = code[:at] + address + code[at + 40 :]
        return code


@cache
def load_artifact(name: str) -> Artifact:
    """Load a packaged artifact by contract name."""
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    references = {
        library: [entry["start"] for entry in entries]
        for unit in data.get("linkReferences", {}).values()
        for library, entries in unit.items()
    }
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        source_hash=data["sourceHash"],
        deployed_size=(len(data.get("deployedBytecode", "0x")) - 2) // 2,
        link_references=references,
    )
