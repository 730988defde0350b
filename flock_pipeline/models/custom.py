"""Models named by a dotted path, ``package.module:factory``, besides the built-in names.

The factory is called like a built-in network class, ``factory(input_shape, num_classes)``,
with the task's feature shape (a tuple) and class count, and must return a ``torch.nn.Module``.
Every way a named factory can be wrong is a ConfigError naming it, raised when the config is
loaded (:func:`check_model` builds the model once and runs it on a zero batch), never in a round.

Nothing here imports torch until a dotted path is actually used: loading a config with a
built-in model stays cheap.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flock_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from flock_pipeline.config import DataSchema

__all__ = [
    "BUILTIN_MODELS",
    "build_custom",
    "check_model",
    "check_model_name",
    "is_dotted_path",
    "resolve_factory",
]

BUILTIN_MODELS = ("cnn", "mlp")
"""The names ``flock_pipeline.models.networks.MODELS`` holds (kept here so that validating a
name does not import torch; a test holds the two equal)."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<attr>{_IDENT}(?:\.{_IDENT})*)$")


def is_dotted_path(name: str) -> bool:
    return ":" in name


def check_model_name(name: str) -> None:
    """Refuse a name that is neither built in nor of the form ``package.module:factory``."""
    if name in BUILTIN_MODELS:
        return
    if not is_dotted_path(name) or not _DOTTED.match(name):
        raise ConfigError(
            f"model {name!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a "
            "dotted path package.module:factory; name one of those"
        )


def resolve_factory(name: str) -> Callable[..., Any]:
    """The callable ``package.module:factory`` names, imported."""
    check_model_name(name)
    match = _DOTTED.match(name)
    if match is None:
        raise ConfigError(f"model {name!r} is a built-in name, not a dotted path")
    module_name, attr_path = match["module"], match["attr"]
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model {name!r}: cannot import module {module_name!r} ({exc}); install the "
            "package that holds it or add its folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(
            f"model {name!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}; fix the module"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"model {name!r}: module {module_name!r} has no attribute {attr_path!r}; check "
                "the name after the ':'"
            ) from None
    if not callable(obj):
        raise ConfigError(
            f"model {name!r}: {module_name}:{attr_path} is a {type(obj).__name__}, not a "
            "callable; name a function or class that takes (input_shape, num_classes)"
        )
    return obj  # type: ignore[no-any-return]


def build_custom(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A fresh network from the factory ``name`` names; weights come from the caller's seed."""
    from torch import nn

    factory = resolve_factory(name)
    try:
        net = factory(tuple(input_shape), num_classes)
    except Exception as exc:
        raise ConfigError(
            f"model {name!r}: the factory raised {type(exc).__name__}: {exc} when called with "
            f"input_shape={tuple(input_shape)}, num_classes={num_classes}; fix the factory"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"model {name!r}: the factory returned a {type(net).__name__}, not a "
            "torch.nn.Module; return the network itself"
        )
    return net


def check_model(name: str, schema: DataSchema, dp: bool) -> None:
    """Refuse a model that cannot train on data of ``schema`` (with DP-SGD if ``dp``).

    A built-in model takes float32 images (C, H, W). A dotted-path model is built, must have
    trainable parameters, must map a zero batch of two samples to (2, num_classes) logits and,
    with DP, must pass Opacus' module check (no BatchNorm and the like).
    """
    check_model_name(name)
    shape = tuple(schema.feature_shape)
    if name in BUILTIN_MODELS:
        if len(shape) != 3 or schema.dtype != "float32":
            raise ConfigError(
                f"model {name!r} takes float32 images of shape (channels, height, width), the "
                f"data schema has {schema.dtype} features of shape {list(shape)}; name a model "
                "by dotted path package.module:factory for such data"
            )
        return
    _check_custom(name, shape, schema.num_classes, schema.dtype, dp)


@lru_cache(maxsize=32)
def _check_custom(
    name: str, shape: tuple[int, ...], num_classes: int, dtype: str, dp: bool
) -> None:
    # Cached on success only (lru_cache does not keep exceptions): a config is loaded often.
    import torch

    net = build_custom(name, shape, num_classes)
    if not any(p.requires_grad for p in net.parameters()):
        raise ConfigError(f"model {name!r} has no trainable parameters; give it some")
    batch = torch.zeros((2, *shape), dtype=getattr(torch, dtype))
    try:
        with torch.no_grad():
            out = net(batch)
    except Exception as exc:
        raise ConfigError(
            f"model {name!r} fails on a batch of shape {[2, *shape]} ({dtype}): "
            f"{type(exc).__name__}: {exc}; make it accept the data schema's feature_shape"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model {name!r} maps a batch of 2 samples to {got}, expected logits of shape "
            f"[2, {num_classes}] (one per class); fix its output layer"
        )
    if dp:
        from opacus.validators import ModuleValidator

        problems = ModuleValidator.validate(net, strict=False)
        if problems:
            first = str(problems[0]).split(". ")[0]
            raise ConfigError(
                f"model {name!r} cannot be trained with DP-SGD: {first} ({len(problems)} "
                "problem(s)); use GroupNorm/LayerNorm instead of BatchNorm, or set "
                "privacy.enabled: false"
            )
