"""Configuration resolution and the CLI's handling of bad input: clear message, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flock_pipeline.config import load_config
from flock_pipeline.errors import ConfigError


def test_file_env_and_overrides_resolve_in_that_order(tmp_path, monkeypatch):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("rounds: 5\ntraining:\n  lr: 0.2\n  local_epochs: 2\n")
    monkeypatch.setenv("FLOCK_TRAINING__LR", "0.3")
    cfg = load_config(cfg_file, {"rounds": 7})
    assert cfg.rounds == 7  # override beats file
    assert cfg.training.lr == 0.3  # env beats file
    assert cfg.training.local_epochs == 2  # file beats default
    assert cfg.training.batch_size == 64  # default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", "bogus: unknown key"),
        ("training:\n  lr: fast\n", "training.lr"),
        ("partition:\n  alpha: -1\n", "partition.alpha"),
        ("model:\n  name: resnet\n", "model.name"),
        ("- a list\n", "mapping"),
        ("rounds: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_are_named(tmp_path, text, message):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg_file)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def _flock(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flock_pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--dataset", "cifar"], "data.dataset"),
        (["run", "--rounds", "0"], "rounds"),
        (["run", "-c", "missing.yaml"], "does not exist"),
    ],
)
def test_cli_prints_bad_input_without_traceback_and_exits_nonzero(tmp_path, args, message):
    proc = _flock(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_alpha_zero_is_refused_by_name(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("partition:\n  scheme: dirichlet\n  alpha: 0\n")
    proc = _flock("partition", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and "partition.alpha" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("participants", "committee"), [(1, (1, 2)), (2, (2, 4)), (4, (4, 8)), (10, (10, 20))]
)
def test_everyone_proposes_and_votes_by_default(participants, committee):
    from flock_pipeline.protocol.params import task_params

    cfg = load_config(overrides={"participants": participants})
    assert cfg.committee == committee  # participants x stake 100 / min_stake 50
    params = task_params(cfg, bytes(32))
    assert (params.proposers_per_round, params.voters_per_round) == committee
    fixed = load_config(overrides={"participants": 4, "chain.voters_per_round": 4})
    assert fixed.committee == (4, 4)


@pytest.mark.parametrize(("stake", "min_stake"), [(100, 50), (100, 100), (100, 30), (70, 50)])
def test_every_eligible_stake_votes_at_its_own_weight_by_default(stake, min_stake):
    from flock_pipeline.protocol.roles import is_voter
    from flock_pipeline.protocol.settlement import role_weight

    # Prepare: 10 participants at the configured stake; one of them slashed down to `left`
    cfg = load_config(
        overrides={"participants": 10, "chain.stake": stake, "chain.min_stake": min_stake}
    )
    _, voters = cfg.committee
    for left in range(min_stake, stake + 1):
        total = 9 * stake + left
        # Execute / Assert: odds V * s / S reach 1, so even the largest draw (2**64 - 1)
        # selects it, and it weighs its own stake
        assert (2**64 - 1) * total < (voters * left) << 64
        assert role_weight(left, total, voters) == left
    seeds = [bytes([i]) * 32 for i in range(20)]
    addresses = [f"0x{i:040x}" for i in range(1, 11)]
    assert all(is_voter(z, a, stake, 10 * stake, voters) for z in seeds for a in addresses)
