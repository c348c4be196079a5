"""Gradient matching pieces for DC/DSA: matching distances and per-class gradients (batched or looped).

Gradients are lists of tensors, one per network parameter, each with a leading class axis
``(K, *param_shape)``; a distance returns the sum over the K classes of the per-class distance.

Distances (REFERENCE section 2 "DC"):

- ``"layerwise"`` (the paper's default): for every weight tensor, reshape each class's gradient to
  (out, rest) and sum over output rows of ``1 - cos(g_real_row, g_syn_row)`` (eps 1e-6 in the
  denominator). One-dimensional parameters (biases, norm scales and shifts) are ignored.
- ``"mse"``: squared Euclidean distance between the concatenated gradients (all parameters).
- ``"cosine"``: ``1 - cos`` of the concatenated gradients (all parameters).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast

__all__ = ["DISTANCES", "class_gradients_batched", "class_gradients_looped", "match_distance"]

EPS = 1e-6


def _layerwise(g_real: list[torch.Tensor], g_syn: list[torch.Tensor]) -> torch.Tensor:
    total = g_syn[0].new_zeros(())
    for gr, gs in zip(g_real, g_syn):
        if gr.dim() <= 2:  # (K, n): a bias or norm parameter, ignored as in the paper
            continue
        gr, gs = gr.flatten(2), gs.flatten(2)  # (K, out, rest)
        cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + EPS)  # (K, out)
        total = total + (1 - cos).sum()
    return total


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten(1) for g in grads], 1)  # (K, P)


def _mse(g_real, g_syn) -> torch.Tensor:
    return ((_flat(g_real) - _flat(g_syn)) ** 2).sum()


def _cosine(g_real, g_syn) -> torch.Tensor:
    gr, gs = _flat(g_real), _flat(g_syn)
    return (1 - (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + EPS)).sum()


DISTANCES: dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]] = {
    "layerwise": _layerwise, "mse": _mse, "cosine": _cosine,
}


def match_distance(g_real: list[torch.Tensor], g_syn: list[torch.Tensor], metric: str = "layerwise") -> torch.Tensor:
    """Sum over classes of the matching distance between real and synthetic gradients.

    Parameters
    ----------
    g_real, g_syn : list of Tensor, each (K, *param_shape)
        Per-class gradients, one tensor per network parameter, in the same order.
    metric : {"layerwise", "mse", "cosine"}

    Returns
    -------
    Tensor, a scalar.

    Examples
    --------
    >>> g = [torch.ones(2, 3, 4), torch.ones(2, 3)]  # 2 classes, a (3, 4) weight and a bias
    >>> round(float(match_distance(g, g)), 4)  # equal gradients: 1 - cos = 0 for every row (up to eps)
    0.0
    >>> round(float(match_distance(g, [-t for t in g])), 4)  # opposite: 1 - (-1) = 2 for 2 x 3 rows
    12.0
    """
    return DISTANCES[metric](g_real, g_syn)


def class_gradients_looped(net: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                           create_graph: bool = False, *, chunk: int | None = None,
                           dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Per-class gradients of the mean cross-entropy w.r.t. ``net``'s parameters, one class at a time.

    ``x`` (K * n, C, H, W) and ``y`` (K * n,) are class-major with the same n per class. Each class is a
    separate forward, so BatchNorm statistics are per class (the reference code's behaviour).
    Returns one (K, *param_shape) tensor per parameter; ``create_graph`` keeps the graph to ``x``.
    ``chunk`` splits each class into pieces of at most that many images whose gradients are summed
    (the same gradient, bounded activation memory; only for nets without BatchNorm, whose statistics
    would change). ``dtype`` runs the passes under autocast (the gradients come out float32).
    """
    params = [p for p in net.parameters()]
    xs, ys = x.view(num_classes, -1, *x.shape[1:]), y.view(num_classes, -1)
    n = xs.shape[1]
    chunk = chunk or n
    per_class = []
    for c in range(num_classes):
        grads = None
        for start in range(0, n, chunk):
            with autocast(x.device, dtype):
                out = net(xs[c, start:start + chunk]).float()
            loss = F.cross_entropy(out, ys[c, start:start + chunk], reduction="sum") / n  # a share of the class mean
            part = torch.autograd.grad(loss, params, create_graph=create_graph)
            grads = part if grads is None else [a + b for a, b in zip(grads, part)]
        per_class.append(grads)
    return [torch.stack(gs) for gs in zip(*per_class)]


def class_gradients_batched(net: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                            create_graph: bool = False) -> list[torch.Tensor]:
    """The same as :func:`class_gradients_looped` without a Python loop over classes.

    ``torch.func.grad`` of the class loss, ``vmap``-ed over the class axis: one batched forward and
    backward for all classes. Only valid for networks that treat samples independently (instance,
    layer, group or no norm); BatchNorm nets must use the looped path. The parameters enter detached
    (we never need gradients of the matching loss w.r.t. the network), so the graph kept for the
    synthetic side (``create_graph``: the result stays differentiable w.r.t. ``x``) only reaches the
    images.
    """
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in net.named_parameters()]
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def class_loss(p, xc, yc):  # xc (n, C, H, W), yc (n,)
        return F.cross_entropy(functional_call(net, (p, buffers), (xc,)), yc)

    xs, ys = x.view(num_classes, -1, *x.shape[1:]), y.view(num_classes, -1)
    if create_graph:
        g = vmap(grad(class_loss), in_dims=(None, 0, 0))(params, xs, ys)
    else:
        with torch.no_grad():  # torch.func.grad still differentiates inside; nothing is kept outside
            g = vmap(grad(class_loss), in_dims=(None, 0, 0))(params, xs, ys)
    return [g[n] for n in names]
