"""Re-draw a network's weights in place from an explicit generator, on its own device.

Methods that need a fresh random network every iteration (DM, DC/DSA) build the module once and
re-draw its weights here: no module construction, no host round trip, one random kernel per call,
and every draw comes from the run's generator (so checkpoints resume bit-identically). The
distributions are PyTorch's defaults: convolution and linear weights and biases
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``), norm weights 1, biases 0; a layer
whose class sets ``standard_normal_init = True`` (the NTK-parameterised layers) draws all its parameters N(0, 1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

_AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:])


class Redraw:
    """A network's re-draw plan, made once: call it with a generator to re-draw every parameter in place.

    Raises ``TypeError`` for a module type with parameters whose default initialisation is not known here.
    """

    def __init__(self, net: nn.Module):
        self.net, self.uniform, self.normal, self.norms, bounds = net, [], [], [], []
        for m in net.modules():
            if getattr(type(m), "standard_normal_init", False):
                self.normal += list(m.parameters(recurse=False))
            elif isinstance(m, _AFFINE):
                bound = 1.0 / math.sqrt(_fan_in(m.weight)) if _fan_in(m.weight) > 0 else 0.0
                ps = [p for p in (m.weight, m.bias) if p is not None]
                self.uniform += ps
                bounds += [bound] * len(ps)
            elif isinstance(m, _NORMS):
                self.norms.append(m)
            elif any(True for _ in m.parameters(recurse=False)):
                raise TypeError(f"Redraw does not know the default initialisation of {type(m).__name__}.")
        self.sizes = [p.numel() for p in self.uniform]
        self.normal_sizes = [p.numel() for p in self.normal]
        device = self.uniform[0].device if self.uniform else torch.device("cpu")
        # per-element bound of the flat draw, built once (a host-to-device copy we do not repeat)
        self.scale = torch.repeat_interleave(torch.tensor(bounds, device=device),
                                             torch.tensor(self.sizes, dtype=torch.long, device=device))

    @torch.no_grad()
    def __call__(self, generator: torch.Generator) -> nn.Module:
        for m in self.norms:
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
                m.bias.fill_(0.0)
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()
        if self.uniform:
            u = torch.rand(self.scale.numel(), generator=generator, device=generator.device)  # one draw for all
            flat = (2 * u.to(self.scale.device) - 1) * self.scale  # U(-bound, bound) per parameter
            for p, chunk in zip(self.uniform, flat.split(self.sizes)):
                p.copy_(chunk.view_as(p))
        if self.normal:  # drawn after the uniform ones: networks without such layers draw as before
            flat = torch.randn(sum(self.normal_sizes), generator=generator, device=generator.device)
            for p, chunk in zip(self.normal, flat.split(self.normal_sizes)):
                p.copy_(chunk.view_as(p))
        return self.net


def redraw_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every parameter of ``net`` from ``generator`` with PyTorch's default initialisation.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(4, 4), nn.Flatten(), nn.Linear(4, 2))
    >>> a = [p.clone() for p in redraw_(net, torch.Generator().manual_seed(0)).parameters()]
    >>> b = [p.clone() for p in redraw_(net, torch.Generator().manual_seed(0)).parameters()]
    >>> all(torch.equal(x, y) for x, y in zip(a, b)), bool(net[0].weight.abs().max() <= 1 / 3)
    (True, True)
    """
    return Redraw(net)(generator)
