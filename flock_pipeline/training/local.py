"""Local training of one participant from the global weights of a round."""

from __future__ import annotations

import logging
import math
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flock_pipeline.config import PrivacyConfig, TrainingConfig
from flock_pipeline.errors import LocalTrainingTimeout
from flock_pipeline.privacy import PrivacyLedger, Spend
from flock_pipeline.seeding import secret_generator
from flock_pipeline.serialization import Weights
from flock_pipeline.update import Update

__all__ = ["plan_spend", "train_local"]

if TYPE_CHECKING:  # Lightning and Opacus take seconds to import: only a training imports them
    import lightning as L
    from opacus import PrivacyEngine

_LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric",
    "lightning.fabric.utilities.rank_zero",
    "pytorch_lightning",
    "pytorch_lightning.utilities.rank_zero",
)


def plan_spend(
    num_samples: int, training: TrainingConfig, privacy: PrivacyConfig, label: str | None = None
) -> Spend:
    """The DP-SGD run a local training will do, known before it starts (for the budget check).

    Mirrors Opacus: Poisson sampling at rate 1/len(loader), len(loader) = ceil(n / batch) steps
    per epoch.
    """
    steps_per_epoch = math.ceil(num_samples / training.batch_size)
    sample_rate = 1.0 / steps_per_epoch
    steps = steps_per_epoch * training.local_epochs
    if privacy.target_epsilon is not None:
        from opacus.accountants.utils import get_noise_multiplier

        noise = float(
            get_noise_multiplier(
                target_epsilon=privacy.target_epsilon,
                target_delta=privacy.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        )
    else:
        assert privacy.noise_multiplier is not None  # guaranteed by PrivacyConfig
        noise = float(privacy.noise_multiplier)
    return Spend(noise, sample_rate, steps, label)


def _secure_engine() -> PrivacyEngine:
    """An Opacus engine in secure mode whose generator is :func:`secret_generator`.

    Secure mode draws the noise from a generator nobody else can seed (Opacus refuses a seeded
    one there) and sums several Gaussians per draw, against the floating-point attack on
    Gaussian noise (Jin et al. 2021). Opacus builds that generator with ``torchcsprng``, which
    has no build for current torch; the two attributes its constructor would set are set here
    instead, so Opacus' own secure code paths run unchanged.
    """
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "secure RNG turned off" notice: turned on below
        engine = PrivacyEngine(accountant="rdp")
    engine.secure_mode = True
    engine.secure_rng = secret_generator()
    return engine


def _quiet_trainer(epochs: int, max_seconds: float | None) -> L.Trainer:
    # Orchestrators (Prefect) reconfigure logging after import; silence the trainer's banners
    # ("GPU available ...") again right before each trainer is built.
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import lightning as L

    return L.Trainer(
        max_epochs=epochs,
        max_time=None if max_seconds is None else timedelta(seconds=max_seconds),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=True,
        num_sanity_val_steps=0,
    )


def train_local(
    participant: str,
    network: nn.Module,
    global_weights: Weights,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    training: TrainingConfig,
    privacy: PrivacyConfig,
    ledger: PrivacyLedger | None = None,
    seed: int = 0,
    spend_label: str | None = None,
    max_seconds: float | None = None,
) -> Update:
    """Train ``network`` from ``global_weights`` on (x, y) and return the participant's update.

    With privacy enabled, ``ledger`` is required: the round is refused (PrivacyBudgetExceeded)
    before any training if it would cross the budget, and recorded in the ledger after it. The
    DP-SGD noise and the Poisson sampling then come from a fresh secret generator, so two runs
    never give the same update; without DP, ``seed`` alone fixes the result, bit for bit.
    ``spend_label`` names the spend so that re-running the same (task, round) is not counted
    twice: the caller must never release more than one update per label (the flow keeps the
    first one it uploads and reuses it on resume).
    ``max_seconds`` stops training at that wall-clock limit and raises LocalTrainingTimeout: a
    partial update is not submitted (and, since noise was already drawn, its spend is recorded).
    """
    n = len(y)
    epsilon: float | None = None
    if privacy.enabled:
        if ledger is None:
            raise ValueError("privacy is enabled but no ledger was given")
        epsilon = ledger.check(
            plan_spend(n, training, privacy, spend_label)
        )  # refuse before any training
    network.load_state_dict(global_weights)
    torch.manual_seed(seed)
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=training.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )

    spend: Spend | None = None
    privatize = None
    if privacy.enabled:
        spend = plan_spend(n, training, privacy, spend_label)
        from opacus.data_loader import DPDataLoader

        engine = _secure_engine()
        # Which examples each step used is part of the secret too: the amplification by
        # subsampling the accountant counts on holds only if nobody can replay the draw.
        loader = DPDataLoader.from_data_loader(loader, generator=engine.secure_rng)
        noise, clip = spend.noise_multiplier, privacy.max_grad_norm

        def privatize(
            net: nn.Module, optimizer: torch.optim.Optimizer, dl: DataLoader[Any]
        ) -> tuple[nn.Module, torch.optim.Optimizer]:
            module, opt, _ = engine.make_private(
                module=net,
                optimizer=optimizer,
                data_loader=dl,
                noise_multiplier=noise,
                max_grad_norm=clip,
                poisson_sampling=False,  # the loader is already Poisson-sampled
            )
            return module, opt

    from flock_pipeline.models import Classifier

    model = Classifier(
        network,
        lr=training.lr,
        momentum=training.momentum,
        proximal_mu=training.proximal_mu,
        privatize=privatize,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _quiet_trainer(training.local_epochs, max_seconds)
        trainer.fit(model, train_dataloaders=loader)
    model.release()
    if trainer.current_epoch < training.local_epochs:
        if spend is not None and ledger is not None:
            ledger.record(spend)
        raise LocalTrainingTimeout(
            f"participant {participant}: local training hit its {max_seconds:g} s limit after "
            f"{trainer.current_epoch} of {training.local_epochs} epochs; raise "
            "training.timeout_minutes or train fewer epochs"
        )

    weights = {k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}
    losses = model.train_losses
    metrics = {
        "train_loss_first": losses[0] if losses else float("nan"),
        "train_loss_last": float(np.mean(losses[-max(1, len(losses) // 5) :]))
        if losses
        else float("nan"),
        "steps": float(len(losses)),
    }
    if spend is not None and ledger is not None:
        ledger.record(spend)  # epsilon is what check() computed for exactly this history
    return Update(
        participant=participant,
        weights=weights,
        num_samples=n,
        metrics=metrics,
        epsilon=epsilon,
        delta=privacy.delta if privacy.enabled else None,
    )
