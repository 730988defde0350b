"""A participant's privacy ledger: every DP-SGD run it has done, as Opacus' RDP history.

Flower keeps client state only for a round, so budgets silently reset. Here the ledger is the
participant's own record on its own disk: the cumulative epsilon is recomputed from the full
history after every round, and a round that would cross the budget is refused before training.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from flock_pipeline.errors import DataError, PrivacyBudgetExceeded

__all__ = ["LedgerStore", "PrivacyLedger", "Spend"]


@dataclass(frozen=True)
class Spend:
    """One run of the subsampled Gaussian mechanism: Opacus' (noise, sample rate, steps).

    ``label`` (e.g. ``task/round``) makes recording idempotent. The noise is secret and fresh
    on every run, so a re-run releases a *different* output; that costs nothing more only
    because at most one output per label is ever released (a flow that crashed re-submits the
    update it kept, and retrains only if none left the participant).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    label: str | None = None


@functools.lru_cache(maxsize=1024)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus' RDP epsilon of ``history`` at ``delta``: a pure function of its arguments, and
    a tenth of a second or more each (the fractional orders), asked again for the same history
    by every receipt and report of a round: computed once per process."""
    from opacus.accountants import RDPAccountant  # lazily: opacus takes seconds to import

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


@dataclass
class PrivacyLedger:
    participant: str
    delta: float
    budget: float | None = None
    history: list[Spend] = field(default_factory=list)

    @staticmethod
    def epsilon_of(history: list[Spend], delta: float) -> float:
        if not history:
            return 0.0
        return _epsilon(tuple((s.noise_multiplier, s.sample_rate, s.steps) for s in history), delta)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon at this ledger's delta."""
        return self.epsilon_of(self.history, self.delta)

    def has(self, label: str | None) -> bool:
        return label is not None and any(s.label == label for s in self.history)

    def projected(self, spend: Spend) -> float:
        if self.has(spend.label):
            return self.epsilon
        return self.epsilon_of([*self.history, spend], self.delta)

    def check(self, spend: Spend) -> float:
        """The epsilon after ``spend``; raises if that crosses the budget."""
        after = self.projected(spend)
        if self.budget is not None and after > self.budget:
            raise PrivacyBudgetExceeded(
                f"participant {self.participant}: this round would raise epsilon from "
                f"{self.epsilon:.3f} to {after:.3f}, past its budget of {self.budget:g} "
                f"(delta={self.delta:g}); it refuses to train. Raise privacy.epsilon_budget, "
                "add noise, or train fewer epochs."
            )
        return after

    def record(self, spend: Spend) -> None:
        if not self.has(spend.label):
            self.history.append(spend)

    def to_json(self) -> str:
        return json.dumps(
            {
                "participant": self.participant,
                "delta": self.delta,
                "budget": self.budget,
                "history": [
                    [s.noise_multiplier, s.sample_rate, s.steps, s.label] for s in self.history
                ],
                "epsilon": self.epsilon,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<ledger>") -> PrivacyLedger:
        try:
            raw = json.loads(text)
            return cls(
                participant=str(raw["participant"]),
                delta=float(raw["delta"]),
                budget=None if raw.get("budget") is None else float(raw["budget"]),
                history=[
                    Spend(float(h[0]), float(h[1]), int(h[2]), h[3] if len(h) > 3 else None)
                    for h in raw["history"]
                ],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"privacy ledger {source} is corrupt: {exc}") from None


class LedgerStore:
    """Ledgers on disk, one JSON file per participant, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, participant: str) -> Path:
        return self.folder / f"{participant}.json"

    def load(self, participant: str, delta: float, budget: float | None) -> PrivacyLedger:
        path = self.path(participant)
        if not path.exists():
            return PrivacyLedger(participant, delta, budget)
        ledger = PrivacyLedger.from_json(path.read_text(), str(path))
        if not math.isclose(ledger.delta, delta):
            raise DataError(
                f"privacy ledger {path} accounts at delta={ledger.delta:g}, the config asks "
                f"delta={delta:g}; epsilons at different deltas do not add up. Keep the delta "
                "or use a fresh data folder."
            )
        ledger.budget = budget
        return ledger

    def save(self, ledger: PrivacyLedger) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(ledger.participant)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(ledger.to_json())
        os.replace(tmp, path)
