"""The keeper's duties in a task: start rounds, finalize them, report no-shows, publish each
round's model, pay out and reclaim the pool, and write the report.

The coordinator holds the task creator's key, the public test set, the blob store and the
MLflow registry. It never holds a participant's key or data: what it knows of a participant is
what the chain recorded and the receipt the participant sent back (sample count, DVC hash,
epsilon, training loss). It recomputes each round's aggregate from the same public inputs the
voters use, and checks it against the hash the voting stake chose.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flock_pipeline.chain import AllianceClient, Chain, ContractRevert, Phase
from flock_pipeline.chain.anvil import AnvilNode
from flock_pipeline.config import FlockConfig
from flock_pipeline.data import Federation
from flock_pipeline.errors import GlobalModelUnavailable
from flock_pipeline.evaluation import evaluate
from flock_pipeline.models import build_network
from flock_pipeline.protocol import Role
from flock_pipeline.protocol.decision import accepts
from flock_pipeline.protocol.params import dataset_hash
from flock_pipeline.report import (
    FinalInfo,
    Metrics,
    ParticipantRound,
    RoundRecord,
    RunReport,
    TaskInfo,
    VoteRecord,
    honest_slashes,
)
from flock_pipeline.round import aggregate as aggregate_updates
from flock_pipeline.round import build_aggregator, build_screen, initial_weights
from flock_pipeline.runtime.task import TaskView, hex_bytes
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, canonical_bytes, from_bytes
from flock_pipeline.snapshots import DatasetSnapshots, Snapshot
from flock_pipeline.storage import BlobStore, digest_of
from flock_pipeline.tracking import ModelRegistry, TrackingError
from flock_pipeline.tracking.registry import HASH_TAG
from flock_pipeline.validity import fetch_blob

__all__ = ["Coordinator", "RoundStart"]

TOKEN = 10**18
FIXED = 10**18
"""Scores and contributions go on chain as 18-decimal fixed point."""
_log = logging.getLogger("flock_pipeline.coordinator")


@dataclass(frozen=True)
class RoundStart:
    """A started, drawn round: its seed, phase deadlines and every participant's role."""

    seed: str
    training_ends: int
    commit_ends: int
    reveal_ends: int
    roles: dict[str, Role]

    @property
    def proposers(self) -> list[str]:
        return [pid for pid, role in self.roles.items() if role.proposes]

    @property
    def voters(self) -> list[str]:
        return [pid for pid, role in self.roles.items() if role.votes]


@dataclass
class Coordinator:
    """The task creator's side of one task, opened by ``runtime.world.open_world``."""

    cfg: FlockConfig
    name: str
    folder: Path
    chain: Chain
    creator: AllianceClient
    view: TaskView
    store: BlobStore
    registry: ModelRegistry
    public: Federation
    """The task's public data: the test split, the input shape and classes (and, for the
    in-process engine, the simulated partition, from which the report's partition table
    comes). Participants' training and held-out data are theirs."""
    meta: dict[str, Any]
    snapshots: DatasetSnapshots | None = None
    validation: Snapshot | None = None
    """The DVC snapshot of the task's shared validation set (``data.validation: shared``)."""
    anvil: AnvilNode | None = None
    started_anvil: bool = False
    dataset_hashes: dict[str, str] = field(default_factory=dict)
    """Participant id -> the DVC hash it reported and the chain's registration matches."""

    @property
    def task_id(self) -> int:
        return self.view.task_id

    @property
    def from_block(self) -> int:
        return self.view.from_block

    @property
    def roster(self) -> dict[str, str]:
        return self.view.roster

    def close(self) -> None:
        if self.anvil is not None and self.started_anvil:
            self.anvil.down()

    # ------------------------------------------------------------------ models

    def global_hash(self) -> str:
        return hex_bytes(self.creator.task_state(self.task_id).global_model_hash)

    def model(self, digest: str, log: Any = _log) -> Weights:
        """A global model by hash, from the blob store; one the store lost (or holds corrupt)
        is restored (see ``_restored``) and put back, so the task goes on."""
        data = fetch_blob(self.store, digest)
        if data is not None:
            return from_bytes(data, digest)
        data, source = self._restored(digest)
        self.store.put(data)  # a corrupt copy in its place is replaced
        log.warning(
            "global model %s was missing from the blob store; restored it from %s", digest, source
        )
        return from_bytes(data, digest)

    def ensure_model(self, digest: str, log: Any = _log) -> None:
        """Put back the global model ``digest`` if the store lost it, before anyone fetches it."""
        if not self.store.exists(digest) or fetch_blob(self.store, digest) is None:
            self.model(digest, log)

    def _restored(self, digest: str) -> tuple[bytes, str]:
        """The bytes of a global model the store lost, and where they came from: the task's
        initial model is rebuilt from the task seed; every later one is in the MLflow version
        the round that produced it registered (the same canonical bytes).
        GlobalModelUnavailable when neither holds it: that names the hash, where the store
        expects it and how to put it back."""
        if digest == self.meta.get("initial_model"):
            data = canonical_bytes(initial_weights(self.cfg, self.public))
            if digest_of(data) == digest:
                return data, "the task seed (the initial model)"
        found = self.registry.find_version({HASH_TAG: digest})
        if found is not None:
            try:
                data = canonical_bytes(self.registry.load_weights(found.version))
            except TrackingError:
                data = b""
            if digest_of(data) == digest:
                return data, f"MLflow model {found.registered_name} version {found.version}"
        raise GlobalModelUnavailable(
            f"the global model {digest} of task {self.name!r} is not in the blob store "
            f"(expected at {self.store.uri(digest)}) and no MLflow version of "
            f"{self.registry.registered_name!r} in {self.registry.tracking_uri} holds it: copy "
            f"a backup of the file (its sha256 must be {digest[2:]}) to that location and run "
            "again, or start a new task"
        )

    # ------------------------------------------------------------------ rounds

    def start_round(self, r: int, log: Any = _log) -> RoundStart:
        """Start round ``r`` if it was not and draw it once its seed is ready: crash-safe at any
        step (a round requested but never drawn is drawn on resume). Puts back a lost global
        model first. Every participant's role as sortition on chain gives it (anyone can
        recompute it), read in one batch."""
        self.ensure_model(self.global_hash(), log)
        info = self.creator.open_round(self.task_id, r)
        ids = list(self.roster)
        found = self.creator.roles_of(self.task_id, r, [self.roster[p] for p in ids])
        return RoundStart(
            seed=hex_bytes(info.seed),
            training_ends=info.training_ends,
            commit_ends=info.commit_ends,
            reveal_ends=info.reveal_ends,
            roles={pid: Role(int(v)) for pid, v in zip(ids, found, strict=True)},
        )

    def previous_state_hash(self, r: int) -> str | None:
        """The strategy state of the latest accepted round before ``r``."""
        for k in range(r, 0, -1):
            path = self.folder / "rounds" / f"{k}.json"
            if path.exists():
                value = json.loads(path.read_text()).get("strategy_state")
                return None if value is None else str(value)
        return None

    def advance_to(self, timestamp: int) -> None:
        """Move a dev chain's clock past a phase end (a public chain is waited for)."""
        self.chain.advance_to(timestamp)

    def report_no_shows(self, r: int, absent: list[str], log: Any = _log) -> list[str]:
        """Report the drawn participants of ``r`` that sent nothing in time (anyone may; the
        contract checks the record and refuses a false report). The participants it reported."""
        reported = []
        for pid in absent:
            try:
                self.creator.report_no_show(self.task_id, r, self.roster[pid])
            except ContractRevert as exc:
                log.info("no-show report of %s in round %d refused: %s", pid, r + 1, exc.name)
                continue
            reported.append(pid)
        return reported

    def finalize(self, r: int, reveal_ends: int) -> dict[str, Any]:
        """Finalize (anyone may; here the task creator). One transaction: no participant is
        settled here, each settles on its next action or its claim."""
        self.chain.advance_to(reveal_ends + 1)
        sent = self.creator.finalize_round(self.task_id, r)  # None when already finalized
        reveals = self.view.reveals(r)
        view = self.view.round_view(r, reveals)
        self.view.finalized_trust[r] = view.trust  # final from here on
        if sent is not None:
            tx, gas = sent.tx_hash, sent.gas_used
        else:  # finalized by an earlier run: the chain's log names its transaction
            (log,) = self.creator.alliance.events.RoundFinalized().get_logs(
                from_block=self.from_block, argument_filters={"taskId": self.task_id, "round": r}
            )
            tx = hex_bytes(log["transactionHash"])
            gas = int(self.chain.w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"])
        return {
            "outcome": view.outcome.name.lower(),
            "aggregate_hash": view.aggregate_hash,
            "accept_weight": str(view.accept_weight),
            "reject_weight": str(view.reject_weight),
            "flagged": view.flagged,
            "contribution": view.contribution,
            "trust": view.trust,
            "votes": {
                v.voter: {
                    "hash": hex_bytes(v.aggregate_hash),
                    "score": v.score,
                    "contributions": list(v.contributions),
                }
                for v in reveals
            },
            "tx": tx,
            "gas_used": gas,
        }

    def recompute(self, r: int, global_hash: str) -> dict[str, Any]:
        """The round's aggregate as every honest voter computes it, from public inputs only:
        the committed updates, the published strategy state, the round's seed and the trust
        history. Its hash, selection, screen flags and new strategy state (stored)."""
        cfg = self.cfg
        old = self.model(global_hash)
        seed = derive_seed(cfg.seed, "aggregate",
                           hex_bytes(self.creator.round_info(self.task_id, r).seed))  # fmt: skip
        digest = self.previous_state_hash(r)
        state = {} if digest is None else from_bytes(self.store.get(digest), digest)
        submitted = self.view.committed(self.store, r, old)
        history = self.view.trust_history(r, cfg.aggregation.screen.min_trust is not None)
        full = aggregate_updates(build_aggregator(cfg), submitted.updates, old, state, seed,
                                 build_screen(cfg), history, submitted.invalid)  # fmt: skip
        return {
            "hash": digest_of(canonical_bytes(full.weights)),
            "state": self.store.put(canonical_bytes(full.state)) if full.state else None,
            "selected": list(full.selected),
            "screened": dict(full.flagged),
            "order": submitted.order,
        }

    def record_round(
        self,
        r: int,
        started: RoundStart,
        old_global_hash: str,
        receipts: dict[str, dict[str, Any]],
        settled: dict[str, Any],
        holdouts: dict[str, tuple[float, float] | None],
        log: Any = _log,
    ) -> dict[str, Any]:
        """The round's record (``RoundRecord``, as a dict) from what the chain decided, the
        coordinator's own recomputation of the aggregate and the participants' receipts."""
        outcome = settled["outcome"]
        accepted = outcome == "accepted"
        new_global_hash = self.global_hash()
        new_global = self.model(new_global_hash, log)
        net = build_network(self.cfg.model.name, self.public.input_shape, self.public.num_classes)
        ev = evaluate(net, new_global, self.public.x_test, self.public.y_test)
        mine = None
        if settled["votes"]:
            mine = self.recompute(r, old_global_hash)
            if outcome != "void" and mine["hash"] != settled["aggregate_hash"]:
                log.warning(
                    "round %d: the voting stake chose aggregate %s, the coordinator computes %s",
                    r + 1, settled["aggregate_hash"], mine["hash"],
                )  # fmt: skip
        order = [] if mine is None else mine["order"]
        participants = []
        for pid, address in self.roster.items():
            up = receipts.get(pid, {})
            if up.get("dataset_hash"):
                self.dataset_hashes[pid] = str(up["dataset_hash"])
            vote = settled["votes"].get(pid)
            hold = holdouts.get(pid)
            attack = self.cfg.attacks.get(pid)
            participants.append(
                ParticipantRound(
                    id=pid,
                    address=address,
                    role=started.roles[pid].name.lower(),
                    attack=None if attack is None else attack.kind,
                    update_hash=up.get("update_hash"),
                    num_samples=up.get("num_samples"),
                    train_loss=up.get("train_loss"),
                    dataset_hash=self.dataset_hashes.get(pid),
                    epsilon=up.get("epsilon"),
                    delta=self.cfg.privacy.delta if self.cfg.privacy.enabled else None,
                    holdout=None if hold is None else Metrics(loss=hold[0], accuracy=hold[1]),
                    vote=None
                    if vote is None
                    else VoteRecord(
                        aggregate_hash=vote["hash"],
                        score=vote["score"] / FIXED,
                        accept=accepts(vote["score"]),
                        contributions={
                            p: c / FIXED for p, c in zip(order, vote["contributions"], strict=False)
                        },
                    ),
                    screened=None if mine is None else mine["screened"].get(pid),
                    flagged=settled["flagged"].get(pid, False),
                    contribution=settled["contribution"].get(pid),
                    trust_score=settled["trust"].get(pid),
                )
            )
        keep_state = accepted and mine is not None and mine["hash"] == settled["aggregate_hash"]
        record = RoundRecord(
            round=r + 1,
            outcome=outcome,
            accepted=accepted,
            seed=started.seed,
            global_=Metrics(loss=ev.loss, accuracy=ev.accuracy),
            aggregate_hash=settled["aggregate_hash"] if outcome != "void" else None,
            global_model_hash=new_global_hash,
            selected=[] if mine is None else mine["selected"],
            screened={} if mine is None else mine["screened"],
            strategy_state=mine["state"] if keep_state and mine else self.previous_state_hash(r),
            accept_weight=settled["accept_weight"],
            reject_weight=settled["reject_weight"],
            finalize_tx=settled["tx"],
            finalize_gas=settled["gas_used"],
            seconds=0.0,
            participants=participants,
        )
        return dict(json.loads(record.model_dump_json(by_alias=True)))

    def check_dataset(self, pid: str, dvc_hash: str | None) -> str | None:
        """``dvc_hash`` if it is what ``pid`` registered on chain when it staked, else None."""
        if dvc_hash is None:
            return None
        stake = self.creator.participant_of(self.task_id, self.roster[pid])
        return dvc_hash if stake.data_hash == dataset_hash(dvc_hash) else None

    def register_model(self, r: int, record: dict[str, Any]) -> dict[str, str]:
        """One MLflow model version per round (the new global model): one run, one version,
        its tags set in one call, whatever the number of participants."""
        found = self.registry.find_version({"task": self.name, "round": str(r + 1)})
        if found is not None:  # a resumed run finds the version already there
            return {"registered_name": found.registered_name, "version": found.version,
                    "run_id": found.run_id}  # fmt: skip
        digest = record["global_model_hash"]
        weights = self.model(digest)
        tags = {
            "task": self.name,
            "round": str(r + 1),
            "outcome": record["outcome"],
            "aggregate_hash": record["aggregate_hash"] or "",
            "global_model_hash": digest,
            "accepted": str(record["accepted"]).lower(),
            "chain_id": str(self.chain.chain_id),
            "task_address": self.creator.deployment.alliance,
            "task_id": str(self.task_id),
            "finalize_tx": record["finalize_tx"] or "",
            "datasets": json.dumps(
                {p["id"]: p["dataset_hash"] for p in record["participants"] if p["dataset_hash"]}
            ),
            "epsilon": json.dumps(
                {p["id"]: p["epsilon"] for p in record["participants"] if p["epsilon"] is not None}
            ),
        }
        ref = self.registry.log_round_model(
            weights=weights,
            architecture=self.cfg.model.name,
            input_shape=self.public.input_shape,
            num_classes=self.public.num_classes,
            round=r + 1,
            metrics={"accuracy": record["global"]["accuracy"], "loss": record["global"]["loss"]},
            params={"dataset": self.cfg.data.dataset, "participants": self.cfg.participants},
            tags=tags,
            run_name=f"{self.name}-round-{r + 1}",
        )
        return {"registered_name": ref.registered_name, "version": ref.version,
                "run_id": ref.run_id}  # fmt: skip

    # ------------------------------------------------------------------ end of task

    def claims(self) -> dict[str, str]:
        """What each participant claimed over the task, from the chain's ``Claimed`` events."""
        paid: dict[str, int] = {a.lower(): 0 for a in self.roster.values()}
        for e in self.creator.task_events(self.task_id, "Claimed", from_block=self.from_block):
            account = str(e["account"]).lower()
            paid[account] = paid.get(account, 0) + int(e["amount"])
        return {pid: str(paid[a.lower()]) for pid, a in self.roster.items()}

    def reclaim_pool(self) -> int:
        """What no round paid goes back to the creator (0 when nothing is left)."""
        if not self.creator.task_state(self.task_id).pool:
            return 0
        amount, _ = self.creator.reclaim_pool(self.task_id)
        return int(amount)

    def all_rounds_finalized(self) -> bool:
        return all(
            self.creator.phase_of(self.task_id, r) is Phase.FINALIZED
            for r in range(self.cfg.rounds)
        )

    def report(
        self, rounds: list[dict[str, Any]], claims: dict[str, str], engine: str
    ) -> RunReport:
        """The task's report: the round records, with what each participant was paid and
        slashed per round as the chain's ``Settled`` events say (one query for the whole task,
        read after every participant has claimed, so every round is settled)."""
        settled: dict[tuple[int, str], tuple[int, int]] = {}
        for e in self.creator.task_events(self.task_id, "Settled", from_block=self.from_block):
            settled[(int(e["round"]) + 1, str(e["account"]).lower())] = (
                int(e["reward"]), int(e["slashed"]),
            )  # fmt: skip
        records = []
        for data in rounds:
            record = RoundRecord.model_validate(data)
            for p in record.participants:
                reward, slashed = settled.get((record.round, p.address.lower()), (0, 0))
                p.reward, p.slashed = str(reward), str(slashed)
            records.append(record)
        accepted = [r for r in records if r.accepted]
        last = records[-1] if records else None
        fed = self.public
        return RunReport(
            task=TaskInfo(
                engine=engine,
                name=self.name,
                dataset=self.cfg.data.dataset,
                participants=self.cfg.participants,
                rounds=self.cfg.rounds,
                data_dir=str(self.cfg.data_dir),
                chain_id=self.chain.chain_id,
                task_address=self.creator.deployment.alliance,
                token_address=self.creator.deployment.token,
                task_id=self.task_id,
                validation_dataset_hash=None if self.validation is None else self.validation.hash,
            ),
            config=json.loads(self.cfg.model_dump_json()),
            partition={
                p.id: [int(v) for v in row]
                for p, row in zip(fed.participants, fed.counts, strict=True)
            },
            rounds=records,
            claimed=claims,
            final=FinalInfo(
                accuracy=None if last is None else last.global_.accuracy,
                loss=None if last is None else last.global_.loss,
                model_hash=self.global_hash(),
                accepted_rounds=len(accepted),
                void_rounds=sum(1 for r in records if r.outcome == "void"),
                honest_slashes=honest_slashes(records),
                champion_version=accepted[-1].model.version
                if accepted and accepted[-1].model
                else None,
                registered_name=self.cfg.registered_name,
            ),
        )
