"""DD's initialisations theta_0: p(theta_0) (Xavier-normal or the registry's init) and pools of networks
pretrained on a source data set (the adaptation setting of Wang et al. 2018)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError
from ..models import get_model
from ..utils import draw_seed, make_generator
from ._unroll import FlatNet


def make_net(model, data, seed, device, net_init="xavier"):
    """A network for ``data`` drawn from p(theta_0): the registry's init, or Xavier-normal weights and zero biases."""
    net = get_model(model, data.image_shape, data.num_classes, seed=seed, device=device)
    if net_init == "xavier":
        g = make_generator(seed, "cpu")
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() > 1:
                    fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                    p.copy_(torch.randn(p.shape, generator=g) * std)
                else:
                    p.zero_()
    return net


def _source_images(source, target, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The source data set's training images resized to the target's shape and normalised like the target.

    A source of another size is resized to the central 20/28 of the target and zero-padded (MNIST's
    framing: a digit box of 20x20 in 28x28), e.g. digits 8x8 -> 20x20 in 28x28.
    """
    from ..data import load_dataset

    src = load_dataset(source, root=target.root) if source != "digits" else load_dataset("digits")
    if src.num_classes != target.num_classes:
        raise InvalidParameterError(f"The 'pool_source' parameter of DD must have {target.num_classes} classes like "
                                    f"{target.name!r}. Got {source!r} with {src.num_classes} instead.")
    c, h, w = target.image_shape
    x = src.train.images.to(device).float() / 255.0  # (N, C', H', W') pixels
    if x.shape[-2:] != (h, w):  # MNIST framing: the digit fills the central 20/28, the border is background
        ih, iw = round(h * 20 / 28), round(w * 20 / 28)
        x = F.interpolate(x, size=(ih, iw), mode="bilinear", align_corners=False).clamp(0, 1)
        x = F.pad(x, ((w - iw) // 2, w - iw - (w - iw) // 2, (h - ih) // 2, h - ih - (h - ih) // 2))
    x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if x.shape[1] != c else x
    mean = torch.tensor(target.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(target.std, device=device).view(1, -1, 1, 1)
    return (x - mean) / std, src.train.labels.to(device)


def pretrain_pool(model, target, source, n, epochs, generator, device, net_init="xavier") -> torch.Tensor:
    """``n`` networks trained ``epochs`` epochs on ``source`` (resized to ``target``'s shape): (n, P) flat weights."""
    from ..evaluate import train_network

    x, y = _source_images(source, target, device)
    pool = []
    for _ in range(n):
        net = make_net(model, target, draw_seed(generator), device, net_init)
        train_network(net, x, y, epochs=epochs, generator=generator)
        pool.append(FlatNet(net).flatten())
    return torch.stack(pool)
