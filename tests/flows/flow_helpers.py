"""Running `flock run` as a user does, and reading back what the chain and MLflow recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flock_pipeline.chain import AllianceClient, Deployment, Outcome, VoteState, dev_signers
from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.protocol import role_weight

TOKEN = 10**18
BPS = 10_000


def tiny_py_evm_config(data_dir: Path, **extra: object) -> FlockConfig:
    """One round, 3 participants on digits with the MLP, no DP, on the in-process chain, with
    everyone proposing and voting (roles fixed through config, not drawn): the fast flow."""
    return load_config(
        None,
        {
            "participants": 3,
            "rounds": 1,
            "data_dir": str(data_dir),
            "data.dataset": "digits",
            "model.name": "mlp",
            "privacy.enabled": False,
            "training.local_epochs": 2,
            "chain.url": "py-evm",
            "chain.proposers_per_round": 3,
            "chain.voters_per_round": 3,
            "aggregation.screen.min_trust": None,
            "partition.scheme": "iid",
            **extra,
        },
    )


def flock_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MPLCONFIGDIR=str(home / "mpl"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        **extra,
    )
    env.pop("PREFECT_API_URL", None)
    # The session's server when the test asked for it (tests/conftest.py prefect_api), else
    # the run starts a temporary server of its own, as a user's first run does.
    api = os.environ.get("FLOCK_TEST_PREFECT_API_URL")
    if api:
        env["PREFECT_API_URL"] = api
    return env


def flock_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flock_pipeline", *args]


def run_flock(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flock_cmd(*args), capture_output=True, text=True, cwd=home, env=flock_env(home, **env),
        timeout=900,
    )  # fmt: skip


def run_task(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """`flock run -c task.yaml` on ``config``, state in tmp_path/d; its summary.json. A YAML
    file, not CLI overrides: ``null`` (a screen check turned off) survives it."""
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    proc = run_flock(tmp_path, "run", "-c", str(path), "--data-dir", str(tmp_path / "d"),
                     "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_summary(out)


def open_chain(data_dir: Path) -> tuple[AnvilNode, AllianceClient]:
    """The run's chain, restarted from its saved state, seen through a read-only client."""
    node = AnvilNode(data_dir)
    node.up()
    chain = node.chain()
    deployment = Deployment.load(data_dir / "chain" / "deployment.json")
    (reader,) = dev_signers(chain, 1, label="flock-test-reader")
    return node, AllianceClient(chain, deployment, reader)


def events(client: AllianceClient, name: str, task_id: int) -> list[dict[str, Any]]:
    """Every ``name`` event of the task, in the order the chain emitted them."""
    logs = getattr(client.alliance.events, name)().get_logs(
        from_block=0, argument_filters={"taskId": task_id}
    )
    return [dict(log["args"]) for log in logs]


def load_summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


@dataclass(frozen=True)
class Settlement:
    """One account's settlement of one round, split by role."""

    proposer_reward: int
    voter_reward: int
    slashed: int

    @property
    def reward(self) -> int:
        return self.proposer_reward + self.voter_reward


def expected_settlements(
    client: AllianceClient, task_id: int, stake: int
) -> dict[tuple[int, str], Settlement]:
    """What the protocol says every settled (round, account) is paid and slashed, computed
    from the chain's records (rounds, tallies, updates, records) and replayed in the order the
    chain settled them, since the pots are drawn down settler by settler. Keys: (1-based round,
    lowercase address). The rules (protocol v2 with its amendment):

    - proposer: flagged -> slashed penaltyBps; accepted with part > 0 -> its share of the
      proposers' pot; otherwise nothing (never slashed for a rejection);
    - voter: committed, never revealed -> slashed max(voterSlashBps, slashBps); revealed the
      aggregate on the winning side -> its share of the voters' pot; revealed another hash ->
      slashed voterSlashBps; revealed the aggregate on the losing side -> nothing;
    - a Void round pays and slashes nothing but a non-revealing voter.

    Each slash takes at most what the account has left; every account starts with ``stake``.
    """
    params = client.task_config(task_id)
    assert not events(client, "NoShowReported", task_id)  # the engines never report one
    stake_left: dict[str, int] = defaultdict(lambda: stake)
    rounds: dict[int, dict[str, Any]] = {}
    out: dict[tuple[int, str], Settlement] = {}

    def slash(account: str, weight: int, bps: int) -> int:
        amount = min(weight * bps // BPS, stake_left[account])
        stake_left[account] -= amount
        return amount

    for e in events(client, "Settled", task_id):
        r, account = int(e["round"]), str(e["account"]).lower()
        if r not in rounds:
            info = client.round_info(task_id, r)
            lead = client.tally_of(task_id, r, info.aggregate_hash)
            accepted = info.outcome is Outcome.ACCEPTED
            updates = client.round_updates(task_id, r)
            winners = lead.accept_weight if accepted else lead.reject_weight
            # Each role's pot is budgeted for the round's whole stake S: it pays its holders'
            # weight over S (the contract's _allot; the pool never falls short in these tasks).
            proposers_pot = info.reward * params.proposer_reward_bps // BPS
            paid = accepted and info.contribution_total > 0
            paid_weight = sum(u.weight for u in updates if u.part > 0)
            rounds[r] = {
                "info": info,
                "updates": updates,
                "proposer_left": proposers_pot * paid_weight // info.total_stake if paid else 0,
                "contribution_left": info.contribution_total if paid else 0,
                "voter_left": (info.reward - proposers_pot) * winners // info.total_stake,
                "weight_left": winners,
            }
        pot = rounds[r]
        info = pot["info"]
        decided = info.outcome in (Outcome.ACCEPTED, Outcome.REJECTED)
        accepted = info.outcome is Outcome.ACCEPTED
        rec = client.record_of(task_id, r, account)
        proposer = voter = slashed = 0
        if rec.submitted and decided:
            update = pot["updates"][rec.update_index]
            if update.flagged:
                slashed += slash(account, rec.weight, params.penalty_bps)
            elif update.part > 0:
                proposer = pot["proposer_left"] * update.part // pot["contribution_left"]
                pot["proposer_left"] -= proposer
                pot["contribution_left"] -= update.part
        if rec.vote is VoteState.COMMITTED:
            slashed += slash(account, rec.weight, max(params.voter_slash_bps, params.slash_bps))
        elif rec.vote is VoteState.REVEALED and decided:
            own_hash = rec.aggregate_hash == info.aggregate_hash
            if own_hash and rec.accept == accepted:
                weight = role_weight(rec.weight, info.total_stake, params.voters_per_round)
                voter = pot["voter_left"] * weight // pot["weight_left"]
                pot["voter_left"] -= voter
                pot["weight_left"] -= weight
            elif not own_hash:
                slashed += slash(account, rec.weight, params.voter_slash_bps)
        key = (r + 1, account)
        assert key not in out, f"round {r + 1} settled twice for {account}"
        out[key] = Settlement(proposer, voter, slashed)
    return out


def settled_events(client: AllianceClient, task_id: int) -> dict[tuple[int, str], tuple[int, int]]:
    """(reward, slashed) of every Settled event by (1-based round, lowercase address)."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    for e in events(client, "Settled", task_id):
        key = (int(e["round"]) + 1, str(e["account"]).lower())
        assert key not in out, f"round {key[0]} settled twice for {key[1]}"
        out[key] = (int(e["reward"]), int(e["slashed"]))
    return out


def check_settlements(
    summary: dict[str, Any], client: AllianceClient, stake: int
) -> dict[tuple[int, str], Settlement]:
    """Assert that every Settled event is what the protocol says (``expected_settlements``)
    and that summary.json reports exactly those events; returns the role split."""
    task_id = summary["task"]["task_id"]
    expected = expected_settlements(client, task_id, stake)
    settled = settled_events(client, task_id)
    wrong = {
        key: {"chain": settled.get(key), "protocol": (s.reward, s.slashed)}
        for key, s in expected.items()
        if settled.get(key) != (s.reward, s.slashed)
    }
    assert not wrong, wrong
    for r in summary["rounds"]:
        for p in r["participants"]:
            reward, slashed = settled.get((r["round"], p["address"].lower()), (0, 0))
            assert (p["reward"], p["slashed"]) == (str(reward), str(slashed)), (r["round"], p["id"])
    return expected
