"""Unrolled, differentiable training of a network: T plain gradient steps and their exact meta-gradient.

DD's inner loop, and the student unroll of trajectory matching.

A network is used as a pure function ``f(theta, x)`` of a flat parameter vector ``theta`` (P,)
through ``torch.func.functional_call``. The inner loop is

    theta_{t+1} = theta_t - eta_t * grad_theta CE(f(theta_t, x_{t mod S}), y_{t mod S}),  t = 0..T-1,

and the gradient of an outer loss of theta_T w.r.t. what the steps depend on (images, step sizes,
label logits) is computed one of three ways (``backward``):

- ``"autograd"``: build the whole double-backward graph of the T steps and backprop once (memory grows
  with T: every step keeps its activations and its gradient graph);
- ``"constant"``: a forward sweep without a graph that stores only theta_0..theta_{T-1}, then a
  reverse sweep that recomputes one step at a time with its graph and pulls the adjoint
  v = dL/dtheta_{t+1} back through it (vector-Jacobian products). The same gradient (exactly, up to
  rounding); activation memory is one step's whatever T is, plus T parameter vectors (T * P floats:
  1.2 MiB per step for ConvNet-3, against ~285 MiB of graph per step at 100 MNIST images, measured);
- ``"tesla"``: TESLA's published accumulation (Cui et al., ICML 2023): the same sweeps, but the adjoint
  stays v = dL/dtheta_T at every step, i.e. each step's gradient w.r.t. its own images is taken with
  theta_t held fixed. That drops the terms through which images of step i move theta_j for j > i (the
  Hessian-vector products of the later steps), so it is an approximation of the other two at the same
  cost as ``"constant"`` (measured: benchmarks/NOTES.md); kept to reproduce TESLA. ``"constant"`` has
  its memory and the exact gradient.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


BACKWARDS = ("autograd", "constant", "tesla")
StepBatch = Callable[[int, Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]]


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

    @torch.no_grad()
    def load_(self, theta: torch.Tensor, module: nn.Module | None = None) -> nn.Module:
        """Copy ``theta`` (P,) into the parameters of ``module`` (default: the template), in place; returns it."""
        module = self.module if module is None else module
        for p, part in zip(module.parameters(), torch.split(theta, self.numels)):
            p.copy_(part.view_as(p))
        return module

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


def unroll(f: FlatNet, theta0, images, labels, etas, *, create_graph: bool = True):
    """Apply T = len(etas) steps cycling over the S step batches ``images`` (S, n, C, H, W), ``labels`` (S, n).

    Returns theta_T. With ``create_graph`` the result
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
    for t in range(etas.shape[0]):
        i = t % steps
        theta = inner_step(f, theta, images[i], labels[i], etas[t], create_graph)
        if not create_graph:
            theta = theta.detach().requires_grad_(True)
    return theta


def unrolled_grad(f: FlatNet, theta0: torch.Tensor, steps: int, batch: StepBatch, leaves: Sequence[torch.Tensor],
                  outer: Callable[[torch.Tensor], torch.Tensor], backward: str = "autograd"
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Outer loss after ``steps`` plain gradient steps from ``theta0``, and its gradient w.r.t. ``leaves``.

    Step t is ``theta_{t+1} = theta_t - eta_t * grad CE(f(theta_t, x_t), y_t)`` with
    ``(x_t, y_t, eta_t) = batch(t, leaves)``: step t's images, targets (class indices or probabilities)
    and step size as differentiable functions of the leaves (images, step sizes, label logits...).
    ``batch`` must draw nothing: the reverse sweep calls it again for the same t and needs the same batch.

    ``backward`` is ``"autograd"``, ``"constant"`` or ``"tesla"`` (see the module docstring). Returns
    (loss, [d loss / d leaf, ...]), all detached; a leaf the loss does not reach gets zeros.

    Examples
    --------
    >>> f = FlatNet(torch.nn.Linear(4, 2).double())
    >>> x, y = torch.randn(6, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 2, (6,))
    >>> batch = lambda t, leaves: (leaves[0][2 * t:2 * t + 2], y[2 * t:2 * t + 2], 0.5)  # 3 steps of 2 images
    >>> outer = lambda theta: (theta ** 2).sum()
    >>> _, (ga,) = unrolled_grad(f, f.flatten(), 3, batch, [x], outer, "autograd")
    >>> _, (gc,) = unrolled_grad(f, f.flatten(), 3, batch, [x], outer, "constant")
    >>> torch.allclose(ga, gc)
    True
    """
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}. Got {backward!r} instead.")
    if backward == "autograd":
        theta = theta0.detach().requires_grad_(True)
        for t in range(steps):
            theta = inner_step(f, theta, *batch(t, leaves))
        loss = outer(theta)
        grads = torch.autograd.grad(loss, list(leaves), allow_unused=True)
        return loss.detach(), [torch.zeros_like(l) if g is None else g for l, g in zip(leaves, grads)]
    # 1. forward sweep without a graph: keep theta_0..theta_{T-1} only
    fixed = [l.detach() for l in leaves]
    kept, theta = [], theta0.detach()
    for t in range(steps):
        kept.append(theta)
        theta = inner_step(f, theta.requires_grad_(True), *batch(t, fixed), create_graph=False).detach()
    # 2. the adjoint v = d outer / d theta_T
    theta = theta.requires_grad_(True)
    loss = outer(theta)
    (v,) = torch.autograd.grad(loss, theta)
    # 3. reverse sweep: recompute step t with its graph and pull v back through it
    sums = [torch.zeros_like(l) for l in leaves]
    live = [l.detach().requires_grad_(True) for l in leaves]
    for t in reversed(range(steps)):
        theta_t = kept.pop().requires_grad_(True)
        theta_next = inner_step(f, theta_t, *batch(t, live), create_graph=True)
        wrt = [theta_t, *live] if backward == "constant" else live  # "tesla": v stays the adjoint at theta_T
        grads = list(torch.autograd.grad(theta_next, wrt, grad_outputs=v, allow_unused=True))
        if backward == "constant":
            v = grads.pop(0)
        for s, g in zip(sums, grads):
            if g is not None:
                s += g
    return loss.detach(), sums


def meta_grad(f: FlatNet, theta0: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
              lrs_raw: torch.Tensor, steps: int, outer: Callable[[torch.Tensor], torch.Tensor],
              backward: str = "autograd") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DD's meta-gradient: outer loss and its gradients w.r.t. ``images`` (S*n, C, H, W) and ``lrs_raw`` (T,).

    The T = len(lrs_raw) steps cycle over S = ``steps`` step batches (``images`` and ``labels`` (S*n,),
    step-major); step sizes are ``softplus(lrs_raw)``; ``outer(theta_T)`` is the loss on real data.
    Returns (loss, d_images, d_lrs_raw), all detached.
    """
    ys = labels.view(steps, -1)  # (S, n)

    def batch(t, leaves):
        imgs, raw = leaves
        return imgs.view(steps, -1, *imgs.shape[1:])[t % steps], ys[t % steps], F.softplus(raw[t])

    loss, (d_img, d_raw) = unrolled_grad(f, theta0, lrs_raw.shape[0], batch, [images, lrs_raw], outer, backward)
    return loss, d_img, d_raw
