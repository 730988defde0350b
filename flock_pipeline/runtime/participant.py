"""One participant's duties in a task, with its own key, data, privacy ledger and secrets.

A :class:`Participant` is built from what it alone holds (its signer, its data as read from
its own folder and snapshotted by its own DVC repo, its ledger, its state folder) and from the
task's public card. Nothing here reaches another participant's key or data: the in-process
engine builds one per participant in one process, a participant worker builds exactly one.

Duties, each idempotent against the chain (a retry or a resumed run repeats nothing it already
sent): :meth:`join` (stake with the folder's sample count and DVC hash), :meth:`train_and_submit`,
:meth:`validate_and_commit`, :meth:`reveal` and :meth:`claim`. A participant past its privacy
budget or its training time limit abstains: it sends nothing, and the round goes on without it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from eth_utils.crypto import keccak

from flock_pipeline.attacks.updates import submission_bytes, submission_envelope
from flock_pipeline.chain import AllianceClient, ChainSetupError, ContractRevert, Vote, to_fixed
from flock_pipeline.config import FlockConfig
from flock_pipeline.contribution import contributions, submission_scores
from flock_pipeline.data import Federation, ParticipantData
from flock_pipeline.errors import (
    GlobalModelUnavailable,
    LocalTrainingTimeout,
    PrivacyBudgetExceeded,
)
from flock_pipeline.evaluation import evaluate
from flock_pipeline.models import build_network
from flock_pipeline.privacy import LedgerStore, PrivacyLedger
from flock_pipeline.protocol import vote_commitment
from flock_pipeline.protocol.params import dataset_hash
from flock_pipeline.round import aggregate as aggregate_updates
from flock_pipeline.round import (
    attack_update,
    ballot,
    build_aggregator,
    build_screen,
    judgement_score,
    train_participant,
)
from flock_pipeline.runtime.task import TaskView, connect_configured, hex_bytes
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, canonical_bytes, from_bytes
from flock_pipeline.services import check_services
from flock_pipeline.snapshots import DatasetSnapshots, Snapshot
from flock_pipeline.storage import BlobStore, digest_of
from flock_pipeline.validity import Checked, fetch_blob

__all__ = ["Participant", "TrainingJob", "TrainingResult", "local_federation", "run_training"]

TOKEN = 10**18
_log = logging.getLogger("flock_pipeline.participant")


def local_federation(
    cfg: FlockConfig,
    data: ParticipantData,
    input_shape: tuple[int, int, int],
    num_classes: int,
    validation: tuple[Any, Any] | None = None,
) -> Federation:
    """What one participant knows of the federation: its own data (and the task's shared
    validation set, which is public), no one else's, no test set."""
    counts = np.bincount(data.y_train, minlength=num_classes).astype(np.int64)[None, :]
    empty_x = np.zeros((0, *input_shape), dtype=np.float32)
    return Federation(
        dataset=cfg.data.dataset,
        num_classes=num_classes,
        input_shape=input_shape,
        participants=[data],
        x_test=empty_x,
        y_test=np.zeros(0, dtype=np.int64),
        counts=counts,
        x_validation=None if validation is None else validation[0],
        y_validation=None if validation is None else validation[1],
    )


@dataclass(frozen=True)
class TrainingJob:
    """One proposer's local training of one round, as plain (picklable) data: what a Dask
    worker process runs. Its ledger is a copy; the spend comes back in the result."""

    cfg: FlockConfig
    fed: Federation
    weights: Weights
    round: int
    ledger: PrivacyLedger | None
    spend_label: str


@dataclass(frozen=True)
class TrainingResult:
    update: Any
    """The trained ``Update``, or None when the participant abstained (``abstained`` says why)."""
    ledger: PrivacyLedger | None
    abstained: str | None = None


def run_training(job: TrainingJob) -> TrainingResult:
    """Train ``job`` here (any process: it seeds its own generators from the job)."""
    try:
        update = train_participant(
            job.cfg, job.fed, 0, job.weights, job.round, job.ledger, spend_label=job.spend_label
        )
    except (PrivacyBudgetExceeded, LocalTrainingTimeout) as exc:
        return TrainingResult(None, job.ledger, str(exc))
    return TrainingResult(update, job.ledger)


@dataclass
class Participant:
    """One participant's runtime. ``state`` is its own folder: kept updates, votes, ledger."""

    cfg: FlockConfig
    id: str
    client: AllianceClient
    view: TaskView
    fed: Federation
    """:func:`local_federation`: this participant's data only."""
    data_hash: str
    """The DVC hash of its data snapshot, registered on chain when it stakes."""
    store: BlobStore
    state: Path
    ledgers: LedgerStore | None = None
    ledger: PrivacyLedger | None = field(default=None)
    snapshots: DatasetSnapshots | None = None
    snapshot: Snapshot | None = None
    """Its data's DVC snapshot, checked before it trains or scores."""

    def __post_init__(self) -> None:
        if self.ledgers is not None and self.ledger is None:
            p = self.cfg.privacy
            self.ledger = self.ledgers.load(self.id, p.delta, p.epsilon_budget)

    @property
    def address(self) -> str:
        return self.client.address

    @property
    def task_id(self) -> int:
        return self.view.task_id

    @property
    def data(self) -> ParticipantData:
        return self.fed.participants[0]

    def salt(self, round_index: int) -> bytes:
        """A vote salt only this participant can compute: stable across a crash and restart."""
        key = bytes(self.client.signer.account.key)
        return keccak(key + f"flock-vote/{self.task_id}/{round_index}".encode())

    def _save_ledger(self) -> None:
        if self.ledgers is not None and self.ledger is not None:
            self.ledgers.save(self.ledger)

    def verify_data(self) -> str:
        """Refuse to train or score on data that changed after its DVC snapshot (raises
        DataChangedError with the command that restores it); its DVC hash."""
        if self.snapshots is not None and self.snapshot is not None:
            self.snapshots.verify(self.snapshot)
        return self.data_hash

    def proposes(self, r: int) -> bool:
        """Whether round ``r`` (started) drew this participant to propose."""
        return self.client.roles_of(self.task_id, r, [self.address])[0].proposes

    def votes(self, r: int) -> bool:
        """Whether round ``r`` (started) drew this participant to vote."""
        return self.client.roles_of(self.task_id, r, [self.address])[0].votes

    def global_hash(self) -> str:
        """The task's global model on chain."""
        return hex_bytes(self.client.task_state(self.task_id).global_model_hash)

    def receipt(self, submitted: dict[str, Any]) -> dict[str, Any]:
        """What it reports back after a duty: the update it submitted (if any), its data's DVC
        hash and its epsilon so far. Nothing private."""
        return dict(submitted, dataset_hash=self.data_hash,
                    epsilon=self.ledger.epsilon if self.ledger else None)  # fmt: skip

    # ------------------------------------------------------------------ join

    def join(self, stake: int, mint: bool = False) -> bool:
        """Stake ``stake`` wei on the task with this folder's sample count and DVC hash, unless
        it already has; ``mint`` tops up its tokens first (dev chains only). True if it staked
        now. A task whose every round has started takes no more stake (and this sends none)."""
        if self.client.participant_of(self.task_id).active >= stake:
            return False
        state = self.client.task_state(self.task_id)
        if state.rounds_started >= self.cfg.rounds:
            return False
        holds = self.client.balance_of()
        if mint and holds < stake:
            self.client.mint(self.address, stake)
        elif holds < stake:  # nobody mints to a participant off a dev chain: it brings its own
            raise ChainSetupError(
                f"{self.id} ({self.address}) holds {holds / TOKEN:g} FLOCK on chain "
                f"{self.client.chain.chain_id}, its stake on task {self.view.name!r} is "
                f"{stake / TOKEN:g}: transfer {(stake - holds) / TOKEN:g} FLOCK to it first"
            )
        if self.client.chain.balance(self.address) == 0:
            raise ChainSetupError(
                f"{self.id} ({self.address}) holds no ether on chain "
                f"{self.client.chain.chain_id} to pay for gas: send it some first"
            )
        self.client.stake(
            self.task_id,
            stake,
            num_samples=len(self.data.y_train),
            data_hash=dataset_hash(self.data_hash),
        )
        return True

    # ------------------------------------------------------------------ models

    def model(self, digest: str) -> Weights:
        """A global model by hash from the blob store (the coordinator puts back one the store
        lost at the round's start)."""
        data = fetch_blob(self.store, digest)
        if data is None:
            raise GlobalModelUnavailable(
                f"the global model {digest} is not in the blob store (expected at "
                f"{self.store.uri(digest)}): the task's coordinator restores it at the next "
                "round's start"
            )
        return from_bytes(data, digest)

    def committed(self, r: int, reference: Weights) -> Checked:
        """The round's updates as committed on chain (``TaskView.committed``)."""
        return self.view.committed(self.store, r, reference)

    # ------------------------------------------------------------------ train

    def train_and_submit(
        self, r: int, global_hash: str, log: logging.Logger | Any = _log
    ) -> dict[str, Any]:
        """Train from the global model, upload the update and commit its hash. ``{}`` when it
        abstains (budget, time limit, no stake left).

        An update is derived once: with DP its noise is secret and fresh, so a retrain would
        release a second, different update (and spend again). The participant keeps what it is
        about to upload under ``updates/`` in its state folder before it uploads; a resumed run
        submits that copy, and one that finds the update on chain returns what the first run
        returned."""
        kept = self.state / "updates" / f"{r + 1}-{self.id}.json"
        blob = kept.with_suffix(".bin")
        if self.client.record_of(self.task_id, r).submitted:  # resumed: the chain has it
            ev = next(
                e for e in self.view.submissions(r)
                if str(e["proposer"]).lower() == self.address.lower()
            )  # fmt: skip
            log.info("%s already submitted round %d", self.id, r + 1)
            digest = hex_bytes(ev["updateHash"])
            saved = json.loads(kept.read_text()) if kept.exists() else {}
            if saved.get("update_hash") == digest:
                return dict(saved)
            return {"update_hash": digest, "num_samples": int(ev["numSamples"]),
                    "epsilon": self.ledger.epsilon if self.ledger else None,
                    "train_loss": None}  # fmt: skip
        if blob.exists() and kept.exists():  # derived (maybe uploaded) before a crash
            log.info("%s resubmits the update it kept for round %d", self.id, r + 1)
            return self._submit_kept(r, kept, blob, log)
        job = self.training_job(r, global_hash)
        return self.submit_trained(job, run_training(job), log)

    def training_job(self, r: int, global_hash: str) -> TrainingJob:
        """What training round ``r`` takes, as plain data another process can run
        (:func:`run_training`): no key, no connection."""
        return TrainingJob(self.cfg, self.fed, self.model(global_hash), r, self.ledger,
                           f"{self.view.name}/{r}")  # fmt: skip

    def submit_trained(
        self, job: TrainingJob, result: TrainingResult, log: logging.Logger | Any = _log
    ) -> dict[str, Any]:
        """Keep, upload and commit the update ``result`` holds (its ledger's spend recorded
        first); ``{}`` when the training abstained."""
        r, weights = job.round, job.weights
        if self.ledger is not None and result.ledger is not None:
            self.ledger.history = list(result.ledger.history)
        self._save_ledger()
        if result.update is None:
            # Its own limit, not the task's failure: it submits nothing (an absent proposer, as
            # any other) and the round goes on without it.
            log.warning("%s abstains from round %d: %s", self.id, r + 1, result.abstained)
            return {}
        trained = result.update
        kept = self.state / "updates" / f"{r + 1}-{self.id}.json"
        blob = kept.with_suffix(".bin")
        spec = self.cfg.attacks.get(self.id)
        copier = spec is not None and spec.kind == "copier"
        others = self.committed(r, weights).updates if copier else []
        update = attack_update(self.cfg, trained, weights, r, others)
        data = submission_bytes(update, spec)
        loss = trained.metrics.get("train_loss_last")
        record = {
            "update_hash": digest_of(data),
            "num_samples": update.num_samples,
            "epsilon": update.epsilon,
            "train_loss": None if loss is None or loss != loss else float(loss),
        }
        kept.parent.mkdir(parents=True, exist_ok=True)
        # The record first, then the bytes: a kept blob always has its record.
        for path, content in ((kept, json.dumps(record).encode()), (blob, data)):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        log.info("%s trained round %d, epsilon %s", self.id, r + 1, update.epsilon)
        return self._submit_kept(r, kept, blob, log)

    def needs_training(self, r: int) -> bool:
        """Whether ``train_and_submit`` would train (not a resumed submission or a kept one)."""
        kept = self.state / "updates" / f"{r + 1}-{self.id}.json"
        if kept.exists() and kept.with_suffix(".bin").exists():
            return False
        return not self.client.record_of(self.task_id, r).submitted

    def _submit_kept(self, r: int, kept: Path, blob: Path, log: Any) -> dict[str, Any]:
        """Upload the update kept for round ``r``, commit its hash, then drop the local copy
        (the store has it)."""
        saved: dict[str, Any] = json.loads(kept.read_text())
        digest = self.store.put(blob.read_bytes())
        envelope = self.envelope(r, digest, int(saved["num_samples"]))
        signature_hash = bytes(32) if envelope is None else bytes.fromhex(
            self.store.put(envelope)[2:]
        )  # fmt: skip
        try:
            self.client.submit_update(
                self.task_id, r, bytes.fromhex(digest[2:]), saved["num_samples"],
                signature_hash=signature_hash,
            )  # fmt: skip
        except ContractRevert as exc:
            if exc.name == "TooManySamples":  # more than it registered: refused outright
                log.warning("%s: the chain refuses its update of round %d (%s)", self.id, r + 1,
                            exc)  # fmt: skip
                return {}
            if exc.name != "InsufficientStake":
                raise
            # Drawn from its stake at the round's start, then slashed to nothing when its last
            # round settled: it has nothing left to stake on an update, and abstains.
            log.warning("%s has no stake left after its last round; it abstains", self.id)
            return {}
        blob.unlink()
        log.info("%s submitted round %d: update %s", self.id, r + 1, digest[:12])
        return saved

    def envelope(self, r: int, digest: str, num_samples: int) -> bytes | None:
        """This participant's EIP-712 signature envelope over its update of round ``r``
        (``attacks.updates.submission_envelope``), good until the round's training phase ends:
        no submission is accepted later. Deterministic (RFC 6979), so a resumed run signs the
        same envelope."""
        return submission_envelope(
            self.cfg.attacks.get(self.id),
            self.client.signer.account,
            chain_id=self.client.deployment.chain_id,
            contract=str(self.client.alliance.address),
            task_id=self.task_id,
            round_=r,
            content_hash=digest,
            num_samples=num_samples,
            deadline=self.client.round_info(self.task_id, r).training_ends,
        )

    # ------------------------------------------------------------------ vote

    def validate_and_commit(
        self, r: int, state_hash: str | None, log: logging.Logger | Any = _log
    ) -> dict[str, Any]:
        """Recompute the aggregate from the committed updates, store it, judge it against the
        current global model on its held-out data (or the task's shared validation set), score
        each update's contribution and commit the hash, the score and the contributions.

        ``state_hash`` is the strategy state the round's aggregate starts from (that of the
        latest accepted round; None for a stateless strategy or before the first)."""
        saved = self.state / "votes" / str(r + 1) / f"{self.id}.json"
        if saved.exists() and self.client.record_of(self.task_id, r).vote.name != "NONE":
            # Resumed after its commit: reveal what it committed, even if an update it scored
            # has since gone from the store (a recomputation would no longer match).
            return dict(json.loads(saved.read_text()))
        cfg = self.cfg
        old = self.model(hex_bytes(self.client.task_state(self.task_id).global_model_hash))
        seed = derive_seed(cfg.seed, "aggregate",
                           hex_bytes(self.client.round_info(self.task_id, r).seed))  # fmt: skip
        state = {} if state_hash is None else from_bytes(self.store.get(state_hash), state_hash)
        submitted = self.committed(r, old)
        strategy, screen = build_aggregator(cfg), build_screen(cfg)
        history = self.view.trust_history(r, cfg.aggregation.screen.min_trust is not None)
        updates = submitted.updates
        for proposer, flag in submitted.invalid.items():
            log.warning("%s flags the update of %s as %s: %s", self.id, proposer, flag,
                        submitted.details.get(proposer, ""))  # fmt: skip
        full = aggregate_updates(strategy, updates, old, state, seed, screen, history,
                                 submitted.invalid)  # fmt: skip
        digest = self.store.put(canonical_bytes(full.weights))
        new_state = self.store.put(canonical_bytes(full.state)) if full.state else None
        score = judgement_score(cfg, self.fed, 0, old, full.weights)
        x, y = self.fed.voter_data(0)
        net = build_network(cfg.model.name, self.fed.input_shape, self.fed.num_classes)
        scores = contributions(
            strategy, updates, old, state, seed, screen,
            lambda x_: evaluate(net, x_, x, y).loss, full, history, submitted.invalid,
        )  # fmt: skip
        scores = submission_scores(submitted, scores)
        score, scores = ballot(cfg, self.id, score, scores, submitted.order)
        fixed = to_fixed(round(score, 6))
        fixed_scores = [to_fixed(round(c, 6)) for c in scores]
        if self.client.record_of(self.task_id, r).vote.name == "NONE":
            try:
                self.client.commit_vote(
                    self.task_id, r, bytes.fromhex(digest[2:]), fixed, self.salt(r),
                    contributions=fixed_scores,
                )  # fmt: skip
            except ContractRevert as exc:
                if exc.name != "InsufficientStake":
                    raise
                log.warning("%s has no stake left after its last round; it abstains", self.id)
                return {}
        vote = {
            "hash": digest,
            "state": new_state,
            "selected": list(full.selected),
            "screened": dict(full.flagged),
            "score": score,
            "fixed": fixed,
            "contributions": dict(zip(submitted.order, scores, strict=True)),
            "fixed_contributions": fixed_scores,
        }
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(vote))
        return vote

    def reveal(self, r: int, vote: dict[str, Any] | None = None) -> bool:
        """Reveal the hash, score and contributions it committed (``vote``, or what it kept).
        False when there is nothing to reveal (no commit, or revealed already)."""
        if self.client.record_of(self.task_id, r).vote.name != "COMMITTED":
            return False
        if vote is None:
            saved = self.state / "votes" / str(r + 1) / f"{self.id}.json"
            if not saved.exists():
                return False
            vote = json.loads(saved.read_text())
        salt = self.salt(r)
        digest = bytes.fromhex(vote["hash"][2:])
        fixed, scores = int(vote["fixed"]), tuple(int(c) for c in vote["fixed_contributions"])
        commitment = vote_commitment(self.task_id, r, self.address, digest, fixed, salt, scores)
        self.client.reveal_vote(
            Vote(
                task_id=self.task_id,
                round=r,
                voter=self.address,
                aggregate_hash=digest,
                score=fixed,
                salt=salt,
                commitment=commitment,
                contributions=scores,
            )
        )
        return True

    def holdout(self, weights: Weights) -> tuple[float, float] | None:
        """(loss, accuracy) of ``weights`` on its own held-out split, None without one."""
        part = self.data
        if not len(part.y_holdout):
            return None
        net = build_network(self.cfg.model.name, self.fed.input_shape, self.fed.num_classes)
        ev = evaluate(net, weights, part.x_holdout, part.y_holdout)
        return ev.loss, ev.accuracy

    def claim(self) -> int:
        """Claim what the task owes it (settling its last round first); a repeat pays 0."""
        amount, _ = self.client.claim(self.task_id)
        return int(amount)


_ARRAYS = ("x_train", "y_train", "x_holdout", "y_holdout")
LOADED = "loaded.jsonl"
"""In a participant's state folder: one line per process that opened its runtime, naming
the key (its address and variable) and the data folder it loaded. An operator's record of
what ran with the participant's key, and the test's proof that nothing else was loaded."""


def _source_ip(url: str) -> str | None:
    """The local address this machine reaches ``url``'s host from (no packet is sent)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((parsed.hostname or "127.0.0.1", parsed.port or 80))
            return str(sock.getsockname()[0])
    except OSError:
        return None


def _audit(state: Path, entry: dict[str, Any]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(entry, pid=os.getpid(), time=round(time.time(), 3)))
    with (state / LOADED).open("a") as f:
        f.write(line + "\n")


def _shared_validation(
    card: Any, client: AllianceClient, store: BlobStore, snapshots: DatasetSnapshots
) -> tuple[Any, Any] | None:
    """The task's shared validation set, if it has one: fetched from the task's store once,
    snapshotted next to this participant's own data, and used only if its DVC hash is the one
    the task committed on chain (the card is the creator's word; the chain is the task's)."""
    from flock_pipeline.errors import DataError
    from flock_pipeline.runtime.task import VALIDATION, validation_hash

    if card.validation is None:
        return None
    on_chain = validation_hash(client.task_config(card.task_id).metadata_uri)
    if on_chain != card.validation:
        raise DataError(
            f"task {card.name!r}'s card names validation set {card.validation}, the task on "
            f"chain commits {on_chain}: get a fresh card from the task's creator"
        )
    snapshot = snapshots.recorded(VALIDATION)
    if snapshot is None or snapshot.hash != card.validation:
        blob = None if card.validation_blob is None else fetch_blob(store, card.validation_blob)
        if blob is None:
            raise DataError(
                f"task {card.name!r}'s shared validation set is not in its blob store "
                f"({card.validation_blob}): ask the task's creator to publish it (reopening "
                "the task does)"
            )
        try:
            tensors = from_bytes(blob, "the shared validation set")
            sets = {"x": tensors["x"].numpy(), "y": tensors["y"].numpy()}
        except Exception as exc:  # a blob from the task's store, but still not ours
            raise DataError(
                f"task {card.name!r}'s shared validation blob is unreadable ({exc}): ask the "
                "task's creator to publish the committed set again"
            ) from None
        snapshots.write(VALIDATION, sets)
        snapshot = snapshots.snapshot(VALIDATION)
        if snapshot.hash != card.validation:
            raise DataError(
                f"the shared validation set in task {card.name!r}'s store hashes to "
                f"{snapshot.hash}, the task commits {card.validation}: it was replaced; ask "
                "the task's creator to publish the committed set again"
            )
    arrays = snapshots.load(VALIDATION, snapshot)
    return arrays["x"], arrays["y"]


def open_participant(
    card_path: Path,
    data: Path,
    key_env: str,
    state: Path,
    rpc_url: str | None = None,
) -> Participant:
    """One participant's runtime on its own machine: its key from environment variable
    ``key_env``, its data from folder ``data`` (checked against the task's schema, then
    snapshotted by a DVC repo in ``state``: what it trains and scores on are the snapshot's
    bytes), its ledger and kept updates in ``state``. Every problem is refused by name."""
    from flock_pipeline.chain import Deployment, signer_from_env
    from flock_pipeline.data.folder import read_folder
    from flock_pipeline.errors import ConfigError, DataError
    from flock_pipeline.runtime.task import TaskCard
    from flock_pipeline.storage import open_store

    card = TaskCard.read(Path(card_path))
    signer = signer_from_env(key_env)
    pid = card.participant_of(signer.address)
    state = Path(state).resolve()
    cfg = card.task_config(state)
    check_services(cfg, tracking=False)
    url = rpc_url or card.chain_url
    if url is None:
        raise ChainSetupError(
            f"task {card.name!r} names no RPC URL; pass --rpc the URL of a node of chain "
            f"{card.chain_id}"
        )
    chain = connect_configured(cfg, url)
    if chain.chain_id != card.chain_id:
        raise ChainSetupError(
            f"the node at {url} serves chain {chain.chain_id}, task {card.name!r} lives on chain "
            f"{card.chain_id}: pass --rpc a node of chain {card.chain_id}"
        )
    known = {f.name for f in fields(Deployment)}
    deployment = Deployment(**{k: v for k, v in card.deployment.items() if k in known})
    if deployment.alliance.lower() != card.alliance.lower():
        raise ConfigError(f"task card {card_path} names two alliance contracts; get a fresh copy")
    client = AllianceClient(chain, deployment, signer)
    client.log_chunk_blocks = cfg.chain.log_chunk_blocks
    snapshots = DatasetSnapshots(state / "datasets")
    snapshot = snapshots.recorded(pid)
    if snapshot is None:
        folder = read_folder(Path(data), card.data_schema, participant=pid).data
        snapshots.write(pid, {k: getattr(folder, k) for k in _ARRAYS})
        snapshot = snapshots.snapshot(pid)
    arrays = snapshots.load(pid, snapshot)
    own = ParticipantData(pid, *(arrays[k] for k in _ARRAYS))
    stake = client.participant_of(card.task_id)
    if stake.active and stake.data_hash != dataset_hash(snapshot.hash):
        raise DataError(
            f"{pid} staked on task {card.name!r} with another data snapshot than the one in "
            f"{snapshots.root}: restore the data it staked with (`dvc checkout` there)"
        )
    _audit(state, {"participant": pid, "address": signer.address, "key_env": key_env,
                   "data": str(Path(data).resolve()), "snapshot": snapshot.hash,
                   "source_ip": _source_ip(url)})  # fmt: skip
    store = open_store(cfg.storage.url, state, cfg.storage.s3_endpoint_url)
    shared = _shared_validation(card, client, store, snapshots)
    schema = card.data_schema
    shape: Any = tuple(schema.feature_shape)  # a built-in model's (C, H, W); a factory's own
    return Participant(
        cfg=cfg,
        id=pid,
        client=client,
        view=TaskView(client, card.name, card.task_id, card.from_block, dict(card.roster)),
        fed=local_federation(cfg, own, shape, schema.num_classes, shared),
        data_hash=snapshot.hash,
        store=store,
        state=state,
        ledgers=LedgerStore(state / "privacy") if cfg.privacy.enabled else None,
        snapshots=snapshots,
        snapshot=snapshot,
    )
