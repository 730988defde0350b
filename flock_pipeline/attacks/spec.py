"""Which adversarial behaviour a participant shows, as a config section.

This module imports only pydantic, so ``FlockConfig`` can use it without pulling in torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from flock_pipeline.errors import ConfigError

__all__ = ["ATTACK_KINDS", "AttackKind", "AttackSpec", "Attacks", "check_attacks"]

AttackKind = Literal[
    "label_flip",
    "sign_flip",
    "boosted",
    "gaussian_noise",
    "free_rider",
    "copier",
    "dishonest_voter",
    "corrupt_update",
    "nan_update",
    "wrong_shape",
    "inflated_samples",
    "unsigned",
    "foreign_signature",
]
ATTACK_KINDS: tuple[str, ...] = get_args(AttackKind)


class AttackSpec(BaseModel):
    """One participant's attack. Parameters that do not apply to ``kind`` are ignored.

    - ``label_flip``: trains on relabelled data; ``flip_to`` is ``reverse`` (y -> C-1-y) or
      ``next`` (y -> (y+1) mod C).
    - ``sign_flip``: submits global - (w - global).
    - ``boosted``: submits global + ``scale`` * (w - global).
    - ``gaussian_noise``: submits global + N(0, ``sigma``²) per coordinate (absolute std, not
      relative to the update); the honest update is discarded.
    - ``free_rider``: submits the global weights unchanged, claiming its real sample count.
    - ``copier``: submits the weights of ``copy_from`` (None: the first other proposer in the
      canonical order, by content hash then id), with its own id and sample count.
    - ``dishonest_voter``: trains honestly, votes against its measurement.
    - ``corrupt_update``: uploads bytes that are not safetensors (its honest file, truncated).
    - ``nan_update``: its honest update with one coordinate set to NaN (seeded position).
    - ``wrong_shape``: its honest update with one tensor grown by a row (another architecture).
    - ``inflated_samples``: its honest update, claiming ``factor`` x its real sample count.
    - ``unsigned``: its honest update, committed without a signature envelope.
    - ``foreign_signature``: its honest update, with an envelope signed by a key that is not
      its own (a blob relayed from someone else, or a forged one).

    ``corrupt_update``, ``nan_update``, ``wrong_shape``, ``unsigned`` and
    ``foreign_signature`` make invalid updates (``flock_pipeline.validity``): flagged and penalized.
    An inflated claim is bounded by ``aggregation.max_weight_share`` (and refused outright
    where the chain knows the registered count).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AttackKind
    scale: float = Field(10.0, gt=0, description="boosted: factor on the update's delta")
    sigma: float = Field(1.0, gt=0, description="gaussian_noise: absolute std per coordinate")
    flip_to: Literal["reverse", "next"] = Field(
        "reverse", description="label_flip: reverse (y -> C-1-y) or next (y -> (y+1) mod C)"
    )
    copy_from: str | None = Field(
        None, description="copier: participant id to copy; None: first other proposer"
    )
    factor: float = Field(1e6, ge=1, description="inflated_samples: claimed / real sample count")


Attacks = dict[str, AttackSpec]
"""Participant id -> its attack; participants not listed are honest."""


def check_attacks(attacks: Attacks, participants: Iterable[str]) -> None:
    """Refuse attacks on unknown participants and copiers of nobody, themselves or a copier."""
    ids = list(participants)
    known = set(ids)
    shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
    for pid, spec in attacks.items():
        if pid not in known:
            raise ConfigError(f"attacks.{pid}: no participant {pid!r}; participants are {shown}")
        if spec.kind != "copier" or spec.copy_from is None:
            continue
        if spec.copy_from == pid:
            raise ConfigError(f"attacks.{pid}.copy_from: a copier cannot copy itself")
        if spec.copy_from not in known:
            raise ConfigError(
                f"attacks.{pid}.copy_from: no participant {spec.copy_from!r}; "
                f"participants are {shown}"
            )
        target = attacks.get(spec.copy_from)
        if target is not None and target.kind == "copier":
            raise ConfigError(
                f"attacks.{pid}.copy_from: {spec.copy_from} is itself a copier; "
                "copy an honest or tampering participant"
            )
