"""VGG11 of the cross-architecture tables (DC reference code), instance norm by default."""
from __future__ import annotations

from torch import nn

from ._layers import NORMS_2D, can_halve, check_choice, conv_out, norm2d, register_fixed_variant
from .registry import EmbedClassifier, register_model

VGG11_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # ints: conv3x3 widths, "M": maxpool 2


class VGG11(EmbedClassifier):
    """VGG11 for small images: 8 convs (conv3x3 -> norm -> ReLU) and 5 max-pools, then one linear layer.

    Parameters
    ----------
    in_shape : (C, H, W)
    num_classes : int
    norm : {"instancenorm", "batchnorm", "groupnorm", "none"}, default="instancenorm"

    Notes
    -----
    On 3x32x32 the maps go 32-16-8-4-2-1 and ``embed`` is 512-d, as in the DC reference. The first
    conv pads by 3 on 1-channel input (28x28 becomes 32x32), as the reference does. Deviations, only
    for other sizes: a pool is skipped when it would leave a map under 2 px while convs follow (on
    1x1 maps instance norm has no gradient), and the last pool is skipped on a 1-px map. 1x8x8
    therefore gives 512x1x1 features; 3x64x64 keeps every pool and gives 512x2x2 = 2048 (the reference
    sizes its classifier for 512 only and fails there).
    """

    def __init__(self, in_shape, num_classes, norm="instancenorm"):
        super().__init__()
        check_choice("VGG11", "norm", norm, NORMS_2D)
        c, h, w = in_shape
        layers: list[nn.Module] = []
        cin = c
        for i, v in enumerate(VGG11_PLAN):
            if v == "M":
                convs_follow = any(u != "M" for u in VGG11_PLAN[i + 1:])
                if can_halve(min(h, w), convs_follow):
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            pad = 3 if (i == 0 and c == 1) else 1
            layers += [nn.Conv2d(cin, v, 3, padding=pad), norm2d(norm, v), nn.ReLU(inplace=True)]
            h, w, cin = conv_out(h, 3, 1, pad), conv_out(w, 3, 1, pad), v
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)


@register_model
def vgg11(in_shape, num_classes, **kw):
    """VGG11 with instance norm (DC's VGG11)."""
    return VGG11(in_shape, num_classes, **kw)


vgg11_bn = register_fixed_variant("vgg11_bn", VGG11, "DC's VGG11BN: VGG11 with BatchNorm.", norm="batchnorm")
