"""``runner.kind: dask``: the flow trains its proposers on a local Dask cluster through
prefect-dask's task runner, and submits each result from the flow's process. A training job
seeds its own generators, so with the same torch thread count a Dask worker process gives
the updates the simulation (one process, sequential) gives, to the bit, and so the same
aggregate."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from flow_helpers import tiny_py_evm_config
from test_round_on_py_evm import migrated_mlflow_db  # noqa: F401  (a session fixture)

from flock_pipeline.report import RunReport
from flock_pipeline.simulation import run_simulation


def test_the_flow_on_a_dask_cluster_trains_the_updates_the_simulation_trains(
    tmp_path: Path,
    migrated_mlflow_db: Path,  # noqa: F811
) -> None:
    # Prepare: two Dask worker processes with one torch thread each, as this process
    from flows.federated import federated_task

    dask = {"runner.kind": "dask", "runner.processes": 2, "runner.threads_per_process": 1}
    cfg = tiny_py_evm_config(tmp_path / "flock", **dask)
    (tmp_path / "flock").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_path / "flock" / "mlflow.db")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Execute
        flow = RunReport.model_validate(federated_task(config=cfg, out_dir=str(tmp_path / "o")))
        simulated = RunReport.model_validate(
            run_simulation(cfg.model_copy(update={"data_dir": tmp_path / "sim"})).summary
        )
    finally:
        torch.set_num_threads(threads)

    # Assert
    (ours,), (theirs,) = flow.rounds, simulated.rounds
    hashes = {p.id: p.update_hash for p in ours.participants}
    assert all(hashes.values()) and len(set(hashes.values())) == len(hashes)
    assert hashes == {p.id: p.update_hash for p in theirs.participants}
    assert ours.aggregate_hash == theirs.aggregate_hash
    assert ours.outcome == theirs.outcome == "accepted"


def test_the_jobs_go_out_in_contiguous_shares_of_near_equal_length_in_order() -> None:
    from flows.federated import shares

    jobs: list = list(range(11))
    parts = shares(jobs, 4)
    assert [len(p) for p in parts] == [3, 3, 3, 2]
    assert [j for p in parts for j in p] == jobs
    assert shares(jobs[:3], 4) == [[0], [1], [2]]  # never an empty share
    assert shares(jobs[:1], 0) == [[0]]
