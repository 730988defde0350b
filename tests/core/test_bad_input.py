"""Bad input as a new user gives it: refused at start, by name, with a fix that works, without a
traceback, and before any server, contract or data set exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from web3.types import RPCEndpoint

from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.errors import ConfigError, DataError, TaskFinished
from flock_pipeline.limits import (
    ANVIL_FUNDER_WEI,
    BUILTIN_CLASS_COUNTS,
    DEV_FUNDING_WEI,
    OVERFLOW_ODDS,
    _overflow_odds,
    check_flow_limits,
    check_limits,
    max_dev_participants,
    max_proposers_per_round,
    training_pool_size,
)
from flock_pipeline.protocol.settlement import MAX_UPDATES

HEAVY = {"torch", "lightning", "prefect", "flows", "mlflow", "dvc"}
"""Packages whose import alone takes seconds: a refusal from the configuration needs none."""

SMALL = {
    "participants": 2,
    "rounds": 1,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 1},
    "partition": {"scheme": "iid"},
}


def _cfg(**overrides: Any) -> FlockConfig:
    return load_config(None, overrides)


def _flock(
    tmp_path: Path, *args: str, config: dict[str, Any] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``flock ARGS`` in tmp_path (state in tmp_path/d, config file from ``config``), and the
    heavy packages the process had imported when it exited."""
    extra = ["--data-dir", str(tmp_path / "d")]
    if config is not None:
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(config))
        extra += ["-c", str(path)]
    script = textwrap.dedent(
        """
        import atexit, json, sys
        atexit.register(lambda: print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})),
                                      file=sys.__stdout__))
        from flock_pipeline.faces.cli import main
        sys.argv = ["flock", *sys.argv[1:]]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *args, *extra],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
             "MPLCONFIGDIR": str(tmp_path / "mpl")},
    )  # fmt: skip
    imported = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    return proc, imported & HEAVY


def _nothing_started(data_dir: Path) -> None:
    """No chain, contract, task, data set snapshot or server exists for the data folder."""
    for part in ("chain", "tasks", "datasets", "blobs", "servers"):
        assert not (data_dir / part).exists(), part


# ---------------------------------------------------------------- limits from the config


@pytest.mark.parametrize("name", sorted(BUILTIN_CLASS_COUNTS))
def test_the_builtin_class_counts_are_the_data_sets(name: str) -> None:
    from flock_pipeline.data import load_dataset

    counts = np.bincount(load_dataset(name).y)
    assert tuple(int(c) for c in counts) == BUILTIN_CLASS_COUNTS[name]


@pytest.mark.parametrize(
    "overrides",
    [
        {"data.dataset": "mnist5k"},
        {"data.dataset": "digits"},
        {"data.dataset": "digits", "data.test_fraction": 0.33},
        {"data.dataset": "mnist5k", "data.max_samples": 1000},
        {"data.dataset": "digits", "data.validation": "shared", "data.validation_per_class": 20},
        {"data.dataset": "mnist5k", "data.max_samples": 2000, "data.validation": "shared"},
    ],
)
def test_the_pool_size_is_what_the_federation_shares(overrides: dict[str, Any]) -> None:
    from flock_pipeline.round import prepare_federation

    cfg = _cfg(participants=1, **overrides)
    (only,) = prepare_federation(cfg).participants
    assert training_pool_size(cfg) == len(only.y_train) + len(only.y_holdout)


def test_the_most_participants_the_data_set_allows_partition_and_one_more_is_refused() -> None:
    from flock_pipeline.round import prepare_federation

    base = {"data.dataset": "digits", "partition.scheme": "iid", "partition.min_samples": 10}
    pool = training_pool_size(_cfg(**base))
    assert pool is not None
    most = pool // 10
    at_limit = _cfg(participants=most, **base)
    check_limits(at_limit)
    sizes = [len(p.y_train) + len(p.y_holdout) for p in prepare_federation(at_limit).participants]
    assert min(sizes) >= 10
    over = _cfg(participants=most + 1, **base)
    with pytest.raises(ConfigError, match=rf"participants: .*use at most {most} participants"):
        check_limits(over)
    with pytest.raises(DataError):  # the limit is the partition's own
        prepare_federation(over)


def test_shards_that_cannot_cover_every_class_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"classes_per_participant.*at least 4"):
        check_limits(_cfg(participants=3, **{"partition.scheme": "shards",
                                             "partition.classes_per_participant": 2}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"classes_per_participant: 11 .*at most 10"):
        check_limits(_cfg(participants=3, **{"partition.scheme": "shards",
                                             "partition.classes_per_participant": 11}))  # fmt: skip


def test_more_proposers_than_a_round_holds_are_refused_with_the_largest_safe_setting() -> None:
    fits = _cfg(participants=MAX_UPDATES, **{"partition.min_samples": 1})
    check_limits(fits)
    over = _cfg(participants=MAX_UPDATES + 1, **{"partition.min_samples": 1})
    most = max_proposers_per_round(MAX_UPDATES + 1, MAX_UPDATES)
    with pytest.raises(ConfigError, match=rf"proposers_per_round to at most {most}\b"):
        check_limits(over)
    most = max_proposers_per_round(1000, MAX_UPDATES)
    check_limits(_cfg(participants=1000, **{"partition.min_samples": 1,
                                            "chain.proposers_per_round": most}))  # fmt: skip
    with pytest.raises(ConfigError, match="proposers_per_round"):
        check_limits(_cfg(participants=1000, **{"partition.min_samples": 1,
                                                "chain.proposers_per_round": 250}))  # fmt: skip


@pytest.mark.parametrize("participants", [257, 400, 4000])
def test_the_largest_safe_proposer_count_is_the_last_under_the_odds(participants: int) -> None:
    from scipy.stats import binom

    most = max_proposers_per_round(participants, MAX_UPDATES)
    for expected in (most, most + 1):
        ours = _overflow_odds(participants, expected, MAX_UPDATES)
        exact = float(binom.sf(MAX_UPDATES, participants, expected / participants))
        assert ours == pytest.approx(exact, rel=1e-6, abs=1e-12)
    assert binom.sf(MAX_UPDATES, participants, most / participants) <= OVERFLOW_ODDS
    assert binom.sf(MAX_UPDATES, participants, (most + 1) / participants) > OVERFLOW_ODDS


def test_the_managed_anvil_funds_only_so_many_participants_the_simulation_any() -> None:
    many = {"partition.min_samples": 1, "chain.proposers_per_round": 100}
    most = max_dev_participants(ANVIL_FUNDER_WEI)
    check_flow_limits(_cfg(participants=most, **many))
    over = _cfg(participants=most + 1, **many)
    check_limits(over)  # the simulation funds nobody
    check_flow_limits(_cfg(participants=most + 1, **many, **{"chain.url": "py-evm"}))
    with pytest.raises(ConfigError, match=rf"managed anvil .*use at most {most}"):
        check_flow_limits(over)


def test_the_funding_constants_are_the_chain_s(tmp_path: Path) -> None:
    from flock_pipeline.chain import backends
    from flock_pipeline.chain.anvil import AnvilNode

    assert backends._DEV_FUNDING == DEV_FUNDING_WEI
    node = AnvilNode(tmp_path, port=0)
    try:
        node.up()
        chain = node.chain()
        assert chain.balance(chain.w3.eth.accounts[0]) == ANVIL_FUNDER_WEI
    finally:
        node.down()


def test_a_dev_chain_whose_funder_cannot_fund_everyone_is_refused_before_a_transfer(
    tmp_path: Path,
) -> None:
    from flock_pipeline.chain.anvil import AnvilNode
    from flock_pipeline.runtime.world import _check_funding

    node = AnvilNode(tmp_path, port=0)
    try:
        node.up()
        chain = node.chain()
        funder = chain.w3.eth.accounts[0]
        chain.w3.provider.make_request(
            RPCEndpoint("anvil_setBalance"), [funder, hex(3 * DEV_FUNDING_WEI)]
        )
        block = chain.w3.eth.block_number
        _check_funding(_cfg(participants=1), chain)  # creator + 1: fits
        with pytest.raises(ConfigError, match="it can fund 2 more: use fewer participants"):
            _check_funding(_cfg(participants=4), chain)
        assert chain.w3.eth.block_number == block
    finally:
        node.down()


# ---------------------------------------------------------------- the CLI, at start


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_too_many_participants_exit_2_naming_the_limits_before_anything_loads(
    tmp_path: Path, command: str
) -> None:
    proc, heavy = _flock(tmp_path, command, "--participants", "100000")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert "error: invalid configuration" in err
    assert "use at most 400 participants" in err  # mnist5k's 4000 training samples / 10
    assert f"a round holds at most {MAX_UPDATES} updates" in err
    assert ("managed anvil" in err) == (command == "run")
    assert not heavy  # refused from arithmetic on the config: no torch, chain or Prefect
    assert not (tmp_path / "d").exists()


def test_a_privacy_budget_no_round_fits_is_refused_before_any_server(tmp_path: Path) -> None:
    config = {**SMALL, "privacy": {"enabled": True, "epsilon_budget": 0.01}}
    proc, _ = _flock(tmp_path, "run", config=config)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert "privacy.epsilon_budget: 0.01 affords no participant a single round" in err
    assert "Starting temporary server" not in err
    _nothing_started(tmp_path / "d")


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_an_unwritable_blob_store_is_refused_before_any_server(tmp_path: Path, where: str) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    url = "/proc/flock-blobs" if where == "proc" else str(tmp_path / "a_file" / "blobs")
    proc, _ = _flock(tmp_path, "run", config={**SMALL, "storage": {"url": url}})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"the blob store folder {url} is not writable" in err
    assert "set storage.url" in err
    _nothing_started(tmp_path / "d")


def _finished_task(tmp_path: Path, config: dict[str, Any]) -> tuple[str, Path]:
    """A task folder as a finished run leaves it, for ``config``; (name, summary path)."""
    from flock_pipeline.runtime.world import config_hash

    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path, {"data_dir": str(tmp_path / "d")})
    name = "flock-digits-mlp-1"
    summary = tmp_path / "elsewhere" / "summary.json"
    folder = tmp_path / "d" / "tasks" / name
    folder.mkdir(parents=True)
    meta = {"name": name, "config_hash": config_hash(cfg), "task_id": 1, "complete": True,
            "summary": str(summary), "datasets": {}}  # fmt: skip
    (folder / "task.json").write_text(json.dumps(meta))
    return name, summary


def test_rerunning_a_finished_task_says_so_names_its_summary_and_sends_nothing(
    tmp_path: Path,
) -> None:
    name, summary = _finished_task(tmp_path, SMALL)
    proc, _ = _flock(tmp_path, "run", "--task", name, config=SMALL)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"task '{name}' is finished" in err
    assert f"Its summary: {summary}" in err
    assert "start a new task" in err
    assert not (tmp_path / "d" / "chain").exists()  # no chain started: nothing sent


def test_a_deployment_run_of_a_finished_task_is_refused_before_the_chain(tmp_path: Path) -> None:
    from flock_pipeline.runtime.world import open_world

    name, _ = _finished_task(tmp_path, SMALL)
    cfg = load_config(tmp_path / "task.yaml", {"data_dir": str(tmp_path / "d"), "task": name})
    with pytest.raises(TaskFinished, match="is finished"):
        open_world(cfg)
    assert not (tmp_path / "d" / "chain").exists()


def test_a_user_error_inside_a_prefect_task_logs_no_traceback(
    tmp_path: Path, prefect_api: str
) -> None:
    """Prefect logs a failed task and flow run with its traceback; with the CLI's filter a user
    error (FlockError) shows as its message only, while a bug keeps its traceback."""
    script = tmp_path / "flows_with_errors.py"
    script.write_text(
        textwrap.dedent(
            """
            from prefect import flow, task

            from flock_pipeline.faces.cli import quiet_user_errors
            from flock_pipeline.errors import ConfigError

            @task
            def user_error() -> None:
                raise ConfigError("storage.url: the user's mistake, named with its fix")

            @task
            def bug() -> None:
                raise RuntimeError("a bug keeps its traceback")

            @flow
            def failing(kind: str) -> None:
                (user_error if kind == "user" else bug)()

            quiet_user_errors()
            for kind in ("user", "bug"):
                try:
                    failing(kind)
                except (ConfigError, RuntimeError) as exc:
                    print("raised:", type(exc).__name__, str(exc).split(":")[0].replace(" ", "_"))
            """
        )
    )
    # The session's Prefect server: a temporary one per subprocess costs a start-up and a
    # migration each, and a slow start would read here as a failure of the filter.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": prefect_api}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "raised:", "ConfigError", "storage.url",
        "raised:", "RuntimeError", "a_bug_keeps_its_traceback",
    ]  # fmt: skip
    log = proc.stderr
    assert "the user's mistake, named with its fix" in log
    assert 'raise ConfigError("storage.url' not in log  # no frame of the user error
    assert 'raise RuntimeError("a bug keeps its traceback")' in log
