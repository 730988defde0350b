"""Central (user-level) differential privacy with distributed noise, around any strategy.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models")
with the noise split among the proposers (distributed DP, as in Kairouz, Liu and Steinke 2021,
"The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
here without secure aggregation). Nobody holds the whole noise, so nobody can subtract it:

1. each proposer clips its own delta from the global model to L2 norm ≤ C over all float
   tensors and adds Gaussian noise of std σ_s·C per coordinate, drawn from its own secret
   generator (``flock_pipeline.seeding.secret_generator``), before it commits (:meth:`share`);
2. every voter (the aggregator) re-clips each committed delta to the bound B that an honest
   noised delta stays under (below), gives the updates to the inner strategy with equal weight
   (``num_samples = 1``) and adds no noise: the aggregate is a deterministic function of the
   committed updates, so every voter recomputes it bit for bit.

Calibration. With t = ``min_honest`` honest proposers among the n aggregated updates, σ_s = σ/√t.
The unweighted mean then carries noise of std at least √t·σ_s·C/n = σ·C/n, and one proposer's
clipped delta moves it by at most C/n ("zero-out" adjacency, Kairouz et al. 2021: its data
replaced by none, its noise share still sent): the configured multiplier σ. A round with fewer
than t updates carries only σ·√(n/t), and :meth:`round_noise_multiplier` says so to the
accountant. Sample weights are not used: with weights w_i the sensitivity would be C·max_i w_i,
driven by self-reported sample counts.

Each committed update is itself a Gaussian mechanism at σ_s on its proposer's data, so whoever
sees single updates (voters, the blob store, anyone who reads them) learns about one proposer
only what σ_s allows, whatever the others do; the aggregate and the strategy state are computed
from committed updates alone, so they are post-processing and can be published. That second
bound is what holds for order-statistic or custom rules (median, trimmed mean, Krum...): they
are not sums, the honest shares do not add up, and they are refused unless t = 1 (each update
carries the whole σ).

The re-clip bound. An honest delta has norm ≤ C, its noise z (d float coordinates) has
‖z‖ ≤ σ_s·C·(√d + r) except with probability exp(−r²/2) (Gaussian concentration), so
B = C·(1 + σ_s·(√d + r)) with r = 10 leaves honest updates untouched except with probability
about 2e-22 per update, and bounds what a proposer that skipped its clip or its noise can do to
the mean (B/n). With σ = 0 (no privacy, for testing) proposers commit raw updates and B = C.

Adaptive clipping (Andrew et al. 2021) steers C by the fraction of unclipped updates; under
distributed noise the aggregator cannot tell a clipped delta from an unclipped one, and a
proposer's noised bit has no channel in a committed update, so it is available with σ = 0 only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.privacy.central import CentralAccountant
from flock_pipeline.seeding import secret_generator
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["MEAN_RULES", "NORM_TAIL", "CentralDP", "clip_delta", "refuse_combination"]

MEAN_RULES = frozenset({"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"})
"""Inner strategies whose output (and state) is a function of the plain mean of their inputs:
the honest noise shares add up in that mean."""

NORM_TAIL = 10.0
"""r in the re-clip bound B = C·(1 + σ_s·(√d + r)): an honest update exceeds it with
probability at most exp(−r²/2)."""

CLIP_KEY = "central_dp/clip_norm"
INNER_PREFIX = "inner/"

Delta = dict[str, torch.Tensor]


def _float_names(weights: Weights) -> list[str]:
    return [name for name in sorted(weights) if weights[name].is_floating_point()]


def _norm(delta: Delta) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in delta.values()))


def clip_delta(delta: Delta, clip_norm: float) -> tuple[Delta, float]:
    """Scale ``delta`` by min(1, C/‖delta‖) (flat clipping over all tensors); also the norm."""
    norm = _norm(delta)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    return {name: t * scale for name, t in delta.items()}, norm


def refuse_combination(
    strategy: str, noise_multiplier: float, min_honest: int, adaptive: bool
) -> None:
    """Raise ``ConfigError`` for settings distributed noise cannot give a guarantee for."""
    if not isinstance(min_honest, int) or min_honest < 1:
        raise ConfigError(f"central DP min_honest must be an integer >= 1, got {min_honest!r}")
    if noise_multiplier == 0:
        return
    if adaptive:
        raise ConfigError(
            "central DP: adaptive clipping needs the fraction of unclipped updates, which "
            "proposers' noised updates do not reveal; set aggregation.central_dp.adaptive: "
            "false (or noise_multiplier: 0 for a test without privacy)"
        )
    if min_honest > 1 and strategy not in MEAN_RULES:
        raise ConfigError(
            f"central DP: {strategy!r} is not a mean, so the noise shares of {min_honest} "
            "honest proposers do not add up in its output; use one of "
            f"{', '.join(sorted(MEAN_RULES))}, or set aggregation.central_dp.min_honest: 1 "
            "(every update then carries the whole noise)"
        )


class CentralDP(Strategy):
    """Wrap ``inner`` with distributed Gaussian noise (user-level DP); see the module docstring.

    ``noise_multiplier`` is the total σ the guarantee for the released models is stated for,
    given ``min_honest`` (t) honest proposers per round; each proposer adds σ/√t of it
    (:meth:`share`). ``clip_norm`` is C (the initial C when ``adaptive``, which needs σ = 0).
    ``target_quantile`` γ is the fraction of updates that should end up unclipped and
    ``clip_lr`` η the geometric step of adaptive clipping. ``sampled_fraction`` is the
    participant sampling rate q for the accountant; leave it at 1 unless participants are
    sampled at random and who was sampled stays secret (amplification by sampling does not hold
    when participation is public on chain).

    Metrics: ``central_dp/clip_norm`` (C), ``central_dp/reclip_norm`` (B),
    ``central_dp/fraction_clipped`` (committed updates the re-clip scaled: those that broke the
    bound), ``central_dp/share_std`` (each honest update's noise std σ_s·C),
    ``central_dp/noise_multiplier_effective`` (the σ this round's release holds at), with
    adaptive clipping ``central_dp/next_clip_norm``; the inner rule's metrics under ``inner/``.
    All are functions of the committed updates.
    """

    name = "central_dp"

    def __init__(
        self,
        inner: Strategy,
        noise_multiplier: float,
        clip_norm: float = 1.0,
        adaptive: bool = False,
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
        sampled_fraction: float = 1.0,
        min_honest: int = 1,
    ) -> None:
        if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
            raise ConfigError(f"central DP noise_multiplier must be >= 0, got {noise_multiplier}")
        if not math.isfinite(clip_norm) or clip_norm <= 0:
            raise ConfigError(f"central DP clip_norm must be > 0, got {clip_norm}")
        if not 0 <= target_quantile <= 1:
            raise ConfigError(f"target_quantile must be in [0, 1], got {target_quantile}")
        if clip_lr <= 0:
            raise ConfigError(f"clip_lr must be > 0, got {clip_lr}")
        if not 0 < sampled_fraction <= 1:
            raise ConfigError(f"sampled_fraction must be in (0, 1], got {sampled_fraction}")
        refuse_combination(inner.name, noise_multiplier, min_honest, adaptive)
        self.inner = inner
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.adaptive = adaptive
        self.target_quantile = target_quantile
        self.clip_lr = clip_lr
        self.sampled_fraction = sampled_fraction
        self.min_honest = min_honest

    @property
    def mean_rule(self) -> bool:
        return self.inner.name in MEAN_RULES

    @property
    def share_multiplier(self) -> float:
        """σ_s = σ/√t: the noise multiplier of each proposer's share."""
        return self.noise_multiplier / math.sqrt(self.min_honest)

    def round_noise_multiplier(self, n: int) -> float:
        """The σ a round of ``n`` aggregated updates holds at: σ·√(min(n, t)/t)."""
        return self.share_multiplier * math.sqrt(min(n, self.min_honest))

    def reclip_norm(self, global_weights: Weights, clip_norm: float) -> float:
        """B = C·(1 + σ_s·(√d + r)), d the float coordinates; C itself when σ = 0."""
        if self.noise_multiplier == 0:
            return clip_norm
        d = sum(global_weights[name].numel() for name in _float_names(global_weights))
        return clip_norm * (1 + self.share_multiplier * (math.sqrt(d) + NORM_TAIL))

    def accountant(self) -> CentralAccountant:
        """A fresh accountant matching these settings (step it once per released round)."""
        return CentralAccountant(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sampled_fraction,
            min_honest=self.min_honest,
        )

    def share(self, update: Update, global_weights: Weights) -> Update:
        """What an honest proposer commits: its delta clipped to C plus its noise share, from a
        generator seeded by the OS and never stored. Integer buffers stay at the global value.
        With σ = 0 the update is committed as trained (the aggregator clips it)."""
        if self.noise_multiplier == 0:
            return update
        gen = secret_generator()
        std = self.share_multiplier * self.clip_norm
        floats = _float_names(global_weights)
        base = {name: global_weights[name].to(torch.float64) for name in floats}
        delta = {name: update.weights[name].to(torch.float64) - base[name] for name in floats}
        clipped, _ = clip_delta(delta, self.clip_norm)
        weights: Weights = {}
        for name in sorted(global_weights):
            ref = global_weights[name]
            if name not in clipped:
                weights[name] = ref.clone()
                continue
            noise = torch.normal(0.0, std, tuple(ref.shape), generator=gen, dtype=torch.float64)
            weights[name] = (base[name] + clipped[name] + noise).to(ref.dtype).contiguous()
        return Update(update.participant, weights, update.num_samples, dict(update.metrics),
                      update.epsilon, update.delta)  # fmt: skip

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        """Re-clip the committed updates, aggregate them with the inner rule; no noise here."""
        check_compatible(updates, global_weights)
        canonical = ordered(updates)
        n = len(canonical)
        state = dict(state or {})
        clip = float(state.pop(CLIP_KEY)) if CLIP_KEY in state else self.clip_norm
        inner_state = {
            k[len(INNER_PREFIX) :]: v for k, v in state.items() if k.startswith(INNER_PREFIX)
        }
        bound = self.reclip_norm(global_weights, clip)
        floats = _float_names(global_weights)
        base = {name: global_weights[name].to(torch.float64) for name in floats}

        clipped_updates: list[Update] = []
        unclipped = 0
        for u in canonical:
            delta = {name: u.weights[name].to(torch.float64) - base[name] for name in floats}
            clipped, norm = clip_delta(delta, bound)
            unclipped += norm <= bound
            weights: Weights = {}
            for name in sorted(global_weights):
                ref = global_weights[name]
                if name in clipped:
                    weights[name] = (base[name] + clipped[name]).to(ref.dtype).contiguous()
                else:  # integer buffers (step counters) carry no participant data through
                    weights[name] = ref.clone()
            clipped_updates.append(
                Update(u.participant, weights, 1, dict(u.metrics), u.epsilon, u.delta)
            )

        result = self.inner.aggregate(clipped_updates, global_weights, inner_state, seed)
        metrics: dict[str, float] = {f"{INNER_PREFIX}{k}": v for k, v in result.metrics.items()}
        next_state: StrategyState = {f"{INNER_PREFIX}{k}": v for k, v in result.state.items()}
        next_clip = clip
        if self.adaptive:  # σ = 0 only (refused otherwise): the exact count is no secret
            fraction_unclipped = unclipped / n
            next_clip = clip * math.exp(-self.clip_lr * (fraction_unclipped - self.target_quantile))
            metrics["central_dp/next_clip_norm"] = next_clip
        next_state[CLIP_KEY] = torch.tensor(next_clip, dtype=torch.float64)
        metrics.update(
            {
                "central_dp/clip_norm": clip,
                "central_dp/reclip_norm": bound,
                "central_dp/fraction_clipped": 1 - unclipped / n,
                "central_dp/share_std": self.share_multiplier * clip,
                "central_dp/noise_multiplier_effective": self.round_noise_multiplier(n),
            }
        )
        return Aggregate(
            weights=dict(result.weights), state=next_state, metrics=metrics,
            selected=result.selected,
        )  # fmt: skip
