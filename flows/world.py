"""Everything a task's rounds act on, opened once per flow run: data, chain, stores, registry.

Each outside system is reached through its adapter; this module only wires them together and
checks, before any training starts, that every one of them is usable.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy.typing as npt
from eth_utils.crypto import keccak

from flock_pipeline.chain import (
    AllianceClient,
    Chain,
    ChainSetupError,
    Signer,
    TaskConfig,
    connect,
    dev_signers,
    in_process,
    load_or_deploy,
)
from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import FlockConfig
from flock_pipeline.data import Federation, ParticipantData
from flock_pipeline.data.schema import task_schema
from flock_pipeline.errors import ConfigError, DataError, TaskFinished
from flock_pipeline.limits import DEV_FUNDING_WEI, check_flow_limits
from flock_pipeline.privacy import LedgerStore, PrivacyLedger
from flock_pipeline.protocol import Role
from flock_pipeline.protocol.params import dataset_hash, dev_address
from flock_pipeline.protocol.tally import RevealedVote
from flock_pipeline.protocol.view import RoundView
from flock_pipeline.round import initial_weights, prepare_federation
from flock_pipeline.serialization import canonical_bytes
from flock_pipeline.snapshots import DatasetSnapshots, Snapshot
from flock_pipeline.storage import BlobStore, open_store
from flock_pipeline.tracking import ModelRegistry
from flock_pipeline.training.local import plan_spend

__all__ = ["Member", "World", "config_hash", "open_world", "preflight", "validation_hash"]

TOKEN = 10**18
IN_PROCESS = "py-evm"
"""``chain.url`` of an in-process py-evm chain: gone with the process, for tests and trials."""
_WORLDS: dict[str, World] = {}
_LOCK = threading.Lock()


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
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Member:
    """One participant: its data index, its key and chain client, its privacy ledger."""

    id: str
    index: int
    client: AllianceClient
    ledger: PrivacyLedger | None
    snapshot: Snapshot

    @property
    def address(self) -> str:
        return self.client.address

    def salt(self, task_id: int, round_index: int) -> bytes:
        """A vote salt only this participant can compute: stable across a crash and restart."""
        key = bytes(self.client.signer.account.key)
        return keccak(key + f"flock-vote/{task_id}/{round_index}".encode())


@dataclass
class World:
    cfg: FlockConfig
    name: str
    folder: Path
    fed: Federation
    chain: Chain
    creator: AllianceClient
    task_id: int
    members: list[Member]
    store: BlobStore
    registry: ModelRegistry
    snapshots: DatasetSnapshots
    ledgers: LedgerStore | None
    anvil: AnvilNode | None = None
    started_anvil: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    finalized_trust: dict[int, dict[str, float]] = field(default_factory=dict)
    """Trust scores of finalized rounds, by round index: final on chain, so read once."""
    validation: Snapshot | None = None
    """The DVC snapshot of the task's shared validation set (``data.validation: shared``)."""

    @property
    def from_block(self) -> int:
        """The block the task was created in: event queries start there, not at genesis."""
        return int(self.meta.get("from_block", 0))

    def roles(self, r: int) -> dict[str, Role]:
        """Every member's role in round ``r``, read from the contract in one batch."""
        found = self.creator.roles_of(self.task_id, r, [m.address for m in self.members])
        return {m.id: Role(int(v)) for m, v in zip(self.members, found, strict=True)}

    def submissions(self, r: int) -> list[dict[str, Any]]:
        """The round's ``UpdateSubmitted`` events in submission (index) order."""
        events = self.creator.round_events(self.task_id, r, "UpdateSubmitted", self.from_block)
        return sorted(events, key=lambda e: int(e["index"]))

    def round_view(self, r: int) -> RoundView:
        """What the chain decided in round ``r`` and what it implies per participant, computed
        by the protocol model from three reads: the round, its updates and its reveals."""
        info = self.creator.round_info(self.task_id, r)
        proposers = [self.by_address(str(e["proposer"])).id for e in self.submissions(r)]
        reveals = [
            RevealedVote(
                voter=self.by_address(str(e["voter"])).id,
                weight=int(e["weight"]),
                aggregate_hash=bytes(e["aggregateHash"]),
                score=int(e["score"]),
                contributions=tuple(int(c) for c in e["contributions"]),
                own_index=proposers.index(pid) if (pid := self.by_address(str(e["voter"])).id)
                in proposers else None,
            )
            for e in self.creator.round_events(self.task_id, r, "VoteRevealed", self.from_block)
        ]  # fmt: skip
        return RoundView.of(info.outcome, info.aggregate_hash, proposers, reveals)

    def member(self, pid: str) -> Member:
        return next(m for m in self.members if m.id == pid)

    def by_address(self, address: str) -> Member:
        return next(m for m in self.members if m.address.lower() == address.lower())

    def save_ledger(self, member: Member) -> None:
        if self.ledgers is not None and member.ledger is not None:
            self.ledgers.save(member.ledger)

    def close(self) -> None:
        with _LOCK:
            _WORLDS.pop(self.name, None)
        if self.anvil is not None and self.started_anvil:
            self.anvil.down()


def get_world(name: str) -> World:
    with _LOCK:
        try:
            return _WORLDS[name]
        except KeyError:
            raise ConfigError(
                f"task {name!r} is not open in this process; run it through federated_task"
            ) from None


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
    chain = connect(cfg.chain.url)
    version = str(chain.w3.client_version).lower()
    if "anvil" in version:
        chain.kind = "anvil"
    return chain, None, False


def _signers(cfg: FlockConfig, chain: Chain) -> tuple[Signer, list[Signer]]:
    if chain.kind == "rpc":
        # On a public chain each participant runs its own worker with its own key; one process
        # cannot hold everyone's keys.
        raise ChainSetupError(
            "a simulated federation needs a dev chain (anvil) where it can fund its participants; "
            "on a public chain run one worker per participant"
        )
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

VALIDATION = "validation"
"""The snapshot name of the task's shared validation set, next to the participants' folders."""


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


def validation_hash(uri: str) -> str | None:
    """The shared validation set's DVC hash a task's metadata URI names, if any."""
    _, _, query = uri.rpartition("?")
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key == "validation" and value.startswith("md5:"):
            return value[len("md5:") :]
    return None


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


_FEDERATION: dict[str, Federation] = {}
"""The federation ``preflight`` built, for the ``open_world`` of the same config to take."""


def _federation_key(cfg: FlockConfig) -> str:
    parts = {"participants": cfg.participants, "seed": cfg.seed, "data": cfg.data,
             "partition": cfg.partition}  # fmt: skip
    return json.dumps({k: str(v) for k, v in parts.items()}, sort_keys=True)


def _federation(cfg: FlockConfig, keep: bool = False) -> Federation:
    """The task's partition of its data set: built here, or taken from ``preflight``."""
    key = _federation_key(cfg)
    with _LOCK:
        fed = _FEDERATION.get(key) if keep else _FEDERATION.pop(key, None)
    if fed is None:
        fed = prepare_federation(cfg)
        if keep:
            with _LOCK:
                _FEDERATION.clear()
                _FEDERATION[key] = fed
    return fed


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
    open_store(cfg.storage.url, cfg.data_dir, cfg.storage.s3_endpoint_url).check_writable()
    ModelRegistry.open(cfg.tracking.uri, cfg.data_dir, cfg.tracking.experiment, cfg.registered_name)
    if cfg.chain.url not in (None, IN_PROCESS):
        connect(cfg.chain.url)
    name, resume = _task_name(cfg, config_hash(cfg))
    if resume:
        meta = _resumed_meta(cfg, name)
        snapshots = DatasetSnapshots(cfg.data_dir / "datasets" / name)
        recorded_sets = dict(meta["datasets"])
        if meta.get("validation"):
            recorded_sets[VALIDATION] = meta["validation"]
        for pid, recorded in recorded_sets.items():
            snapshots.verify(Snapshot(pid, snapshots.folder(pid), recorded))
    _check_privacy(cfg, _federation(cfg, keep=True))


def open_world(cfg: FlockConfig) -> World:
    """Open (or resume) the task of ``cfg``. Fails before any training if a system is unusable."""
    check_flow_limits(cfg)
    digest = config_hash(cfg)
    name, resume = _task_name(cfg, digest)
    folder = cfg.data_dir / "tasks" / name
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
    store = open_store(cfg.storage.url, cfg.data_dir, cfg.storage.s3_endpoint_url)
    store.check_writable()
    fed = _federation(cfg)  # before the chain: a data set that cannot be split starts nothing
    chain, anvil, started = _open_chain(cfg)
    try:
        creator_signer, people = _signers(cfg, chain)
        deployment = load_or_deploy(
            chain, creator_signer, cfg.data_dir / "chain" / "deployment.json"
        )
        creator = AllianceClient(chain, deployment, creator_signer)

        snapshots = DatasetSnapshots(cfg.data_dir / "datasets" / name)
        sets = {p.id: {k: getattr(p, k) for k in _PARTICIPANT_ARRAYS} for p in fed.participants}
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
        if validation is not None:  # the task's metadata is fixed at creation: check it once
            on_chain = validation_hash(creator.task_config(task_id).metadata_uri)
            if on_chain != validation.hash:
                raise DataError(
                    f"the task's validation set hashes to {validation.hash}, but task {task_id} "
                    f"on chain names {on_chain}: score only on the set the task committed"
                )

        ledgers = LedgerStore(folder / "privacy") if cfg.privacy.enabled else None
        members = []
        for i, (p, signer) in enumerate(zip(fed.participants, people, strict=True)):
            client = creator.as_signer(signer)
            ledger = (
                ledgers.load(p.id, cfg.privacy.delta, cfg.privacy.epsilon_budget)
                if ledgers is not None
                else None
            )
            members.append(Member(p.id, i, client, ledger, snaps[p.id]))
        # Stake once; a resumed task finds the stake already there, and one whose every round
        # has started takes no more (the contract refuses it: TaskClosed).
        open_rounds = creator.task_state(task_id).rounds_started < cfg.rounds
        for m in members if open_rounds else []:
            if m.client.participant_of(task_id).active < cfg.chain.stake * TOKEN:
                if m.client.balance_of() < cfg.chain.stake * TOKEN:
                    creator.mint(m.address, cfg.chain.stake * TOKEN)
                data = fed.participants[m.index]
                m.client.stake(
                    task_id,
                    cfg.chain.stake * TOKEN,
                    num_samples=len(data.y_train),
                    data_hash=dataset_hash(m.snapshot.hash),
                )
        registry = opening.result()
    except BaseException:
        if anvil is not None and started:
            anvil.down()
        raise

    world = World(
        cfg=cfg,
        name=name,
        folder=folder,
        fed=fed,
        chain=chain,
        creator=creator,
        task_id=task_id,
        members=members,
        store=store,
        registry=registry,
        snapshots=snapshots,
        ledgers=ledgers,
        anvil=anvil,
        started_anvil=started,
        meta=meta,
        validation=validation,
    )
    with _LOCK:
        _WORLDS[name] = world
    return world
