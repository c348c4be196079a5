"""Unrolled, differentiable training of a network: T plain gradient steps and their exact meta-gradient.

DD's inner loop, and the student unroll of trajectory matching.

A network is used as a pure function ``f(theta, x)`` of a flat parameter vector ``theta`` (P,)
through ``torch.func.functional_call``. The inner loop is

    theta_{t+1} = theta_t - eta_t * grad_theta CE(f(theta_t, x_{t mod S}), y_{t mod S}),  t = 0..T-1,

and the meta-gradient is d outer(theta_T) / d(images, raw step sizes), computed two ways:

- ``"full"``: build the whole double-backward graph of the T steps and backprop once (memory grows
  with T: every step keeps its activations and its gradient graph);
- ``"checkpoint"``: a forward sweep without a graph that stores only theta_0..theta_{T-1}, then a
  reverse sweep that recomputes one step at a time with its graph and pulls the adjoint
  v = dL/dtheta_{t+1} back through it (vector-Jacobian products). Same gradient, memory
  O(T * P + one step) instead of O(T * activations).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class FlatNet:
    """``f(theta, x)`` for a module whose parameters are packed in one flat vector (P,).

    Buffers (none in LeNet / AlexCifarNet) are taken from the module unchanged.

    Examples
    --------
    >>> net = torch.nn.Linear(3, 2)
    >>> f = FlatNet(net)
    >>> theta = f.flatten()  # (P,) = (3 * 2 + 2,)
    >>> x = torch.randn(4, 3)
    >>> f.size, torch.allclose(f(theta, x), net(x))
    (8, True)
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.size = sum(self.numels)

    def flatten(self, module: nn.Module | None = None) -> torch.Tensor:
        """The parameters of ``module`` (default: the template) as one detached vector (P,)."""
        module = self.module if module is None else module
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, self.numels)
        params = {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}
        return functional_call(self.module, params, (x,))


def inner_loss(f: FlatNet, theta, x, y) -> torch.Tensor:
    return F.cross_entropy(f(theta, x), y)


def inner_step(f: FlatNet, theta, x, y, eta, create_graph: bool = True) -> torch.Tensor:
    """One plain gradient step ``theta - eta * grad CE(f(theta, x), y)``."""
    (g,) = torch.autograd.grad(inner_loss(f, theta, x, y), theta, create_graph=create_graph)
    return theta - eta * g


def unroll(f: FlatNet, theta0, images, labels, etas, *, create_graph: bool = True, keep: bool = False):
    """Apply T = len(etas) steps cycling over the S step batches ``images`` (S, n, C, H, W), ``labels`` (S, n).

    Returns theta_T, or (theta_T, [theta_0..theta_{T-1}]) with ``keep``. With ``create_graph`` the result
    is differentiable w.r.t. ``theta0``, ``images`` and ``etas``.

    Examples
    --------
    >>> f = FlatNet(torch.nn.Linear(4, 2))
    >>> xs, ys = torch.randn(2, 5, 4), torch.randint(0, 2, (2, 5))  # S = 2 step batches of 5
    >>> etas = torch.full((4,), 0.1, requires_grad=True)  # T = 4 steps: batches 0, 1, 0, 1
    >>> theta = unroll(f, f.flatten(), xs, ys, etas)
    >>> theta.shape, theta.requires_grad
    (torch.Size([10]), True)
    """
    steps = images.shape[0]
    theta = theta0 if theta0.requires_grad else theta0.detach().requires_grad_(True)
    kept = []
    for t in range(etas.shape[0]):
        i = t % steps
        if keep:
            kept.append(theta.detach())
        theta = inner_step(f, theta, images[i], labels[i], etas[t], create_graph)
        if not create_graph:
            theta = theta.detach().requires_grad_(True)
    return (theta, kept) if keep else theta


def meta_grad(f: FlatNet, theta0: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
              lrs_raw: torch.Tensor, steps: int, outer: Callable[[torch.Tensor], torch.Tensor],
              mode: str = "full") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outer loss and its exact gradients w.r.t. ``images`` (S*n, C, H, W) and ``lrs_raw`` (T,).

    ``labels`` (S*n,) are fixed; step sizes are ``softplus(lrs_raw)``; ``outer(theta_T)`` is the loss on
    real data. ``mode`` is ``"full"`` (backprop through the whole unrolled graph) or ``"checkpoint"``
    (reverse sweep recomputing each step from the stored theta_t). Returns (loss, d_images, d_lrs_raw),
    all detached.
    """
    xs = images.view(steps, -1, *images.shape[1:])  # (S, n, C, H, W), step-major
    ys = labels.view(steps, -1)  # (S, n)
    if mode == "full":
        theta_T = unroll(f, theta0.detach(), xs, ys, F.softplus(lrs_raw))
        loss = outer(theta_T)
        d_img, d_raw = torch.autograd.grad(loss, (images, lrs_raw))
        return loss.detach(), d_img, d_raw
    if mode != "checkpoint":
        raise ValueError(f"mode must be 'full' or 'checkpoint'. Got {mode!r} instead.")
    # 1. forward sweep without a graph, storing theta_t only
    with torch.no_grad():
        etas = F.softplus(lrs_raw)
    theta_T, kept = unroll(f, theta0.detach(), xs.detach(), ys, etas, create_graph=False, keep=True)
    # 2. adjoint at theta_T
    theta_T = theta_T.detach().requires_grad_(True)
    loss = outer(theta_T)
    (v,) = torch.autograd.grad(loss, theta_T)
    d_img = torch.zeros_like(images)
    d_raw = torch.zeros_like(lrs_raw)
    d_xs = d_img.view_as(xs)
    # 3. reverse sweep: recompute step t with its graph, pull v back to theta_t, x_i and rho_t
    for t in reversed(range(len(kept))):
        i = t % steps
        theta_t = kept[t].requires_grad_(True)
        x_i = xs[i].detach().requires_grad_(True)
        rho_t = lrs_raw[t].detach().requires_grad_(True)
        theta_next = inner_step(f, theta_t, x_i, ys[i], F.softplus(rho_t), create_graph=True)
        v, g_x, g_rho = torch.autograd.grad(theta_next, (theta_t, x_i, rho_t), grad_outputs=v)
        d_xs[i] += g_x
        d_raw[t] += g_rho
    return loss.detach(), d_img, d_raw
