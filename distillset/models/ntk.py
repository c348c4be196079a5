"""Finite networks in the NTK parameterisation, matching the infinite-width kernels layer for layer.

Weights and biases are drawn N(0, 1) and scaled in the forward pass (W_std / sqrt(fan_in), b_std), as in the
KIP papers' networks, so that ``ntk_fc(depth=d)`` is the finite counterpart of ``fc_ntk(depth=d)``, and
``ntk_convnet`` / ``ntk_myrtle`` of ``conv_ntk`` / ``myrtle_ntk`` (the layer lists are shared with
:mod:`distillset.conv_kernels`). Train them on KIP/LS sets with MSE on the set's labels (``loss="mse"``) to
test how a kernel's images transfer to the network the kernel describes.

Examples
--------
>>> net = get_model("ntk_convnet(width=16, depth=2)", (1, 8, 8), 10, seed=0)
>>> net(torch.zeros(2, 1, 8, 8)).shape, net.feature_dim
(torch.Size([2, 10]), 64)
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ._layers import AvgPool2d
from .registry import EmbedClassifier, get_model, register_model  # noqa: F401  (get_model: the doctest)

W_STD, B_STD = math.sqrt(2.0), 0.1  # the kernels' defaults


class NTKLinear(nn.Module):
    """``W_std / sqrt(in) x W^T + b_std b`` with W, b ~ N(0, 1)."""

    standard_normal_init = True  # what models.init.Redraw re-draws them from

    def __init__(self, fan_in: int, out: int, w_std: float = W_STD, b_std: float = B_STD):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(out, fan_in)), nn.Parameter(torch.randn(out))
        self.scale, self.b_std = w_std / math.sqrt(fan_in), b_std

    def forward(self, x):
        return self.scale * x @ self.weight.T + self.b_std * self.bias


class NTKConv2d(nn.Module):
    """A q x q "same" convolution, ``W_std / sqrt(in q^2) conv(x, W) + b_std b`` with W, b ~ N(0, 1)."""

    standard_normal_init = True

    def __init__(self, channels_in: int, channels_out: int, size: int = 3, w_std: float = W_STD, b_std: float = B_STD):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels_out, channels_in, size, size))
        self.bias = nn.Parameter(torch.randn(channels_out))
        self.scale, self.b_std, self.padding = w_std / math.sqrt(channels_in * size * size), b_std, size // 2

    def forward(self, x):
        return self.scale * F.conv2d(x, self.weight, padding=self.padding) + self.b_std * self.bias.view(1, -1, 1, 1)


class NTKConvNet(EmbedClassifier):
    """conv / ReLU / 2x2 average-pool layers (a ConvKernel architecture), then a flatten or global-average-pool
    readout into an NTK-parameterised dense layer."""

    def __init__(self, in_shape, num_classes, layers: list[str], readout: str, width: int = 256):
        super().__init__()
        if int(width) < 1:
            raise InvalidParameterError(f"The 'width' parameter must be an int >= 1. Got {width!r} instead.")
        c, h, w = in_shape
        modules = []
        for layer in layers:
            if layer == "conv":
                modules.append(NTKConv2d(c, int(width)))
                c = int(width)
            elif layer == "relu":
                modules.append(nn.ReLU())
            else:
                modules.append(AvgPool2d())
                h, w = h // 2, w // 2
        if readout == "gap":
            modules.append(nn.AdaptiveAvgPool2d(1))
            h = w = 1
        self.features = nn.Sequential(*modules)
        self.feature_dim = c * h * w
        self.classifier = NTKLinear(self.feature_dim, num_classes)


class NTKMLP(EmbedClassifier):
    """``depth`` x [NTK dense(width) -> ReLU] -> NTK dense: the finite ``fc_ntk(depth=depth)``."""

    def __init__(self, in_shape, num_classes, width: int = 1024, depth: int = 1):
        super().__init__()
        fan_in, modules = math.prod(in_shape), [nn.Flatten()]
        for _ in range(int(depth)):
            modules += [NTKLinear(fan_in, int(width)), nn.ReLU()]
            fan_in = int(width)
        self.features = nn.Sequential(*modules)
        self.feature_dim = fan_in
        self.classifier = NTKLinear(fan_in, num_classes)


class Centred(EmbedClassifier):
    """``f(x; theta) - f(x; theta_0)``: a network minus a frozen copy of itself at initialisation.

    It starts as the zero function with the same tangent kernel, so trained with MSE in the kernel regime
    it follows the kernel's mean prediction ``K_ts K_ss^-1 y`` (Lee et al. 2019, "Wide neural networks of
    any depth evolve as linear models"), where a plain network adds the random function it was drawn with;
    that term, not the training, is what a single finite network of a kernel's images mostly shows
    (``benchmarks/kip_transfer_sweep.py``). ``embed`` / ``classify`` are the trained network's; the copy's
    parameters have no gradient, so optimisers and weight decay leave them alone.
    """

    def __init__(self, net: EmbedClassifier):
        super().__init__()
        self.net, self.initial = net, copy.deepcopy(net).requires_grad_(False)
        self.feature_dim, self.classifier = net.feature_dim, net.classifier

    def embed(self, x):
        return self.net.embed(x)

    def forward(self, x):
        with torch.no_grad():
            offset = self.initial(x)
        return self.net(x) - offset


def _maybe_centred(net: EmbedClassifier, centred) -> EmbedClassifier:
    if centred not in (True, False):
        raise InvalidParameterError(f"The 'centred' parameter must be True or False. Got {centred!r} instead.")
    return Centred(net) if centred else net


@register_model
def ntk_convnet(in_shape, num_classes, width=256, depth=3, readout="flatten", centred=False):
    """ConvNet-D in the NTK parameterisation: the finite ``conv_ntk`` (``centred``: see :class:`Centred`)."""
    from ..conv_kernels import convnet_layers

    return _maybe_centred(NTKConvNet(in_shape, num_classes, convnet_layers(int(depth)), readout, width), centred)


@register_model
def ntk_myrtle(in_shape, num_classes, width=256, depth=5, readout="gap", centred=False):
    """Myrtle-5/7/10 in the NTK parameterisation: the finite ``myrtle_ntk`` (``centred``: see :class:`Centred`)."""
    from ..conv_kernels import myrtle_layers

    return _maybe_centred(NTKConvNet(in_shape, num_classes, myrtle_layers(int(depth)), readout, width), centred)


@register_model
def ntk_fc(in_shape, num_classes, width=1024, depth=1, centred=False):
    """A fully-connected ReLU network in the NTK parameterisation: the finite ``fc_ntk`` (``centred``: see
    :class:`Centred`)."""
    return _maybe_centred(NTKMLP(in_shape, num_classes, width, depth), centred)
