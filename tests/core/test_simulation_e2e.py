"""End to end: `flock simulate` learns MNIST under label skew with DP, writes its report (the
RunReport both engines write), its plots and its model, reproducibly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flock_pipeline.config import load_config
from flock_pipeline.report import RunReport
from flock_pipeline.serialization import content_hash, read_weights
from flock_pipeline.simulation import run_simulation

# Chance on MNIST's ten classes is 0.10. On the machine this test was written on the default
# task (4 participants, Dirichlet 0.5, 3 rounds, DP-SGD with noise 1.0) reached 0.43 after its
# first accepted round and 0.68 after three. 0.3 lies below even the one-round figure, so another
# CPU's floats leave room to spare, while a run that learned nothing (or accepted nothing)
# cannot reach it.
LEARNED = 0.3


@pytest.mark.slow
def test_flock_simulate_learns_mnist_with_dp_and_writes_its_report(tmp_path):
    # The default task, but the voters judge on the task's shared validation set. On their own
    # label-skewed splits two of the four can find a helpful aggregate harmful and tie the
    # round (void), and under DP noise, secret and fresh in every run, a run whose three rounds
    # all tie happens: the vote is then a coin flip, which a test must not be.
    task = tmp_path / "task.yaml"
    task.write_text(json.dumps({"data": {"validation": "shared"}}))
    # Execute: the CLI, as a user runs it
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "flock_pipeline", "simulate", "-c", str(task), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Assert: the report is a RunReport of the default task
    summary = json.loads((out / "summary.json").read_text())
    report = RunReport.model_validate(summary)
    assert report.task.engine == "simulation"
    cfg = summary["config"]
    assert (cfg["participants"], cfg["rounds"], cfg["data"]["dataset"]) == (4, 3, "mnist5k")
    assert (cfg["partition"]["scheme"], cfg["partition"]["alpha"]) == ("dirichlet", 0.5)
    assert len(report.rounds) == 3
    # learning: the final model is the last accepted round's aggregate, well above chance
    accepted = [r for r in report.rounds if r.accepted]
    assert accepted and report.final.accepted_rounds == len(accepted)
    assert report.final.model_hash == accepted[-1].aggregate_hash
    assert report.final.accuracy is not None and report.final.accuracy > LEARNED
    for name in ("accuracy.png", "partition.png", "rewards.png"):
        assert (out / name).stat().st_size > 1000, name
    assert content_hash(read_weights(out / "model.safetensors")) == report.final.model_hash
    # DP: epsilon is cumulative per participant, within budget, and grows in every round the
    # participant trained in (everyone proposes by default)
    budget = cfg["privacy"]["epsilon_budget"]
    for i in range(cfg["participants"]):
        spent = 0.0
        for r in report.rounds:
            p = r.participants[i]
            assert p.epsilon is not None and spent <= p.epsilon <= budget
            if p.update_hash is not None:
                assert p.epsilon > spent
            spent = p.epsilon
    assert all(p.update_hash is not None for p in report.rounds[0].participants)
    # the CLI's last stdout line is machine-readable
    assert json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(
        summary["final"]["accuracy"]
    )

    # Execute again through the API: same config and seed, but DP noise is drawn from a secret
    # generator, so no aggregate repeats; the run's shape and its privacy accounting do.
    again = run_simulation(
        load_config(overrides={"data_dir": str(tmp_path / "flock"), "data.validation": "shared"})
    )
    first_hashes = {r.aggregate_hash for r in report.rounds} - {None}
    assert first_hashes
    assert first_hashes.isdisjoint(r["aggregate_hash"] for r in again.summary["rounds"])
    assert len(again.summary["rounds"]) == len(report.rounds)
