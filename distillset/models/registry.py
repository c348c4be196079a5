"""The model registry: ``get_model(name, in_shape, num_classes, **kw)`` builds any registered network.

Every model is an ``nn.Module`` with
- ``embed(x) -> (B, feature_dim)``: features before the classifier (DM matches these),
- ``classify(h) -> (B, num_classes)``,
- ``forward(x) = classify(embed(x))``,
- ``feature_dim``: int.
Builders share the signature ``builder(in_shape, num_classes, **kwargs)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .._registry import Registry, build_spec, drop_none, parse_spec
from ..errors import DistillsetError, InvalidParameterError
from ..utils import SEED_RANGE, Interval, seeded_global_rng, validate_params

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: register a builder ``fn(in_shape, num_classes, **kw)`` under ``name`` or its ``__name__``."""
    if fn is None:
        return lambda f: MODELS.register(f, name=name)
    return MODELS.register(fn, name=name)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def canonical_model_name(name: str) -> str:
    """Map "ConvNetBN", "convnet-bn" or "convnet_bn" to the registered "convnet_bn" (unknown names pass through)."""
    squash = lambda s: s.lower().replace("_", "").replace("-", "")  # noqa: E731
    matches = [n for n in MODELS.names() if squash(n) == squash(name)]
    return matches[0] if matches else name


def model_spec_name(spec: str | dict) -> str:
    """A spec's canonical string, e.g. ``"convnet(depth=4, width=64)"`` (options sorted), for result keys.

    >>> model_spec_name({"name": "convnet", "width": 64, "depth": 4}), model_spec_name("convnet")
    ('convnet(depth=4, width=64)', 'convnet')
    """
    name, kw = parse_spec(spec, "model")
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(kw.items()))})" if kw else name


def get_model(
    name: str | dict,
    in_shape: tuple[int, int, int] | list[int] = (3, 32, 32),
    num_classes: int = 10,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str or dict
        Registered name, case-insensitive (``"convnet"``, ``"ConvNetBN"``, ``"resnet18"``...), or a spec with
        options: ``"convnet(width=64, depth=4)"`` or ``{"name": "convnet", "width": 64, "depth": 4}``
        (``**kwargs`` win over the spec's options), so a search space can be written down.
    in_shape : (C, H, W)
        Input image shape; 1x8x8 up to 3x64x64 are supported by every model.
    num_classes : int
    seed : int, default=None
        Seeds the weight initialisation without touching the caller's global RNG state.
    device : default=None
        Where to put the model (built on CPU first, so the seed gives the same weights everywhere).
    **kwargs
        Builder options (``width``, ``depth``, ``act``, ``norm``, ``pooling`` ...); ``None`` values are dropped.

    Examples
    --------
    >>> net = get_model("convnet", (1, 28, 28), 10, seed=0)
    >>> net.embed(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 2048])
    >>> get_model("convnet(width=16, depth=2, pooling='maxpool')", (1, 8, 8), 10).feature_dim
    64
    """
    name, spec_kwargs = parse_spec(name, "model")
    kwargs = {**spec_kwargs, **kwargs}
    builder = MODELS.get(canonical_model_name(name))
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise InvalidParameterError(f"The 'in_shape' parameter must be (C, H, W) with positive sizes. Got {in_shape!r} instead.")
    validate_params("get_model", {"num_classes": num_classes, "seed": seed},  # '10' and -1 went through
                    {"num_classes": [Interval(int, 1)], "seed": [None, SEED_RANGE]})
    if seed is None:
        model = build_spec(builder, "model", name, in_shape, int(num_classes), **drop_none(kwargs))
    else:
        with seeded_global_rng(int(seed)):
            model = build_spec(builder, "model", name, in_shape, int(num_classes), **drop_none(kwargs))
    return model.to(device) if device is not None else model


def check_model(spec: str | dict, in_shape, num_classes: int, owner: str) -> None:
    """Build ``spec`` once and pass one zero image through it: an unknown name or option, or a model that cannot
    take these images, is one clear error before any work rather than inside the first step."""
    try:
        with torch.no_grad():
            get_model(spec, in_shape, num_classes, seed=0).eval()(torch.zeros(1, *in_shape))
    except DistillsetError:  # the spec itself is wrong (an unknown name or option): its own message says how
        raise
    except (RuntimeError, ValueError, TypeError) as e:
        raise InvalidParameterError(
            f"The 'model' parameter of {owner} is {spec!r}, which cannot take images of shape {tuple(in_shape)} "
            f"({str(e).splitlines()[0]}). Choose another model (distillset list models).") from None


class EmbedClassifier(nn.Module):
    """Base of every model: ``forward(x) = classify(embed(x))``.

    Subclasses set ``feature_dim`` and ``classifier``, and either a ``features`` module (the default
    ``embed`` flattens its output) or their own ``embed``.
    """

    feature_dim: int

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)  # (B, feature_dim)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model mixes samples in a batch (BatchNorm), so per-class statistics differ from batched."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
