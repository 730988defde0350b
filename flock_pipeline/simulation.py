"""The simulation: the protocol ``flock run`` runs, with no orchestration, chain, registry or
snapshots.

Rounds go as on chain: sortition from a seed gives each participant its roles, proposers train
(the same steps, ``flock_pipeline.round``), every voter recomputes the aggregate, judges it and
scores each update, and the protocol model (``flock_pipeline.protocol.Alliance``, which a
differential test holds equal to the contract) tallies the votes, accepts, rejects or voids the
round, and settles rewards and slashes. Only the voters score, as in the flow. Results go to
``out_dir``: summary.json (the same ``RunReport`` the flow writes) and the final model as
safetensors; the figures are a face's (``faces.plots.plot_report``, drawn by ``flock
simulate``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account import Account
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flock_pipeline.aggregation import CentralDP, StrategyState
from flock_pipeline.attacks.updates import submission_bytes, submission_envelope
from flock_pipeline.config import FlockConfig
from flock_pipeline.contribution import contribution_table, submission_scores
from flock_pipeline.data import Federation
from flock_pipeline.errors import LocalTrainingTimeout, PrivacyBudgetExceeded
from flock_pipeline.privacy import LedgerStore
from flock_pipeline.protocol import Outcome, new_salt, to_fixed, vote_commitment
from flock_pipeline.protocol.decision import judge
from flock_pipeline.protocol.params import (
    TOKEN,
    dataset_hash,
    dev_address,
    simulation_seed,
    task_params,
)
from flock_pipeline.protocol.settlement import Alliance, ProtocolRevert
from flock_pipeline.protocol.tally import RevealedVote
from flock_pipeline.protocol.view import RoundView
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
from flock_pipeline.round import (
    RoundOutcome,
    aggregate,
    ballot,
    build_aggregator,
    build_screen,
    evaluate_round,
    held_out_losses,
    initial_weights,
    prepare_federation,
    submitted_updates,
    train_participant,
    voter_set,
)
from flock_pipeline.seeding import derive_seed
from flock_pipeline.serialization import Weights, content_hash, write_weights
from flock_pipeline.validity import SignatureCheck, check_submissions

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["SimulationResult", "run_simulation"]

CREATOR = "flock-creator"
PARTICIPANT = "flock-participant"
"""Dev account labels: the flow's dev signers have the same addresses."""


@dataclass
class SimulationResult:
    summary: dict[str, Any]
    final_weights: Weights
    report: RunReport
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return float(self.summary["final"]["accuracy"])


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)


def run_simulation(
    cfg: FlockConfig,
    out_dir: Path | None = None,
    console: Console | None = None,
    fed: Federation | None = None,
) -> SimulationResult:
    """Run the task; with ``out_dir``, write the report there (its privacy ledgers start fresh)."""
    console = console or Console(stderr=True, quiet=out_dir is None)
    fed = fed or prepare_federation(cfg)
    ids = [p.id for p in fed.participants]
    index_of = {pid: i for i, pid in enumerate(ids)}

    # A simulation's participants exist for one run, so their ledgers do too; rounds within the
    # run accumulate on disk like a real participant's would.
    ledger_dir = (out_dir or cfg.data_dir / "simulation") / "privacy"
    shutil.rmtree(ledger_dir, ignore_errors=True)
    store = LedgerStore(ledger_dir)
    ledgers = {
        pid: store.load(pid, cfg.privacy.delta, cfg.privacy.epsilon_budget)
        if cfg.privacy.enabled
        else None
        for pid in ids
    }

    weights = initial_weights(cfg, fed)
    creator = dev_address(CREATOR, 0)
    address = {pid: dev_address(PARTICIPANT, i) for i, pid in enumerate(ids)}
    by_address = {a.lower(): pid for pid, a in address.items()}
    # Each participant signs its updates (flock_pipeline.signing) with a key of this run alone,
    # fresh from the OS: the voters check the envelopes exactly as on chain. The model has no
    # chain id or contract address of its own; it signs for chain 0 and the creator's address.
    keys = {pid: Account.create() for pid in ids}
    params = task_params(cfg, bytes.fromhex(content_hash(weights)[2:]))
    chain = Alliance(params, creator)
    for pid in ids:  # no DVC snapshot here: the registration names the arrays' sha256
        data = fed.participants[index_of[pid]]
        arrays = hashlib.sha256(data.x_train.tobytes() + data.y_train.tobytes()).hexdigest()
        chain.stake(address[pid], cfg.chain.stake * TOKEN, len(data.y_train), dataset_hash(arrays))

    strategy = build_aggregator(cfg)
    screen = build_screen(cfg)
    central = strategy.accountant() if isinstance(strategy, CentralDP) else None
    state: StrategyState = {}
    history: list[dict[str, float]] = []  # the screen's trust input: earlier rounds' scores
    # Every held-out split (and a shared validation set), each run once per model: the voters'
    # judgements and scores and the round's evaluation share what they have computed.
    held_out = held_out_losses(cfg, fed)
    evaluated: tuple[Weights, RoundOutcome] | None = None
    records: list[RoundRecord] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        job = progress.add_task("rounds", total=cfg.rounds)
        for r in range(cfg.rounds):
            began = time.perf_counter()
            seed = simulation_seed(cfg.seed, r)
            chain.start_round(seed)
            info = chain.round_info(r)
            role = {pid: chain.role_of(r, address[pid]) for pid in ids}
            # Roles come from the stake at the round's start, before a slash of the last round
            # settles; a participant slashed to nothing there has nothing left to act with and
            # abstains (as on chain, where its submission or vote would be refused).
            for pid in ids:
                if role[pid].proposes or role[pid].votes:
                    chain.settle(address[pid])
            active = {
                pid
                for pid in ids
                if (stake := chain.participant_of(address[pid])).active + stake.unbonding > 0
            }
            proposers = [pid for pid in ids if role[pid].proposes and pid in active]
            voters = [pid for pid in ids if role[pid].votes and pid in active]

            trained = []
            for pid in proposers:
                progress.update(job, description=f"round {r + 1}/{cfg.rounds} · {pid} training")
                ledger = ledgers[pid]
                try:
                    trained.append(train_participant(cfg, fed, index_of[pid], weights, r, ledger))
                except (PrivacyBudgetExceeded, LocalTrainingTimeout) as exc:
                    # Its own limit: it submits nothing this round, and the round goes on.
                    console.print(f"[yellow]warning:[/] {pid} abstains from round {r + 1}: {exc}")
                finally:
                    if ledger is not None:
                        store.save(ledger)
            updates = submitted_updates(cfg, trained, weights, r)
            # What each proposer uploads (an attacker's bytes may be no model at all) and the
            # hash it commits; the voters check the bytes (flock_pipeline.validity).
            blobs = {u.participant: submission_bytes(u, cfg.attacks.get(u.participant))
                     for u in updates}  # fmt: skip
            digests = {pid: hashlib.sha256(b).hexdigest() for pid, b in blobs.items()}
            signatures = {}
            for u in updates:
                signatures[u.participant] = _signed(
                    cfg, keys[u.participant], u.participant, chain, creator, r,
                    "0x" + digests[u.participant], u.num_samples, info.training_ends,
                )  # fmt: skip
            refused = set()
            for u in updates:
                committed = bytes.fromhex(digests[u.participant])
                try:
                    chain.submit_update(address[u.participant], r, committed, u.num_samples)
                except ProtocolRevert as exc:
                    if exc.name != "TooManySamples":
                        raise
                    # More samples than it registered: the chain refuses the claim outright.
                    console.print(f"[yellow]warning:[/] round {r + 1}: the update of "
                                  f"{u.participant} is refused: {exc.error_args[0]} samples "
                                  f"claimed, {exc.error_args[1]} registered")  # fmt: skip
                    refused.add(u.participant)
            updates = [u for u in updates if u.participant not in refused]

            chain.now = info.training_ends
            votes: dict[str, VoteRecord] = {}
            agg = None
            if updates and voters:
                progress.update(job, description=f"round {r + 1}/{cfg.rounds} · voting")
                agg_seed = derive_seed(cfg.seed, "aggregate", "0x" + seed.hex())
                submitted = check_submissions(
                    [(u.participant, blobs[u.participant], u.num_samples) for u in updates],
                    weights,
                    {pid: chain.participant_of(address[pid]).num_samples for pid in blobs},
                    signatures,
                )
                for pid, flag in submitted.invalid.items():
                    console.print(f"round {r + 1}: the voters flag the update of {pid} as "
                                  f"{flag}: {submitted.details[pid]}")  # fmt: skip
                valid = submitted.updates
                agg = aggregate(strategy, valid, weights, state, agg_seed, screen, history,
                                submitted.invalid)  # fmt: skip
                digest = bytes.fromhex(content_hash(agg.weights)[2:])
                # The voters' sets in one batch: each candidate aggregate is run once for all.
                # The global model and the candidate come back (the round's evaluation, the
                # next round's judgement): their results are kept.
                held_out.remember(weights, agg.weights)
                sets = {v: voter_set(fed, index_of[v]) for v in voters}
                together = list(dict.fromkeys(sets.values()))
                old = held_out.per_sample(weights, together)
                new = held_out.per_sample(agg.weights, together)
                scored = {v: judge(old[sets[v]], new[sets[v]], cfg.vote.tolerance)
                          for v in voters}  # fmt: skip
                losses = {v: held_out.mean_loss(sets[v], together) for v in voters}
                table = contribution_table(
                    strategy, valid, weights, state, agg_seed, screen, losses, agg, history,
                    submitted.invalid,
                )  # fmt: skip
                revealed = {}
                for v in voters:
                    score = scored[v]
                    measured = submission_scores(submitted, table[v])
                    score, scores = ballot(cfg, v, score, measured, submitted.order)
                    fixed = to_fixed(round(score, 6))
                    fixed_scores = tuple(to_fixed(round(c, 6)) for c in scores)
                    salt = new_salt()  # kept until the reveal, like a voter's
                    chain.commit_vote(
                        address[v], r,
                        vote_commitment(chain.task_id, r, address[v], digest, fixed, salt,
                                        fixed_scores),
                    )  # fmt: skip
                    revealed[v] = (fixed, fixed_scores, salt)
                    votes[v] = VoteRecord(
                        aggregate_hash="0x" + digest.hex(),
                        score=score,
                        accept=fixed >= 0,
                        contributions=dict(zip(submitted.order, scores, strict=True)),
                    )
                chain.now = info.commit_ends
                for v, (fixed, fixed_scores, salt) in revealed.items():
                    chain.reveal_vote(address[v], r, digest, fixed, fixed_scores, salt)
            chain.now = info.reveal_ends
            outcome = chain.finalize_round(creator, r)
            accepted = outcome is Outcome.ACCEPTED
            if central is not None and agg is not None:
                # Released whether the votes keep it; at less than σ with fewer than t updates.
                sigma = agg.metrics.get("central_dp/noise_multiplier_effective")
                central.step(label=str(r + 1), noise_multiplier=sigma)
            if accepted and agg is not None:
                weights, state = agg.weights, dict(agg.state)
            view = RoundView.of(
                outcome,
                chain.round_info(r).aggregate_hash,
                [u.participant for u in updates],
                [
                    RevealedVote(
                        by_address[v.voter.lower()], v.weight, v.aggregate_hash, v.score,
                        v.contributions, v.own_index,
                    )
                    for v in chain.revealed_votes(r)
                ],
            )  # fmt: skip
            if screen is not None and screen.min_trust is not None and view.trust:
                history.append(view.trust)

            if evaluated is None or evaluated[0] is not weights:  # a kept model: the same
                evaluated = (weights, evaluate_round(cfg, fed, weights, held_out))
            result = evaluated[1]
            update_of = {u.participant: u for u in updates}
            participants = []
            for pid in ids:
                mine = update_of.get(pid)
                hold = result.holdout[pid]
                participants.append(
                    ParticipantRound(
                        id=pid,
                        address=address[pid],
                        role=role[pid].name.lower(),
                        attack=None if (a := cfg.attacks.get(pid)) is None else a.kind,
                        update_hash=None if mine is None else "0x" + digests[pid],
                        num_samples=None if mine is None else mine.num_samples,
                        train_loss=None
                        if mine is None
                        else _finite(mine.metrics.get("train_loss_last")),
                        epsilon=None if (ledger := ledgers[pid]) is None else ledger.epsilon,
                        delta=None if ledger is None else cfg.privacy.delta,
                        holdout=Metrics(loss=_finite(hold.loss), accuracy=_finite(hold.accuracy)),
                        vote=votes.get(pid),
                        screened=None if agg is None else agg.flagged.get(pid),
                        flagged=view.flagged.get(pid, False),
                        contribution=view.contribution.get(pid),
                        trust_score=view.trust.get(pid),
                    )
                )
            records.append(
                RoundRecord(
                    round=r + 1,
                    outcome=outcome.name.lower(),
                    accepted=accepted,
                    seed="0x" + seed.hex(),
                    global_=Metrics(
                        loss=_finite(result.global_eval.loss),
                        accuracy=_finite(result.global_eval.accuracy),
                    ),
                    aggregate_hash=None if outcome is Outcome.VOID else view.aggregate_hash,
                    global_model_hash=content_hash(weights),
                    selected=[] if agg is None else list(agg.selected),
                    screened={} if agg is None else dict(agg.flagged),
                    central_epsilon=None if central is None else central.epsilon(cfg.privacy.delta),
                    accept_weight=str(view.accept_weight),
                    reject_weight=str(view.reject_weight),
                    seconds=round(time.perf_counter() - began, 3),
                    participants=participants,
                )
            )
            progress.advance(job)
            console.print(
                f"round {r + 1}: {outcome.name.lower()}, global accuracy "
                f"{result.global_eval.accuracy:.4f}, loss {result.global_eval.loss:.4f}"
            )

    claims = {pid: str(chain.claim(address[pid])) for pid in ids}
    chain.reclaim_pool(creator)
    settled = {(s.round + 1, s.account.lower()): s for s in chain.settlements}
    for record in records:
        for p in record.participants:
            s = settled.get((record.round, p.address.lower()))
            if s is not None:
                p.reward, p.slashed = str(s.reward), str(s.slashed)
    accepted_rounds = sum(1 for x in records if x.accepted)
    last = records[-1]
    report = RunReport(
        task=TaskInfo(
            engine="simulation",
            name="simulation",
            dataset=fed.dataset,
            participants=len(ids),
            rounds=cfg.rounds,
            data_dir=str(cfg.data_dir),
        ),
        config=json.loads(cfg.model_dump_json()),
        partition={pid: [int(v) for v in row] for pid, row in zip(ids, fed.counts, strict=True)},
        rounds=records,
        claimed=claims,
        final=FinalInfo(
            accuracy=last.global_.accuracy,
            loss=last.global_.loss,
            model_hash=content_hash(weights),
            accepted_rounds=accepted_rounds,
            void_rounds=sum(1 for x in records if x.outcome == "void"),
            honest_slashes=honest_slashes(records),
        ),
    )
    summary = report.dump()
    result_ = SimulationResult(summary, weights, report, out_dir)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result_.files = {
            "summary": out_dir / "summary.json",
            "model": out_dir / "model.safetensors",
        }
        report.write(result_.files["summary"])
        write_weights(weights, result_.files["model"])
    return result_


def _signed(
    cfg: FlockConfig,
    key: LocalAccount,
    pid: str,
    chain: Alliance,
    contract: str,
    r: int,
    digest: str,
    num_samples: int,
    deadline: int,
) -> SignatureCheck:
    """What the voters check of ``pid``'s signature: the envelope it commits with its update
    (chain 0, the creator's address for the contract), against what the model recorded."""
    envelope = submission_envelope(
        cfg.attacks.get(pid), key, chain_id=0, contract=contract, task_id=chain.task_id,
        round_=r, content_hash=digest, num_samples=num_samples, deadline=deadline,
    )  # fmt: skip
    return SignatureCheck(
        envelope=envelope, signer=key.address, chain_id=0, contract=contract,
        task_id=chain.task_id, round=r, content_hash=digest, submitted_at=chain.now,
    )  # fmt: skip
