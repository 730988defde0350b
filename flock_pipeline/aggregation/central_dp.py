"""Central (user-level) differential privacy at aggregation, as a wrapper around any strategy.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"),
with optional adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with
Adaptive Clipping"); the shape follows Flower's ``DifferentialPrivacyServerSideFixedClipping``
and ``...AdaptiveClipping``. Per round:

1. every update's delta from the global model is clipped to L2 norm ≤ C over all float tensors;
2. the clipped updates (global + clipped delta, each with ``num_samples = 1``) go to the inner
   strategy, so FedAvg becomes the *unweighted* mean of clipped deltas;
3. Gaussian noise is added per coordinate to the aggregate's delta;
4. with adaptive clipping, C ← C·exp(−η(b̃ − γ)), b̃ the noised fraction of unclipped updates.

Sensitivity (what the noise is calibrated to). Neighbouring inputs differ in one participant's
contribution being replaced by the null contribution (zero delta, zero in the centred count;
"zero-out" adjacency, Kairouz et al. 2021); the participant list and n are public on chain.

* Mean rule (``inner.name in MEAN_RULES``): the unweighted mean of n clipped deltas moves by at
  most C/n, so the noise std is σ_Δ·C/n. Sample weighting is *not* used: with weights w_i the
  sensitivity would be C·max_i w_i, data-dependent and driven by self-reported sample counts (one
  participant claiming a huge count would get almost no protection and would dominate).
* Any other rule (median, trimmed mean, Krum...): no C/n bound holds, so the aggregate delta is
  projected onto the C-ball (every clipped delta lies in it) and the noise std is σ_Δ·2C, the
  diameter of that ball. Sound for any rule, but usually far too noisy to be useful.
* Stateful inner strategies (server momentum, Adam moments) are refused when σ > 0: their state
  is computed from un-noised updates and would be published.

σ_Δ is the noise multiplier itself with fixed clipping, or the Andrew et al. split
``effective_noise_multiplier(σ, σ_b)`` with adaptive clipping (see ``privacy.central``). The
noise uses the C that clipped this round (Flower's server-side adaptive wrapper noises with the
already-updated C, which under-noises when C shrinks).

Verifiability: all noise comes from a ``torch.Generator`` seeded from ``seed`` (domain-separated
by SHA-256), drawn in a fixed order in float64, so every voter recomputes the same noised
aggregate bit for bit. The seed must be unpredictable until every update is committed (e.g. the
round's chain seed, revealed after the commit phase) and public afterwards: a participant who
knew the noise in advance could cancel it, and anyone can recheck the aggregate once it is out.
The aggregator and voters still see raw updates; the guarantee is for the released model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.privacy.central import CentralAccountant, effective_noise_multiplier
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["MEAN_RULES", "CentralDP", "clip_delta", "noise_generator"]

MEAN_RULES = frozenset({"fedavg"})
"""Inner strategies whose output is the plain mean of their inputs (sensitivity C/n)."""

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


def noise_generator(seed: int) -> torch.Generator:
    """The CPU generator for a round's noise; any int seed, domain-separated from other uses."""
    digest = hashlib.sha256(f"flock-central-dp:{seed}".encode()).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


class CentralDP(Strategy):
    """Wrap ``inner`` with update clipping and Gaussian noise on the aggregate (user-level DP).

    ``noise_multiplier`` is the total σ the guarantee is stated for (see ``accountant()``).
    ``clip_norm`` is C (the initial C when ``adaptive``). ``target_quantile`` γ is the fraction
    of updates that should end up unclipped, ``clip_lr`` η the geometric step,
    ``clipped_count_stddev`` σ_b the count noise (default n/20 per round, Andrew et al.).
    ``sampled_fraction`` is the participant sampling rate q for the accountant; leave it at 1
    unless participants are sampled at random and who was sampled stays secret (amplification by
    sampling does not hold when participation is public on chain).

    Metrics: ``central_dp/clip_norm`` (C used), ``central_dp/fraction_clipped`` (exact, not DP:
    an aggregator-side diagnostic, do not publish it with the model), ``central_dp/noise_std``,
    and with adaptive clipping the noised ``central_dp/noised_fraction_unclipped`` and
    ``central_dp/next_clip_norm``; the inner rule's metrics under ``inner/``.
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
        clipped_count_stddev: float | None = None,
        sampled_fraction: float = 1.0,
    ) -> None:
        if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
            raise ConfigError(f"central DP noise_multiplier must be >= 0, got {noise_multiplier}")
        if not math.isfinite(clip_norm) or clip_norm <= 0:
            raise ConfigError(f"central DP clip_norm must be > 0, got {clip_norm}")
        if not 0 <= target_quantile <= 1:
            raise ConfigError(f"target_quantile must be in [0, 1], got {target_quantile}")
        if clip_lr <= 0:
            raise ConfigError(f"clip_lr must be > 0, got {clip_lr}")
        if clipped_count_stddev is not None and clipped_count_stddev < 0:
            raise ConfigError(f"clipped_count_stddev must be >= 0, got {clipped_count_stddev}")
        if not 0 < sampled_fraction <= 1:
            raise ConfigError(f"sampled_fraction must be in (0, 1], got {sampled_fraction}")
        if adaptive and clipped_count_stddev is not None:
            effective_noise_multiplier(noise_multiplier, clipped_count_stddev)
        self.inner = inner
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.adaptive = adaptive
        self.target_quantile = target_quantile
        self.clip_lr = clip_lr
        self.clipped_count_stddev = clipped_count_stddev
        self.sampled_fraction = sampled_fraction

    @property
    def mean_rule(self) -> bool:
        return self.inner.name in MEAN_RULES

    def count_stddev(self, n: int) -> float:
        """σ_b for a round of ``n`` updates (0 without noise or without adaptive clipping)."""
        if not self.adaptive or self.noise_multiplier == 0:
            return 0.0
        return self.clipped_count_stddev if self.clipped_count_stddev is not None else n / 20

    def effective_noise_multiplier(self, n: int) -> float:
        """σ_Δ applied to the weights in a round of ``n`` updates."""
        if not self.adaptive:
            return self.noise_multiplier
        return effective_noise_multiplier(self.noise_multiplier, self.count_stddev(n))

    def noise_std(self, n: int, clip_norm: float) -> float:
        """Per-coordinate std of the noise on the aggregate delta (σ_Δ·C/n or σ_Δ·2C)."""
        sensitivity = clip_norm / n if self.mean_rule else 2 * clip_norm
        return self.effective_noise_multiplier(n) * sensitivity

    def accountant(self) -> CentralAccountant:
        """A fresh accountant matching these settings (step it once per released round)."""
        return CentralAccountant(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sampled_fraction,
            adaptive=self.adaptive,
            clipped_count_stddev=self.clipped_count_stddev,
        )

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        """Clip, aggregate with the inner rule, add seeded noise; see the module docstring."""
        check_compatible(updates, global_weights)
        canonical = ordered(updates)
        n = len(canonical)
        state = dict(state or {})
        clip = float(state.pop(CLIP_KEY)) if CLIP_KEY in state else self.clip_norm
        inner_state = {
            k[len(INNER_PREFIX) :]: v for k, v in state.items() if k.startswith(INNER_PREFIX)
        }
        sigma_b = self.count_stddev(n)
        std = self.noise_std(n, clip)  # validates the adaptive split before any work
        floats = _float_names(global_weights)
        base = {name: global_weights[name].to(torch.float64) for name in floats}

        clipped_updates: list[Update] = []
        unclipped = 0
        for u in canonical:
            delta = {name: u.weights[name].to(torch.float64) - base[name] for name in floats}
            clipped, norm = clip_delta(delta, clip)
            unclipped += norm <= clip
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
        if result.state and self.noise_multiplier > 0:
            raise ConfigError(
                f"central DP cannot wrap the stateful strategy {self.inner.name!r}: its state is "
                "computed from un-noised updates and would be published. Use a stateless rule."
            )

        gen = noise_generator(seed)
        agg = {name: result.weights[name].to(torch.float64) - base[name] for name in floats}
        if not self.mean_rule:
            agg, _ = clip_delta(agg, clip)
        metrics: dict[str, float] = {f"{INNER_PREFIX}{k}": v for k, v in result.metrics.items()}
        next_state: StrategyState = {f"{INNER_PREFIX}{k}": v for k, v in result.state.items()}
        next_clip = clip
        if self.adaptive:
            count_noise = (
                float(torch.normal(0.0, sigma_b, (1,), generator=gen, dtype=torch.float64))
                if sigma_b > 0
                else 0.0
            )
            noised_unclipped = (unclipped + count_noise) / n
            next_clip = clip * math.exp(-self.clip_lr * (noised_unclipped - self.target_quantile))
            metrics["central_dp/noised_fraction_unclipped"] = noised_unclipped
            metrics["central_dp/next_clip_norm"] = next_clip
        out: Weights = dict(result.weights)
        for name in floats:
            value = base[name] + agg[name]
            if std > 0:
                value = value + torch.normal(
                    0.0, std, tuple(value.shape), generator=gen, dtype=torch.float64
                )
            out[name] = value.to(global_weights[name].dtype).contiguous()
        next_state[CLIP_KEY] = torch.tensor(next_clip, dtype=torch.float64)
        metrics.update(
            {
                "central_dp/clip_norm": clip,
                "central_dp/fraction_clipped": 1 - unclipped / n,
                "central_dp/noise_std": std,
                "central_dp/noise_multiplier_effective": self.effective_noise_multiplier(n),
            }
        )
        return Aggregate(weights=out, state=next_state, metrics=metrics, selected=result.selected)
