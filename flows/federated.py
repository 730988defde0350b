"""The federated round as a Prefect DAG, and the task that runs R of them.

```
verify datasets (DVC) ─► start round, roles (chain) ─► train × proposers (Lightning + Opacus)
  ─► upload + submit hash ─► aggregate, post hash ─► validate × voters (recompute, check, score,
  commit) ─► reveal × voters ─► finalize ─► settle ─► model version (MLflow)
```
Every step is idempotent against the chain, which is the source of truth: a task flow that
crashed resumes where the chain says it stopped and never settles anything twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flock_pipeline.aggregation import Strategy, StrategyState
from flock_pipeline.aggregation.screen import Screen
from flock_pipeline.attacks import tamper_contributions, tamper_score
from flock_pipeline.chain import Phase, Role, RoundInfo, Vote, to_fixed, vote_commitment
from flock_pipeline.chain.voting import SCORE_SCALE
from flock_pipeline.config import FlockConfig, load_config
from flock_pipeline.contribution import contributions
from flock_pipeline.evaluation import Evaluation, evaluate
from flock_pipeline.models import build_network
from flock_pipeline.reporting import plot_accuracy, plot_rewards
from flock_pipeline.round import aggregate as aggregate_updates
from flock_pipeline.round import attack_update, build_aggregator, build_screen, train_participant
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, canonical_bytes, content_hash, from_bytes
from flock_pipeline.update import Update
from flows.world import TOKEN, World, get_world, open_world

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
    digest = _hex(w.creator.task_state(w.task_id).global_model_hash)
    return from_bytes(w.store.get(digest), digest)


def _committed_updates(w: World, r: int) -> list[Update]:
    """The round's updates as committed on chain, in submission order (the contract's update
    index), fetched by hash (the store verifies it)."""
    out = []
    events = w.creator.round_events(w.task_id, r, "UpdateSubmitted")
    for ev in sorted(events, key=lambda e: int(e["index"])):
        digest = _hex(ev["updateHash"])
        pid = w.by_address(str(ev["proposer"])).id
        out.append(Update(pid, from_bytes(w.store.get(digest), digest), int(ev["numSamples"])))
    return out


def _previous_state_hash(w: World, r: int) -> str | None:
    """The strategy state published with the latest settled round before ``r``."""
    for k in range(r, 0, -1):
        path = w.folder / "rounds" / f"{k}.json"
        if path.exists():
            value = json.loads(path.read_text()).get("strategy_state")
            return None if value is None else str(value)
    return None


def _settled_contributions(w: World, r: int) -> dict[str, float | None]:
    """Each proposer's contribution in round ``r`` as the contract holds it: the stake-weighted
    mean of the accepting voters' scores (None when nobody accepted)."""
    info = w.creator.round_info(w.task_id, r)
    out: dict[str, float | None] = {}
    for i in range(info.updates):
        up = w.creator.update_at(w.task_id, r, i)
        mean = up.contribution / info.accept_weight / SCORE_SCALE if info.accept_weight else None
        out[w.by_address(up.proposer).id] = mean
    return out


def _trust_scores(w: World, r: int, info: RoundInfo | None = None) -> dict[str, float]:
    """Each proposer's score in round ``r`` for the screen's trust check: the stake-weighted
    mean of the contributions of every voter that revealed one per update, accepting or
    rejecting (the round's ``VoteRevealed`` events); empty when nobody did. A rejected round
    says as much about its updates as an accepted one: label flippers mostly get their rounds
    rejected, and a history of accepted rounds only would never see them. (Payment reads only
    the accepting voters' accumulator, ``_settled_contributions``.) The sums are integers and
    each mean is one correctly rounded division, so every reader gets the same floats."""
    info = info or w.creator.round_info(w.task_id, r)
    if not info.updates:
        return {}
    votes = [
        (int(e["weight"]), [int(c) for c in e["contributions"]])
        for e in w.creator.round_events(w.task_id, r, "VoteRevealed")
        if len(e["contributions"]) == info.updates
    ]
    total = sum(weight for weight, _ in votes)
    if not total:
        return {}
    out: dict[str, float] = {}
    for i in range(info.updates):
        proposer = w.by_address(w.creator.update_at(w.task_id, r, i).proposer).id
        out[proposer] = sum(wt * c[i] for wt, c in votes) / (total * SCORE_SCALE)
    return out


def _trust_history(w: World, r: int) -> list[dict[str, float]]:
    """The screen's trust input for round ``r``: :func:`_trust_scores` of the finalized rounds
    before it that any voter scored, oldest first. Public and final, so the aggregator and
    every voter read the same history, and each process reads a finalized round once."""
    history: list[dict[str, float]] = []
    if w.cfg.aggregation.screen.min_trust is None:
        return history
    for k in range(r):
        scored = w.finalized_trust.get(k)
        if scored is None:
            info = w.creator.round_info(w.task_id, k)
            if not info.finalized:
                continue
            scored = w.finalized_trust.setdefault(k, _trust_scores(w, k, info))
        if scored:
            history.append(scored)
    return history


class _RoundInputs(NamedTuple):
    """Everything a round's aggregate is a function of, in ``round.aggregate``'s order."""

    strategy: Strategy
    updates: list[Update]  # submission order
    global_weights: Weights
    state: StrategyState
    seed: int
    screen: Screen | None
    history: list[dict[str, float]]  # every revealing voter's mean scores of earlier rounds


def _round_inputs(w: World, r: int) -> _RoundInputs:
    """The committed updates, the published strategy state, the round's chain seed for any
    noise and the revealed contributions of earlier rounds: what the aggregator and every voter
    recompute the aggregate from."""
    seed = derive_seed(w.cfg.seed, "aggregate", _hex(w.creator.round_info(w.task_id, r).seed))
    digest = _previous_state_hash(w, r)
    state: StrategyState = {} if digest is None else from_bytes(w.store.get(digest), digest)
    return _RoundInputs(build_aggregator(w.cfg), _committed_updates(w, r), _global_weights(w),
                        state, seed, build_screen(w.cfg), _trust_history(w, r))  # fmt: skip


# ---------------------------------------------------------------- tasks


@task(name="verify-datasets", cache_policy=NO_CACHE)
def verify_datasets(name: str) -> dict[str, str]:
    """Refuse to train or score on data that changed after its DVC snapshot."""
    w = get_world(name)
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
    w = get_world(name)
    if w.creator.task_state(w.task_id).rounds_started <= r:
        started, _ = w.creator.start_round(w.task_id)
        if started != r:
            raise RuntimeError(f"chain started round {started}, the flow expected {r}")
    info = w.creator.round_info(w.task_id, r)
    return {"seed": _hex(info.seed), "training_ends": info.training_ends}


@task(
    name="roles",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def roles(name: str, r: int) -> dict[str, str]:
    """Every participant's role, as sortition on chain gives it (anyone can recompute it)."""
    w = get_world(name)
    return {m.id: w.creator.role_of(w.task_id, r, m.address).name.lower() for m in w.members}


@task(
    name="train-and-submit",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def train_and_submit(name: str, r: int, pid: str, global_hash: str) -> dict[str, Any]:
    """A proposer trains from the global model, uploads its update and commits its hash."""
    w = get_world(name)
    m = w.member(pid)
    logger = get_run_logger()
    record = m.client.record_of(w.task_id, r)
    if record.action.name == "SUBMITTED":  # resumed after a crash: the chain has it already
        ev = next(
            e
            for e in w.creator.round_events(w.task_id, r, "UpdateSubmitted")
            if str(e["proposer"]).lower() == m.address.lower()
        )
        logger.info("%s already submitted round %d", pid, r + 1)
        return {"update_hash": _hex(ev["updateHash"]), "num_samples": int(ev["numSamples"]),
                "epsilon": m.ledger.epsilon if m.ledger else None}  # fmt: skip
    weights = from_bytes(w.store.get(global_hash), global_hash)
    trained = train_participant(
        w.cfg, w.fed, m.index, weights, r, m.ledger, spend_label=f"{w.name}/{r}"
    )
    w.save_ledger(m)
    spec = w.cfg.attacks.get(pid)
    others = _committed_updates(w, r) if spec is not None and spec.kind == "copier" else []
    update = attack_update(w.cfg, trained, weights, r, others)
    digest = w.store.put(canonical_bytes(update.weights))
    m.client.submit_update(w.task_id, r, bytes.fromhex(digest[2:]), update.num_samples)
    logger.info(
        "%s trained round %d: update %s, epsilon %s", pid, r + 1, digest[:12], update.epsilon
    )
    return {"update_hash": digest, "num_samples": update.num_samples, "epsilon": update.epsilon}


@task(
    name="aggregate",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def aggregate(name: str, r: int, training_ends: int) -> dict[str, Any] | None:
    """After the training deadline: the strategy over the committed updates; post its hash."""
    w = get_world(name)
    w.chain.advance_to(training_ends + 1)
    if not w.creator.round_events(w.task_id, r, "UpdateSubmitted"):
        return None
    agg = aggregate_updates(*_round_inputs(w, r))
    digest = w.store.put(canonical_bytes(agg.weights))
    state = w.store.put(canonical_bytes(agg.state)) if agg.state else None
    posted = w.creator.round_info(w.task_id, r).aggregate_hash
    if posted == bytes(32):
        w.creator.post_aggregate(w.task_id, r, bytes.fromhex(digest[2:]))
    elif _hex(posted) != digest:
        raise RuntimeError(f"round {r + 1}: posted aggregate {_hex(posted)} is not {digest}")
    return {
        "hash": digest,
        "state": state,
        "selected": list(agg.selected),
        "flagged": dict(agg.flagged),
    }


def _holdout(w: World, pid: str) -> Callable[[Weights], Evaluation]:
    """The voter's evaluation: on its own held-out split, or on the task's shared validation
    set (``data.validation: shared``). Accuracy makes the vote, the loss the contributions
    (continuous, so a small held-out set still ranks updates); the last weights evaluated are
    remembered, so the round's aggregate is evaluated once for both."""
    x, y = w.fed.voter_data(w.member(pid).index)
    net = build_network(w.cfg.model.name, w.fed.input_shape, w.fed.num_classes)
    last: list[tuple[Weights, Evaluation]] = []

    def holdout(weights: Weights) -> Evaluation:
        if not last or last[0][0] is not weights:
            last[:] = [(weights, evaluate(net, weights, x, y))]
        return last[0][1]

    return holdout


@task(
    name="validate-and-commit",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def validate_and_commit(name: str, r: int, pid: str) -> dict[str, Any]:
    """A voter recomputes the aggregate from the committed updates, checks the posted hash,
    scores it against the current global model on its held-out data (or the task's shared
    validation set), scores each update's
    contribution (``flock_pipeline.contribution``) and commits both."""
    w = get_world(name)
    m = w.member(pid)
    posted = _hex(w.creator.round_info(w.task_id, r).aggregate_hash)
    strategy, updates, old, state, seed, screen, history = _round_inputs(w, r)
    full = aggregate_updates(strategy, updates, old, state, seed, screen, history)
    holdout = _holdout(w, pid)
    if content_hash(full.weights) != posted:
        # An honest voter never endorses an aggregate it cannot reproduce.
        score, scores = -1.0, [0.0] * len(updates)
        get_run_logger().warning("%s: posted aggregate %s does not match mine", pid, posted)
    else:
        score = holdout(full.weights).accuracy - holdout(old).accuracy
        scores = contributions(
            strategy, updates, old, state, seed, screen, lambda x: holdout(x).loss, full, history
        )
    spec = w.cfg.attacks.get(pid)
    score = tamper_score(score, spec)  # a dishonest voter lies here
    scores = tamper_contributions(scores, spec)
    fixed = to_fixed(round(score, 6))
    fixed_scores = [to_fixed(round(c, 6)) for c in scores]
    if m.client.record_of(w.task_id, r).action.name == "NONE":
        salt = m.salt(w.task_id, r)
        m.client.commit_vote(w.task_id, r, fixed, salt, contributions=fixed_scores)
    return {
        "score": score,
        "fixed": fixed,
        "contributions": dict(zip([u.participant for u in updates], scores, strict=True)),
        "fixed_contributions": fixed_scores,
    }


@task(
    name="reveal",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def reveal(name: str, r: int, pid: str, vote: dict[str, Any], commit_ends: int) -> None:
    """Reveal the score and contributions ``validate_and_commit`` committed."""
    w = get_world(name)
    m = w.member(pid)
    w.chain.advance_to(commit_ends + 1)
    if m.client.record_of(w.task_id, r).action.name != "COMMITTED":
        return
    salt = m.salt(w.task_id, r)
    fixed, scores = int(vote["fixed"]), tuple(int(c) for c in vote["fixed_contributions"])
    commitment = vote_commitment(w.task_id, r, m.address, fixed, salt, contributions=scores)
    m.client.reveal_vote(Vote(w.task_id, r, m.address, fixed, salt, commitment, scores))


@task(
    name="finalize",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=_DELAYS,
    retry_condition_fn=_transient,
)
def finalize(name: str, r: int) -> dict[str, Any]:
    """Finalize (anyone may; here the task creator) and settle every participant's round."""
    w = get_world(name)
    info = w.creator.round_info(w.task_id, r)
    w.chain.advance_to(info.reveal_ends + 1)
    w.creator.finalize_round(w.task_id, r)  # None when a previous run already did
    for m in w.members:
        w.creator.settle(w.task_id, m.address)
    (log,) = w.creator.alliance.events.RoundFinalized().get_logs(
        from_block=0, argument_filters={"taskId": w.task_id, "round": r}
    )
    receipt = w.chain.w3.eth.get_transaction_receipt(log["transactionHash"])
    settled = {
        str(e["account"]).lower(): e for e in w.creator.round_events(w.task_id, r, "Settled")
    }
    contribution = _settled_contributions(w, r)
    # Final from here on: later rounds' trust histories read it from the cache.
    trust = w.finalized_trust[r] = _trust_scores(w, r)
    out = {}
    for m in w.members:
        e = settled.get(m.address.lower())
        out[m.id] = {
            "reward": str(int(e["reward"])) if e else "0",
            "slashed": str(int(e["slashed"])) if e else "0",
            "contribution": contribution.get(m.id),
            "trust_score": trust.get(m.id),
        }
    return {
        "accepted": bool(log["args"]["accepted"]),
        "tx": "0x" + bytes(log["transactionHash"]).hex(),
        "gas_used": int(receipt["gasUsed"]),
        "settlement": out,
    }


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_model(name: str, r: int, record: dict[str, Any]) -> dict[str, str]:
    """One MLflow model version per round (the aggregate, or the unchanged global model)."""
    w = get_world(name)
    for ref in w.registry.versions():  # a resumed run finds the version already there
        tags = w.registry.version_tags(ref.version)
        if tags.get("task") == w.name and tags.get("round") == str(r + 1):
            return {"registered_name": ref.registered_name, "version": ref.version,
                    "run_id": ref.run_id}  # fmt: skip
    digest = record["aggregate_hash"] or record["global_model_hash"]  # no updates: unchanged
    weights = from_bytes(w.store.get(digest), digest)
    tags = {
        "task": w.name,
        "round": str(r + 1),
        "aggregate_hash": digest,
        "accepted": str(record["accepted"]).lower(),
        "chain_id": str(w.chain.chain_id),
        "task_address": w.creator.deployment.alliance,
        "task_id": str(w.task_id),
        "settlement_tx": record["settlement"]["tx"],
    }
    for p in record["participants"]:
        tags[f"dataset_hash.{p['id']}"] = p["dataset_hash"]
        if p["epsilon"] is not None:
            tags[f"epsilon.{p['id']}"] = f"{p['epsilon']:.6f}"
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
        logger.info("round %d was settled by an earlier run; not repeating it", r + 1)
        return dict(json.loads(done.read_text()))

    datasets = verify_datasets(name)
    started = start_round(name, r)
    role = roles(name, r)
    global_hash = _hex(w.creator.task_state(w.task_id).global_model_hash)
    proposers = [pid for pid, x in role.items() if x == Role.PROPOSER.name.lower()]
    voters = [pid for pid, x in role.items() if x == Role.VOTER.name.lower()]
    # Copiers submit last: they copy what the others committed.
    copiers = [p for p in proposers if (a := w.cfg.attacks.get(p)) and a.kind == "copier"]
    updates: dict[str, dict[str, Any]] = {}
    for group in ([p for p in proposers if p not in copiers], copiers):
        if group:
            results = train_and_submit.map(name, r, group, global_hash).result()
            updates.update(zip(group, results, strict=True))
    aggregated = aggregate(name, r, started["training_ends"])
    agg = None if aggregated is None else aggregated["hash"]
    votes: dict[str, dict[str, Any]] = {}
    if agg is not None and voters:
        scored = validate_and_commit.map(name, r, voters).result()
        votes = dict(zip(voters, scored, strict=True))
        commit_ends = w.creator.round_info(w.task_id, r).commit_ends
        reveal.map(name, r, voters, [votes[v] for v in voters], commit_ends).result()
    settlement = finalize(name, r)

    accepted = settlement["accepted"]
    new_global = _global_weights(w)
    net = build_network(w.cfg.model.name, w.fed.input_shape, w.fed.num_classes)
    ev = evaluate(net, new_global, w.fed.x_test, w.fed.y_test)
    participants = []
    for m in w.members:
        up = updates.get(m.id, {})
        vote = votes.get(m.id)
        participants.append(
            {
                "id": m.id,
                "address": m.address,
                "role": role[m.id],
                "attack": None if (a := w.cfg.attacks.get(m.id)) is None else a.kind,
                "update_hash": up.get("update_hash"),
                "num_samples": up.get("num_samples"),
                "dataset_hash": datasets[m.id],
                "epsilon": m.ledger.epsilon if m.ledger else None,
                "delta": w.cfg.privacy.delta if m.ledger else None,
                "vote": None if vote is None else {"score": vote["score"],
                                                   "accept": vote["fixed"] > 0,
                                                   "contributions": vote["contributions"]},
                "flagged": None if aggregated is None else aggregated["flagged"].get(m.id),
                "contribution": settlement["settlement"][m.id]["contribution"],
                "trust_score": settlement["settlement"][m.id]["trust_score"],
                "reward": settlement["settlement"][m.id]["reward"],
                "slashed": settlement["settlement"][m.id]["slashed"],
            }
        )  # fmt: skip
    record: dict[str, Any] = {
        "round": r + 1,
        "accepted": accepted,
        "global": {"accuracy": ev.accuracy, "loss": ev.loss},
        "aggregate_hash": agg,
        "selected": None if aggregated is None else aggregated["selected"],
        "flagged": {} if aggregated is None else aggregated["flagged"],
        "strategy_state": aggregated["state"]
        if accepted and aggregated is not None
        else _previous_state_hash(w, r),
        "global_model_hash": _hex(w.creator.task_state(w.task_id).global_model_hash),
        "settlement": {"tx": settlement["tx"], "gas_used": settlement["gas_used"]},
        "participants": participants,
    }
    record["model"] = register_model(name, r, record)
    create_table_artifact(
        key=artifact_key(w.name, r),
        table=[
            {
                k: p[k]
                for k in ("id", "role", "epsilon", "contribution", "flagged", "reward", "slashed")
            }
            | {"score": p["vote"]["score"] if p["vote"] else None}
            for p in participants
        ],
        description=(
            f"Round {r + 1} of {w.name}: {'accepted' if accepted else 'rejected'}, "
            f"global accuracy {ev.accuracy:.4f}, model version {record['model']['version']}"
        ),
    )
    logger.info(
        "round %d %s: accuracy %.4f, proposers %s, voters %s",
        r + 1, "accepted" if accepted else "rejected", ev.accuracy, proposers, voters,
    )  # fmt: skip
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=2))
    return record


def artifact_key(task: str, r: int) -> str:
    """The Prefect artifact key of round ``r`` (0-based) of ``task``: Prefect accepts only
    lowercase letters, digits and dashes (a task of fashion_mnist has an underscore)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{task}-round-{r + 1}".lower())


def _summary(w: World, rounds: list[dict[str, Any]], claims: dict[str, str]) -> dict[str, Any]:
    accepted = [r for r in rounds if r["accepted"]]
    last = rounds[-1]["global"] if rounds else {"accuracy": None, "loss": None}
    return {
        "task": {
            "name": w.name,
            "chain_id": w.chain.chain_id,
            "task_address": w.creator.deployment.alliance,
            "task_id": w.task_id,
            "token_address": w.creator.deployment.token,
            "rounds": w.cfg.rounds,
            "data_dir": str(w.cfg.data_dir),
            "validation_dataset_hash": None if w.validation is None else w.validation.hash,
        },
        "config": json.loads(w.cfg.model_dump_json()),
        "rounds": rounds,
        "claimed": claims,
        "final": {
            "accuracy": last["accuracy"],
            "loss": last["loss"],
            "champion_version": accepted[-1]["model"]["version"] if accepted else None,
            "registered_name": w.cfg.registered_name,
        },
    }


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
            rounds.append(
                federated_round.with_options(flow_run_name=f"{w.name}-round-{r + 1}")(w.name, r)
            )
        claims = {}
        for m in w.members:
            paid, _ = m.client.claim(w.task_id)
            claims[m.id] = str(paid)
        summary = _summary(w, rounds, claims)
        champion = summary["final"]["champion_version"]
        if champion is not None:
            w.registry.set_alias("champion", champion)
        meta = dict(w.meta, complete=True)
        (w.folder / "task.json").write_text(json.dumps(meta, indent=2))
        out = Path(out_dir) if out_dir else cfg.data_dir / "runs" / w.name
        write_report(summary, out)
        logger.info("summary: %s", out / "summary.json")
        return summary
    finally:
        w.close()


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rounds = summary["rounds"]
    if rounds:
        plot_accuracy(
            [r["round"] for r in rounds], [r["global"]["accuracy"] for r in rounds], {},
            out / "accuracy.png",
        )  # fmt: skip
        ids = [p["id"] for p in rounds[0]["participants"]]
        totals = {i: [0, 0] for i in ids}
        for r in rounds:
            for p in r["participants"]:
                totals[p["id"]][0] += int(p["reward"])
                totals[p["id"]][1] += int(p["slashed"])
        plot_rewards(
            ids,
            [totals[i][0] / TOKEN for i in ids],
            [totals[i][1] / TOKEN for i in ids],
            out / "rewards.png",
        )
