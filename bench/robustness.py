"""Robustness: every aggregation strategy against every attack, and who gets paid for it.

Two parts, both with 10 participants of whom 3 (p1, p4, p7) are malicious (30%), Dirichlet
alpha=0.5 label skew, local DP-SGD off (``privacy.enabled: false``) so that only the aggregation
rule and the attack differ, MLP model (the fastest of the two networks on a shared CPU):

- accuracy: the simulation (``flock_pipeline.simulation.run_simulation``, one
  ``Federation`` per seed reused via ``fed=``) for every strategy in ``STRATEGIES`` x every
  attack in ``ATTACK_KINDS`` plus ``none`` (all honest), for task seeds 0, 1, 2 (``--seeds``;
  --quick: seed 0): the seed moves the partition, the initial model and the training, and one
  seed's cell moves by several points with any change of trajectory, so a cell is the mean over
  the seeds and every drop is taken per seed, then averaged. The cells run on ``--workers``
  processes (default one per core, one torch thread each); each is deterministic given its seed.
  The simulation runs the whole protocol (sortition, votes, settlement), so a round the voters
  reject keeps the global model. ``dishonest_voter`` attacks only the votes, which the rewards
  part measures, so that column is n/a here. Full mode: Fashion-MNIST capped at ``data.max_samples``
  training samples; --quick: MNIST 5k.
  The screen (``aggregation.screen``, on by default) runs before every strategy; ``--no-screen``
  turns it off to measure the strategies alone. Besides the all-honest run, each strategy gets
  an honest-only reference: the same strategy with the 3 malicious participants' updates left
  out. It is the free_rider run under the screen (the bench checks that the screen flagged
  p1, p4, p7 as free riders in every round of it), and it bounds what any rule can reach when
  30% of the participants contribute nothing honest.
- rewards: the real flow (``flows.federated.federated_task``: on-chain sortition, commit-reveal
  votes with contribution scores, settlement and pull claims on a managed local anvil, a fresh
  ``data_dir`` per run) with FedAvg x all-honest (``none``) and each attack x task seeds 0, 1,
  2 (``--reward-seeds``; --quick: seed 0), on the accuracy part's data (Fashion-MNIST 12k;
  --quick: MNIST 5k and only none, free_rider, sign_flip, dishonest_voter and the four hostile
  updates), 5 rounds (--quick 3). The hostile updates: ``corrupt_update``, ``nan_update`` and
  ``wrong_shape`` are invalid (``flock_pipeline.validity``: flagged ``invalid:<reason>`` and
  penalized like a free rider); ``inflated_samples`` claims 1e6 x its samples, which the chain
  refuses against the registered data set size (and ``aggregation.max_weight_share`` bounds
  where it does not). The seed moves the sortition,
  the partition and the training, so three seeds give three different games. Proposers are paid
  stake x contribution (relative leave-one-out held-out loss gain, stake-weighted mean over the
  accepting voters); a free rider or copy (flagged by more than half of the scoring voter
  stake, either side) is penalized at ``chain.penalty_bps``, accepted round or not; other
  exclusions (distrust, statistical outliers) only exclude. Voters on the losing side are
  unpaid; a voter that reveals another aggregate hash is slashed at ``chain.voter_slash_bps``.
  Net reward per participant = sum of rewards - sum of
  slashes over the rounds, in FLOCK; the table also splits out the net of the rounds in which
  the participant held the role the attack acts in (proposals, or votes for a dishonest voter;
  a round with both roles, whose one settlement sums both, counts for a role unless that role
  provably netted 0 there: a proposal neither flagged nor paid, a vote neither paid nor
  slashable; see ``_both_sides``).
- voter_slash (only with ``--parts voter_slash``): the rewards part's dishonest-voter flow at
  ``chain.voter_slash_bps`` 10%, 50%, 70% and 100%, same seeds: what voting nets a voter that
  reverses its measurement, and an honest one.
- trust_cost (only with ``--parts trust_cost``): every strategy all-honest and under label
  flipping, with the screen's trust check at its default and off (``min_trust: null``), on the
  accuracy part's seeds and data: what the check costs honest participants whose data the
  validators do not share, and what it buys against label flipping.
- data_loss (only with ``--parts data_loss``): FedAvg, the median and the trimmed mean all
  honest with 0 to 4 of p1, p4, p7, p9 free-riding (flagged every round), on the accuracy part's
  seeds and data: what each participant's data is worth to each rule, with no attack at all.

    .venv/bin/python bench/robustness.py            # Fashion-MNIST x 3 seeds + 21 flow runs
    .venv/bin/python bench/robustness.py --quick    # MNIST 5k + 8 flow runs
    .venv/bin/python bench/robustness.py --parts rewards   # one part; the other keeps its figures
    .venv/bin/python bench/robustness.py --parts voter_slash   # the dishonest voter at 4 rates
    .venv/bin/python bench/robustness.py --parts trust_cost    # the trust check on and off
    .venv/bin/python bench/robustness.py --parts data_loss     # participants left out, no attack
    .venv/bin/python bench/robustness.py --validation shared   # voters score on a shared set

``--validation shared`` sets ``data.validation: shared`` for every part (the voters score on the
task's class-balanced validation set instead of their own held-out splits) and writes
``robustness[_quick][_noscreen]_shared.json``.

The last stdout line is one JSON object with the headline: ``tasks_halted`` (simulations and
flow runs an attack made fail; goal 0), ``attackers_positive_from_attack`` (attackers whose
attacking role netted > 0 in a flow run; goal 0) with ``captured_rounds`` (per dishonest-voter
run, the rounds in which the malicious voters held most of the votes on the round's hash: a
coalition that decides a round alone is paid as its winning side, see
bench/committee_capture.py), ``honest_slashes_all_honest`` (honest
participant-rounds slashed in the all-honest flow runs; goal 0) and ``trust_goal_pass`` (all
three met); and the worst accuracy drop (in points, mean over the seeds) of a robust strategy
(median, trimmed mean, Krum, Multi-Krum, Bulyan) under any attack, against the same strategy's
all-honest run (goal <= 3.0), with the worst drop against the honest-only reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "robustness.json"
GOAL = 3.0

from _common import environment, isolate_tool_state  # noqa: E402

_TMP = isolate_tool_state("flock-robustness-bench-")  # before prefect (the rewards part)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from flock_pipeline.aggregation.registry import STRATEGIES  # noqa: E402
from flock_pipeline.attacks.spec import ATTACK_KINDS  # noqa: E402
from flock_pipeline.config import ChainConfig, FlockConfig, load_config  # noqa: E402
from flock_pipeline.round import initial_weights, prepare_federation, train_participant  # noqa: E402
from flock_pipeline.simulation import run_simulation  # noqa: E402

PARTICIPANTS = 10
MALICIOUS = ("p1", "p4", "p7")
ROBUST = ("fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
VOTE_ONLY = ("dishonest_voter",)  # attacks only the votes: the rewards part measures it
PROPOSES = ("proposer", "both")  # RunReport roles that submit an update
VOTES = ("voter", "both")  # RunReport roles that vote
QUICK_REWARD_ATTACKS = (
    "none", "free_rider", "sign_flip", "dishonest_voter", "corrupt_update", "nan_update",
    "wrong_shape", "inflated_samples",
)  # fmt: skip
INVALID = ("corrupt_update", "nan_update", "wrong_shape")  # flagged invalid, never aggregated
TOKEN = 10**18

# num_malicious is f. Bulyan needs n >= 4f + 3 updates: with n = 10 that allows f = 1 only.
STRATEGY_PARAMS: dict[str, dict[str, Any]] = {
    "krum": {"num_malicious": 3},
    "multikrum": {"num_malicious": 3},
    "bulyan": {"num_malicious": 1},
    "fedtrimmedavg": {"beta": 0.3},
}
ATTACK_PARAMS: dict[str, dict[str, Any]] = {
    "boosted": {"scale": 10.0},
    "gaussian_noise": {"sigma": 1.0},
    "label_flip": {"flip_to": "reverse"},
    "copier": {"copy_from": "p0"},  # p0 is honest
    "inflated_samples": {"factor": 1e6},
}
FLOW_ATTACK_PARAMS: dict[str, dict[str, Any]] = {"copier": {"copy_from": None}}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _attacks(
    attack: str, flow: bool = False, malicious: tuple[str, ...] = MALICIOUS
) -> dict[str, Any]:
    if attack == "none":
        return {}
    params = dict(ATTACK_PARAMS.get(attack, {}))
    if flow and attack == "copier":
        # In the flow only the round's proposers (on-chain sortition) submit: a fixed copy_from
        # makes every round where p0 is not a proposer fail with ConfigError, so the flow's
        # copiers copy the first other proposer (copy_from None) instead.
        params.update(FLOW_ATTACK_PARAMS["copier"])
    return {pid: {"kind": attack, **params} for pid in malicious}


def _config(
    data_dir: Path,
    dataset: str,
    max_samples: int | None,
    rounds: int,
    epochs: int,
    strategy: str = "fedavg",
    attack: str = "none",
    model: str = "mlp",
    flow: bool = False,
    screen: bool = True,
    seed: int = 0,
    voter_slash_bps: int | None = None,
    trust: bool = True,
    malicious: tuple[str, ...] = MALICIOUS,
) -> FlockConfig:
    path = None
    if not trust:  # null is only possible in a task file (overrides drop None values)
        path = data_dir.parent / "no-trust.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("aggregation:\n  screen:\n    min_trust: null\n")
    return load_config(
        path,
        {
            "data_dir": str(data_dir),
            "participants": PARTICIPANTS,
            "rounds": rounds,
            "seed": seed,
            "data.dataset": dataset,
            "data.max_samples": max_samples,
            "partition.scheme": "dirichlet",
            "partition.alpha": 0.5,
            "model.name": model,
            "training.local_epochs": epochs,
            "privacy.enabled": False,
            "aggregation.strategy": strategy,
            "aggregation.params": STRATEGY_PARAMS.get(strategy, {}),
            "attacks": _attacks(attack, flow, malicious),
            "aggregation.screen.enabled": screen,
            "chain.voter_slash_bps": voter_slash_bps,  # None: the default
        },
    )


@contextlib.contextmanager
def _fresh_dir(label: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=_TMP))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _rms(tensors: list[torch.Tensor]) -> float:
    flat = torch.cat([t.detach().to(torch.float64).flatten() for t in tensors])
    return float(flat.pow(2).mean().sqrt())


# ---------------------------------------------------------------- accuracy


def _scale_check(cfg: FlockConfig, fed: Any) -> dict[str, float]:
    """Per-coordinate RMS of the initial weights and of one honest round-1 update's delta, to
    put the Gaussian-noise attack's sigma in proportion."""
    g = initial_weights(cfg, fed)
    u = train_participant(cfg, fed, 0, g, 1, None)
    names = [k for k, v in g.items() if v.is_floating_point()]
    weight_rms = _rms([g[k] for k in names])
    delta_rms = _rms([u.weights[k] - g[k] for k in names])
    sigma = float(ATTACK_PARAMS["gaussian_noise"]["sigma"])
    return {
        "initial_weight_rms": weight_rms,
        "honest_delta_rms_p0_round1": delta_rms,
        "sigma": sigma,
        "sigma_over_weight_rms": sigma / weight_rms,
        "sigma_over_delta_rms": sigma / delta_rms,
    }


_WORKER: dict[str, Path] = {}  # per worker process: its data folder
_FEDS: dict[int, Any] = {}  # per worker process: the Federation of each seed


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _WORKER["dir"] = Path(tempfile.mkdtemp(prefix="accuracy-", dir=_TMP))


class _Cell(NamedTuple):
    """One plain simulation of the accuracy or trust_cost part."""

    dataset: str
    max_samples: int | None
    rounds: int
    epochs: int
    screen: bool
    seed: int
    strategy: str
    attack: str
    trust: bool = True
    malicious: tuple[str, ...] = MALICIOUS


class _Scope(NamedTuple):
    """What every simulation of a part shares: the data, the run's length, the task seeds, and
    the worker processes and torch threads they run on."""

    dataset: str
    max_samples: int | None
    rounds: int
    epochs: int
    seeds: tuple[int, ...]
    workers: int
    threads: int

    def cell(
        self,
        seed: int,
        strategy: str,
        attack: str,
        screen: bool = True,
        trust: bool = True,
        malicious: tuple[str, ...] = MALICIOUS,
    ) -> _Cell:
        return _Cell(self.dataset, self.max_samples, self.rounds, self.epochs, screen, seed,
                     strategy, attack, trust, malicious)  # fmt: skip

    def run(self, jobs: list[_Cell], label: str) -> list[dict[str, Any]]:
        return _run_cells(jobs, self.workers, self.threads, label)


def _flagged_every_round(cell: dict[str, Any], participants: Sequence[str]) -> bool:
    """Whether the screen left ``participants`` out as free riders in every round of ``cell``
    (then the run is the rule without their data). ``flagged_per_round`` holds the report's
    ``rounds[].screened``: the screen's reasons, not the voters' flags."""
    return all(
        all(f.get(m) == "free_rider" for m in participants) for f in cell["flagged_per_round"]
    )


def _accuracy_cell(job: _Cell) -> dict[str, Any]:
    """One simulation in a worker; the seed's Federation is built once per worker and reused."""
    dataset, max_samples, rounds, epochs, screen, seed, strategy, attack, trust, malicious = job
    data = _WORKER["dir"] / f"seed{seed}"
    if seed not in _FEDS:
        base = _config(data, dataset, max_samples, rounds, epochs, screen=screen, seed=seed)
        _FEDS[seed] = prepare_federation(base)
    cfg = _config(data, dataset, max_samples, rounds, epochs, strategy, attack, screen=screen,
                  seed=seed, trust=trust, malicious=malicious)  # fmt: skip
    t0 = time.perf_counter()
    try:
        result = run_simulation(cfg, None, Console(stderr=True, quiet=True), fed=_FEDS[seed])
    except Exception as exc:  # the attack halted the task: what the headline counts
        return {"accuracy": None, "diverged": f"{type(exc).__name__}: {exc}",
                "halted": True, "flagged_per_round": [],
                "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
    wall = time.perf_counter() - t0
    rounds_out = result.summary["rounds"]
    selected = rounds_out[-1]["selected"]
    return {
        "accuracy": result.final_accuracy,
        "accuracy_per_round": [r["global"]["accuracy"] for r in rounds_out],
        "final_loss": result.summary["final"]["loss"],
        "selected_last_round": selected,
        "flagged_per_round": [r["screened"] for r in rounds_out],
        "malicious_selected_last_round": sorted(set(selected) & set(MALICIOUS)),
        "seconds": round(wall, 3),
    }


def _mean(values: Sequence[float | None], digits: int | None = None) -> float | None:
    """The mean (rounded to ``digits`` if given); None when there is no value or any is None (a
    diverged run, a missing reference)."""
    if not values or any(v is None for v in values):
        return None
    mean = sum(v for v in values if v is not None) / len(values)
    return mean if digits is None else round(mean, digits)


def _pct(value: float | None) -> str:
    """An accuracy as a table cell: percent, or "diverged"."""
    return "diverged" if value is None else f"{100 * value:.1f}"


def _run_cells(jobs: list[_Cell], workers: int, threads: int, label: str) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``workers`` processes; the results in the order of ``jobs``."""
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(workers, context, _worker_init, (threads,)) as pool:
        futures = {pool.submit(_accuracy_cell, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            job, cell = jobs[i], future.result()
            out[i] = cell
            trust = "" if job.trust else " no-trust"
            acc = "diverged" if cell["accuracy"] is None else f"{cell['accuracy']:.4f}"
            _log(
                f"[{label} {done}/{len(jobs)}] seed {job.seed} {job.strategy:<13} "
                f"{job.attack:<15}{trust} acc {acc} ({cell['seconds']:.1f}s)"
            )
    return [c for c in out if c is not None]


def summarize_accuracy(
    runs: dict[str, dict[str, dict[str, Any]]], seeds: tuple[int, ...], screen: bool
) -> dict[str, Any]:
    """The accuracy part's figures from its per-seed cells (``runs``: seed -> strategy ->
    attack -> cell): per-seed drops, their means, the honest-only references and the goal."""
    attacks = ["none", *ATTACK_KINDS]
    runnable = [a for a in attacks if a not in VOTE_ONLY]
    # Per seed: the honest-only reference is the free-rider run if the screen flagged the
    # malicious participants as free riders in every round of it (it may also have left out an
    # honest update, as it can in any run).
    honest_only_by_seed: dict[str, dict[str, float | None]] = {}
    for k, run in runs.items():
        honest_only_by_seed[k] = {}
        for strategy, row in run.items():
            rider = row["free_rider"]
            excluded = (
                screen and rider["accuracy"] is not None and _flagged_every_round(rider, MALICIOUS)
            )
            honest_only_by_seed[k][strategy] = rider["accuracy"] if excluded else None
        for strategy, row in run.items():
            honest = row["none"]["accuracy"]
            alone = honest_only_by_seed[k][strategy]
            for cell in row.values():
                acc = cell["accuracy"]  # None: the run diverged
                cell["drop_vs_same_strategy_honest"] = (
                    None if acc is None or honest is None else round(100 * (honest - acc), 2)
                )
                cell["drop_vs_same_strategy_honest_only"] = (
                    None if acc is None or alone is None else round(100 * (alone - acc), 2)
                )

    # Across seeds: the mean of each figure; a seed that diverged, or a reference missing in
    # any seed, makes the mean n/a.
    cells: dict[str, dict[str, Any]] = {s: {} for s in STRATEGIES}
    for strategy in STRATEGIES:
        for attack in attacks:
            if attack in VOTE_ONLY:
                cells[strategy][attack] = None
                continue
            per = [runs[str(k)][strategy][attack] for k in seeds]
            accs = [c["accuracy"] for c in per]
            ok = [a for a in accs if a is not None]
            vs_honest = [c["drop_vs_same_strategy_honest"] for c in per]
            vs_alone = [c["drop_vs_same_strategy_honest_only"] for c in per]
            cells[strategy][attack] = {
                "accuracy": _mean(accs, 4),
                "accuracy_by_seed": accs,
                "diverged_seeds": [k for k, a in zip(seeds, accs, strict=True) if a is None],
                "accuracy_min": min(ok) if ok else None,
                "accuracy_max": max(ok) if ok else None,
                "drop_vs_same_strategy_honest": _mean(vs_honest, 2),
                "drop_vs_same_strategy_honest_by_seed": vs_honest,
                "drop_vs_same_strategy_honest_only": _mean(vs_alone, 2),
                "drop_vs_same_strategy_honest_only_by_seed": vs_alone,
            }
    honest_fedavg = cells["fedavg"]["none"]["accuracy"]
    for row in cells.values():
        for cell in row.values():
            if cell is not None:
                cell["drop_vs_fedavg_honest"] = (
                    None
                    if cell["accuracy"] is None or honest_fedavg is None
                    else round(100 * (honest_fedavg - cell["accuracy"]), 2)
                )
    honest_only: dict[str, float | None] = {}
    for strategy in STRATEGIES:
        refs = [honest_only_by_seed[str(k)][strategy] for k in seeds]
        honest_only[strategy] = _mean(refs, 4)

    robust_drops = [
        (cells[s][a]["drop_vs_same_strategy_honest"], s, a)
        for s in ROBUST
        for a in runnable
        if a != "none" and cells[s][a]["drop_vs_same_strategy_honest"] is not None
    ]
    diverged = [
        {"strategy": s, "attack": a, "drop": None, "diverged_seeds": cells[s][a]["diverged_seeds"]}
        for s in ROBUST
        for a in runnable
        if cells[s][a]["diverged_seeds"]
    ]
    worst, worst_s, worst_a = max(robust_drops) if robust_drops else (None, None, None)
    alone_drops = [
        (cells[s][a]["drop_vs_same_strategy_honest_only"], s, a)
        for s in ROBUST
        for a in runnable
        if a != "none" and cells[s][a]["drop_vs_same_strategy_honest_only"] is not None
    ]
    worst_alone = max(alone_drops) if alone_drops else None
    failing = diverged + sorted(
        [{"strategy": s, "attack": a, "drop": v} for v, s, a in robust_drops if v > GOAL],
        key=lambda x: -x["drop"],
    )
    failing_alone = sorted(
        [{"strategy": s, "attack": a, "drop": v} for v, s, a in alone_drops if v > GOAL],
        key=lambda x: -x["drop"],
    )
    halted = [
        {"seed": k, "strategy": strategy, "attack": attack, "error": cell.get("diverged")}
        for k, run in runs.items()
        for strategy, row in run.items()
        for attack, cell in row.items()
        if cell.get("halted")
    ]
    return {
        "cells": cells,
        "attacks": attacks,
        "halted": halted,
        "honest_fedavg_accuracy": honest_fedavg,
        "worst_robust_drop": {"value": worst, "strategy": worst_s, "attack": worst_a},
        "honest_only_accuracy": honest_only,
        "honest_only_accuracy_by_seed": honest_only_by_seed,
        "worst_robust_drop_vs_honest_only": None
        if worst_alone is None
        else {"value": worst_alone[0], "strategy": worst_alone[1], "attack": worst_alone[2]},
        "robust_cells_over_goal": failing,
        "robust_cells_over_goal_vs_honest_only": failing_alone,
    }


def accuracy_part(scope: _Scope, screen: bool = True) -> dict[str, Any]:
    """Every strategy x attack for every task seed (the seed moves the partition, the initial
    model and the training), on ``workers`` processes. Each cell is deterministic given its
    seed, so how the cells are spread over the workers does not change any figure."""
    dataset, max_samples, rounds, epochs, seeds, workers, _ = scope
    attacks = ["none", *ATTACK_KINDS]
    runnable = [a for a in attacks if a not in VOTE_ONLY]
    t_all = time.perf_counter()
    with _fresh_dir("accuracy") as d:
        base = _config(d / "data", dataset, max_samples, rounds, epochs, screen=screen)
        t0 = time.perf_counter()
        fed = prepare_federation(base)
        data_seconds = time.perf_counter() - t0
        scale = _scale_check(base, fed)
        train_sizes = {p.id: len(p.y_train) for p in fed.participants}
    jobs = [
        scope.cell(seed, strategy, attack, screen=screen)
        for seed in seeds
        for attack in runnable
        for strategy in STRATEGIES
    ]
    runs: dict[str, dict[str, dict[str, Any]]] = {
        str(k): {s: {} for s in STRATEGIES} for k in seeds
    }
    for job, cell in zip(jobs, scope.run(jobs, "accuracy"), strict=True):
        runs[str(job.seed)][job.strategy][job.attack] = cell

    summary = summarize_accuracy(runs, seeds, screen)
    return {
        "settings": {
            "dataset": dataset,
            "max_samples": max_samples,
            "test_samples": len(fed.y_test),
            "train_samples_per_participant_seed0": train_sizes,
            "participants": PARTICIPANTS,
            "malicious": list(MALICIOUS),
            "rounds": rounds,
            "local_epochs": epochs,
            "seeds": list(seeds),
            "workers": workers,
            "model": "mlp",
            "privacy": "off (local DP-SGD disabled to isolate robustness); no central DP",
            "screen": "on (default thresholds)" if screen else "off",
            "partition": "dirichlet alpha=0.5",
            "strategy_params": STRATEGY_PARAMS,
            "attack_params": ATTACK_PARAMS,
            "figures": "each cell is the mean over the seeds; drops are per seed, then averaged",
            # the run's throw-away data folder is no figure: keep machine paths out of results
            "config": {**json.loads(base.model_dump_json()), "data_dir": "<tmp>"},
        },
        "gaussian_noise_scale_check": scale,
        "runs": runs,
        "not_applicable": {
            a: "attacks only the votes: measured in the rewards part" for a in VOTE_ONLY
        },
        **summary,
        "data_seconds": round(data_seconds, 3),
        "seconds": round(time.perf_counter() - t_all, 3),
    }


def trust_cost_part(scope: _Scope) -> dict[str, Any]:
    """What the screen's trust check costs honest participants and what it buys: every
    strategy all-honest and under label flipping, with ``min_trust`` at its default and off,
    per seed. Honest exclusions count (participant, round) pairs where the screen left out an
    honest participant's update as distrusted (all-honest: any participant's)."""
    t_all = time.perf_counter()
    settings = [(a, t) for a in ("none", "label_flip") for t in (True, False)]
    jobs = [
        scope.cell(seed, strategy, attack, trust=trust)
        for seed in scope.seeds
        for attack, trust in settings
        for strategy in STRATEGIES
    ]
    results = scope.run(jobs, "trust_cost")
    by: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for job, cell in zip(jobs, results, strict=True):
        by.setdefault((job.strategy, job.attack, job.trust), []).append(cell)

    def honest_exclusions(cells: list[dict[str, Any]], attack: str) -> list[int]:
        malicious = () if attack == "none" else MALICIOUS  # all-honest: everyone is honest
        return [
            sum(1 for f in c["flagged_per_round"] for pid, why in f.items()
                if why == "distrusted" and pid not in malicious)
            for c in cells
        ]  # fmt: skip

    rows: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        row: dict[str, Any] = {}
        for attack in ("none", "label_flip"):
            on = [c["accuracy"] for c in by[(strategy, attack, True)]]
            off = [c["accuracy"] for c in by[(strategy, attack, False)]]
            gains = [
                None if a is None or b is None else 100 * (a - b)
                for a, b in zip(on, off, strict=True)
            ]
            row[attack] = {
                "accuracy_trust": _mean(on, 4),
                "accuracy_no_trust": _mean(off, 4),
                "accuracy_trust_by_seed": on,
                "accuracy_no_trust_by_seed": off,
                "gain_points": _mean(gains, 2),
                "honest_exclusions_by_seed": honest_exclusions(
                    by[(strategy, attack, True)], attack
                ),
            }
        rows[strategy] = row
    return {
        "settings": {
            "dataset": scope.dataset, "max_samples": scope.max_samples, "rounds": scope.rounds,
            "local_epochs": scope.epochs, "seeds": list(scope.seeds),
            "malicious_in_label_flip": MALICIOUS,
            "min_trust": "default (-1.0, trust_rounds 2) vs null (off)",
        },
        "strategies": rows,
        "seconds": round(time.perf_counter() - t_all, 3),
    }  # fmt: skip


DATA_LOSS_STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg")
DATA_LOSS_RIDERS = ((), ("p1",), ("p1", "p4"), ("p1", "p4", "p7"), ("p1", "p4", "p7", "p9"))


def data_loss_part(scope: _Scope) -> dict[str, Any]:
    """What leaving participants out costs each rule by itself, with no attack to defend
    against: the accuracy part's all-honest runs with 0 to 4 participants free-riding (the
    screen flags them every round, so their data never reaches the rule). Growing the set one
    participant at a time separates what a participant's data is worth to a rule from how many
    updates the rule gets."""
    t_all = time.perf_counter()
    jobs = [
        scope.cell(seed, strategy, "free_rider" if riders else "none", malicious=riders)
        for seed in scope.seeds
        for riders in DATA_LOSS_RIDERS
        for strategy in DATA_LOSS_STRATEGIES
    ]
    results = scope.run(jobs, "data_loss")
    by: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for job, cell in zip(jobs, results, strict=True):
        by.setdefault((job.strategy, job.malicious), []).append(cell)
    rows: dict[str, dict[str, Any]] = {}
    for strategy in DATA_LOSS_STRATEGIES:
        rows[strategy] = {}
        for riders in DATA_LOSS_RIDERS:
            cells = by[(strategy, riders)]
            rows[strategy][",".join(riders) or "none"] = {
                "accuracy": _mean([c["accuracy"] for c in cells], 4),
                "accuracy_by_seed": [c["accuracy"] for c in cells],
                # the reference holds only if the screen left exactly the riders out
                "riders_flagged_every_round": all(_flagged_every_round(c, riders) for c in cells),
            }  # fmt: skip
    return {
        "settings": {"dataset": scope.dataset, "max_samples": scope.max_samples,
                     "rounds": scope.rounds, "local_epochs": scope.epochs,
                     "seeds": list(scope.seeds), "riders": [list(r) for r in DATA_LOSS_RIDERS]},
        "strategies": rows,
        "seconds": round(time.perf_counter() - t_all, 3),
    }  # fmt: skip


def _markdown(header: Sequence[str], align: str, rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    lines = ["| " + " | ".join(header) + " |", "|" + rule]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _table_data_loss(part: dict[str, Any]) -> str:
    keys = [",".join(r) or "none" for r in DATA_LOSS_RIDERS]
    rows = [
        [strategy] + [_pct(row[k]["accuracy"]) + ("" if row[k]["riders_flagged_every_round"]
                                                  else "*") for k in keys]
        for strategy, row in part["strategies"].items()
    ]  # fmt: skip
    return _markdown(["strategy", *(f"left out: {k}" for k in keys)], "l" + "r" * len(keys), rows)


def _table_trust_cost(part: dict[str, Any]) -> str:
    rows = [
        [s, _pct(n["accuracy_trust"]), _pct(n["accuracy_no_trust"]),
         " / ".join(str(x) for x in n["honest_exclusions_by_seed"]),
         _pct(f["accuracy_trust"]), _pct(f["accuracy_no_trust"])]
        for s, row in part["strategies"].items()
        for n, f in [(row["none"], row["label_flip"])]
    ]  # fmt: skip
    header = ["strategy", "all honest: trust on", "off", "honest exclusions by seed",
              "label_flip: trust on", "off"]  # fmt: skip
    return _markdown(header, "lrrlrr", rows)


# ---------------------------------------------------------------- rewards


def _both_sides(r: dict[str, Any], p: dict[str, Any]) -> tuple[bool, bool]:
    """Which roles of a round where ``p`` both proposed and voted may have moved its one
    settlement: (proposal, vote). A proposal moves it only if flagged (penalized) or scored > 0
    in an accepted round (paid); a vote only if it won (same hash and side as the round) or
    lost in a way the protocol slashes (another hash, or accepting a rejected round), or if it
    never revealed. A role that provably netted 0 leaves the round's net to the other; when
    both may have, each is charged the whole net (an attacking role never hides a gain)."""
    proposal = bool(p.get("flagged")) or (r["accepted"] and (p.get("contribution") or 0) > 0)
    vote = p.get("vote")
    if r["outcome"] == "void":
        moved = vote is None and int(p["slashed"]) > 0  # only a voter that never revealed
    elif vote is None:
        moved = int(p["slashed"]) > 0 and not p.get("flagged")
    else:
        same = vote["aggregate_hash"] == r["aggregate_hash"]
        won = same and vote["accept"] == r["accepted"]
        moved = won or not same or (vote["accept"] and r["outcome"] == "rejected")
    return proposal, moved


def _net_rewards(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in summary["rounds"]:
        for p in r["participants"]:
            row = out.setdefault(
                p["id"],
                {"reward": 0, "slashed": 0, "roles": [], "proposed_in_accepted_round": 0,
                 "flagged": [], "screened": [], "contribution": [], "trust_score": [],
                 "proposal_net": 0, "vote_net": 0, "both_net": 0, "both_proposal_net": 0,
                 "both_vote_net": 0},
            )  # fmt: skip
            net = int(p["reward"]) - int(p["slashed"])
            if p["role"] in PROPOSES:
                row["flagged"].append(p.get("flagged"))  # by the voters: what is slashed
                row["screened"].append(p.get("screened"))  # the screen's reason, if any
                row["contribution"].append(p.get("contribution"))
                row["trust_score"].append(p.get("trust_score"))
            # One settlement per round sums both roles' outcomes: a round with both stays apart.
            role_net = {"proposer": "proposal_net", "voter": "vote_net", "both": "both_net"}
            if p["role"] in role_net:
                row[role_net[p["role"]]] += net
            if p["role"] == "both":
                proposal, vote = _both_sides(r, p)
                row["both_proposal_net"] += net if proposal else 0
                row["both_vote_net"] += net if vote else 0
            row["reward"] += int(p["reward"])
            row["slashed"] += int(p["slashed"])
            row["roles"].append(p["role"])
            if p["role"] in PROPOSES and r["accepted"]:
                row["proposed_in_accepted_round"] += 1
    for pid, row in out.items():
        row["net_flock"] = (row["reward"] - row["slashed"]) / TOKEN
        both = row.pop("both_net")
        row["proposal_net_flock"] = (row.pop("proposal_net") + row.pop("both_proposal_net")) / TOKEN
        row["vote_net_flock"] = (row.pop("vote_net") + row.pop("both_vote_net")) / TOKEN
        row["both_net_flock"] = both / TOKEN
        row["reward_flock"] = row.pop("reward") / TOKEN
        row["slashed_flock"] = row.pop("slashed") / TOKEN
        row["claimed_flock"] = int(summary["claimed"].get(pid, "0")) / TOKEN
        row["malicious"] = pid in MALICIOUS
    return out


def _reward_run(
    attack: str,
    seed: int,
    rounds: int,
    epochs: int,
    dataset: str,
    max_samples: int | None,
    voter_slash_bps: int | None = None,
) -> dict[str, Any]:
    """One flow run (FedAvg x ``attack``, task seed ``seed``): each participant's net, split by
    role, and how many of its votes were paid or slashed; ``{"error": ...}`` if the run
    failed."""
    import flows.federated as federated  # prefect: only when this part runs

    with _fresh_dir(f"flow-{attack}-{seed}") as d:
        cfg = _config(
            d / "data", dataset, max_samples, rounds, epochs, "fedavg", attack, flow=True,
            seed=seed, voter_slash_bps=voter_slash_bps,
        )  # fmt: skip
        t0 = time.perf_counter()
        try:
            summary = federated.federated_task(config=cfg, out_dir=str(d / "out"))
        except Exception as exc:  # one failed run must not lose the others
            return {"error": f"{type(exc).__name__}: {exc}",
                    "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
        wall = time.perf_counter() - t0
    per = _net_rewards(summary)
    if attack == "none":  # an all-honest run: nobody is malicious
        for row in per.values():
            row["malicious"] = False
    for r in summary["rounds"]:
        for p in r["participants"]:
            vote = p.get("vote")
            if p["role"] in VOTES and vote is not None and r["outcome"] != "void":
                # Paid iff on the winning side of the round's hash (the settlement's rule), so
                # a proposal's reward or slash in the same settlement does not count here; the
                # losing side of the round's hash is unpaid, another hash is slashed.
                same = vote["aggregate_hash"] == r["aggregate_hash"]
                won = same and vote["accept"] == (r["outcome"] == "accepted")
                votes = per[p["id"]].setdefault("votes", {"paid": 0, "unpaid": 0, "slashed": 0})
                votes["paid" if won else "unpaid" if same else "slashed"] += 1
    # where the attack acts: votes for a dishonest voter, proposals for everything else
    role = "vote" if attack in VOTE_ONLY else "proposal"
    mal = [p for p in per if per[p]["malicious"]]
    coalition = _coalition_rounds(summary) if attack in VOTE_ONLY else {}
    return {
        **coalition,
        "participants": per,
        "accepted": [bool(r["accepted"]) for r in summary["rounds"]],
        "outcomes": [r["outcome"] for r in summary["rounds"]],
        "accuracy_per_round": [r["global"]["accuracy"] for r in summary["rounds"]],
        "malicious_positive": sorted(p for p in mal if per[p]["net_flock"] > 0),
        "malicious_positive_from_attack": sorted(p for p in mal if per[p][f"{role}_net_flock"] > 0),
        "honest_slashes": int(summary["final"]["honest_slashes"]),
        "screened_per_round": [r["screened"] for r in summary["rounds"]],
        "seconds": round(wall, 3),
    }


def _coalition_rounds(summary: dict[str, Any]) -> dict[str, list[int]]:
    """The rounds (1-based) in which the malicious voters held the majority of the votes
    revealed on the round's hash (``captured_rounds``: they decide the round alone, see
    bench/committee_capture.py), and those in which they were on the winning side
    (``coalition_won_rounds``: captured, or joined by honest voters outvoted by their own data).
    Every participant stakes the same, so a head count is the weight while nobody is slashed;
    a round whose recorded accept and reject weights a head count does not reproduce (a voter
    slashed before it) is listed in ``unequal_weight_rounds`` and judged by heads."""
    captured, won, unequal = [], [], []
    for r in summary["rounds"]:
        on_hash = [
            (p["id"] in MALICIOUS, p["vote"]["accept"])
            for p in r["participants"]
            if p["role"] in VOTES and p.get("vote") is not None
            and p["vote"]["aggregate_hash"] == r["aggregate_hash"]
        ]  # fmt: skip
        bad = sum(1 for m, _ in on_hash if m)
        yes, no = int(r["accept_weight"]), int(r["reject_weight"])
        heads = sum(1 for _, accept in on_hash if accept)
        if on_hash and (yes + no) * heads != yes * len(on_hash):
            unequal.append(r["round"])
        if bad > len(on_hash) - bad:
            captured.append(r["round"])
        if r["outcome"] != "void" and any(
            m and accept == (r["outcome"] == "accepted") for m, accept in on_hash
        ):
            won.append(r["round"])
    return {"captured_rounds": captured, "coalition_won_rounds": won,
            "unequal_weight_rounds": unequal}  # fmt: skip


def _outcomes(run: dict[str, Any]) -> str:
    """A run's rounds as letters: A accepted, R rejected, V void (older results: A/R only)."""
    if "outcomes" not in run:
        return "".join("A" if a else "R" for a in run["accepted"])
    return "".join(o[0].upper() for o in run["outcomes"])


def rewards_part(
    attacks: list[str],
    rounds: int,
    epochs: int,
    dataset: str,
    max_samples: int | None,
    seeds: list[int],
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    t_all = time.perf_counter()
    total, done = len(attacks) * len(seeds), 0
    for attack in attacks:
        role = "vote" if attack in VOTE_ONLY else "proposal"
        by_seed: dict[str, Any] = {}
        for seed in seeds:
            run = by_seed[str(seed)] = _reward_run(
                attack, seed, rounds, epochs, dataset, max_samples
            )
            done += 1
            if "error" in run:
                _log(f"[rewards {done}/{total}] fedavg x {attack:<15} seed {seed} FAILED: "
                     f"{run['error']}")  # fmt: skip
                continue
            _log(
                f"[rewards {done}/{total}] fedavg x {attack:<15} seed {seed} rounds "
                f"{_outcomes(run)} malicious positive "
                f"{run['malicious_positive'] or 'none'} ({run['seconds']:.1f}s)"
                + (f" captured rounds {run['captured_rounds'] or 'none'}"
                   if "captured_rounds" in run else "")
            )  # fmt: skip
        ok = {k: r for k, r in by_seed.items() if "error" not in r}
        rows = [(k, pid, row) for k, r in ok.items() for pid, row in r["participants"].items()]
        mal = [(k, pid, row) for k, pid, row in rows if row["malicious"]]
        runs[attack] = {
            "seeds": by_seed,
            "attacking_role": role,
            "malicious_count": len(mal),
            "mean_net_malicious_flock": _mean([row["net_flock"] for _, _, row in mal]),
            "mean_net_honest_flock": _mean(
                [row["net_flock"] for _, _, row in rows if not row["malicious"]]
            ),
            "mean_attack_net_malicious_flock": _mean(
                [row[f"{role}_net_flock"] for _, _, row in mal]
            ),
            "malicious_positive": [f"{pid}@{k}" for k, pid, row in mal if row["net_flock"] > 0],
            "malicious_positive_from_attack": [
                f"{pid}@{k}" for k, pid, row in mal if row[f"{role}_net_flock"] > 0
            ],
            "failed_seeds": sorted(k for k, r in by_seed.items() if "error" in r),
            "honest_slashes_by_seed": {k: r["honest_slashes"] for k, r in ok.items()},
        }
        if attack in VOTE_ONLY:  # the rounds the coalition decided alone, and those it won
            for key in ("captured_rounds", "coalition_won_rounds"):
                runs[attack][key] = {k: r[key] for k, r in ok.items()}
    chain = ChainConfig()
    positive = {a: r["malicious_positive"] for a, r in runs.items() if r.get("malicious_positive")}
    from_attack = {
        a: r["malicious_positive_from_attack"]
        for a, r in runs.items()
        if r.get("malicious_positive_from_attack")
    }
    return {
        "settings": {
            "flow": "flows.federated.federated_task, managed local anvil, fresh data_dir per run",
            "strategy": "fedavg",
            "dataset": dataset,
            "max_samples": max_samples,
            "participants": PARTICIPANTS,
            "malicious": list(MALICIOUS),
            "rounds": rounds,
            "local_epochs": epochs,
            "model": "mlp",
            "privacy": "off",
            "attack_params": ATTACK_PARAMS,
            "attack_params_flow_overrides": FLOW_ATTACK_PARAMS,
            "reward_rule": "proposers of an accepted round: stake x max(0, contribution) pro "
            "rata, contribution = stake-weighted mean of the accepting voters' leave-one-out "
            "held-out loss gains (an update the screen left out scores only its harm); an update "
            "the screen left out as a free rider or copy scores -1 and its proposer, flagged "
            "by more than half of the scoring voter stake (either side), is slashed at "
            "penalty_bps in accepted and rejected rounds; an unflagged proposer of a rejected "
            "round gets nothing and loses nothing; voters: the winning side of the majority "
            "hash paid pro rata weight, the losing side unpaid, another hash slashed at "
            "voter_slash_bps, a voter that never reveals at max(slash_bps, voter_slash_bps); a "
            "void round (no majority hash, no votes or a tie) pays and slashes nothing for its "
            "result; the screen's trust history: the stake-weighted mean of every revealing "
            "voter's contributions (accepting or rejecting) of each earlier finalized round",
            "penalty_bps": chain.penalty_bps,
            "slash_bps": chain.slash_bps,
            "voter_slash_bps": chain.voter_slash_bps,
            "seeds": seeds,
        },
        "runs": runs,
        "malicious_with_positive_net": positive,
        # a failed run proves nothing, so the goal only passes when every run finished
        "goal_no_malicious_positive": not positive
        and all(not r["failed_seeds"] for r in runs.values()),
        "malicious_with_positive_net_from_attack": from_attack,
        # per dishonest-voter run, the rounds its coalition held the majority of the votes
        "captured_rounds": _captured(runs),
        "failed_runs": sorted(f"{a}@{k}" for a, r in runs.items() for k in r["failed_seeds"]),
        # participant-rounds of honest participants slashed in the all-honest runs
        "honest_slashes_all_honest": sum(
            runs["none"]["honest_slashes_by_seed"].values() if "none" in runs else ()
        ),
        "seconds": round(time.perf_counter() - t_all, 3),
    }


def _captured(runs: dict[str, Any]) -> dict[str, list[int]]:
    """``attack@seed`` -> the rounds its coalition captured, for every vote-only attack run."""
    return {
        f"{a}@{k}": rounds
        for a, r in runs.items()
        for k, rounds in (r.get("captured_rounds") or {}).items()
    }


def voter_slash_part(
    rates: list[int],
    rounds: int,
    epochs: int,
    dataset: str,
    max_samples: int | None,
    seeds: list[int],
) -> dict[str, Any]:
    """The dishonest-voter flow at each ``chain.voter_slash_bps`` in ``rates`` x ``seeds``: what
    voting earns a voter that reverses its measurement, and an honest one."""
    out: dict[str, Any] = {}
    t_all = time.perf_counter()
    for bps in rates:
        runs = {
            str(seed): _reward_run("dishonest_voter", seed, rounds, epochs, dataset, max_samples,
                                   voter_slash_bps=bps)
            for seed in seeds
        }  # fmt: skip
        rows = [p for r in runs.values() if "error" not in r for p in r["participants"].values()]
        done = {k: r for k, r in runs.items() if "error" not in r}
        row: dict[str, Any] = {
            "failed_seeds": sorted(k for k, r in runs.items() if "error" in r),
            "captured_rounds": {k: r["captured_rounds"] for k, r in done.items()},
            "coalition_won_rounds": {k: r["coalition_won_rounds"] for k, r in done.items()},
        }
        for side, malicious in (("dishonest", True), ("honest", False)):
            mine = [p for p in rows if p["malicious"] == malicious]
            row[side] = {
                "mean_vote_net_flock": _mean([p["vote_net_flock"] for p in mine]),
                "votes_paid": sum(p.get("votes", {}).get("paid", 0) for p in mine),
                "votes_unpaid": sum(p.get("votes", {}).get("unpaid", 0) for p in mine),
                "votes_slashed": sum(p.get("votes", {}).get("slashed", 0) for p in mine),
                "positive_vote_net": sum(1 for p in mine if p["vote_net_flock"] > 0),
                "participants": len(mine),
            }
        out[str(bps)] = row
        d, h = row["dishonest"], row["honest"]
        _log(f"[voter slash {bps / 100:.0f}%] vote net: dishonest {d['mean_vote_net_flock']} "
             f"honest {h['mean_vote_net_flock']} FLOCK")  # fmt: skip
    return {
        "settings": {"attack": "dishonest_voter", "dataset": dataset, "max_samples": max_samples,
                     "rounds": rounds, "local_epochs": epochs, "seeds": seeds, "rates_bps": rates},
        "rates": out,
        "seconds": round(time.perf_counter() - t_all, 3),
    }  # fmt: skip


def _table_voter_slash(part: dict[str, Any]) -> str:
    def net(x: dict[str, Any]) -> str:
        v = x["mean_vote_net_flock"]
        return "n/a" if v is None else f"{v:+.1f}"

    def votes(x: dict[str, Any]) -> str:
        return f"{x['votes_paid']} / {x.get('votes_unpaid', 'n/a')} / {x['votes_slashed']}"

    def by_seed(rounds: dict[str, list[int]] | None) -> str:
        if rounds is None:  # older results
            return "n/a"
        return " ".join(f"{k}: {','.join(map(str, v)) or '-'}" for k, v in rounds.items())

    rows = [
        [bps, net(d), votes(d), f"{d['positive_vote_net']}/{d['participants']}", net(h),
         votes(h), by_seed(row.get("captured_rounds")), by_seed(row.get("coalition_won_rounds"))]
        for bps, row in part["rates"].items()
        for d, h in [(row["dishonest"], row["honest"])]
    ]  # fmt: skip
    header = ["voter_slash_bps", "dishonest voters: mean vote net (FLOCK)",
              "votes paid / unpaid / slashed", "with vote net > 0",
              "honest voters: mean vote net (FLOCK)", "votes paid / unpaid / slashed",
              "rounds captured (seed: rounds)", "rounds the coalition won"]  # fmt: skip
    return _markdown(header, "rrllrlll", rows)


# ---------------------------------------------------------------- report


def _strategy_table(
    part: dict[str, Any], attacks: list[str], cell: Callable[[dict[str, Any] | None], str]
) -> str:
    """One row per strategy (robust ones in bold), one column per attack."""
    rows = [
        [f"**{s}**" if s in ROBUST else s, *(cell(row[a]) for a in attacks)]
        for s, row in part["cells"].items()
    ]
    return _markdown(["strategy", *attacks], "l" + "r" * len(attacks), rows)


def _table_accuracy(part: dict[str, Any]) -> str:
    return _strategy_table(
        part, part["attacks"], lambda c: "n/a" if c is None else _pct(c["accuracy"])
    )


def _table_drop(part: dict[str, Any], key: str) -> str:
    attacks = [a for a in part["attacks"] if a not in VOTE_ONLY and a != "none"]
    return _strategy_table(
        part, attacks, lambda c: "n/a" if c is None or c[key] is None else f"{c[key]:+.1f}"
    )


def _table_rewards(part: dict[str, Any]) -> str:
    def signed(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    rows = []
    for a, r in part["runs"].items():
        ok = [x for x in r["seeds"].values() if "error" not in x]
        acc = " ".join(_outcomes(x) for x in ok)
        if "captured_rounds" in r:  # a vote-only attack: the rounds its coalition decided alone
            acc += " (captured: " + "; ".join(
                f"seed {k} {', '.join(map(str, v)) or 'none'}"
                for k, v in r["captured_rounds"].items()
            ) + ")"  # fmt: skip
        if r["failed_seeds"]:
            acc += f" (failed: seed {', '.join(r['failed_seeds'])})"
        mal = [p for x in ok for p in x["participants"].values() if p["malicious"]]
        flagged = sum(1 for p in mal for f in p["flagged"] if f)
        proposals = sum(len(p["flagged"]) for p in mal)
        n = r["malicious_count"]
        pos, pos_attack = r["malicious_positive"], r["malicious_positive_from_attack"]
        rows.append([
            a, acc, f"{flagged}/{proposals}", signed(r["mean_net_malicious_flock"]),
            f"{signed(r['mean_attack_net_malicious_flock'])} ({r['attacking_role']}s)",
            signed(r["mean_net_honest_flock"]), f"{len(pos)}/{n}",
            f"{len(pos_attack)}/{n} {', '.join(pos_attack)}",
        ])  # fmt: skip
    header = ["attack", "rounds by seed (A/R/V)", "malicious proposals flagged",
              "mean net malicious (FLOCK)", "of which in rounds of the attacking role",
              "mean net honest (FLOCK)", "malicious with net > 0",
              "malicious whose attacking role netted > 0"]  # fmt: skip
    return _markdown(header, "lllrrrll", rows)


def _output(args: argparse.Namespace) -> Path:
    """The file this run writes: --out, or the default of its mode."""
    if args.out is not None:
        return Path(args.out)
    name = "robustness" + ("_quick" if args.quick else "") + (
        "_noscreen" if args.no_screen else ""
    ) + ("_shared" if args.validation == "shared" else "")  # fmt: skip
    return RESULTS.with_name(f"{name}.json")


def _write(payload: dict[str, Any], args: argparse.Namespace) -> None:
    out = _output(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, or a clear usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MNIST 5k, 8 flow runs")
    parser.add_argument("--parts", nargs="+", default=["accuracy", "rewards"],
                        choices=["accuracy", "rewards", "voter_slash", "trust_cost",
                                 "data_loss"],
                        help="voter_slash: the dishonest voter at several voter_slash_bps; "
                        "trust_cost: all-honest and label-flip runs with the trust check on and "
                        "off (neither runs by default)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None, help="accuracy part rounds")
    parser.add_argument("--epochs", type=int, default=None, help="accuracy part local epochs")
    parser.add_argument("--max-samples", type=int, default=None, help="accuracy part data cap")
    parser.add_argument("--reward-rounds", type=int, default=None)
    parser.add_argument("--reward-epochs", type=int, default=2)
    parser.add_argument(
        "--reward-max-samples", type=int, default=None,
        help="rewards part data cap (default: as the accuracy part)",
    )  # fmt: skip
    parser.add_argument(
        "--reward-attacks", nargs="+", default=None, choices=["none", *ATTACK_KINDS]
    )
    parser.add_argument(
        "--reward-seeds", type=int, default=None, help="flow runs per attack (default 3; quick 1)"
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="accuracy part task seeds (default 3; quick 1)",
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=None,
        help="accuracy part worker processes (default: one per CPU core)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-screen", action="store_true", help="accuracy part without the screen")
    parser.add_argument(
        "--validation", choices=["holdout", "shared"], default="holdout",
        help="what voters score on (data.validation): own held-out splits, or the task's "
        "shared class-balanced set",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="default: bench/results/robustness[_quick][_noscreen][_shared].json",
    )  # fmt: skip
    args = parser.parse_args(argv)

    # One intra-op thread: these models are tiny, and on a shared 2-core machine two threads
    # spin against each other (measured 10-20x slower per training job).
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Through the config's environment source, so the spawned workers and the flows see it too;
    # a FLOCK_DATA__VALIDATION the caller had is put back when main returns.
    before = os.environ.get("FLOCK_DATA__VALIDATION")
    os.environ["FLOCK_DATA__VALIDATION"] = args.validation
    try:
        _run(args)
    finally:
        if before is None:
            os.environ.pop("FLOCK_DATA__VALIDATION", None)
        else:
            os.environ["FLOCK_DATA__VALIDATION"] = before


def _run(args: argparse.Namespace) -> None:
    """The parts ``args`` asks for, written and summarized (``main`` sets up the process)."""
    mode = "quick" if args.quick else "full"
    dataset = "mnist5k" if args.quick else "fashion_mnist"
    max_samples = args.max_samples if args.max_samples is not None else (
        None if args.quick else 12000
    )  # fmt: skip
    rounds = args.rounds or (5 if args.quick else 10)
    epochs = args.epochs or 2
    reward_rounds = args.reward_rounds or (3 if args.quick else 5)
    reward_max_samples = args.reward_max_samples if args.reward_max_samples is not None else (
        None if args.quick else 12000
    )  # fmt: skip
    reward_seeds = list(range(args.reward_seeds or (1 if args.quick else 3)))
    reward_attacks = args.reward_attacks or list(
        QUICK_REWARD_ATTACKS if args.quick else ("none", *ATTACK_KINDS)
    )
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    payload: dict[str, Any] = {
        "benchmark": "robustness", "mode": mode, "quick": args.quick,
        "validation": args.validation,
    }  # fmt: skip
    previous = _output(args)
    old = json.loads(previous.read_text()) if previous.exists() else {}
    if old.get("validation", "holdout") != args.validation:  # figures of the other mode
        old = {}
    for part in ("accuracy", "rewards", "voter_slash", "trust_cost", "data_loss"):  # keep others
        if part not in args.parts and old.get(part) is not None:
            payload[part] = old[part]
    accuracy_seeds = tuple(range(args.seeds or (1 if args.quick else 3)))
    workers = args.workers or os.cpu_count() or 1
    scope = _Scope(dataset, max_samples, rounds, epochs, accuracy_seeds, workers, args.threads)
    if "accuracy" in args.parts:
        payload["accuracy"] = accuracy_part(scope, screen=not args.no_screen)
    if "trust_cost" in args.parts:
        payload["trust_cost"] = trust_cost_part(scope)
    if "data_loss" in args.parts:
        payload["data_loss"] = data_loss_part(scope)
    if "accuracy" in args.parts and "rewards" in args.parts:  # keep the long part if the rest fails
        _write(payload, args)
    if "rewards" in args.parts:
        payload["rewards"] = rewards_part(
            reward_attacks, reward_rounds, args.reward_epochs, dataset, reward_max_samples,
            reward_seeds,
        )  # fmt: skip
    if "voter_slash" in args.parts:
        payload["voter_slash"] = voter_slash_part(
            [1_000, 5_000, 7_000, 10_000], reward_rounds, args.reward_epochs, dataset,
            reward_max_samples, reward_seeds,
        )  # fmt: skip
    total = time.perf_counter() - t_start
    payload["environment"] = environment(load_before)
    payload["seconds_total"] = round(total, 1)
    payload["goal"] = {
        "accuracy": f"robust strategies {list(ROBUST)} within {GOAL} accuracy points of their "
        "all-honest run under every attack",
        "rewards": "no malicious participant ends with a positive net reward",
        "headline": "no attack halts a task (simulation or flow), every attacker nets <= 0 "
        "from its attacking role in every flow run, and no honest participant is slashed in "
        "any all-honest flow run",
    }

    _write(payload, args)

    headline: dict[str, Any] = {
        "metric": "worst_robust_accuracy_drop_points",
        "value": None,
        "goal": GOAL,
        "better": "lower",
        "mode": mode,
    }
    if "accuracy" in payload:
        acc = payload["accuracy"]
        s = acc["settings"]
        print(
            f"accuracy (%): {s['dataset']} max_samples={s['max_samples']} rounds={s['rounds']} "
            f"local_epochs={s['local_epochs']} model=mlp DP off, malicious {', '.join(MALICIOUS)}, "
            f"mean over seeds {s.get('seeds', [0])}"
        )
        print(_table_accuracy(acc))
        print("\ndrop vs the same strategy's all-honest run (accuracy points; + is worse):")
        print(_table_drop(acc, "drop_vs_same_strategy_honest"))
        print("\ndrop vs all-honest FedAvg (accuracy points; + is worse):")
        print(_table_drop(acc, "drop_vs_fedavg_honest"))
        if acc["worst_robust_drop_vs_honest_only"] is not None:
            print("\nhonest-only reference (malicious updates left out), accuracy (%):")
            print(" | ".join(f"{k} {100 * v:.1f}" for k, v in acc["honest_only_accuracy"].items()
                             if v is not None))  # fmt: skip
            print("\ndrop vs the same strategy's honest-only run (accuracy points; + is worse):")
            print(_table_drop(acc, "drop_vs_same_strategy_honest_only"))
        w = acc["worst_robust_drop"]
        headline.update(
            value=w["value"],
            worst_strategy=w["strategy"],
            worst_attack=w["attack"],
            robust_cells_over_goal=len(acc["robust_cells_over_goal"]),
            robust_cells_over_goal_vs_honest_only=len(
                acc.get("robust_cells_over_goal_vs_honest_only", [])
            ),
            seeds=s.get("seeds", [0]),
            worst_robust_drop_vs_honest_only=(acc["worst_robust_drop_vs_honest_only"] or {}).get(
                "value"
            ),
            honest_fedavg_accuracy=acc["honest_fedavg_accuracy"],
            dataset=s["dataset"],
            accuracy_seconds=acc["seconds"],
        )
    if "rewards" in payload:
        rw = payload["rewards"]
        print(f"\nnet reward (FedAvg, real flow, {rw['settings']['dataset']}, "
              f"{rw['settings']['rounds']} rounds, seeds {rw['settings']['seeds']}; "
              "A = accepted round, R = rejected, V = void):")  # fmt: skip
        print(_table_rewards(rw))
        headline.update(
            malicious_positive_net=sum(len(v) for v in rw["malicious_with_positive_net"].values()),
            malicious_positive_from_attack=sum(
                len(v) for v in rw["malicious_with_positive_net_from_attack"].values()
            ),
            rewards_goal_pass=rw["goal_no_malicious_positive"],
            rewards_seconds=rw["seconds"],
        )
    if "trust_cost" in payload:
        tc = payload["trust_cost"]
        print(f"\ntrust check on vs off, accuracy (%), mean over seeds {tc['settings']['seeds']}:")
        print(_table_trust_cost(tc))
    if "data_loss" in payload:
        dl = payload["data_loss"]
        print(f"\nparticipants left out (free riders, flagged every round), all others honest, "
              f"accuracy (%), mean over seeds {dl['settings']['seeds']} (* not flagged every "
              "round):")  # fmt: skip
        print(_table_data_loss(dl))
    if "voter_slash" in payload:
        vs = payload["voter_slash"]
        print(f"\nvote net of reversed (dishonest) and honest voters by chain.voter_slash_bps "
              f"(FedAvg, real flow, seeds {vs['settings']['seeds']}):")  # fmt: skip
        print(_table_voter_slash(vs))
    halted = len(payload.get("accuracy", {}).get("halted", [])) + len(
        payload.get("rewards", {}).get("failed_runs", [])
    )
    rewards = payload.get("rewards")
    positive = None if rewards is None else sum(
        len(v) for v in rewards["malicious_with_positive_net_from_attack"].values()
    )  # fmt: skip
    honest_slashed = None if rewards is None else rewards.get("honest_slashes_all_honest")
    headline.update(
        tasks_halted=halted,
        attackers_positive_from_attack=positive,
        # the dishonest-voter runs' rounds its coalition held the committee's majority in
        captured_rounds=None if rewards is None else rewards.get("captured_rounds"),
        honest_slashes_all_honest=honest_slashed,
        trust_goal_pass=halted == 0 and positive == 0 and honest_slashed == 0,
    )
    headline["seconds_total"] = round(total, 1)
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
