"""Small pieces shared by the cross-architecture models: option checks, 2-d norms, size rules.

The size rules are how every model keeps working from 1x8x8 up to 3x64x64: a pooling or striding
step is taken only when the map it leaves is still at least 2x2 while normalised convolutions
follow. Instance norm on a 1x1 map outputs its bias whatever the input, so nothing upstream would
get a gradient; this rule keeps that from happening. Standard inputs (1x28x28, 3x32x32) are never
affected.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from .registry import register_model

NORMS_2D = ("instancenorm", "batchnorm", "groupnorm", "none")


def check_choice(owner: str, name: str, value, choices: Iterable[str]) -> None:
    """Raise the sklearn-worded error when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be one of {', '.join(map(repr, choices))}. Got {value!r} instead."
        )


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that computes small channels-last maps in the default layout.

    Why: torch's CPU group-norm kernel is 7-25x slower on channels-last maps under 32x32 px than on
    the same map in the default layout, and fast on larger ones (measured, torch 2.13, bf16, ConvNet-3
    widths), while the convolutions and pooling around it are faster channels-last. Small maps are
    converted there and back (cheap at that size); the values are those of ``nn.GroupNorm``.
    """

    def forward(self, x):
        small_channels_last = (x.dim() == 4 and x.shape[-2] * x.shape[-1] < 1024 and not x.is_contiguous()
                               and x.is_contiguous(memory_format=torch.channels_last))
        if small_channels_last:
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _MeanOf2x2(torch.autograd.Function):
    """The mean of each 2 x 2 block (odd last row / column dropped), summed in float32 in the native
    kernel's order, so its values are ``avg_pool2d(x, 2)``'s bit for bit (signed zeros included)."""

    generate_vmap_rule = True  # DC's matching takes per-class gradients under vmap

    @staticmethod
    def forward(x):
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        # A few samples at a time: the float32 sums of a whole batch would not stay in cache
        return torch.cat([_block_means(part[..., :h, :w]) for part in x.split(_samples_per_chunk(x))])

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.in_hw = tuple(inputs[0].shape[-2:])

    @staticmethod
    def backward(ctx, grad):
        return _SpreadOver2x2.apply(grad, *ctx.in_hw)

    @staticmethod
    def jvp(ctx, x_tangent):  # linear: the tangent goes through the same map
        return _MeanOf2x2.apply(x_tangent)


class _SpreadOver2x2(torch.autograd.Function):
    """A quarter of each value on each pixel of its 2 x 2 block (zeros on a dropped row / column): the
    adjoint of :class:`_MeanOf2x2`, whose backward it is. Its own backward is that mean again, so DC's
    double backward is exact too. (One difference from the kernel's backward: when nothing after the pool
    is nonlinear, the gradient does not depend on x and carries no graph back to it.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad, in_h, in_w):
        h, w = grad.shape[-2:]
        spread = torch.cat([_spread(part) for part in grad.split(_samples_per_chunk(grad))])
        dropped = (0, in_w - 2 * w, 0, in_h - 2 * h)
        return F.pad(spread, dropped) if any(dropped) else spread

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.in_hw = inputs[1:]

    @staticmethod
    def backward(ctx, grad_of_spread):
        return _MeanOf2x2.apply(grad_of_spread), None, None

    @staticmethod
    def jvp(ctx, grad_tangent, *_):
        return _SpreadOver2x2.apply(grad_tangent, *ctx.in_hw)


def _samples_per_chunk(x: torch.Tensor) -> int:
    return max(1, (1 << 20) // max(1, x.shape[1:].numel()))


def _spread(grad: torch.Tensor) -> torch.Tensor:
    quarter = grad.mul(0.25).add_(0)  # + 0 turns -0 into +0, as the kernel's zero-filled output has it
    columns = torch.stack([quarter, quarter], -1).flatten(-2)  # each value twice along a row (2x faster than
    return torch.stack([columns, columns], -2).flatten(-3, -2)  # a broadcast copy), then each row


def _block_means(x: torch.Tensor) -> torch.Tensor:
    top, bottom = x[..., 0::2, :], x[..., 1::2, :]
    total = top[..., 0::2].float() + top[..., 1::2]  # ((x00 + x01) + x10) + x11: the kernel's order
    total += bottom[..., 0::2]
    total += bottom[..., 1::2]
    return (total * 0.25).to(x.dtype).add_(0)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(2)`` with a faster path for bf16 maps in the default layout on CPU.

    Why: torch's CPU kernels for that case are not vectorised: 2 x 2 pooling and its backward took 35 % of
    a ConvNet-3 evaluation step (100 MNIST images, bf16, torch 2.13, one thread). Sliced float32 sums and
    a stacked backward, a few samples at a time, are 2-3x faster each (1.1-1.3x per training step); the
    outputs, gradients and second derivatives equal the kernel's bit for bit (tests/models/test_models.py).
    Other dtypes, and channels-last maps (where the kernel is fast), use the kernel.
    """

    def __init__(self):
        super().__init__(2)

    def forward(self, x):
        if (x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous()
                and min(x.shape[-2:]) >= 2):
            return _MeanOf2x2.apply(x)
        return super().forward(x)


def norm2d(norm: str, channels: int) -> nn.Module:
    """``instancenorm`` is GroupNorm with one group per channel (affine), as in the DC reference code."""
    if norm == "instancenorm":
        return GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "groupnorm":  # 4 groups, as ConvNet's groupnorm
        return GroupNorm(4, channels, affine=True)
    assert norm == "none", norm  # callers validate first
    return nn.Identity()


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def fit_padding(size: int, kernel: int, padding: int) -> int:
    """``padding``, or "same" padding (kernel // 2) when ``padding`` would leave a map under 2 px."""
    return padding if conv_out(size, kernel, 1, padding) >= 2 else kernel // 2


def can_halve(size: int, more_norm_layers: bool) -> bool:
    """Whether a 2x downsampling step may run on a ``size`` px map (see the module docstring)."""
    return size >= 2 and (not more_norm_layers or size // 2 >= 2)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a == b


def register_fixed_variant(name: str, build: Callable[..., nn.Module], doc: str, **fixed) -> Callable[..., nn.Module]:
    """Register ``name`` as ``build`` with some options fixed; passing a different value for one is an error.

    ``alexnet_bn(norm="none")`` would silently not be a BN network, so it is refused instead.
    """

    def builder(in_shape, num_classes, **kw):
        for key, value in fixed.items():
            if key in kw and not _same(kw[key], value):
                raise InvalidParameterError(
                    f"The {key!r} parameter of {name} is fixed to {value!r}. Got {kw[key]!r} instead; "
                    f"use the base model with {key}={kw[key]!r}."
                )
        return build(in_shape, num_classes, **{**kw, **fixed})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_model(builder, name=name)
