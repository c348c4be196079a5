"""DD's initialisations theta_0: p(theta_0) (Xavier-normal or the registry's init) and pools of networks
pretrained on a source data set (the adaptation setting of Wang et al. 2018)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..models import get_model
from ..utils import draw_seed, make_generator
from ..unroll import FlatNet

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class InitSampler:
    """p(theta_0) for ``model`` on ``data`` as flat vectors (P,), in :class:`FlatNet`'s parameter order.

    ``weight_init="xavier"`` (the DD code's default as we read it): conv / linear weights
    Xavier-normal (gain 1), normalisation weights 1, every bias 0. These are independent normals, so
    ``sample`` draws them as ``mean + std * randn`` in one op on the generator's device: no network
    is built and nothing syncs with the host. ``weight_init="default"``: the model registry's PyTorch
    initialisation, one freshly built network per draw.
    """

    def __init__(self, model: str, data, device, weight_init: str = "xavier"):
        self.model, self.data, self.device, self.weight_init = model, data, torch.device(device), weight_init
        self.template = get_model(model, data.image_shape, data.num_classes, seed=0, device=device)
        self.size = FlatNet(self.template).size  # P
        if weight_init == "xavier":
            self.mean, self.std = _xavier_moments(self.template)  # (P,), (P,)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` independent draws, (n, P) on ``device``."""
        if self.weight_init != "xavier":
            return torch.stack([FlatNet(self.template).flatten(self.build(draw_seed(generator)))
                                for _ in range(n)])
        noise = torch.randn((n, self.size), generator=generator, device=generator.device).to(self.device)
        return self.mean + self.std * noise

    def build(self, seed: int) -> nn.Module:
        """A network module drawn from p(theta_0) with ``seed`` (for training it, e.g. in a pool)."""
        net = get_model(self.model, self.data.image_shape, self.data.num_classes, seed=seed, device=self.device)
        if self.weight_init == "xavier":
            theta = self.sample(1, make_generator(seed, "cpu"))[0]
            nn.utils.vector_to_parameters(theta, net.parameters())
        return net


def _xavier_moments(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-parameter mean and std of the Xavier-normal init of ``net``, flat (P,) each."""
    owner = {f"{prefix}.{name}".lstrip("."): (module, name)
             for prefix, module in net.named_modules() for name, _ in module.named_parameters(recurse=False)}
    means, stds = [], []
    for full_name, p in net.named_parameters():
        module, name = owner[full_name]
        mean, std = 0.0, 0.0  # biases
        if name == "weight" and isinstance(module, _NORMS):
            mean = 1.0
        elif name == "weight" and p.dim() > 1:  # conv / linear: fans include the receptive field
            fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
            std = math.sqrt(2.0 / (fan_in + fan_out))
        elif name != "bias":
            raise InvalidParameterError(f"DD's Xavier init does not know parameter {full_name!r} of "
                                        f"{type(net).__name__}; use weight_init='default'.")
        means.append(torch.full((p.numel(),), mean, device=p.device))
        stds.append(torch.full((p.numel(),), std, device=p.device))
    return torch.cat(means), torch.cat(stds)


def load_pool_source(source: str, target):
    """The data set a pretrained pool trains on, read from the target's root (DD validates with it, so a
    misspelt, missing or other-sized source is an error before any work)."""
    from ..data import load_dataset

    src = load_dataset(source, root=target.root) if source != "digits" else load_dataset("digits")
    if src.num_classes != target.num_classes:
        raise InvalidParameterError(f"The 'pool_source' parameter of DD must have {target.num_classes} classes like "
                                    f"{target.name!r}. Got {source!r} with {src.num_classes} instead.")
    return src


def _source_images(source, target, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The source data set's training images resized to the target's shape and normalised like the target.

    A source of another size is resized to the central 20/28 of the target and zero-padded (MNIST's
    framing: a digit box of 20x20 in 28x28), e.g. digits 8x8 -> 20x20 in 28x28.
    """
    src = load_pool_source(source, target)
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


def pretrain_pool(sampler: InitSampler, source: str, n: int, epochs: int, generator) -> torch.Tensor:
    """``n`` nets from ``sampler`` trained ``epochs`` epochs on ``source`` (resized to the target's shape): (n, P)."""
    from ..evaluate import train_network

    x, y = _source_images(source, sampler.data, sampler.device)
    pool = []
    for _ in range(n):
        net = sampler.build(draw_seed(generator))
        train_network(net, x, y, epochs=epochs, generator=generator)
        pool.append(FlatNet(net).flatten())
    return torch.stack(pool)
