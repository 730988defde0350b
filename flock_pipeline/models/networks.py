"""Plain torch networks by name. GroupNorm instead of BatchNorm, so Opacus can clip per sample."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flock_pipeline.errors import ConfigError
from flock_pipeline.models.custom import build_custom, is_dotted_path
from flock_pipeline.models.layers import MaxPool2x2

__all__ = ["CNN", "MLP", "MODELS", "build_network"]


class MLP(nn.Module):
    """Two hidden layers with LayerNorm-free ReLU; a strong baseline on 28x28 grey images."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 128):
        super().__init__()
        c, h, w = input_shape
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


class CNN(nn.Module):
    """Two conv blocks with GroupNorm, then a linear head; ~26k parameters on 28x28 input."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 16):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.ReLU(),
            MaxPool2x2(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4 if min(h, w) >= 16 else 2),
        )
        side = 4 if min(h, w) >= 16 else 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


MODELS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {"mlp": MLP, "cnn": CNN}


def build_network(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A fresh network by name (``mlp``, ``cnn`` or ``package.module:factory``); weights come
    from the caller's seed."""
    if is_dotted_path(name):
        return build_custom(name, input_shape, num_classes)
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {name!r} takes images (channels, height, width), not shape "
            f"{list(input_shape)}; name a model by dotted path package.module:factory"
        )
    c, h, w = input_shape
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}"
        ) from None
    return factory((c, h, w), num_classes)
