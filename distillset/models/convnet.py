"""ConvNet, the backbone of the dataset-condensation literature, and its named variants.

``depth`` blocks of conv3x3(width) -> norm -> activation -> pool 2x2, then one linear layer.
On 1-channel 28x28 input the first conv pads by 3 so maps become 32x32, as in the reference code
(feature size 2048 for MNIST and CIFAR alike). Our extension for small inputs (the reference code
would fail there): a pool is skipped when it would leave a map under 2x2 while more blocks follow
(instance norm on a 1x1 map outputs its bias whatever the input, so the net would pass no gradient),
and the last pool is skipped on a 1x1 map. ConvNetD4 on 8x8 digits thus runs at 8-4-2-2-1 px.
Standard inputs (1x28x28, 3x32x32, 3x64x64) are unaffected.
"""
from __future__ import annotations

from torch import nn

from ..errors import InvalidParameterError
from ._layers import AvgPool2d, GroupNorm, can_halve, register_fixed_variant
from .registry import EmbedClassifier

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "sigmoid": nn.Sigmoid,
    "leakyrelu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "swish": nn.SiLU,  # x * sigmoid(x)
}
NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
POOLINGS = ("none", "maxpool", "avgpool")


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of ConvNet must be one of {', '.join(map(repr, choices))}. Got {value!r} instead."
        )


def make_norm(norm: str, channels: int, hw: tuple[int, int]) -> nn.Module:
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":  # per sample over (C, H, W), elementwise affine, as the reference
        return nn.LayerNorm([channels, *hw])
    if norm == "instancenorm":  # GroupNorm with one group per channel = instance norm with affine
        return GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        return GroupNorm(4, channels, affine=True)
    return nn.Identity()


class ConvNet(EmbedClassifier):
    """ConvNet-D (conv3x3 -> norm -> act -> pool) x depth -> linear.

    Parameters
    ----------
    in_shape : (C, H, W)
    num_classes : int
    width : int, default=128
    depth : int, default=3
    act : {"relu", "sigmoid", "leakyrelu", "swish"}, default="relu"
    norm : {"instancenorm", "batchnorm", "layernorm", "groupnorm", "none"}, default="instancenorm"
    pooling : {"avgpool", "maxpool", "none"}, default="avgpool"
    """

    def __init__(self, in_shape, num_classes, width=128, depth=3, act="relu", norm="instancenorm", pooling="avgpool"):
        super().__init__()
        _check("act", act, tuple(ACTIVATIONS))
        _check("norm", norm, NORMS)
        _check("pooling", pooling, POOLINGS)
        if int(depth) < 1 or int(width) < 1:
            raise InvalidParameterError(f"ConvNet needs depth >= 1 and width >= 1. Got depth={depth}, width={width}.")
        c, h, w = in_shape
        pad0 = 3 if (h, w) == (28, 28) else 1
        layers: list[nn.Module] = []
        for d in range(int(depth)):
            pad = pad0 if d == 0 else 1
            layers.append(nn.Conv2d(c if d == 0 else width, width, 3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers += [make_norm(norm, width, (h, w)), ACTIVATIONS[act]()]
            if pooling != "none" and can_halve(min(h, w), more_norm_layers=d < int(depth) - 1):
                layers.append(nn.MaxPool2d(2) if pooling == "maxpool" else AvgPool2d())
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)


def _variant(name: str, **fixed):
    """A named ConvNet with some options fixed (the one variant rule: a conflicting value is refused)."""
    doc = f"ConvNet with {fixed or 'the default settings'} (REFERENCE section 1)."
    return register_fixed_variant(name, ConvNet, doc, **fixed)


convnet = _variant("convnet")
for _d in (1, 2, 3, 4):
    _variant(f"convnet_d{_d}", depth=_d)
for _w in (32, 64, 128, 256):
    _variant(f"convnet_w{_w}", width=_w)
for _a in ACTIVATIONS:
    _variant(f"convnet_{_a}", act=_a)
for _short, _n in (("nn", "none"), ("bn", "batchnorm"), ("ln", "layernorm"), ("in", "instancenorm"), ("gn", "groupnorm")):
    _variant(f"convnet_{_short}", norm=_n)
for _short, _p in (("np", "none"), ("mp", "maxpool"), ("ap", "avgpool")):
    _variant(f"convnet_{_short}", pooling=_p)
