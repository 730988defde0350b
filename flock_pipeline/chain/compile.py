"""Compile contracts/ with solcjs (npm `solc`, via node) into the packaged artifacts.

A developer tool: run `python -m flock_pipeline.chain.compile` after editing contracts/src, and
commit the JSON it writes. Users deploy from the committed artifacts without node.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from flock_pipeline.chain.artifacts import ARTIFACTS_DIR, CONTRACT_NAMES
from flock_pipeline.chain.errors import ChainSetupError

__all__ = [
    "EIP170_LIMIT",
    "MIN_MARGIN",
    "REPO_ROOT",
    "compile_contracts",
    "compile_test_contract",
    "source_hash",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
EIP170_LIMIT = 24_576
"""EIP-170: the most runtime bytecode a contract may have."""
MIN_MARGIN = 4_096
"""Room every deployed contract keeps under EIP170_LIMIT, for the changes still to come."""
SOURCES_DIR = Path("contracts") / "src"
WRAPPER = Path("contracts") / "solc-wrapper.js"
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    # solcjs 0.8.37 defaults to Osaka; py-evm runs Prague, so pin the fork for both backends.
    "evmVersion": "prague",
    "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.bytecode.linkReferences",
                "evm.deployedBytecode.object",
            ]
        }
    },
}


def _pins(root: Path) -> dict[str, str]:
    package = json.loads((root / "package.json").read_text())
    pins: dict[str, str] = package["devDependencies"]
    return {name: pins[name] for name in ("solc", "@openzeppelin/contracts")}


def source_hash(root: Path = REPO_ROOT) -> str:
    """sha256 over the Solidity sources, the compiler settings and the solc/OZ pins."""
    digest = hashlib.sha256()
    for path in sorted((root / SOURCES_DIR).glob("*.sol")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(json.dumps(SETTINGS, sort_keys=True).encode())
    digest.update(json.dumps(_pins(root), sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


def _standard_json(root: Path, paths: list[Path]) -> dict[str, Any]:
    sources = {path.relative_to(root).as_posix(): {"content": path.read_text()} for path in paths}
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def _solc(root: Path, paths: list[Path]) -> tuple[str, dict[str, Any]]:
    """solcjs's version and standard-JSON output for ``paths`` (their imports read from disk)."""
    node = shutil.which("node")
    if node is None:
        raise ChainSetupError("node is not on PATH; install Node.js 20+ and run `make setup`.")
    if not (root / "node_modules" / "solc").is_dir():
        raise ChainSetupError("node_modules/solc is missing; run `npm ci` (or `make setup`).")
    version = (
        subprocess.run(
            [node, str(WRAPPER), "--version"], cwd=root, capture_output=True, text=True, check=True
        )
        .stdout.split("Version:")[-1]
        .strip()
    )
    done = subprocess.run(
        [
            node,
            str(WRAPPER),
            "--standard-json",
            "--base-path",
            ".",
            "--include-path",
            "node_modules",
        ],
        cwd=root,
        input=json.dumps(_standard_json(root, paths)),
        capture_output=True,
        text=True,
        check=True,
    )
    output: dict[str, Any] = json.loads(done.stdout)
    problems = [e for e in output.get("errors", []) if e["severity"] == "error"]
    if problems:
        raise ChainSetupError("solc failed:\n" + "\n".join(e["formattedMessage"] for e in problems))
    return version, output


def compile_contracts(root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """Compile and return one artifact per deployable contract (abi, bytecode, source hash)."""
    version, output = _solc(root, sorted((root / SOURCES_DIR).glob("*.sol")))
    hash_ = source_hash(root)
    artifacts: dict[str, dict[str, Any]] = {}
    for unit in output["contracts"].values():
        for name, out in unit.items():
            if name in CONTRACT_NAMES:
                artifacts[name] = {
                    "contractName": name,
                    "compiler": f"solcjs {version}",
                    "evmVersion": SETTINGS["evmVersion"],
                    "sourceHash": hash_,
                    "abi": out["abi"],
                    "bytecode": "0x" + out["evm"]["bytecode"]["object"],
                    "deployedBytecode": "0x" + out["evm"]["deployedBytecode"]["object"],
                    "linkReferences": out["evm"]["bytecode"]["linkReferences"],
                }
    return artifacts


def compile_test_contract(
    source: Path, name: str, root: Path = REPO_ROOT
) -> tuple[list[dict[str, Any]], str]:
    """ABI and creation bytecode of contract ``name`` in ``source`` (relative to ``root``, e.g.
    a harness under contracts/test), with the package's settings: for tests that deploy code
    the package does not ship."""
    _, output = _solc(root, [root / source])
    unit = output["contracts"].get(Path(source).as_posix(), {})
    if name not in unit:
        raise ChainSetupError(f"{source} defines no contract {name!r} (it has {sorted(unit)})")
    return unit[name]["abi"], "0x" + unit[name]["evm"]["bytecode"]["object"]


def main() -> None:
    """Write flock_pipeline/chain/artifacts/*.json (or, with --check, fail if they are stale)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if artifacts are stale")
    args = parser.parse_args()
    if args.check:
        current = source_hash()
        stale = [
            name
            for name in CONTRACT_NAMES
            if not (ARTIFACTS_DIR / f"{name}.json").exists()
            or json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())["sourceHash"] != current
        ]
        if stale:
            raise SystemExit(f"stale artifacts: {', '.join(stale)}; run python -m {__spec__.name}")
        print("artifacts up to date")
        return
    for name, artifact in compile_contracts().items():
        path = ARTIFACTS_DIR / f"{name}.json"
        path.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")
        size = (len(artifact["deployedBytecode"]) - 2) // 2
        print(
            f"wrote {path.relative_to(REPO_ROOT)} ({size} bytes deployed, "
            f"{EIP170_LIMIT - size} under EIP-170)"
        )


if __name__ == "__main__":
    main()
