"""Vote rules by measurement: which voter judgement accepts honest aggregates and rejects harmful.

Workload (the field's anchor): 10 participants, MNIST 5k, Dirichlet alpha = 0.5, the CNN, 1 local
epoch, batch 32, lr 0.05, momentum 0.9, local DP off, FedAvg without the screen, 10 rounds
(--quick: 3), seed 0, as a plain FedAvg loop: every participant trains every round
(``flock_pipeline.round.train_participant``), the honest aggregate (``round.aggregate``) becomes
the next global model.

Each round, besides the honest aggregate A of the global model G, the bench builds candidates
from the same round's updates:

- ``noop``: G itself (nothing to judge: an honest rule should not punish it)
- ``flip_step``: G - (A - G), the sign-flipped step
- ``flip_quarter``: G - (A - G) / 4, a mildly harmful step (where a tolerance is tested)
- ``scaled_3x``: G + 3 (A - G), an overshooting step
- ``flip_3of10``: FedAvg with 3 of the 10 updates (drawn per round) sign-flipped about G
- ``noise_3of10``: FedAvg with the same 3 replaced by G + Gaussian noise of their delta's norm
- ``flip3x_3of10``, ``noise10x_3of10``: the same with 3x the norm (flipped) and 10x (noise): the
  boosted variants an attacker not bound to an honest norm submits

Ground truth is the global test split (``fed.x_test``, ``fed.y_test``, via
``flock_pipeline.evaluation.evaluate``): a candidate is harmful if the test loss rises against G,
helpful if it drops. Every participant judges every candidate on its own held-out split
(``Federation.voter_data``: label-skewed, about 80 samples): per sample i,
``d_i = loss_G(x_i) - loss_new(x_i)`` and ``c_i = correct_new(x_i) - correct_G(x_i)``, with
``se`` the paired standard error (sample std / sqrt(n)). The rules:

- R0 ``dacc>0``: mean(c) > 0 (the old rule)
- R1 ``dloss>0``: mean(d) > 0
- R2 ``loss+zSE``: score = (mean(d) + z se(d)) / mean(loss_G), clamped to [-1, 1] and rounded to
  6 decimals as the vote is encoded; accept iff score >= 0; z in {0.5, 1, 2} (z = 1 is the spec)
- R3 ``dacc+1SE``: mean(c) + se(c) >= 0
- R4 ``mean-rel``: a different contract rule: the round accepts iff the committee's stake-weighted
  mean of relative improvements mean(d) / mean(loss_G) (6 decimals) is >= 0; per voter that is
  its own relative improvement >= 0. ``mean-rel+1SE``: the same over the spec's scores (z = 1),
  i.e. the spec's votes decided on their mean score instead of their accept flags

Round decisions: committees of 5 of the 10 voters drawn uniformly (equal stakes), ``--committees``
of them per round from a fixed RNG; R0-R3 accept by stake-weighted majority (5 voters: no ties).
The JSON also holds the sortition committee (each voter independently with odds 5/10, what
Sortition does with equal stakes and votersPerRound 5: Void when nobody votes or on a tie).
Per-voter figures count every (round, voter) pair; "on the losing side" counts the committee
members whose vote lost an honest aggregate's (non-void) round: unpaid, never slashed (an
honest judgement is not misbehaviour; only another aggregate hash is slashed).

    .venv/bin/python bench/vote_rules.py            # 10 rounds, 2000 committees per round
    .venv/bin/python bench/vote_rules.py --quick    # 3 rounds, 200 committees
    .venv/bin/python bench/vote_rules.py --rebuild  # headline and tables from the stored figures

Results: bench/results/vote_rules.json (--quick: vote_rules_quick.json). The full table is
printed as markdown; the last stdout line is one JSON object with the headline: the round
acceptance rate of honest aggregates under R2 with z = 1 (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import ANCHOR, environment, isolate_tool_state  # noqa: E402

_TMP = isolate_tool_state("flock-vote-rules-bench-")

from flock_pipeline.config import FlockConfig, load_config  # noqa: E402
from flock_pipeline.data import Federation  # noqa: E402
from flock_pipeline.evaluation import evaluate  # noqa: E402
from flock_pipeline.models import build_network  # noqa: E402
from flock_pipeline.round import (  # noqa: E402
    aggregate,
    build_aggregator,
    build_screen,
    initial_weights,
    prepare_federation,
    train_participant,
)
from flock_pipeline.seeding import derive_seed  # noqa: E402
from flock_pipeline.serialization import Weights  # noqa: E402
from flock_pipeline.update import Update  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "vote_rules.json"
GOAL = 0.9
HEADLINE_RULE = "R2 loss+1SE"
COMMITTEE = 5
REPLACED = 3
SCORE_DECIMALS = 6  # the vote's encoding: to_fixed(round(score, 6))
SCORE_UNITS = 1_000_000  # 10 ** SCORE_DECIMALS


HONEST, NOOP = "honest", "noop"
CONSTRUCTED = (
    "flip_step",
    "flip_quarter",
    "scaled_3x",
    "flip_3of10",
    "noise_3of10",
    "flip3x_3of10",
    "noise10x_3of10",
)
KINDS = (HONEST, NOOP, *CONSTRUCTED)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- candidates


def _step(global_weights: Weights, target: Weights, scale: float) -> Weights:
    """G + scale (target - G) on the float tensors, in float64, rounded once."""
    out: Weights = {}
    for name, g in global_weights.items():
        if not g.is_floating_point():
            out[name] = g.clone()
            continue
        g64 = g.to(torch.float64)
        out[name] = (g64 + scale * (target[name].to(torch.float64) - g64)).to(g.dtype)
    return out


def _noise_like_delta(
    global_weights: Weights, update: Weights, seed: int, factor: float = 1.0
) -> Weights:
    """G + Gaussian noise whose total L2 norm is ``factor`` times that of the update's delta."""
    names = [n for n, g in global_weights.items() if g.is_floating_point()]
    norm = math.sqrt(
        sum(
            float((update[n].to(torch.float64) - global_weights[n].to(torch.float64)).pow(2).sum())
            for n in names
        )
    )
    gen = torch.Generator().manual_seed(seed)
    noise = {
        n: torch.randn(global_weights[n].shape, generator=gen, dtype=torch.float64) for n in names
    }
    scale = factor * norm / math.sqrt(sum(float(v.pow(2).sum()) for v in noise.values()))
    out = {n: g.clone() for n, g in global_weights.items()}
    for n in names:
        g = global_weights[n]
        out[n] = (g.to(torch.float64) + scale * noise[n]).to(g.dtype)
    return out


def _candidates(
    cfg: FlockConfig,
    updates: Sequence[Update],
    global_weights: Weights,
    round_number: int,
    replaced: Sequence[int],
) -> dict[str, Weights]:
    """The honest aggregate and every constructed candidate of one round, by kind."""
    strategy, screen = build_aggregator(cfg), build_screen(cfg)
    seed = derive_seed(cfg.seed, "agg", round_number)

    def agg(ups: Sequence[Update]) -> Weights:
        return dict(aggregate(strategy, ups, global_weights, {}, seed, screen).weights)

    honest = agg(updates)

    def replace(make: Callable[[Update], Weights]) -> list[Update]:
        return [
            Update(u.participant, make(u), u.num_samples) if i in replaced else u
            for i, u in enumerate(updates)
        ]

    def noise(factor: float) -> Callable[[Update], Weights]:
        def make(u: Update) -> Weights:
            seed = derive_seed(cfg.seed, "bench-noise", round_number, u.participant)
            return _noise_like_delta(global_weights, u.weights, seed, factor)

        return make

    out = {
        HONEST: honest,
        NOOP: {k: v.clone() for k, v in global_weights.items()},
        "flip_step": _step(global_weights, honest, -1.0),
        "flip_quarter": _step(global_weights, honest, -0.25),
        "scaled_3x": _step(global_weights, honest, 3.0),
        "flip_3of10": agg(replace(lambda u: _step(global_weights, u.weights, -1.0))),
        "noise_3of10": agg(replace(noise(1.0))),
        "flip3x_3of10": agg(replace(lambda u: _step(global_weights, u.weights, -3.0))),
        "noise10x_3of10": agg(replace(noise(10.0))),
    }
    assert tuple(out) == KINDS
    return out


# ---------------------------------------------------------------- per-voter statistics


@torch.no_grad()
def _per_sample(
    net: nn.Module, weights: Weights, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Cross-entropy and 0/1 correctness of every sample (``evaluate`` gives only the means)."""
    net.load_state_dict(weights)
    net.eval()
    logits = net(torch.from_numpy(x))
    target = torch.from_numpy(y)
    loss = F.cross_entropy(logits, target, reduction="none").to(torch.float64).numpy()
    correct = (logits.argmax(dim=1) == target).to(torch.int64).numpy()
    return loss, correct


def _se(v: npt.NDArray[Any]) -> float:
    """Standard error of the mean of paired differences (0 for fewer than 2 samples)."""
    n = len(v)
    return float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


@dataclass(frozen=True)
class VoterStats:
    """What one voter measures of one candidate on its own split."""

    n: int
    loss_old: float  # mean loss of G
    mean_d: float  # mean of d_i = loss_old_i - loss_new_i
    se_d: float
    dacc: float  # mean of c_i = correct_new_i - correct_old_i
    se_acc: float

    def row(self) -> list[float]:
        return [
            self.n,
            *(
                float(f"{v:.6g}")
                for v in (self.loss_old, self.mean_d, self.se_d, self.dacc, self.se_acc)
            ),
        ]


def _stats(
    old: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    new: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
) -> VoterStats:
    d = old[0] - new[0]
    c = (new[1] - old[1]).astype(np.float64)
    return VoterStats(
        len(d), float(old[0].mean()), float(d.mean()), _se(d), float(c.mean()), _se(c)
    )


# ---------------------------------------------------------------- the rules


def _encoded(score: float) -> int:
    """A score as the vote carries it: clamped to [-1, 1], in units of 1e-6 (exact sums)."""
    return round(max(-1.0, min(1.0, score)) * SCORE_UNITS)


def _loss_score(s: VoterStats, z: float) -> int:
    """The spec's score: (mean(d) + z se(d)) / mean(loss_old), encoded."""
    return _encoded((s.mean_d + z * s.se_d) / s.loss_old)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    vote: Callable[[VoterStats], bool]
    score: Callable[[VoterStats], int] | None = None
    """Set for a mean rule: the round accepts iff the committee's stake-weighted mean of these
    encoded scores is >= 0 (not by a majority of the votes)."""


def _tolerance_rule(z: float) -> Rule:
    return Rule(
        f"R2 loss+{z:g}SE",
        f"accept iff (mean(d) + {z:g} se(d)) / mean(loss_old) >= 0",
        lambda s: _loss_score(s, z) >= 0,
    )


def _mean_rule(name: str, z: float) -> Rule:
    return Rule(
        name,
        f"round: committee mean of (mean(d) + {z:g} se(d)) / mean(loss_old) >= 0; "
        "voter: its own >= 0",
        lambda s: _loss_score(s, z) >= 0,
        score=lambda s: _loss_score(s, z),
    )


RULES: tuple[Rule, ...] = (
    Rule("R0 dacc>0", "accept iff accuracy rises (the old rule)", lambda s: s.dacc > 0),
    Rule("R1 dloss>0", "accept iff the mean loss drops", lambda s: s.mean_d > 0),
    *(_tolerance_rule(z) for z in (0.5, 1.0, 2.0)),
    Rule("R3 dacc+1SE", "accept iff mean(c) + se(c) >= 0", lambda s: s.dacc + s.se_acc >= 0),
    _mean_rule("R4 mean-rel", 0.0),
    # The spec's revealed scores (z = 1), decided on their committee mean instead of the flags.
    _mean_rule("R4 mean-rel+1SE", 1.0),
)


# ---------------------------------------------------------------- committees


def _uniform_committees(
    rng: np.random.Generator, rounds: int, count: int, voters: int
) -> npt.NDArray[np.bool_]:
    """``count`` committees of COMMITTEE distinct voters per round: (rounds, count, voters)."""
    keys = rng.random((rounds, count, voters))
    picked = np.argsort(keys, axis=2)[:, :, :COMMITTEE]
    masks = np.zeros((rounds, count, voters), dtype=bool)
    np.put_along_axis(masks, picked, True, axis=2)
    return masks


def _sortition_committees(
    rng: np.random.Generator, rounds: int, count: int, voters: int
) -> npt.NDArray[np.bool_]:
    """Each voter independently with odds COMMITTEE / voters (equal stakes)."""
    return rng.random((rounds, count, voters)) < COMMITTEE / voters


@dataclass(frozen=True)
class Decisions:
    """A rule's round outcomes, each of shape (round, kind, committee)."""

    accepted: npt.NDArray[np.bool_]
    void: npt.NDArray[np.bool_]
    size: npt.NDArray[np.int64]  # voters in the committee
    losing: npt.NDArray[np.int64]  # of them, voters whose vote lost (none in a void round)


def _decide(
    rule: Rule,
    votes: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.int64] | None,
    masks: npt.NDArray[np.bool_],
) -> Decisions:
    """Round outcomes from per-voter votes and scores (round, kind, voter), equal stakes.

    Majority: accepted iff accept weight > reject weight; void with no voter or a tie.
    Mean rule: accepted iff the committee's summed score >= 0; void with no voter.
    """
    m = masks.astype(np.int64)  # (R, C, V)
    size = np.broadcast_to(m.sum(axis=2)[:, None, :], (*votes.shape[:2], m.shape[1]))
    yes = np.einsum("rkv,rcv->rkc", votes.astype(np.int64), m)
    if scores is not None:
        void = size == 0
        accepted = (np.einsum("rkv,rcv->rkc", scores, m) >= 0) & ~void
    else:
        void = (size == 0) | (2 * yes == size)
        accepted = 2 * yes > size
    losing = np.where(void, 0, np.where(accepted, size - yes, yes))
    return Decisions(accepted, void, size, losing)


# ---------------------------------------------------------------- summary


def _rate(values: npt.NDArray[Any]) -> float | None:
    return None if values.size == 0 else round(float(values.mean()), 4)


def _summarize(
    decisions: Decisions, votes: npt.NDArray[np.bool_], dloss: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """Rates of one rule under one committee scheme.

    ``votes``: (round, kind, voter); ``dloss``: (round, kind), the change of test loss (harmful
    iff > 0).
    """
    accepted, void = decisions.accepted, decisions.void
    harmful = dloss > 0
    k = {kind: i for i, kind in enumerate(KINDS)}
    constructed = np.zeros(harmful.shape, dtype=bool)
    constructed[:, [k[c] for c in CONSTRUCTED]] = True
    rejected = ~accepted & ~void
    per_round_accept = accepted.mean(axis=2)  # (R, K)
    per_round_reject = rejected.mean(axis=2)
    bad, good = constructed & harmful, constructed & ~harmful
    # What accepting harmful candidates costs: their test-loss rise, weighted by acceptance.
    weight = per_round_accept[bad]
    passed = dloss[bad][per_round_accept[bad] > 0.5]
    out: dict[str, Any] = {
        "honest_accepted": _rate(per_round_accept[:, k[HONEST]]),
        "harmful_rejected": _rate(per_round_reject[bad]),
        "noop_accepted": _rate(per_round_accept[:, k[NOOP]]),
        "helpful_constructed_accepted": _rate(per_round_accept[good]),
        "harmful_accepted_mean_dloss": None
        if weight.sum() == 0
        else round(float((weight * dloss[bad]).sum() / weight.sum()), 4),
        "worst_harmful_mostly_accepted_dloss": round(float(passed.max()), 4)
        if passed.size
        else None,
        "honest_void": _rate(void.mean(axis=2)[:, k[HONEST]]),
        "voter_honest_false_reject": _rate(~votes[:, k[HONEST], :]),
        # Honest voters (all are) on the losing side of an honest aggregate's round: unpaid.
        "voter_honest_losing_side": round(
            float(decisions.losing[:, k[HONEST]].sum() / decisions.size[:, k[HONEST]].sum()), 4
        ),
        "voter_harmful_rejected": _rate(~votes[bad]),
        "voter_noop_accepted": _rate(votes[:, k[NOOP], :]),
        "honest_accepted_per_round": [round(float(v), 4) for v in per_round_accept[:, 0]],
        "harmful_rejected_by_kind": {
            kind: _rate(per_round_reject[harmful[:, k[kind]], k[kind]]) for kind in CONSTRUCTED
        },
        "voter_harmful_rejected_by_kind": {
            kind: _rate(~votes[harmful[:, k[kind]], k[kind], :]) for kind in CONSTRUCTED
        },
    }
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _markdown(header: Sequence[str], align: str, rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    lines = ["| " + " | ".join(header) + " |", "|" + rule]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _rate_table(summary: dict[str, dict[str, Any]]) -> str:
    return _markdown(
        [
            "rule",
            "honest accepted (round)",
            "harmful rejected (round)",
            "no-op accepted (round)",
            "helpful constructed accepted (round)",
            "voter false-reject honest",
            "voter harmful rejected",
            "honest voters on losing side",
            "test dloss of accepted harmful (mean / worst >50%)",
        ],
        "lrrrrrrrr",
        [
            [
                name,
                _pct(s["honest_accepted"]),
                _pct(s["harmful_rejected"]),
                _pct(s["noop_accepted"]),
                _pct(s["helpful_constructed_accepted"]),
                _pct(s["voter_honest_false_reject"]),
                _pct(s["voter_harmful_rejected"]),
                _pct(s["voter_honest_losing_side"]),
                f"{_num(s['harmful_accepted_mean_dloss'])} / "
                f"{_num(s['worst_harmful_mostly_accepted_dloss'])}",
            ]
            for name, s in summary.items()
        ],
    )


def _kind_table(summary: dict[str, dict[str, Any]], counts: dict[str, Any]) -> str:
    harmful = counts["harmful_rounds_by_kind"]
    return _markdown(
        ["rule (round rejection of harmful)", *(f"{c} ({harmful[c]})" for c in CONSTRUCTED)],
        "l" + "r" * len(CONSTRUCTED),
        [
            [name, *(_pct(s["harmful_rejected_by_kind"][c]) for c in CONSTRUCTED)]
            for name, s in summary.items()
        ],
    )


def _tables(summary: dict[str, dict[str, Any]], counts: dict[str, Any]) -> str:
    return _rate_table(summary) + "\n\n" + _kind_table(summary, counts)


SCHEMES = {
    "uniform5": f"committees of {COMMITTEE} drawn uniformly (majority; R4: mean score)",
    "sortition": "sortition committees (each voter with odds 1/2; void = no voter or tie)",
}


def headline(payload: dict[str, Any]) -> dict[str, Any]:
    """The headline of a results file, from its stored figures."""
    head = payload["summary"]["uniform5"][HEADLINE_RULE]
    return {
        "metric": "honest_accept_rate_r2_z1",
        "value": head["honest_accepted"],
        "goal": GOAL,
        "better": "higher",
        "harmful_rejected": head["harmful_rejected"],
        "noop_accepted": head["noop_accepted"],
        "voter_honest_false_reject": head["voter_honest_false_reject"],
        "rounds": payload["counts"]["rounds"],
        "quick": payload["quick"],
    }


def doc_tables(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The results file's tables for docs/benchmarks.md, from its stored figures."""
    counts = payload["counts"]
    out = []
    for scheme, what in SCHEMES.items():
        summary = payload["summary"][scheme]
        out.append({"title": f"Rates by rule, {what}", "markdown": _rate_table(summary)})
        out.append({
            "title": f"Round rejection of harmful candidates by kind, {what}",
            "markdown": _kind_table(summary, counts),
            "note": "In brackets: the rounds in which the kind was harmful on the test split.",
        })  # fmt: skip
    return out


# ---------------------------------------------------------------- the run


def _config(rounds: int, data_dir: Path) -> FlockConfig:
    return load_config(None, {**ANCHOR, "rounds": rounds, "data_dir": str(data_dir)})


def _voter_splits(fed: Federation) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    return [fed.voter_data(i) for i in range(len(fed.participants))]


def run(rounds: int, committees: int, seed: int) -> dict[str, Any]:
    cfg = _config(rounds, Path(tempfile.mkdtemp(prefix="vote-rules-", dir=_TMP)))
    fed = prepare_federation(cfg)
    n = len(fed.participants)
    net = build_network(cfg.model.name, fed.input_shape, fed.num_classes)
    splits = _voter_splits(fed)
    rng = np.random.default_rng(seed)
    weights = initial_weights(cfg, fed)

    stats: list[list[list[VoterStats]]] = []  # (round, kind, voter)
    truth: list[dict[str, dict[str, float]]] = []
    trajectory: list[dict[str, Any]] = []
    consistency = 0.0  # per-sample means against evaluate(): they must agree
    t0 = time.perf_counter()
    for r in range(1, rounds + 1):
        t_round = time.perf_counter()
        updates = [train_participant(cfg, fed, i, weights, r, None) for i in range(n)]
        t_train = time.perf_counter() - t_round
        replaced = sorted(int(i) for i in rng.choice(n, size=REPLACED, replace=False))
        cands = _candidates(cfg, updates, weights, r, replaced)
        before = evaluate(net, weights, fed.x_test, fed.y_test)
        old = [_per_sample(net, weights, x, y) for x, y in splits]
        for (x, y), o in zip(splits, old, strict=True):
            consistency = max(consistency, abs(evaluate(net, weights, x, y).loss - o[0].mean()))
        round_stats: list[list[VoterStats]] = []
        round_truth: dict[str, dict[str, float]] = {}
        for kind, cand in cands.items():
            after = evaluate(net, cand, fed.x_test, fed.y_test)
            round_truth[kind] = {
                "test_loss": after.loss,
                "test_accuracy": after.accuracy,
                "dloss": after.loss - before.loss,
                "dacc": after.accuracy - before.accuracy,
            }
            new = [_per_sample(net, cand, x, y) for x, y in splits]
            round_stats.append([_stats(o, w) for o, w in zip(old, new, strict=True)])
        stats.append(round_stats)
        truth.append(round_truth)
        weights = cands[HONEST]
        trajectory.append(
            {
                "round": r,
                "replaced": [fed.participants[i].id for i in replaced],
                "test_accuracy_before": before.accuracy,
                "test_loss_before": before.loss,
                "test_accuracy_after": round_truth[HONEST]["test_accuracy"],
                "test_loss_after": round_truth[HONEST]["test_loss"],
                "train_seconds": round(t_train, 2),
                "seconds": round(time.perf_counter() - t_round, 2),
            }
        )
        _log(
            f"round {r}/{rounds}: test acc {before.accuracy:.4f} -> "
            f"{round_truth[HONEST]['test_accuracy']:.4f}, "
            + ", ".join(f"{k} dloss {v['dloss']:+.3f}" for k, v in round_truth.items())
            + f" ({time.perf_counter() - t_round:.1f} s)"
        )

    dloss = np.array([[truth[r][k]["dloss"] for k in KINDS] for r in range(rounds)])
    harmful = dloss > 0
    masks = {
        "uniform5": _uniform_committees(rng, rounds, committees, n),
        "sortition": _sortition_committees(rng, rounds, committees, n),
    }
    summary: dict[str, dict[str, dict[str, Any]]] = {scheme: {} for scheme in masks}
    for rule in RULES:
        votes = np.array([[[rule.vote(s) for s in kind] for kind in rs] for rs in stats])
        scores = (
            None
            if rule.score is None
            else np.array([[[rule.score(s) for s in kind] for kind in rs] for rs in stats])
        )
        for scheme, m in masks.items():
            summary[scheme][rule.name] = _summarize(_decide(rule, votes, scores, m), votes, dloss)

    voter_sizes = [len(y) for _, y in splits]
    counts = {
        "rounds": rounds,
        "honest_harmful_on_test": int(harmful[:, KINDS.index(HONEST)].sum()),
        "harmful_rounds_by_kind": {c: int(harmful[:, KINDS.index(c)].sum()) for c in CONSTRUCTED},
        "harmful_constructed": int(harmful[:, 2:].sum()),
        "helpful_constructed": int((~harmful[:, 2:]).sum()),
    }
    return {
        "config": cfg.model_dump(mode="json", exclude={"data_dir"}),
        "voter_samples": voter_sizes,
        "test_samples": len(fed.y_test),
        "committees_per_round": committees,
        "counts": counts,
        "summary": summary,
        "ground_truth": truth,
        "trajectory": trajectory,
        "voter_stats": {
            "columns": ["n", "loss_old", "mean_d", "se_d", "dacc", "se_acc"],
            "by_round": [
                {k: [s.row() for s in kind] for k, kind in zip(KINDS, rs, strict=True)}
                for rs in stats
            ],
        },
        "per_sample_vs_evaluate_max_abs_diff": consistency,
        "seconds_loop": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 200 committees")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--committees", type=int, default=None, help="per round")
    parser.add_argument("--seed", type=int, default=0, help="committee and replacement RNG")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--rebuild", action="store_true",
        help="no run: add the headline and tables to the stored results file (or --out)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rebuild:
        path = args.out or RESULTS.with_name(
            "vote_rules" + ("_quick" if args.quick else "") + ".json"
        )
        print(json.dumps(rebuild(path)["headline"]))
        return

    rounds = args.rounds or (3 if args.quick else 10)
    committees = args.committees or (200 if args.quick else 2000)
    # The CNN is small: on a shared 2-core machine one thread is faster than two fighting.
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = run(rounds, committees, args.seed)
    payload: dict[str, Any] = {
        "benchmark": "vote_rules",
        "quick": args.quick,
        "settings": {
            "workload": "anchor: plain FedAvg loop, every participant trains every round",
            "candidates": list(KINDS),
            "replaced_per_round": REPLACED,
            "committee": f"{COMMITTEE} of the participants, equal stakes",
            "ground_truth": "harmful iff the global test loss rises against the round's model",
            "rules": {r.name: r.description for r in RULES},
            "score_decimals": SCORE_DECIMALS,
            "seed": args.seed,
        },
        **result,
        "headline_rule": HEADLINE_RULE,
        "goal_honest_accepted_min": GOAL,
        "environment": environment(load_before),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    payload["headline"] = headline(payload)
    payload["tables"] = doc_tables(payload)
    out = args.out or RESULTS.with_name("vote_rules" + ("_quick" if args.quick else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")

    counts = result["counts"]
    print(
        f"rounds={rounds} committees/round={committees} voters={len(result['voter_samples'])} "
        f"voter samples={min(result['voter_samples'])}..{max(result['voter_samples'])} "
        f"harmful constructed={counts['harmful_constructed']} "
        f"helpful constructed={counts['helpful_constructed']} "
        f"honest harmful on test={counts['honest_harmful_on_test']}"
    )
    print(f"\nRound decision by {COMMITTEE} uniformly drawn voters (majority; R4: mean score):\n")
    print(_tables(result["summary"]["uniform5"], counts))
    print("\nSortition committees (each voter with odds 1/2; void = no voter or tie):\n")
    print(_tables(result["summary"]["sortition"], counts))
    print()
    print(json.dumps(payload["headline"]))


def rebuild(path: Path) -> dict[str, Any]:
    """Put the headline and the tables into a stored results file, its figures unchanged."""
    payload: dict[str, Any] = json.loads(path.read_text())
    payload["headline"] = headline(payload)
    payload["tables"] = doc_tables(payload)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
