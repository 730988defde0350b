"""Model factories named by dotted path in tests (``custom_models:tiny``): good ones and one of
each kind the config must refuse."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tiny(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten and one linear layer: trains with or without DP."""
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, num_classes))


class Embedder(nn.Module):
    """Integer codes (N, L) -> embedding mean -> logits: a model for an int64 schema."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.embed(x).mean(dim=1))
        return out


class Factories:
    """A factory reached through an attribute path (``custom_models:Factories.tiny``)."""

    tiny = staticmethod(tiny)


def with_batchnorm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size, 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes)
    )


def not_a_module(input_shape: tuple[int, ...], num_classes: int) -> Any:
    return {"layers": [input_shape, num_classes]}


def raises(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    raise ValueError("this factory only builds for audio")


def wrong_output(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, num_classes + 1))


def wrong_input(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3, num_classes))


def no_parameters(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Flatten()


NOT_CALLABLE = 3
