"""`dvc repro` runs prepare -> federate -> evaluate, and two forced runs give identical metrics."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from flow_helpers import flock_env

from flock_pipeline.report import RunReport

# `flock` subprocesses use the session's Prefect server (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("prefect_api")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = flock_env(repo, DVC_SITE_CACHE_DIR=str(repo / ".dvc-site"))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_dvc_repro_twice_gives_identical_metrics(tmp_path):
    # Prepare: a copy of the project's pipeline with a smaller task
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for pkg in ("flock_pipeline", "flows"):
        shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(rounds=2)
    params["data"] = {"dataset": "digits"}  # the pipeline is under test, not the model
    params["model"]["name"] = "mlp"
    params["training"]["local_epochs"] = 1
    # bit for bit holds without DP; with DP on the noise is secret and the metrics vary within it
    params["privacy"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    # Execute
    _dvc(repo, "repro")
    first = json.loads((repo / "results/evaluate/metrics.json").read_text())
    _dvc(repo, "repro", "--force")
    second = json.loads((repo / "results/evaluate/metrics.json").read_text())
    # Assert
    assert first == second
    assert first["rounds"] == 2 and 0.0 < first["final_accuracy"] <= 1.0
    # the federate stage's report is the flow's RunReport, and evaluate read it as such
    report = RunReport.model_validate_json(
        (repo / "results/federate/report/summary.json").read_text()
    )
    assert report.task.engine == "flow" and len(report.rounds) == 2
    assert first["accepted_rounds"] == report.final.accepted_rounds
    assert first["honest_slashes"] == report.final.honest_slashes
    with (repo / "results/evaluate/rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["outcome"] for row in rows] == [r.outcome for r in report.rounds]
    shown = _dvc(repo, "metrics", "show", "--json").stdout
    assert "final_accuracy" in shown
    _dvc(repo, "plots", "show", "--json")
    assert (repo / "results/prepare/partition.png").exists()
    assert not (repo / "results/federate/state/chain/anvil.json").exists()  # chain stopped
