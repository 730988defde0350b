"""The core package never imports the flows or the faces above it: only ``flock_pipeline.faces``
may import ``flows/``, and no core module imports a face (the figures of a run are drawn by the
faces, ``faces.plots.plot_report``, for both engines)."""

from __future__ import annotations

import ast
from pathlib import Path

import flock_pipeline

PACKAGE = Path(flock_pipeline.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):  # function-level imports count as much as the top-level ones
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _core_modules() -> list[Path]:
    """Every module but the faces and ``__main__`` (``python -m flock_pipeline`` is the CLI)."""
    return [
        p for p in PACKAGE.rglob("*.py")
        if "faces" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"
    ]  # fmt: skip


def test_no_core_module_imports_the_flows_or_a_face() -> None:
    offenders = {}
    for path in _core_modules():
        bad = sorted(
            m for m in _imports(path)
            if m == "flows" or m.startswith("flows.")
            or m.startswith("flock_pipeline.faces")
        )  # fmt: skip
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert len(_core_modules()) > 50  # the scan saw the package
    assert offenders == {}
