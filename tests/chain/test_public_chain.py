"""A task on a chain run as a public one: anvil in real-time mode (a block a second, the clock
never jumped), treated as public (``chain.dev: false``). The creator's and the participants'
keys come from the environment, the contracts are an existing deployment named in the config,
nobody is minted or funded by the task, phases pass in real time, and events are read from
the task's creation block. A chain id that does not match the deployment, an in-process engine
on it, and a participant without tokens are refused by name before anything is sent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from flock_pipeline.chain import AllianceClient, ChainSetupError, Signer, connect, deploy
from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import load_config
from flock_pipeline.data.folder import write_folder
from flock_pipeline.errors import FlockError
from flock_pipeline.protocol.params import dev_key
from flock_pipeline.round import prepare_federation
from flock_pipeline.runtime.participant import open_participant
from flock_pipeline.runtime.task import TaskCard
from flock_pipeline.runtime.world import OpenTask, open_world, preflight

pytestmark = pytest.mark.usefixtures("prefect_api")

TOKEN = 10**18
N = 2
ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
"""anvil's first dev account: here only the outside world that deployed the contracts and
handed out ether and FLOCK before the task (its key is public test material)."""
CREATOR_ENV = "FLOCK_TEST_CREATOR_KEY"


def _env(i: int) -> str:
    return f"FLOCK_TEST_PARTICIPANT_{i}_KEY"


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real-time anvil, the contracts deployed by an operator, and the creator and two
    participants holding ether and FLOCK of their own."""
    base = tmp_path_factory.mktemp("public")
    node = AnvilNode(base / "anvil", port=0, realtime=True, block_seconds=1)
    url = str(node.up(owner="test").url)
    chain = connect(url)  # kind "rpc": what any node of a public chain is
    creator = dev_key("public-creator", 0).hex()
    keys = [dev_key("public-participant", i).hex() for i in range(N + 1)]
    rich = chain.w3.eth.accounts[0]
    sent = [chain.w3.eth.send_transaction(
        {"from": rich, "to": Account.from_key(k).address, "value": 10**19}
    ) for k in (creator, *keys)]  # fmt: skip
    for tx in sent:
        chain.w3.eth.wait_for_transaction_receipt(tx)
    operator = Signer(Account.from_key(ANVIL_KEY_0))
    deployment = deploy(chain, operator)
    path = base / "deployment.json"
    deployment.save(path)
    token = AllianceClient(chain, deployment, operator)
    # The last key has ether but no FLOCK.
    for key, amount in [(creator, 3_000), *((k, 100) for k in keys[:N])]:
        token.mint(Account.from_key(key).address, amount * TOKEN)
    try:
        yield base, url, path, creator, keys, token
    finally:
        node.down()


def _config(base: Path, url: str, deployment: Path, members: list[str], **extra: Any) -> Any:
    return load_config(None, {
        "task": "public-1", "participants": len(members), "rounds": 1, "seed": 2,
        "data_dir": str(base / "coordinator"), "data.dataset": "digits", "model.name": "mlp",
        "privacy.enabled": False, "partition.scheme": "iid", "training.local_epochs": 1,
        "chain.url": url, "chain.dev": False, "chain.deployment": str(deployment),
        "chain.key_env": CREATOR_ENV, "chain.training_seconds": 15, "chain.commit_seconds": 6,
        "chain.reveal_seconds": 6, "chain.proposers_per_round": len(members),
        "chain.voters_per_round": len(members), "aggregation.screen.min_trust": None,
        "workers.pool": "public-pool", "workers.members": members, **extra,
    })  # fmt: skip


def test_a_round_on_a_public_chain_runs_in_real_time_with_keys_from_the_environment(
    public: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.federated import InProcessDuties, TaskRun

    # Prepare: the keys in the environment only; the participants' own data folders
    base, url, deployment, creator, keys, token = public
    monkeypatch.setenv(CREATOR_ENV, creator)
    for i in range(N):
        monkeypatch.setenv(_env(i), keys[i])
    members = [Account.from_key(k).address for k in keys[:N]]
    cfg = _config(base, url, deployment, members)
    fed = prepare_federation(cfg)
    folders = [write_folder(base / "owners" / p.id, p) for p in fed.participants]
    supply = token.total_supply()

    # Execute: the coordinator opens the task; each participant joins from its own runtime;
    # one round runs as the task flow runs it
    preflight(cfg)
    opened = open_world(cfg)
    try:
        card = TaskCard.read(opened.coordinator.folder)
        people = [open_participant(opened.coordinator.folder, folders[i], _env(i),
                                   base / "owners" / f"p{i}-state") for i in range(N)]  # fmt: skip
        for p in people:
            assert p.join(cfg.chain.stake * TOKEN)
        both = OpenTask(opened.coordinator, people)
        began = time.time()
        run = TaskRun(both, InProcessDuties(both))
        data = run.round(0)
        took = time.time() - began
        chain_now = opened.coordinator.chain.timestamp()
    finally:
        opened.close()

    # Assert: the round ran through its phases; nobody was minted to; time was never jumped
    assert data["outcome"] in ("accepted", "rejected")
    assert {p["update_hash"] is not None for p in data["participants"]} == {True}
    assert token.total_supply() == supply
    assert took >= cfg.chain.training_seconds  # phases are waited for, not skipped
    assert abs(chain_now - time.time()) < 10
    assert card.from_block > 0 and card.chain_id == 31337
    assert json.loads(deployment.read_text())["alliance"] == card.alliance


def test_a_mismatched_chain_an_in_process_engine_and_a_missing_key_are_refused_by_name(
    public: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _base, url, deployment, creator, keys, _ = public
    monkeypatch.setenv(CREATOR_ENV, creator)
    members = [Account.from_key(k).address for k in keys[:N]]

    # A deployment recorded for another chain id
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(json.loads(deployment.read_text()), chain_id=8453)))
    cfg = _config(tmp_path, url, other, members)
    with pytest.raises(ChainSetupError, match=r"is for chain 8453, but the node at .* serves "
                                              r"chain 31337: point chain\.url"):  # fmt: skip
        preflight(cfg)

    # The in-process engine holds everyone's key: not on a public chain
    cfg = load_config(None, {"data_dir": str(tmp_path / "x"), "chain.url": url,
                             "chain.dev": False, "data.dataset": "digits"})  # fmt: skip
    with pytest.raises(ChainSetupError, match="needs a dev chain"):
        preflight(cfg)

    # No creator key in the environment
    monkeypatch.delenv(CREATOR_ENV)
    with pytest.raises(ChainSetupError, match=f"{CREATOR_ENV} is not set"):
        preflight(_config(tmp_path, url, deployment, members))


def test_a_participant_without_tokens_is_refused_by_name(
    public: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare: a task whose second member holds ether but no FLOCK
    _base, url, deployment, creator, keys, _ = public
    monkeypatch.setenv(CREATOR_ENV, creator)
    monkeypatch.setenv(_env(N), keys[N])
    members = [Account.from_key(keys[0]).address, Account.from_key(keys[N]).address]
    cfg = _config(tmp_path, url, deployment, members, task="public-2")
    fed = prepare_federation(cfg)
    folder = write_folder(tmp_path / "owner", fed.participants[1])
    opened = open_world(cfg)
    try:
        # Execute
        broke = open_participant(opened.coordinator.folder, folder, _env(N), tmp_path / "s")

        # Assert
        with pytest.raises(FlockError, match=r"holds 0 FLOCK on chain 31337, its stake on task "
                                             r"'public-2' is 100: transfer 100 FLOCK"):  # fmt: skip
            broke.join(cfg.chain.stake * TOKEN)
    finally:
        opened.close()
