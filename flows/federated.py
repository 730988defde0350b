"""The federated round as a Prefect DAG, and the task that runs R of them.

```
start round (verify datasets against DVC, start and draw it, roles) ─► train × proposers
  (Lightning + Opacus) ─► upload + submit hash ─► validate × voters (recompute the aggregate,
  score it, commit hash and vote) ─► reveal × voters ─► finalize (the majority hash and vote
  decide) ─► model version (MLflow)
```
Every step is idempotent against the chain, which is the source of truth: a task flow that
crashed resumes where the chain says it stopped and never settles anything twice. Nobody posts
the aggregate: each voter commits the hash it computed, and the hash with most of the revealed
voting stake is the round's. Participants settle lazily on their next action (and at the end of
the task, when each claims); the report reads what the chain recorded.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from flock_pipeline.aggregation import Strategy, StrategyState
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.attacks.updates import submission_bytes
from flock_pipeline.chain import ContractRevert, Phase, Vote, to_fixed
from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.contribution import contributions, submission_scores
from flock_pipeline.errors import (
    GlobalModelUnavailable,
    LocalTrainingTimeout,
    PrivacyBudgetExceeded,
)
from flock_pipeline.evaluation import evaluate
from flock_pipeline.models import build_network
from flock_pipeline.protocol import Role, vote_commitment
from flock_pipeline.protocol.decision import accepts
from flock_pipeline.report import (
    FinalInfo,
    Metrics,
    ParticipantRound,
    RoundRecord,
    RunReport,
    TaskInfo,
    VoteRecord,
    honest_slashes,
    totals,
)
from flock_pipeline.reporting import plot_accuracy, plot_rewards
from flock_pipeline.round import aggregate as aggregate_updates
from flock_pipeline.round import (
    attack_update,
    ballot,
    build_aggregator,
    build_screen,
    initial_weights,
    judgement_score,
    train_participant,
)
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, canonical_bytes, from_bytes
from flock_pipeline.storage import digest_of
from flock_pipeline.tracking import TrackingError
from flock_pipeline.tracking.registry import HASH_TAG
from flock_pipeline.validity import Checked, check_submissions, fetch_blob, update_size_limit
from flows.world import TOKEN, Member, World, get_world, open_world

__all__ = ["federated_round", "federated_task"]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble (RPC, S3), never a revert or a user error."""
    try:
        state.result()
    except OSError:  # ConnectionError, timeouts, requests' and botocore's connection errors
        return True
    except Exception:
        return False
    return False


_DELAYS: list[float] = [1, 2, 5]
_SEQUENTIAL: Any = ThreadPoolTaskRunner(max_workers=1)  # one torch job at a time: seeded RNG


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def _global_weights(w: World) -> Weights:
    return _model(w, _hex(w.creator.task_state(w.task_id).global_model_hash))


def _model(w: World, digest: str) -> Weights:
    """A global model by hash, from the blob store; one the store lost (or holds corrupt) is
    restored (see ``_restored``) and put back, so the task goes on."""
    data = fetch_blob(w.store, digest)
    if data is not None:
        return from_bytes(data, digest)
    data, source = _restored(w, digest)
    w.store.put(data)  # a corrupt copy in its place is replaced
    get_run_logger().warning(
        "global model %s was missing from the blob store; restored it from %s", digest, source
    )
    return from_bytes(data, digest)


def _restored(w: World, digest: str) -> tuple[bytes, str]:
    """The bytes of a global model the store lost, and where they came from: the task's
    initial model is rebuilt from the task seed; every later one is in the MLflow version the
    round that produced it registered (the same canonical bytes). GlobalModelUnavailable when
    neither holds it: that names the hash, where the store expects it and how to put it back."""
    if digest == w.meta.get("initial_model"):
        data = canonical_bytes(initial_weights(w.cfg, w.fed))
        if digest_of(data) == digest:
            return data, "the task seed (the initial model)"
    found = w.registry.find_version({HASH_TAG: digest})
    if found is not None:
        try:
            data = canonical_bytes(w.registry.load_weights(found.version))
        except TrackingError:
            data = b""
        if digest_of(data) == digest:
            return data, f"MLflow model {found.registered_name} version {found.version}"
    raise GlobalModelUnavailable(
        f"the global model {digest} of task {w.name!r} is not in the blob store (expected at "
        f"{w.store.uri(digest)}) and no MLflow version of {w.registry.registered_name!r} in "
        f"{w.registry.tracking_uri} holds it: copy a backup of the file (its sha256 must be "
        f"{digest[2:]}) to that location and run again, or start a new task"
    )


def _committed(w: World, r: int, reference: Weights) -> Checked:
    """The round's updates as committed on chain, in submission order (the contract's update
    index), fetched by hash and checked against the global model ``reference``
    (``flock_pipeline.validity``): an update that is missing, unreadable or malformed is
    flagged invalid, never raised. One event query and one batch of stake reads for the
    round."""
    entries, members = [], []
    limit = update_size_limit(reference)
    for ev in w.submissions(r):
        member = w.by_address(str(ev["proposer"]))
        blob = fetch_blob(w.store, _hex(ev["updateHash"]), max_bytes=limit)
        entries.append((member.id, blob, int(ev["numSamples"])))
        members.append(member)
    stakes = w.creator.participants_of(w.task_id, [m.address for m in members])  # one batch
    registered = {m.id: s.num_samples for m, s in zip(members, stakes, strict=True)}
    return check_submissions(entries, reference, registered)


def _previous_state_hash(w: World, r: int) -> str | None:
    """The strategy state of the latest accepted round before ``r``."""
    for k in range(r, 0, -1):
        path = w.folder / "rounds" / f"{k}.json"
        if path.exists():
            value = json.loads(path.read_text()).get("strategy_state")
            return None if value is None else str(value)
    return None


def _trust_history(w: World, r: int) -> list[dict[str, float]]:
    """The screen's trust input for round ``r``: the trust scores of the finalized rounds
    before it that any voter scored, oldest first. Public and final, so the aggregator and
    every voter read the same history, and each process reads a finalized round once."""
    history: list[dict[str, float]] = []
    if w.cfg.aggregation.screen.min_trust is None:
        return history
    for k in range(r):
        scored = w.finalized_trust.get(k)
        if scored is None:
            if w.creator.phase_of(w.task_id, k) is not Phase.FINALIZED:
                continue
            scored = w.finalized_trust.setdefault(k, w.round_view(k).trust)
        if scored:
            history.append(scored)
    return history


class _RoundInputs(NamedTuple):
    """Everything a round's aggregate is a function of, in ``round.aggregate``'s order."""

    strategy: Strategy
    submitted: Checked  # submission order: the valid updates, and the invalid ones' flags
    global_weights: Weights
    state: StrategyState
    seed: int
    screen: Screen | None
    history: list[dict[str, float]]  # trust scores of earlier rounds


def _round_inputs(w: World, r: int) -> _RoundInputs:
    """The committed updates, the published strategy state, the round's public seed and the
    trust scores of earlier rounds: what every voter recomputes the aggregate from."""
    seed = derive_seed(w.cfg.seed, "aggregate", _hex(w.creator.round_info(w.task_id, r).seed))
    digest = _previous_state_hash(w, r)
    state: StrategyState = {} if digest is None else from_bytes(w.store.get(digest), digest)
    old = _global_weights(w)
    return _RoundInputs(build_aggregator(w.cfg), _committed(w, r, old), old,
                        state, seed, build_screen(w.cfg), _trust_history(w, r))  # fmt: skip


# ---------------------------------------------------------------- tasks


def _verify_datasets(w: World) -> dict[str, str]:
    """Refuse to train or score on data that changed after its DVC snapshot."""
    for m in w.members:
        w.snapshots.verify(m.snapshot)
    if w.validation is not None:
        w.snapshots.verify(w.validation)
    return {m.id: m.snapshot.hash for m in w.members}


@task(
    name="start-round",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def start_round(name: str, r: int) -> dict[str, Any]:
    """Check the data sets against their DVC snapshots, start round ``r`` if it was not and
    draw it once its seed is ready: crash-safe at any step (a round requested but never drawn
    is drawn on resume). Returns the round's seed and deadlines, the data sets' hashes and
    every participant's role as sortition on chain gives it (anyone can recompute it): the
    round's bookkeeping in one task."""
    w = get_world(name)
    datasets = _verify_datasets(w)
    info = w.creator.open_round(w.task_id, r)
    return {
        "seed": _hex(info.seed),
        "training_ends": info.training_ends,
        "commit_ends": info.commit_ends,
        "reveal_ends": info.reveal_ends,
        "datasets": datasets,
        "roles": {pid: role.name.lower() for pid, role in w.roles(r).items()},
    }


@task(
    name="train-and-submit",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def train_and_submit(name: str, r: int, pid: str, global_hash: str) -> dict[str, Any]:
    """A proposer trains from the global model, uploads its update and commits its hash.

    An update is derived once: with DP its noise is secret and fresh, so a retrain would
    release a second, different update (and spend again). The proposer keeps what it is about
    to upload under ``updates/`` in the task folder before it uploads; a resumed run submits
    that copy, and one that finds the update on chain returns what the first run returned."""
    w = get_world(name)
    m = w.member(pid)
    logger = get_run_logger()
    kept = w.folder / "updates" / f"{r + 1}-{pid}.json"
    blob = kept.with_suffix(".bin")
    if m.client.record_of(w.task_id, r).submitted:  # resumed after a crash: the chain has it
        ev = next(e for e in w.submissions(r) if str(e["proposer"]).lower() == m.address.lower())
        logger.info("%s already submitted round %d", pid, r + 1)
        digest = _hex(ev["updateHash"])
        saved = json.loads(kept.read_text()) if kept.exists() else {}
        if saved.get("update_hash") == digest:
            return dict(saved)
        return {"update_hash": digest, "num_samples": int(ev["numSamples"]),
                "epsilon": m.ledger.epsilon if m.ledger else None,
                "train_loss": None}  # fmt: skip
    if blob.exists() and kept.exists():  # derived (maybe uploaded) before a crash: reuse it
        logger.info("%s resubmits the update it kept for round %d", pid, r + 1)
        return _submit_kept(w, r, m, kept, blob)
    weights = _model(w, global_hash)
    try:
        trained = train_participant(
            w.cfg, w.fed, m.index, weights, r, m.ledger, spend_label=f"{w.name}/{r}"
        )
    except (PrivacyBudgetExceeded, LocalTrainingTimeout) as exc:
        # Its own limit, not the task's failure: it submits nothing (an absent proposer, as
        # any other) and the round goes on without it.
        w.save_ledger(m)
        logger.warning("%s abstains from round %d: %s", pid, r + 1, exc)
        return {}
    w.save_ledger(m)
    spec = w.cfg.attacks.get(pid)
    copier = spec is not None and spec.kind == "copier"
    others = _committed(w, r, weights).updates if copier else []
    update = attack_update(w.cfg, trained, weights, r, others)
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
    logger.info("%s trained round %d, epsilon %s", pid, r + 1, update.epsilon)
    return _submit_kept(w, r, m, kept, blob)


def _submit_kept(w: World, r: int, m: Member, kept: Path, blob: Path) -> dict[str, Any]:
    """Upload the update ``m`` kept for round ``r``, commit its hash, then drop the local copy
    (the store has it); what ``train_and_submit`` returns."""
    saved: dict[str, Any] = json.loads(kept.read_text())
    digest = w.store.put(blob.read_bytes())
    try:
        m.client.submit_update(w.task_id, r, bytes.fromhex(digest[2:]), saved["num_samples"])
    except ContractRevert as exc:
        if exc.name == "TooManySamples":  # more than it registered: refused outright
            get_run_logger().warning(
                "%s: the chain refuses its update of round %d (%s)", m.id, r + 1, exc
            )
            return {}
        if exc.name != "InsufficientStake":
            raise
        # Drawn from its stake at the round's start, then slashed to nothing when its last
        # round settled: it has nothing left to stake on an update, and abstains.
        get_run_logger().warning("%s has no stake left after its last round; it abstains", m.id)
        return {}
    blob.unlink()
    get_run_logger().info("%s submitted round %d: update %s", m.id, r + 1, digest[:12])
    return saved


@task(
    name="validate-and-commit",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def validate_and_commit(name: str, r: int, pid: str, training_ends: int) -> dict[str, Any]:
    """A voter recomputes the aggregate from the committed updates, stores it, judges it
    against the current global model on its held-out data (or the task's shared validation
    set), scores each update's contribution (``flock_pipeline.contribution``) and commits the
    hash, the score and the contributions."""
    w = get_world(name)
    m = w.member(pid)
    w.chain.advance_to(training_ends + 1)
    saved = w.folder / "votes" / str(r + 1) / f"{pid}.json"
    if saved.exists() and m.client.record_of(w.task_id, r).vote.name != "NONE":
        # Resumed after its commit: reveal what it committed, even if an update it scored has
        # since gone from the store (a recomputation would no longer match the commitment).
        return dict(json.loads(saved.read_text()))
    strategy, submitted, old, state, seed, screen, history = _round_inputs(w, r)
    updates = submitted.updates
    logger = get_run_logger()
    for proposer, flag in submitted.invalid.items():
        logger.warning("%s flags the update of %s as %s: %s", pid, proposer, flag,
                       submitted.details.get(proposer, ""))  # fmt: skip
    full = aggregate_updates(strategy, updates, old, state, seed, screen, history,
                             submitted.invalid)  # fmt: skip
    digest = w.store.put(canonical_bytes(full.weights))
    state_hash = w.store.put(canonical_bytes(full.state)) if full.state else None
    score = judgement_score(w.cfg, w.fed, m.index, old, full.weights)
    x, y = w.fed.voter_data(m.index)
    net = build_network(w.cfg.model.name, w.fed.input_shape, w.fed.num_classes)
    scores = contributions(
        strategy, updates, old, state, seed, screen, lambda x_: evaluate(net, x_, x, y).loss,
        full, history, submitted.invalid,
    )  # fmt: skip
    scores = submission_scores(submitted, scores)
    score, scores = ballot(w.cfg, pid, score, scores, submitted.order)
    fixed = to_fixed(round(score, 6))
    fixed_scores = [to_fixed(round(c, 6)) for c in scores]
    if m.client.record_of(w.task_id, r).vote.name == "NONE":
        salt = m.salt(w.task_id, r)
        try:
            m.client.commit_vote(
                w.task_id, r, bytes.fromhex(digest[2:]), fixed, salt, contributions=fixed_scores
            )
        except ContractRevert as exc:
            if exc.name != "InsufficientStake":
                raise
            logger.warning("%s has no stake left after its last round; it abstains", pid)
            return {}
    vote = {
        "hash": digest,
        "state": state_hash,
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


@task(
    name="reveal",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def reveal(name: str, r: int, pid: str, vote: dict[str, Any], commit_ends: int) -> None:
    """Reveal the hash, score and contributions ``validate_and_commit`` committed."""
    w = get_world(name)
    m = w.member(pid)
    w.chain.advance_to(commit_ends + 1)
    if m.client.record_of(w.task_id, r).vote.name != "COMMITTED":
        return
    salt = m.salt(w.task_id, r)
    digest = bytes.fromhex(vote["hash"][2:])
    fixed, scores = int(vote["fixed"]), tuple(int(c) for c in vote["fixed_contributions"])
    commitment = vote_commitment(w.task_id, r, m.address, digest, fixed, salt, scores)
    m.client.reveal_vote(
        Vote(
            task_id=w.task_id,
            round=r,
            voter=m.address,
            aggregate_hash=digest,
            score=fixed,
            salt=salt,
            commitment=commitment,
            contributions=scores,
        )
    )


@task(
    name="finalize",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def finalize(name: str, r: int, reveal_ends: int) -> dict[str, Any]:
    """Finalize (anyone may; here the task creator). One transaction: no participant is
    settled here, each settles on its next action or its claim."""
    w = get_world(name)
    w.chain.advance_to(reveal_ends + 1)
    sent = w.creator.finalize_round(w.task_id, r)  # None when a previous run already did
    view = w.round_view(r)
    # Final from here on: later rounds' trust histories read it from the cache.
    w.finalized_trust[r] = view.trust
    if sent is not None:
        tx, gas = sent.tx_hash, sent.gas_used
    else:  # finalized by an earlier run: the chain's log names its transaction
        (log,) = w.creator.alliance.events.RoundFinalized().get_logs(
            from_block=w.from_block, argument_filters={"taskId": w.task_id, "round": r}
        )
        tx = _hex(log["transactionHash"])
        gas = int(w.chain.w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"])
    return {
        "outcome": view.outcome.name.lower(),
        "aggregate_hash": view.aggregate_hash,
        "accept_weight": str(view.accept_weight),
        "reject_weight": str(view.reject_weight),
        "flagged": view.flagged,
        "contribution": view.contribution,
        "trust": view.trust,
        "tx": tx,
        "gas_used": gas,
    }


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_model(name: str, r: int, record: dict[str, Any]) -> dict[str, str]:
    """One MLflow model version per round (the new global model): one run, one version, its
    tags set in one call, whatever the number of participants."""
    w = get_world(name)
    found = w.registry.find_version({"task": w.name, "round": str(r + 1)})
    if found is not None:  # a resumed run finds the version already there
        return {"registered_name": found.registered_name, "version": found.version,
                "run_id": found.run_id}  # fmt: skip
    digest = record["global_model_hash"]
    weights = _model(w, digest)
    tags = {
        "task": w.name,
        "round": str(r + 1),
        "outcome": record["outcome"],
        "aggregate_hash": record["aggregate_hash"] or "",
        "global_model_hash": digest,
        "accepted": str(record["accepted"]).lower(),
        "chain_id": str(w.chain.chain_id),
        "task_address": w.creator.deployment.alliance,
        "task_id": str(w.task_id),
        "finalize_tx": record["finalize_tx"] or "",
        "datasets": json.dumps({p["id"]: p["dataset_hash"] for p in record["participants"]}),
        "epsilon": json.dumps(
            {p["id"]: p["epsilon"] for p in record["participants"] if p["epsilon"] is not None}
        ),
    }
    ref = w.registry.log_round_model(
        weights=weights,
        architecture=w.cfg.model.name,
        input_shape=w.fed.input_shape,
        num_classes=w.fed.num_classes,
        round=r + 1,
        metrics={"accuracy": record["global"]["accuracy"], "loss": record["global"]["loss"]},
        params={"dataset": w.cfg.data.dataset, "participants": w.cfg.participants},
        tags=tags,
        run_name=f"{w.name}-round-{r + 1}",
    )
    return {"registered_name": ref.registered_name, "version": ref.version, "run_id": ref.run_id}


# ---------------------------------------------------------------- flows


@flow(name="federated-round", task_runner=_SEQUENTIAL, persist_result=True)
def federated_round(name: str, round_index: int) -> dict[str, Any]:
    """One round of task ``name`` (0-based ``round_index`` on chain; reported 1-based)."""
    w = get_world(name)
    r = round_index
    logger = get_run_logger()
    done = w.folder / "rounds" / f"{r + 1}.json"
    if done.exists() and w.creator.phase_of(w.task_id, r) is Phase.FINALIZED:
        logger.info("round %d was finalized by an earlier run; not repeating it", r + 1)
        return dict(json.loads(done.read_text()))
    began = time.perf_counter()

    started = start_round(name, r)
    datasets, role = started["datasets"], started["roles"]
    global_hash = _hex(w.creator.task_state(w.task_id).global_model_hash)
    proposers = [pid for pid, x in role.items() if Role[x.upper()].proposes]
    voters = [pid for pid, x in role.items() if Role[x.upper()].votes]
    # Copiers submit last: they copy what the others committed.
    copiers = [p for p in proposers if (a := w.cfg.attacks.get(p)) and a.kind == "copier"]
    updates: dict[str, dict[str, Any]] = {}
    for group in ([p for p in proposers if p not in copiers], copiers):
        if group:
            results = train_and_submit.map(name, r, group, global_hash).result()
            updates.update((p, x) for p, x in zip(group, results, strict=True) if x)
    votes: dict[str, dict[str, Any]] = {}
    if updates and voters:
        scored = validate_and_commit.map(name, r, voters, started["training_ends"]).result()
        votes = {v: x for v, x in zip(voters, scored, strict=True) if x}
        if votes:
            reveal.map(name, r, list(votes), list(votes.values()), started["commit_ends"]).result()
    settled = finalize(name, r, started["reveal_ends"])

    outcome = settled["outcome"]
    accepted = outcome == "accepted"
    new_global_hash = _hex(w.creator.task_state(w.task_id).global_model_hash)
    new_global = _model(w, new_global_hash)
    net = build_network(w.cfg.model.name, w.fed.input_shape, w.fed.num_classes)
    ev = evaluate(net, new_global, w.fed.x_test, w.fed.y_test)
    winner = next((v for v in votes.values() if v["hash"] == settled["aggregate_hash"]), None)
    participants = []
    for m in w.members:
        up = updates.get(m.id, {})
        vote = votes.get(m.id)
        own = w.fed.participants[m.index]
        hold = (
            evaluate(net, new_global, own.x_holdout, own.y_holdout) if len(own.y_holdout) else None
        )
        participants.append(
            ParticipantRound(
                id=m.id,
                address=m.address,
                role=role[m.id],
                attack=None if (a := w.cfg.attacks.get(m.id)) is None else a.kind,
                update_hash=up.get("update_hash"),
                num_samples=up.get("num_samples"),
                train_loss=up.get("train_loss"),
                dataset_hash=datasets[m.id],
                epsilon=m.ledger.epsilon if m.ledger else None,
                delta=w.cfg.privacy.delta if m.ledger else None,
                holdout=None if hold is None else Metrics(loss=hold.loss, accuracy=hold.accuracy),
                vote=None
                if vote is None
                else VoteRecord(
                    aggregate_hash=vote["hash"],
                    score=vote["score"],
                    accept=accepts(vote["fixed"]),
                    contributions=vote["contributions"],
                ),
                screened=None if winner is None else winner["screened"].get(m.id),
                flagged=settled["flagged"].get(m.id, False),
                contribution=settled["contribution"].get(m.id),
                trust_score=settled["trust"].get(m.id),
            )
        )
    record = RoundRecord(
        round=r + 1,
        outcome=outcome,
        accepted=accepted,
        seed=started["seed"],
        global_=Metrics(loss=ev.loss, accuracy=ev.accuracy),
        aggregate_hash=settled["aggregate_hash"] if outcome != "void" else None,
        global_model_hash=new_global_hash,
        selected=[] if winner is None else winner["selected"],
        screened={} if winner is None else winner["screened"],
        strategy_state=winner["state"]
        if accepted and winner is not None
        else _previous_state_hash(w, r),
        accept_weight=settled["accept_weight"],
        reject_weight=settled["reject_weight"],
        finalize_tx=settled["tx"],
        finalize_gas=settled["gas_used"],
        seconds=0.0,
        participants=participants,
    )
    data = json.loads(record.model_dump_json(by_alias=True))
    data["model"] = register_model(name, r, data)
    data["seconds"] = round(time.perf_counter() - began, 3)
    create_table_artifact(
        key=artifact_key(w.name, r),
        table=[
            {k: p[k] for k in ("id", "role", "epsilon", "contribution", "flagged")}
            | {"score": p["vote"]["score"] if p["vote"] else None}
            for p in data["participants"]
        ],
        description=(
            f"Round {r + 1} of {w.name}: {outcome}, global accuracy {ev.accuracy:.4f}, "
            f"model version {data['model']['version']}"
        ),
    )
    logger.info(
        "round %d %s: accuracy %.4f, proposers %s, voters %s",
        r + 1, outcome, ev.accuracy, proposers, voters,
    )  # fmt: skip
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(data, indent=2))
    return dict(data)


def artifact_key(task: str, r: int) -> str:
    """The Prefect artifact key of round ``r`` (0-based) of ``task``: Prefect accepts only
    lowercase letters, digits and dashes (a task of fashion_mnist has an underscore)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{task}-round-{r + 1}".lower())


def _report(w: World, rounds: list[dict[str, Any]], claims: dict[str, str]) -> RunReport:
    """The task's report: the round records, with what each participant was paid and slashed
    per round as the chain's ``Settled`` events say (one query for the whole task, read after
    every participant has claimed, so every round is settled)."""
    settled: dict[tuple[int, str], tuple[int, int]] = {}
    for e in w.creator.task_events(w.task_id, "Settled", from_block=w.from_block):
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
    return RunReport(
        task=TaskInfo(
            engine="flow",
            name=w.name,
            dataset=w.cfg.data.dataset,
            participants=w.cfg.participants,
            rounds=w.cfg.rounds,
            data_dir=str(w.cfg.data_dir),
            chain_id=w.chain.chain_id,
            task_address=w.creator.deployment.alliance,
            token_address=w.creator.deployment.token,
            task_id=w.task_id,
            validation_dataset_hash=None if w.validation is None else w.validation.hash,
        ),
        config=json.loads(w.cfg.model_dump_json()),
        partition={
            p.id: [int(v) for v in row]
            for p, row in zip(w.fed.participants, w.fed.counts, strict=True)
        },
        rounds=records,
        claimed=claims,
        final=FinalInfo(
            accuracy=None if last is None else last.global_.accuracy,
            loss=None if last is None else last.global_.loss,
            model_hash=_hex(w.creator.task_state(w.task_id).global_model_hash),
            accepted_rounds=len(accepted),
            void_rounds=sum(1 for r in records if r.outcome == "void"),
            honest_slashes=honest_slashes(records),
            champion_version=accepted[-1].model.version
            if accepted and accepted[-1].model
            else None,
            registered_name=w.cfg.registered_name,
        ),
    )


@flow(name="federated-task", log_prints=True)
def federated_task(
    config: FlockConfig | None = None, config_file: str | None = None, out_dir: str | None = None
) -> dict[str, Any]:
    """Create or resume a task, run its remaining rounds, pay out, publish the champion.

    ``config`` takes precedence over ``config_file``; with neither, the embedded defaults.
    """
    cfg = config or load_config(Path(config_file) if config_file else None)
    logger = get_run_logger()
    w = open_world(cfg)
    try:
        logger.info("task %s (id %d on chain %d)", w.name, w.task_id, w.chain.chain_id)
        rounds = []
        for r in range(cfg.rounds):
            # The task's own flow run sends the heartbeats of this process; a round's would
            # add nothing but its thread's last sleep (up to a second) to every round's end.
            with temporary_settings(updates={"flows.heartbeat_frequency": None}):
                run = federated_round.with_options(flow_run_name=f"{w.name}-round-{r + 1}")
                rounds.append(run(w.name, r))
        for m in w.members:  # each claim settles its last round first; a repeat pays nothing
            m.client.claim(w.task_id)
        paid: dict[str, int] = {m.address.lower(): 0 for m in w.members}
        for e in w.creator.task_events(w.task_id, "Claimed", from_block=w.from_block):
            paid[str(e["account"]).lower()] = paid.get(str(e["account"]).lower(), 0) + int(
                e["amount"]
            )
        claims = {m.id: str(paid[m.address.lower()]) for m in w.members}
        if w.creator.task_state(w.task_id).pool:  # what no round paid goes back to the creator
            w.creator.reclaim_pool(w.task_id)
        report = _report(w, rounds, claims)
        champion = report.final.champion_version
        if champion is not None:
            w.registry.set_alias("champion", champion)
        out = Path(out_dir) if out_dir else cfg.data_dir / "runs" / w.name
        # A rerun of the finished task points here (world._resumed_meta).
        meta = dict(w.meta, complete=True, summary=str((out / "summary.json").resolve()))
        (w.folder / "task.json").write_text(json.dumps(meta, indent=2))
        write_report(report, out)
        logger.info("summary: %s", out / "summary.json")
        return report.dump()
    finally:
        w.close()


def write_report(report: RunReport, out: Path) -> None:
    """summary.json, accuracy.png and rewards.png."""
    report.write(out / "summary.json")
    rounds = report.rounds
    if rounds:
        plot_accuracy(
            [r.round for r in rounds], [r.global_.accuracy or 0.0 for r in rounds], {},
            out / "accuracy.png",
        )  # fmt: skip
        ids = [p.id for p in rounds[0].participants]
        money = totals(rounds)
        plot_rewards(
            ids,
            [money[i][0] / TOKEN for i in ids],
            [money[i][1] / TOKEN for i in ids],
            out / "rewards.png",
        )
