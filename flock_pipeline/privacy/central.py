"""Accounting for central (user-level) DP with distributed noise, over Opacus' RDP accountant.

Each round releases one Gaussian mechanism over the participants' clipped updates (DP-FedAvg,
McMahan et al. 2018), its noise the sum of the proposers' shares
(``flock_pipeline.aggregation.central_dp``), so the accountant takes one step per round with the
round's noise multiplier and sample rate q (the participant sampling fraction). Rényi DP of the
(sub)sampled Gaussian mechanism after Mironov et al. 2019; conversion to (ε, δ) by Opacus.

Two bounds, for two audiences:

* :meth:`CentralAccountant.epsilon`: the released global models, given ``min_honest`` (t)
  honest proposers per round, at σ per round (less in a round with fewer than t updates);
* :meth:`CentralAccountant.update_epsilon`: each committed update on its own proposer's data,
  at the share σ/√t, with no assumption on anyone else. It holds for everything computed from
  the updates (the models too), and is what whoever reads single updates is held to.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from flock_pipeline.errors import ConfigError, DataError

__all__ = ["CentralAccountant"]


def _epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    if not history or all(steps == 0 for _, _, steps in history):
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    from opacus.accountants import RDPAccountant  # lazily: opacus takes seconds to import

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


@dataclass
class CentralAccountant:
    """Cumulative central ε of the released global models, one Opacus RDP step per round.

    ``noise_multiplier`` is the total σ the guarantee is stated for, ``min_honest`` the number
    t of honest proposers it assumes per round. ``labels`` make ``step`` idempotent: a round is
    released once, and a flow that resumes it must not count it again.
    """

    noise_multiplier: float
    sample_rate: float = 1.0
    min_honest: int = 1
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
        if isinstance(self.min_honest, bool) or not isinstance(self.min_honest, int):
            raise ConfigError(f"central DP min_honest must be an integer, got {self.min_honest!r}")
        if self.min_honest < 1:
            raise ConfigError(f"central DP min_honest must be >= 1, got {self.min_honest}")

    @property
    def share_multiplier(self) -> float:
        """σ/√t: the multiplier of one proposer's share, what a single update is noised with."""
        return self.noise_multiplier / math.sqrt(self.min_honest)

    @property
    def rounds(self) -> int:
        return sum(steps for _, _, steps in self.history)

    def step(
        self, rounds: int = 1, label: str | None = None, noise_multiplier: float | None = None
    ) -> None:
        """Account ``rounds`` released aggregates (skipped if ``label`` was already recorded).

        ``noise_multiplier`` is the σ those rounds hold at, when a round had fewer than t
        updates (``CentralDP.round_noise_multiplier``); it may not exceed the configured σ.
        """
        if rounds < 0:
            raise ConfigError(f"cannot account {rounds} rounds")
        sigma = self.noise_multiplier if noise_multiplier is None else float(noise_multiplier)
        if not 0 <= sigma <= self.noise_multiplier * (1 + 1e-12):
            raise ConfigError(
                f"a round's noise multiplier must be in [0, {self.noise_multiplier:g}], "
                f"got {sigma!r}"
            )
        if label is not None:
            if label in self.labels:
                return
            self.labels.append(label)
        if rounds == 0:
            return
        entry = (min(sigma, self.noise_multiplier), self.sample_rate)
        if self.history and self.history[-1][:2] == entry:
            self.history[-1] = (*entry, self.history[-1][2] + rounds)
        else:
            self.history.append((*entry, rounds))

    def epsilon(self, delta: float) -> float:
        """Cumulative ε at ``delta`` of the released models, given t honest proposers a round
        (inf if σ = 0, 0 if no round was accounted)."""
        return _epsilon(self.history, delta)

    def update_epsilon(self, delta: float) -> float:
        """Cumulative ε at ``delta`` of one proposer's committed updates, one per round, at
        σ/√t: the bound with no honesty assumption, for whoever sees single updates."""
        return _epsilon([(self.share_multiplier, self.sample_rate, self.rounds)], delta)

    def to_json(self) -> str:
        return json.dumps(
            {
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate,
                "min_honest": self.min_honest,
                "history": [list(h) for h in self.history],
                "labels": self.labels,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<central accountant>") -> CentralAccountant:
        try:
            raw = json.loads(text)
            return cls(
                noise_multiplier=float(raw["noise_multiplier"]),
                sample_rate=float(raw["sample_rate"]),
                min_honest=int(raw.get("min_honest", 1)),
                history=[(float(h[0]), float(h[1]), int(h[2])) for h in raw["history"]],
                labels=[str(x) for x in raw.get("labels", [])],
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"central DP accountant {source} is corrupt: {exc}") from None
