"""Open (create or resume) a task: its coordinator and, for the in-process engine, every
participant's runtime, each with its own key, data snapshot and ledger.

Each outside system is reached through its adapter; this module only wires them together and
checks, before any training starts, that every one of them is usable. Nothing is kept in a
module global: what ``open_world`` returns is all there is.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy.typing as npt
import torch
from eth_utils.address import to_checksum_address
from web3.types import Wei

from flock_pipeline.chain import (
    AllianceClient,
    Chain,
    ChainSetupError,
    Deployment,
    Signer,
    TaskConfig,
    dev_signers,
    in_process,
    load_or_deploy,
    signer_from_env,
)
from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import FlockConfig
from flock_pipeline.data import Federation, ParticipantData, build_federation, load_dataset
from flock_pipeline.data.schema import task_schema
from flock_pipeline.errors import ConfigError, DataError, TaskFinished
from flock_pipeline.limits import DEV_FUNDING_WEI, check_flow_limits
from flock_pipeline.privacy import LedgerStore, PrivacyLedger
from flock_pipeline.protocol.params import dev_address
from flock_pipeline.round import initial_weights, prepare_federation
from flock_pipeline.runtime.coordinator import Coordinator
from flock_pipeline.runtime.participant import Participant, local_federation
from flock_pipeline.runtime.task import (
    VALIDATION,
    TaskCard,
    TaskView,
    connect_configured,
    validation_hash,
)
from flock_pipeline.serialization import canonical_bytes
from flock_pipeline.services import check_services
from flock_pipeline.snapshots import DatasetSnapshots, Snapshot
from flock_pipeline.storage import open_store
from flock_pipeline.tracking import ModelRegistry, preload_model_flavor
from flock_pipeline.training.local import plan_spend

__all__ = ["OpenTask", "config_hash", "open_world", "preflight", "validation_hash"]

TOKEN = 10**18
IN_PROCESS = "py-evm"
"""``chain.url`` of an in-process py-evm chain: gone with the process, for tests and trials."""


def config_hash(cfg: FlockConfig) -> str:
    """What makes two runs the same task: everything but the task name and where state lives.

    The shared-validation settings count only when they are on, so a task started before they
    existed (held-out validation) still resumes."""
    data = json.loads(cfg.model_dump_json(exclude={"task", "data_dir"}))
    if cfg.data.validation == "holdout":
        for key in ("validation", "validation_per_class"):
            data["data"].pop(key)
    if cfg.data.folder_schema is None:  # tasks from before data schemas still resume
        data["data"].pop("folder_schema")
    for key in ("deadline_seconds", "join_seconds"):  # how long to wait is not the task
        data["workers"].pop(key)
    data["chain"].pop("log_chunk_blocks")  # how to read the chain is not the task either
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class OpenTask:
    """An opened task: its coordinator and the participants this process runs (all of them
    for the in-process engine; none when each runs its own worker)."""

    coordinator: Coordinator
    participants: list[Participant]

    def participant(self, pid: str) -> Participant:
        return next(p for p in self.participants if p.id == pid)

    def close(self) -> None:
        self.coordinator.close()


def _task_name(cfg: FlockConfig, digest: str) -> tuple[str, bool]:
    """(name, resume?): an explicit name, else the newest unfinished task of this config."""
    tasks = cfg.data_dir / "tasks"
    if cfg.task is not None:
        return cfg.task, (tasks / cfg.task / "task.json").exists()
    known = sorted(tasks.glob("*/task.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in known:
        meta = json.loads(path.read_text())
        if meta.get("config_hash") == digest and not meta.get("complete"):
            return str(meta["name"]), True
    base = cfg.registered_name
    n = 1
    while (tasks / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}", False


def _open_chain(cfg: FlockConfig) -> tuple[Chain, AnvilNode | None, bool]:
    if cfg.chain.url == IN_PROCESS:
        return in_process(), None, False
    if cfg.chain.url is None:
        node = AnvilNode(cfg.data_dir)
        before = node.status()
        # A node this run starts is its own: it stops at the end and dies with the run.
        node.up(owner="flock run", bound=True)
        return node.chain(), node, not before.running or before.orphaned
    return connect_configured(cfg), None, False


def check_deployment(cfg: FlockConfig, chain: Chain) -> Deployment | None:
    """The deployment ``chain.deployment`` names, checked against the chain it runs on: its
    chain id and its alliance's code. None when the config names none."""
    if not cfg.chain.deployment:
        return None
    path = Path(cfg.chain.deployment)
    try:
        known = Deployment.load(path)
    except FileNotFoundError:
        raise ConfigError(
            f"chain.deployment: no file {path}; point it at the deployment JSON of the contracts "
            "on chain.url (`flock chain deploy` writes one), or leave it unset to deploy"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"chain.deployment: {path} is not a deployment record ({exc})") from None
    if known.chain_id != chain.chain_id:
        raise ChainSetupError(
            f"chain.deployment {path} is for chain {known.chain_id}, but the node at "
            f"{cfg.chain.url} serves chain {chain.chain_id}: point chain.url at a node of chain "
            f"{known.chain_id}, or chain.deployment at the contracts on chain {chain.chain_id}"
        )
    if not chain.w3.eth.get_code(to_checksum_address(known.alliance)):
        raise ChainSetupError(
            f"chain.deployment {path}: no contract at {known.alliance} on chain "
            f"{chain.chain_id}; was the chain reset? Deploy again, or fix chain.deployment"
        )
    return known


_PUBLIC_IN_PROCESS = (
    "the in-process engine needs a dev chain (anvil) where it holds and funds every "
    "participant's key; on a public chain (or chain.dev: false) set workers.pool and "
    "workers.members and run one `flock participant start` per participant"
)


def _signers(cfg: FlockConfig, chain: Chain) -> tuple[Signer, list[Signer]]:
    if chain.kind == "rpc":
        # On a public chain each participant runs its own worker with its own key; one process
        # cannot hold everyone's keys.
        raise ChainSetupError(_PUBLIC_IN_PROCESS)
    _check_funding(cfg, chain)
    (creator,) = dev_signers(chain, 1, label="flock-creator")
    return creator, dev_signers(chain, cfg.participants, label="flock-participant")


def _check_funding(cfg: FlockConfig, chain: Chain) -> None:
    """Refuse, before the first transfer, a federation the dev chain's funder cannot fund (each
    dev signer short of gas money gets DEV_FUNDING_WEI from it), rather than fail halfway."""
    accounts = [dev_address("flock-creator", 0)]
    accounts += [dev_address("flock-participant", i) for i in range(cfg.participants)]
    short = sum(1 for a in accounts if chain.balance(a) < DEV_FUNDING_WEI // 2)
    funder = chain.w3.eth.accounts[0]
    holds = chain.balance(funder)
    reserve = DEV_FUNDING_WEI  # gas for the transfers themselves
    if short and short * DEV_FUNDING_WEI + reserve > holds:
        room = max((holds - reserve) // DEV_FUNDING_WEI, 0)
        raise ConfigError(
            f"participants: the dev chain's funder {funder} holds {holds / 10**18:.2f} ETH, but "
            f"{short} accounts need {DEV_FUNDING_WEI // 10**18} ETH of gas money each; it can "
            f"fund {room} more: use fewer participants, or a fresh chain"
        )


_PARTICIPANT_ARRAYS = ("x_train", "y_train", "x_holdout", "y_holdout")
"""What a participant's snapshot holds, one ``.npy`` file each."""


def _pinned(
    snapshots: DatasetSnapshots,
    sets: dict[str, dict[str, npt.NDArray[Any]]],
    recorded: dict[str, str] | None,
) -> dict[str, tuple[Snapshot, dict[str, npt.NDArray[Any]]]]:
    """The snapshot of each data set in ``sets`` (name → arrays; a new task writes them and
    takes the snapshots, in one DVC call; a resumed one has its ``recorded`` hashes) and its
    arrays as read back and checked against that hash: everyone trains and scores on exactly
    the snapshot's bytes, not on a rebuild from the raw data set."""
    if recorded is None:
        for name, arrays in sets.items():
            snapshots.write(name, arrays)
        taken = snapshots.snapshot_many(list(sets))
    else:
        taken = {n: Snapshot(n, snapshots.folder(n), recorded[n]) for n in sets}
    return {n: (taken[n], snapshots.load(n, taken[n])) for n in sets}


def _metadata_uri(cfg: FlockConfig, validation_hash: str | None) -> str:
    """The task's metadata URI on chain; it names the shared validation set's DVC hash, so a
    voter can check that the set it scores on is the one the task was created with."""
    uri = f"flock://{cfg.registered_name}"
    return uri if validation_hash is None else f"{uri}?validation=md5:{validation_hash}"


def _task_config(
    cfg: FlockConfig, model_hash: bytes, validation_hash: str | None = None
) -> TaskConfig:
    n = cfg.participants
    proposers, voters = cfg.committee
    phases = cfg.chain.training_seconds + cfg.chain.commit_seconds + cfg.chain.reveal_seconds
    return TaskConfig(
        model_hash=model_hash,
        rounds=cfg.rounds,
        reward_pool=cfg.chain.reward_pool * TOKEN,
        min_stake=cfg.chain.min_stake * TOKEN,
        min_participants=min(n, 2),
        max_participants=max(n, 2),
        proposers_per_round=proposers,
        voters_per_round=voters,
        slash_bps=cfg.chain.slash_bps,
        penalty_bps=cfg.chain.penalty_bps,
        voter_slash_bps=cfg.chain.voter_slash_bps,
        finalizer_share_bps=cfg.chain.finalizer_share_bps,
        training_duration=cfg.chain.training_seconds,
        commit_duration=cfg.chain.commit_seconds,
        reveal_duration=cfg.chain.reveal_seconds,
        unbonding_delay=2 * phases,
        metadata_uri=_metadata_uri(cfg, validation_hash),
    )


def _resumed_meta(cfg: FlockConfig, name: str) -> dict[str, Any]:
    """The recorded metadata of task ``name``, refused if the task is finished (nothing is
    sent: a finished task takes no stake) or was made from another config."""
    meta: dict[str, Any] = json.loads((cfg.data_dir / "tasks" / name / "task.json").read_text())
    if meta.get("complete"):
        summary = meta.get("summary") or cfg.data_dir / "runs" / name / "summary.json"
        raise TaskFinished(
            f"task {name!r} is finished: all its rounds ran and it paid out. Its summary: "
            f"{summary}. Run without --task (or with a new task name) to start a new task"
        )
    if meta.get("config_hash") != config_hash(cfg):
        raise ConfigError(
            f"task {name!r} was created with another configuration; pick a new task name"
        )
    return meta


def _public_federation(cfg: FlockConfig) -> Federation:
    """What the coordinator of a task with participant workers holds: the data set's test split,
    its input shape and classes. The participants' data is on their machines."""
    dataset = load_dataset(cfg.data.dataset, cfg.data.fashion_mnist_dir)
    fed = build_federation(dataset, cfg.participants, cfg.data, cfg.partition, cfg.seed)
    return replace(fed, participants=[], counts=fed.counts[:0])


def _check_privacy(cfg: FlockConfig, fed: Federation) -> None:
    """Refuse a privacy budget in which no participant can train a single round: every round
    would be void (each one abstains, as past its budget)."""
    budget, privacy = cfg.privacy.epsilon_budget, cfg.privacy
    if not privacy.enabled or budget is None:
        return
    cost = {
        p.id: PrivacyLedger.epsilon_of([plan_spend(len(p.y_train), cfg.training, privacy)],
                                       privacy.delta)
        for p in fed.participants
    }  # fmt: skip
    cheapest = min(cost, key=lambda pid: cost[pid])
    if cost[cheapest] > budget:
        dearest = max(cost, key=lambda pid: cost[pid])
        raise ConfigError(
            f"privacy.epsilon_budget: {budget:g} affords no participant a single round: one "
            f"round costs epsilon {cost[cheapest]:.3f} (participant {cheapest}) to "
            f"{cost[dearest]:.3f} ({dearest}) at delta {privacy.delta:g}. Raise "
            f"privacy.epsilon_budget to at least {cost[dearest]:.3f} for everyone to train, add "
            "noise (privacy.noise_multiplier) or train fewer epochs (training.local_epochs)"
        )


def preflight(cfg: FlockConfig) -> None:
    """Every check that can fail on user input, before an orchestrator, a chain or a trainer
    starts: the configuration's limits, tracking URI, blob store (a probe written and removed),
    chain URL, the task (a finished one is not run again; a resumed one's data is unchanged),
    the partition of the data set and the privacy budget of one round."""
    check_flow_limits(cfg)
    check_services(cfg)
    open_store(cfg.storage.url, cfg.data_dir, cfg.storage.s3_endpoint_url).check_writable()
    ModelRegistry.open(cfg.tracking.uri, cfg.data_dir, cfg.tracking.experiment, cfg.registered_name)
    if cfg.chain.url not in (None, IN_PROCESS):
        chain = connect_configured(cfg)
        check_deployment(cfg, chain)
        if chain.kind == "rpc" and cfg.workers.pool is None:
            raise ChainSetupError(_PUBLIC_IN_PROCESS)
        if chain.kind == "rpc":
            signer_from_env(cfg.chain.key_env)
    name, resume = _task_name(cfg, config_hash(cfg))
    if resume:
        meta = _resumed_meta(cfg, name)
        snapshots = DatasetSnapshots(cfg.data_dir / "datasets" / name)
        recorded_sets = dict(meta["datasets"])
        if meta.get("validation"):
            recorded_sets[VALIDATION] = meta["validation"]
        for pid, recorded in recorded_sets.items():
            snapshots.verify(Snapshot(pid, snapshots.folder(pid), recorded))
    if cfg.workers.pool is None:  # a worker checks its own budget against its own data
        _check_privacy(cfg, prepare_federation(cfg))


def _public_config(cfg: FlockConfig) -> dict[str, Any]:
    """The task's configuration as its card shows it: no data folder, no worker settings, and
    the blob store as a location every participant reaches (the default folder, absolute)."""
    data = json.loads(cfg.model_dump_json(exclude={"data_dir", "task", "workers"}))
    if not cfg.storage.url:
        data["storage"]["url"] = str((cfg.data_dir / "blobs").resolve())
    return dict(data)


def _chain_url(cfg: FlockConfig, anvil: AnvilNode | None) -> str | None:
    """The RPC URL the task card names: the configured one, or the managed anvil's."""
    if cfg.chain.url not in (None, IN_PROCESS):
        return cfg.chain.url
    return None if anvil is None else anvil.status().url


def _roster(cfg: FlockConfig, people: list[Signer]) -> dict[str, str]:
    """Participant id -> address: the dev signers in process, else the configured members."""
    if cfg.workers.pool is not None:
        return {f"p{i}": str(a) for i, a in enumerate(cfg.workers.members)}
    return {f"p{i}": s.address for i, s in enumerate(people)}


def _check_gas(chain: Chain, address: str, who: str) -> None:
    """Refuse by name an account with no ether for gas on a chain that funds nobody."""
    if chain.balance(address) == 0:
        raise ChainSetupError(
            f"{who} {address} holds no ether on chain {chain.chain_id} to pay for gas: send it "
            "some first"
        )


def _check_tokens(client: AllianceClient, address: str, need: int, who: str, key: str) -> None:
    """Refuse by name an account short of the FLOCK it must pay on a chain that mints none."""
    holds = client.balance_of(address)
    if holds < need:
        raise ChainSetupError(
            f"{who} {address} holds {holds / TOKEN:g} FLOCK on chain {client.chain.chain_id}, "
            f"{key} needs {need / TOKEN:g}: transfer it {((need - holds) / TOKEN):g} FLOCK, or "
            f"lower {key}"
        )


def _fund_members(cfg: FlockConfig, chain: Chain, creator: AllianceClient) -> None:
    """On a dev chain, give each member of a worker task gas money and its stake in tokens
    (a public chain's participants bring their own)."""
    if chain.kind == "rpc":
        return
    rich = chain.w3.eth.accounts[0]
    stake = cfg.chain.stake * TOKEN
    for address in cfg.workers.members:
        if chain.balance(address) < DEV_FUNDING_WEI // 2:
            tx = chain.w3.eth.send_transaction(
                {"from": rich, "to": to_checksum_address(address), "value": Wei(DEV_FUNDING_WEI)}
            )
            chain.w3.eth.wait_for_transaction_receipt(tx)
        if creator.balance_of(address) < stake:
            creator.mint(to_checksum_address(address), stake)


def open_world(cfg: FlockConfig) -> OpenTask:
    """Open (or resume) the task of ``cfg``. Fails before any training if a system is unusable.

    The in-process engine cuts every participant's data from the task's data set, snapshots
    each with DVC and builds one ``Participant`` per signer; with ``workers.pool`` set, the
    coordinator holds only the public test split and each participant joins from its worker."""
    check_flow_limits(cfg)
    digest = config_hash(cfg)
    name, resume = _task_name(cfg, digest)
    folder = cfg.data_dir / "tasks" / name
    in_process = cfg.workers.pool is None
    if resume:
        meta = _resumed_meta(cfg, name)
    # Cheap checks first: tracking and storage open or fail by name. Opening the tracking
    # store itself (a new SQLite file: MLflow's schema migrations, seconds) goes on in the
    # background meanwhile; its failure still stops the task before any training.
    tracking_uri = ModelRegistry.check_uri(cfg.tracking.uri, cfg.data_dir)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flock-tracking")
    opening = pool.submit(
        ModelRegistry.open, tracking_uri, cfg.data_dir, cfg.tracking.experiment,
        cfg.registered_name,
    )  # fmt: skip
    pool.shutdown(wait=False)  # the one job runs on; the pool takes no other
    if not in_process:  # in process, the participants' training imports Lightning first
        preload_model_flavor()
    store = open_store(cfg.storage.url, cfg.data_dir, cfg.storage.s3_endpoint_url)
    store.check_writable()
    # Before the chain: a data set that cannot be split starts nothing.
    fed = prepare_federation(cfg) if in_process else _public_federation(cfg)
    chain, anvil, started = _open_chain(cfg)
    try:
        if in_process:
            creator_signer, people = _signers(cfg, chain)
        else:
            if chain.kind == "rpc":  # a public chain: the creator's own key, its own ether
                creator_signer = signer_from_env(cfg.chain.key_env)
                _check_gas(chain, creator_signer.address, f"the task's creator (key in "
                           f"{cfg.chain.key_env})")  # fmt: skip
            else:
                (creator_signer,) = dev_signers(chain, 1, label="flock-creator")
            people = []
        deployment = check_deployment(cfg, chain) or load_or_deploy(
            chain, creator_signer, cfg.data_dir / "chain" / "deployment.json"
        )
        creator = AllianceClient(chain, deployment, creator_signer)
        creator.log_chunk_blocks = cfg.chain.log_chunk_blocks
        roster = _roster(cfg, people)

        snapshots = DatasetSnapshots(cfg.data_dir / "datasets" / name)
        snaps: dict[str, Snapshot] = {}
        if in_process:
            sets = {p.id: {k: getattr(p, k) for k in _PARTICIPANT_ARRAYS}
                    for p in fed.participants}  # fmt: skip
            pinned = _pinned(snapshots, sets, dict(meta["datasets"]) if resume else None)
            snaps = {pid: snapshot for pid, (snapshot, _) in pinned.items()}
            parts = [ParticipantData(pid, *(arrays[k] for k in _PARTICIPANT_ARRAYS))
                     for pid, (_, arrays) in pinned.items()]  # fmt: skip
            fed = replace(fed, participants=parts)
        validation = None
        if fed.x_validation is not None and fed.y_validation is not None:
            if resume and not meta.get("validation"):
                raise ConfigError(
                    f"task {name!r} records no shared validation set; resume it with "
                    "data.validation: holdout, or pick a new task name"
                )
            recorded = {VALIDATION: meta["validation"]} if resume else None
            sets = {VALIDATION: {"x": fed.x_validation, "y": fed.y_validation}}
            validation, arrays = _pinned(snapshots, sets, recorded)[VALIDATION]
            fed = replace(fed, x_validation=arrays["x"], y_validation=arrays["y"])

        if resume:
            task_id = int(meta["task_id"])
            if meta["alliance"].lower() != deployment.alliance.lower():
                raise ConfigError(
                    f"task {name!r} lives on contract {meta['alliance']}, the chain in "
                    f"{cfg.data_dir / 'chain'} has {deployment.alliance}; was the chain reset?"
                )
        else:
            weights = initial_weights(cfg, fed)
            init_hash = store.put(canonical_bytes(weights))
            task_cfg = _task_config(
                cfg, bytes.fromhex(init_hash[2:]), None if validation is None else validation.hash
            )
            if chain.kind == "rpc":
                _check_tokens(creator, creator.address, task_cfg.reward_pool,
                              "the task's creator", "chain.reward_pool")  # fmt: skip
            else:
                creator.mint(creator.address, task_cfg.reward_pool)
            task_id, created = creator.create_task(task_cfg)
            meta = {
                "from_block": int(creator.tx.receipt(created.tx_hash)["blockNumber"]),
                "name": name,
                "config_hash": digest,
                "chain_id": chain.chain_id,
                "alliance": deployment.alliance,
                "token": deployment.token,
                "task_id": task_id,
                "initial_model": init_hash,
                "datasets": {pid: s.hash for pid, s in snaps.items()},
                "schema": task_schema(cfg).model_dump(mode="json"),
                "validation": None if validation is None else validation.hash,
                "complete": False,
            }
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "task.json").write_text(json.dumps(meta, indent=2))
        validation_blob = None
        if validation is not None and not in_process:
            # Public, like the schema: each participant worker fetches it, checks it against
            # the hash the task committed on chain, and snapshots it on its own machine.
            validation_blob = store.put(canonical_bytes({
                "x": torch.from_numpy(fed.x_validation), "y": torch.from_numpy(fed.y_validation),
            }))  # fmt: skip
        card = TaskCard(
            name=name,
            chain_id=chain.chain_id,
            chain_url=_chain_url(cfg, anvil),
            alliance=deployment.alliance,
            token=deployment.token,
            deployment=asdict(deployment),
            task_id=task_id,
            from_block=int(meta["from_block"]),
            initial_model=str(meta["initial_model"]),
            data_schema=task_schema(cfg),
            config=_public_config(cfg),
            roster=roster,
            validation=meta.get("validation"),
            validation_blob=validation_blob,
        )
        card.write(folder / "card.json")
        if validation is not None:  # the task's metadata is fixed at creation: check it once
            on_chain = validation_hash(creator.task_config(task_id).metadata_uri)
            if on_chain != validation.hash:
                raise DataError(
                    f"the task's validation set hashes to {validation.hash}, but task {task_id} "
                    f"on chain names {on_chain}: score only on the set the task committed"
                )
        view = TaskView(creator, name, task_id, int(meta["from_block"]), roster)
        participants = []
        ledgers = LedgerStore(folder / "privacy") if cfg.privacy.enabled else None
        shared = None if validation is None else (fed.x_validation, fed.y_validation)
        for part, signer in zip(fed.participants, people, strict=True):
            participants.append(
                Participant(
                    cfg=cfg,
                    id=part.id,
                    client=creator.as_signer(signer),
                    view=view,
                    fed=local_federation(cfg, part, fed.input_shape, fed.num_classes, shared),
                    data_hash=snaps[part.id].hash,
                    store=store,
                    state=folder,
                    ledgers=ledgers,
                    snapshots=snapshots,
                    snapshot=snaps[part.id],
                )
            )
        # Stake once; a resumed task finds the stake already there, and one whose every round
        # has started takes no more (the contract refuses it: TaskClosed).
        stake = cfg.chain.stake * TOKEN
        if creator.task_state(task_id).rounds_started < cfg.rounds:
            for p in participants:
                if p.client.participant_of(task_id).active < stake:
                    if p.client.balance_of() < stake and chain.kind != "rpc":
                        creator.mint(p.address, stake)
                    p.join(stake)
            if not in_process:
                _fund_members(cfg, chain, creator)
        registry = opening.result()
    except BaseException:
        if anvil is not None and started:
            anvil.down()
        raise
    coordinator = Coordinator(
        cfg=cfg,
        name=name,
        folder=folder,
        chain=chain,
        creator=creator,
        view=view,
        store=store,
        registry=registry,
        public=fed,
        meta=meta,
        snapshots=snapshots,
        validation=validation,
        anvil=anvil,
        started_anvil=started,
        dataset_hashes={pid: s.hash for pid, s in snaps.items()},
    )
    return OpenTask(coordinator, participants)
