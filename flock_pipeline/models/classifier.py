"""The LightningModule every participant trains: a network, cross-entropy, SGD, optional DP."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Classifier"]


class Classifier(L.LightningModule):
    """Wraps a network for local training.

    Differential privacy is attached from outside (see ``flock_pipeline.training``) through
    ``privatize``, a callable that gets (network, optimizer, train loader) once the loader exists
    and returns the private versions; this keeps the module free of Opacus.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 0.1,
        momentum: float = 0.9,
        proximal_mu: float = 0.0,
        privatize: Any = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.momentum = momentum
        self.proximal_mu = proximal_mu
        self.privatize = privatize
        self._trainable: nn.Module = net
        self._anchor: list[torch.Tensor] = []
        self.train_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._trainable(x)
        return out

    def on_fit_start(self) -> None:
        # FedProx anchors to the weights the round started from.
        self._anchor = [p.detach().clone() for p in self.net.parameters()]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> Any:
        x, y = batch
        if y.numel() == 0:  # Poisson sampling can draw an empty batch
            return None
        loss = F.cross_entropy(self(x), y)
        self.train_losses.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=False, batch_size=int(y.numel()))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # FedProx as a decoupled proximal step after each optimizer step: w -= lr*mu*(w - w0).
        # Done outside the loss because Opacus builds the update from per-sample gradients only,
        # and this term is data-independent, so it costs no privacy.
        if self.proximal_mu > 0 and outputs is not None:
            with torch.no_grad():
                for p, p0 in zip(self.net.parameters(), self._anchor, strict=True):
                    p.sub_(self.lr * self.proximal_mu * (p - p0))

    def release(self) -> None:
        """Detach the DP wrapper's hooks so the network can be trained again later."""
        close = getattr(self._trainable, "_close", None)
        if self._trainable is not self.net and callable(close):
            close()
        self._trainable = self.net

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)
        if self.privatize is None:
            return optimizer
        self.trainer.fit_loop.setup_data()
        loader = self.trainer.train_dataloader
        self._trainable, private = self.privatize(self.net, optimizer, loader)
        return private  # type: ignore[no-any-return]
