"""Accounting for central (user-level) DP at aggregation, over Opacus' RDP accountant.

Each round releases one Gaussian mechanism over the participants' clipped updates (DP-FedAvg,
McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"), so the
accountant takes one step per round with the total noise multiplier σ and sample rate q (the
participant sampling fraction). Rényi DP of the (sub)sampled Gaussian mechanism after Mironov et
al. 2019; conversion to (ε, δ) by Opacus.

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping")
also releases a noised count of unclipped updates. Its centred bits ``b_i - 1/2`` have sensitivity
1/2, so count noise of std σ_b is a Gaussian mechanism with multiplier 2σ_b. Two Gaussian
mechanisms on the same sample compose to one with σ⁻² = σ_Δ⁻² + (2σ_b)⁻². To keep the configured
total σ, the weights are noised with the larger *effective* multiplier

    σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2),

which only exists if 2σ_b > σ; otherwise the count alone would spend more than the whole budget
and the settings are refused with a ``ConfigError``. The accountant always steps with σ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from opacus.accountants import RDPAccountant

from flock_pipeline.errors import ConfigError, DataError

__all__ = ["CentralAccountant", "effective_noise_multiplier"]


def effective_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """σ_Δ for the weights so that weights + count noise compose to ``noise_multiplier``.

    Andrew et al. 2021, Sec. 3.1: σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2). ``noise_multiplier == 0`` (no
    privacy, for testing) returns 0. Raises ``ConfigError`` when 2σ_b ≤ σ.
    """
    if noise_multiplier < 0:
        raise ConfigError(f"central DP noise_multiplier must be >= 0, got {noise_multiplier:g}")
    if noise_multiplier == 0:
        return 0.0
    if clipped_count_stddev <= noise_multiplier / 2:
        raise ConfigError(
            f"adaptive clipping: clipped_count_stddev={clipped_count_stddev:g} is too small for "
            f"noise_multiplier={noise_multiplier:g}; the noised count alone would cost more than "
            f"the whole budget (needs clipped_count_stddev > noise_multiplier/2 = "
            f"{noise_multiplier / 2:g}). Raise clipped_count_stddev (Andrew et al. suggest "
            "expected participants/20, but with few participants set it explicitly) or lower "
            "noise_multiplier."
        )
    return float((noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2) ** -0.5)


@dataclass
class CentralAccountant:
    """Cumulative central ε of the released global models, one Opacus RDP step per round.

    ``noise_multiplier`` is the total σ the guarantee is stated for; with ``adaptive`` and a
    ``clipped_count_stddev`` the split is checked here and ``effective_noise_multiplier`` gives
    the σ_Δ that the aggregator applies to the weights. ``labels`` make ``step`` idempotent (a
    re-run round with the same seed releases the same output again, which costs nothing more).
    """

    noise_multiplier: float
    sample_rate: float = 1.0
    adaptive: bool = False
    clipped_count_stddev: float | None = None
    history: list[tuple[float, float, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not math.isfinite(self.noise_multiplier) or self.noise_multiplier < 0:
            raise ConfigError(
                f"central DP noise_multiplier must be a finite number >= 0, "
                f"got {self.noise_multiplier!r}"
            )
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(
                f"central DP sample rate (sampled_fraction) must be in (0, 1], "
                f"got {self.sample_rate!r}"
            )
        if self.clipped_count_stddev is not None and self.clipped_count_stddev < 0:
            raise ConfigError(
                f"clipped_count_stddev must be >= 0, got {self.clipped_count_stddev!r}"
            )
        if self.adaptive and self.clipped_count_stddev is not None:
            effective_noise_multiplier(self.noise_multiplier, self.clipped_count_stddev)

    @property
    def effective_noise_multiplier(self) -> float:
        """σ_Δ applied to the weights: σ itself, or the Andrew et al. split when adaptive."""
        if not self.adaptive:
            return self.noise_multiplier
        if self.clipped_count_stddev is None:
            raise ConfigError(
                "adaptive clipping: the effective noise multiplier needs clipped_count_stddev"
            )
        return effective_noise_multiplier(self.noise_multiplier, self.clipped_count_stddev)

    @property
    def rounds(self) -> int:
        return sum(steps for _, _, steps in self.history)

    def step(self, rounds: int = 1, label: str | None = None) -> None:
        """Account ``rounds`` released aggregates (skipped if ``label`` was already recorded)."""
        if rounds < 0:
            raise ConfigError(f"cannot account {rounds} rounds")
        if label is not None:
            if label in self.labels:
                return
            self.labels.append(label)
        if rounds == 0:
            return
        entry = (self.noise_multiplier, self.sample_rate)
        if self.history and self.history[-1][:2] == entry:
            self.history[-1] = (*entry, self.history[-1][2] + rounds)
        else:
            self.history.append((*entry, rounds))

    def epsilon(self, delta: float) -> float:
        """Cumulative ε at ``delta`` over every accounted round (inf if σ = 0, 0 if none)."""
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
        if not self.history:
            return 0.0
        if any(sigma == 0 for sigma, _, _ in self.history):
            return math.inf
        accountant = RDPAccountant()
        accountant.history = list(self.history)
        return float(accountant.get_epsilon(delta=delta))

    def to_json(self) -> str:
        return json.dumps(
            {
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate,
                "adaptive": self.adaptive,
                "clipped_count_stddev": self.clipped_count_stddev,
                "history": [list(h) for h in self.history],
                "labels": self.labels,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<central accountant>") -> CentralAccountant:
        try:
            raw = json.loads(text)
            sigma_b = raw.get("clipped_count_stddev")
            return cls(
                noise_multiplier=float(raw["noise_multiplier"]),
                sample_rate=float(raw["sample_rate"]),
                adaptive=bool(raw["adaptive"]),
                clipped_count_stddev=None if sigma_b is None else float(sigma_b),
                history=[(float(h[0]), float(h[1]), int(h[2])) for h in raw["history"]],
                labels=[str(x) for x in raw.get("labels", [])],
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"central DP accountant {source} is corrupt: {exc}") from None
