"""One protocol, two engines: `flock simulate` (the protocol model) and the Prefect flow on a
chain (the contract, here in-process py-evm) decide the same for the same task.

The situation is constructed so that nothing a machine draws can tell the engines apart: roles
are fixed (as many expected proposers and voters as participants and equal stakes make every
staked participant both, whatever the round's seed; a participant slashed below min_stake gets
no role), IID data, no DP noise and FedAvg, which draws nothing from the round's seed. Training
seeds come from the task seed in both engines, so the updates and the aggregates are the same to
the bit, and so are every decision: outcomes, roles, screens, flags, votes' sides, slashes.

The measurements are not bit-equal: the simulation's voters run their sets through each
candidate model in one batch, the flow's each on its own, and a batch of another size gives
per-sample losses that differ in the last bits. Scores and contributions therefore agree to
well within the 1e-6 the votes are rounded to, not exactly, and so do the rewards they pay
(a contribution's last rounded digit moves a proposer's share): rewards are not compared.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.report import RunReport
from flock_pipeline.simulation import run_simulation

TOKEN = 10**18
ROUND_FIELDS = ("round", "outcome", "accepted", "aggregate_hash", "global_model_hash",
                "selected", "screened", "accept_weight", "reject_weight", "global")  # fmt: skip
PARTICIPANT_FIELDS = ("id", "address", "role", "attack", "update_hash", "num_samples",
                      "screened", "flagged", "slashed")  # fmt: skip
FINAL_FIELDS = ("model_hash", "accepted_rounds", "void_rounds", "honest_slashes", "accuracy")
MEASURED = 1e-5
"""How far apart the engines' scores and contributions may be: float noise of a forward pass
is about 1e-8 here, the votes' rounding step 1e-6."""
# Without the two outlier checks the screen keeps a Gaussian-noise update, and every aggregate
# it is part of is far worse than the model: all honest voters reject.
UNSCREENED = {"screen": {"max_norm_ratio": None, "min_cosine": None}}


def _config(tmp_path: Path, rejected: bool) -> FlockConfig:
    n = 4
    config: dict[str, Any] = {
        "participants": n,
        "rounds": 3 if rejected else 2,
        "data_dir": str(tmp_path / "flock"),
        "data": {"dataset": "digits"},
        "partition": {"scheme": "iid"},
        "model": {"name": "mlp"},
        "training": {"local_epochs": 2},
        "privacy": {"enabled": False},
        # A free rider loses 70 % of its round stake: below min_stake, still a stake to slash
        # in the next round, where its checkpointed stake still gives it a role.
        "chain": {
            "url": "py-evm",
            "proposers_per_round": n,
            "voters_per_round": n,
            "penalty_bps": 7_000,
        },
        "attacks": {"p1": {"kind": "dishonest_voter"}, "p2": {"kind": "free_rider"}},
    }
    if rejected:
        config["attacks"]["p3"] = {"kind": "gaussian_noise", "sigma": 1.0}
        config["aggregation"] = UNSCREENED
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _decisions(report: RunReport) -> dict[str, Any]:
    """What the protocol decided, as a report says it: what both engines must agree on."""
    data = report.dump()
    rounds = []
    for r in data["rounds"]:
        people = []
        for p in r["participants"]:
            vote = p["vote"] and {k: p["vote"][k] for k in ("aggregate_hash", "accept")}
            people.append({k: p[k] for k in PARTICIPANT_FIELDS} | {"vote": vote})
        rounds.append({k: r[k] for k in ROUND_FIELDS} | {"participants": people})
    return {"rounds": rounds, "final": {k: data["final"][k] for k in FINAL_FIELDS}}


def _measurements(report: RunReport) -> dict[tuple[int, str, str], float | None]:
    """Every score and contribution of the report, by (round, participant, what)."""
    out: dict[tuple[int, str, str], float | None] = {}
    for r in report.rounds:
        for p in r.participants:
            out[(r.round, p.id, "contribution")] = p.contribution
            out[(r.round, p.id, "trust_score")] = p.trust_score
            if p.vote is not None:
                out[(r.round, p.id, "score")] = p.vote.score
                for pid, c in p.vote.contributions.items():
                    out[(r.round, p.id, f"scored {pid}")] = c
    return out


@pytest.fixture(scope="module")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with its schema migrated, once per module (MLflow's
    migrations take several seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.mark.parametrize(
    "rejected",
    [pytest.param(False, id="accepted"), pytest.param(True, marks=pytest.mark.slow, id="rejected")],
)
def test_the_simulation_and_the_flow_on_a_chain_report_the_same_rounds(
    tmp_path: Path, migrated_mlflow_db: Path, rejected: bool
) -> None:
    # Prepare
    from flows.federated import federated_task

    cfg = _config(tmp_path, rejected)
    (tmp_path / "flock").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_path / "flock" / "mlflow.db")

    # Execute
    simulated = RunReport.model_validate(run_simulation(cfg).summary)
    flowed = RunReport.model_validate(federated_task(config=cfg, out_dir=str(tmp_path / "out")))

    # Assert: one protocol
    assert simulated.task.engine == "simulation" and flowed.task.engine == "flow"
    assert _decisions(simulated) == _decisions(flowed)
    measured, on_chain = _measurements(simulated), _measurements(flowed)
    assert measured.keys() == on_chain.keys()
    for key, value in measured.items():
        other = on_chain[key]
        assert (value is None) == (other is None), key
        if value is not None and other is not None:
            assert value == pytest.approx(other, abs=MEASURED), key
    # and the situation is the one constructed
    outcome = "rejected" if rejected else "accepted"
    assert [r.outcome for r in flowed.rounds] == [outcome] * cfg.rounds
    slashed = {
        (r.round, p.id): int(p.slashed) for r in flowed.rounds for p in r.participants
        if int(p.slashed)
    }  # fmt: skip
    # The free rider is flagged: 70 % of its stake, then 70 % of the 30 % its round-2 weight is
    # capped at. The dishonest voter is outvoted in every round: unpaid, never slashed.
    assert slashed == {(1, "p2"): 70 * TOKEN, (2, "p2"): 21 * TOKEN}
    assert flowed.final.honest_slashes == 0
    for r in flowed.rounds:
        for p in r.participants:
            below_min_stake = r.round == 3 and p.id == "p2"
            assert p.role == ("none" if below_min_stake else "both"), (r.round, p.id)
