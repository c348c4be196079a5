"""Kernels and kernel ridge regression for KIP and LS (REFERENCE section 2 "KIP and LS").

A kernel is a differentiable callable ``k(x1, x2) -> (n1, n2)`` with a ``diag(x) -> (n,)``; inputs are
images (N, C, H, W) or flat vectors (N, D). Kernels compute in the inputs' dtype; :func:`krr_predict`
and :func:`label_solve` solve in float64.

Kernels (``make_kernel(spec)``, spec ``"name"`` or ``"name(key=value, ...)"``):

- ``fc_ntk`` / ``fc_nngp``: infinite-width NTK / NNGP of a fully-connected ReLU network with ``depth``
  hidden layers, NTK parameterisation, W_std = sqrt(2), b_std = 0.1, closed form (arc-cosine recursion);
- ``rf_nngp``: random-feature NNGP, the mean over ``n_models`` random networks (registered ``model``,
  frozen) of ``embed(x) . embed(x') / feature_dim`` (the RFAD approximation of a ConvNet NNGP);
- ``rbf``: ``exp(-gamma ||x - x'||^2)``, gamma = 1 / D by default; ``linear``: ``x . x' / D``.

- ``conv_ntk`` / ``conv_nngp`` / ``myrtle_ntk`` / ``myrtle_nngp``: the exact infinite-width kernels of
  ConvNet-D and Myrtle-5/7/10 (``distillset.conv_kernels``): O(HW (2R+1)^2) per image pair for ConvNet-D's
  flatten readout (R = 2^D - 1 pixels: the pairs it reads), O((HW)^2) for Myrtle's global average pool.
"""
from __future__ import annotations

import math

import torch

from ._registry import Registry, build_spec, parse_spec
from .errors import InvalidParameterError, NumericalError
from .utils import make_generator, draw_seed


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


class Kernel:
    """Base class: ``k(x1, x2=None) -> (n1, n2)``; ``x2=None`` means ``x1``; ``diag(x) -> (n,)``."""

    name = "kernel"

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pair(self, x_s: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k(x_s, x_s), k(x_t, x_s))``, what one KRR fit-and-predict needs (subclasses share work)."""
        return self(x_s), self(x_t, x_s)

    def check(self, in_shape) -> None:
        """Raise :class:`InvalidParameterError` if the kernel cannot take images of ``in_shape`` (C, H, W)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "name")
        return f"{self.name}({args})"


# --------------------------------------------------------------------------- fully-connected ReLU


def _safe_sqrt_gap(prod: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sqrt(c c' - S^2) = sqrt(c c') sin(theta), exactly 0 (with zero gradient) when theta ~ 0.

    On the diagonal c c' - S^2 is 0 up to rounding, where sqrt has an infinite derivative; masking the
    gap below a few ulps of c c' keeps values exact there and gradients finite everywhere.
    """
    gap = prod - s * s
    keep = gap > 16 * torch.finfo(s.dtype).eps * prod
    return torch.sqrt(torch.where(keep, gap, torch.ones_like(gap))) * keep


class FCKernel(Kernel):
    """NNGP or NTK of ``depth`` x [Dense -> ReLU] -> Dense, infinite width, NTK parameterisation.

    Recursion (per layer, REFERENCE section 2): Dense: S <- w2 S + b2, T <- S + w2 T; ReLU with
    theta = atan2(sqrt(c c' - S^2), S): S <- (sqrt(c c' - S^2) + (pi - theta) S) / (2 pi),
    T <- T (pi - theta) / (2 pi); the variances c, c' follow the same maps at theta = 0. Input: S = x.x'/D.

    Examples
    --------
    >>> k = FCKernel(depth=2, kind="ntk")
    >>> x = torch.randn(3, 5, dtype=torch.float64)
    >>> torch.allclose(k(x).diagonal(), k.diag(x))
    True
    """

    name = "fc"

    def __init__(self, depth: int = 1, kind: str = "ntk", w_std: float = math.sqrt(2.0), b_std: float = 0.1):
        if int(depth) != depth or depth < 0:
            raise InvalidParameterError(f"The 'depth' parameter of FCKernel must be an int >= 0. Got {depth!r} instead.")
        if kind not in ("ntk", "nngp"):
            raise InvalidParameterError(f"The 'kind' parameter of FCKernel must be one of 'ntk', 'nngp'. Got {kind!r} instead.")
        self.depth, self.kind, self.w_std, self.b_std = int(depth), kind, float(w_std), float(b_std)
        self.name = f"fc_{kind}"

    def _run(self, s, c1, c2):
        """Push (S, T) through the layers; ``s`` is (n1, n2) or (n,) with c1 = c2 = s (diagonal)."""
        w2, b2 = self.w_std ** 2, self.b_std ** 2
        t = torch.zeros_like(s)  # inputs carry no parameters
        for _ in range(self.depth):
            s, c1, c2 = w2 * s + b2, w2 * c1 + b2, w2 * c2 + b2  # Dense
            t = s + w2 * t
            prod = c1[:, None] * c2[None, :] if s.dim() == 2 else c1 * c2
            r = _safe_sqrt_gap(prod, s)  # sqrt(c c') sin(theta)
            theta = torch.atan2(r, s)  # in [0, pi]
            t = t * (math.pi - theta) / (2 * math.pi)  # ReLU
            s = (r + (math.pi - theta) * s) / (2 * math.pi)
            c1, c2 = c1 / 2, c2 / 2
        s = w2 * s + b2  # readout Dense
        t = s + w2 * t
        return t if self.kind == "ntk" else s

    def __call__(self, x1, x2=None):
        f1 = _flat(x1)
        f2 = f1 if x2 is None else _flat(x2)
        d = f1.shape[1]
        s = f1 @ f2.T / d  # (n1, n2)
        c1, c2 = (f1 * f1).sum(1) / d, (f2 * f2).sum(1) / d
        return self._run(s, c1, c2)

    def diag(self, x):
        f = _flat(x)
        c = (f * f).sum(1) / f.shape[1]
        return self._run(c, c, c)


# --------------------------------------------------------------------------- random features


class RandomFeatureKernel(Kernel):
    """Random-feature NNGP: mean over ``n_models`` frozen random networks of ``embed(x).embed(x') / F``.

    The networks are ``get_model(model, in_shape, num_classes, seed=...)`` with seeds drawn from ``seed``:
    a fresh ``seed`` each step gives RFAD's resampled ensemble; a fixed seed and a larger ``n_models``
    gives the evaluation kernel. Gradients flow to the inputs, never to the networks.
    """

    name = "rf_nngp"

    def __init__(self, in_shape, num_classes: int = 10, *, model: str = "convnet", n_models: int = 8,
                 seed: int = 0, device=None, **model_kwargs):
        from .models import get_model

        if int(n_models) < 1:
            raise InvalidParameterError(f"The 'n_models' parameter of rf_nngp must be an int >= 1. Got {n_models!r} instead.")
        self.model, self.n_models, self.seed, self.model_kwargs = model, int(n_models), int(seed), model_kwargs
        g = make_generator(self.seed)
        self._nets = []
        for _ in range(self.n_models):
            net = get_model(model, tuple(in_shape), num_classes, seed=draw_seed(g), device=device, **model_kwargs)
            net.eval().requires_grad_(False)
            self._nets.append(net)

    def features(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """(N, n_models * F) features, scaled so that ``phi(x) . phi(x')`` is the kernel."""
        outs = []
        for net in self._nets:
            h = torch.cat([net.embed(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
            outs.append(h / math.sqrt(h.shape[1] * self.n_models))
        return torch.cat(outs, 1)

    def __call__(self, x1, x2=None):
        p1 = self.features(x1)
        p2 = p1 if x2 is None else self.features(x2)
        return p1 @ p2.T

    def diag(self, x):
        return self.features(x).pow(2).sum(1)

    def pair(self, x_s, x_t):
        p_s, p_t = self.features(x_s), self.features(x_t)
        return p_s @ p_s.T, p_t @ p_s.T


# --------------------------------------------------------------------------- classical kernels


class RBFKernel(Kernel):
    """``exp(-gamma ||x - x'||^2)``; ``gamma=None`` means 1 / D."""

    name = "rbf"

    def __init__(self, gamma: float | None = None):
        if gamma is not None and not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma > 0):
            raise InvalidParameterError(f"The 'gamma' parameter of rbf must be a number > 0 or None. Got {gamma!r}.")
        self.gamma = gamma

    def __call__(self, x1, x2=None):
        f1 = _flat(x1)
        f2 = f1 if x2 is None else _flat(x2)
        gamma = 1.0 / f1.shape[1] if self.gamma is None else self.gamma
        sq = (f1 * f1).sum(1)[:, None] + (f2 * f2).sum(1)[None, :] - 2 * f1 @ f2.T
        return torch.exp(-gamma * sq.clamp_min(0))

    def diag(self, x):
        return torch.ones(x.shape[0], dtype=x.dtype, device=x.device)


class LinearKernel(Kernel):
    """``x . x' / D`` (``normalize=False``: ``x . x'``)."""

    name = "linear"

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def __call__(self, x1, x2=None):
        f1 = _flat(x1)
        f2 = f1 if x2 is None else _flat(x2)
        return f1 @ f2.T / (f1.shape[1] if self.normalize else 1)

    def diag(self, x):
        f = _flat(x)
        return (f * f).sum(1) / (f.shape[1] if self.normalize else 1)


# --------------------------------------------------------------------------- registry and specs

KERNELS: Registry = Registry("kernel")


def register_kernel(fn=None, *, random: bool = False):
    """Register a builder ``fn(ctx, **options) -> Kernel`` under its ``__name__``.

    ``ctx`` holds ``in_shape``, ``num_classes``, ``seed``, ``device`` and ``model``; ``random=True`` marks
    kernels built from sampled networks (they need a fresh ``seed`` per draw).
    """
    def add(f):
        f.random = random
        return KERNELS.register(f)

    return add(fn) if fn is not None else add


def list_kernels(pattern: str = "*") -> list[str]:
    return KERNELS.names(pattern)


@register_kernel
def fc_ntk(ctx, **kw):
    """NTK of an FC ReLU network (depth hidden layers), exact; O(D) per image pair."""
    return FCKernel(kind="ntk", **kw)


@register_kernel
def fc_nngp(ctx, **kw):
    """NNGP of an FC ReLU network, exact; O(D) per image pair."""
    return FCKernel(kind="nngp", **kw)


@register_kernel
def conv_ntk(ctx, **kw):
    """NTK of ConvNet-D (conv3x3-ReLU-avgpool x D, flatten), exact; O(HW (2^(D+1) - 1)^2) per image pair."""
    from .conv_kernels import ConvKernel

    return ConvKernel("convnet", kind="ntk", **kw)


@register_kernel
def conv_nngp(ctx, **kw):
    """NNGP of ConvNet-D, exact; O(HW (2^(D+1) - 1)^2) per image pair, about 2/3 of conv_ntk's time."""
    from .conv_kernels import ConvKernel

    return ConvKernel("convnet", kind="nngp", **kw)


@register_kernel
def myrtle_ntk(ctx, **kw):
    """NTK of Myrtle-5/7/10 (depth=5 default; global average pool), exact; O((HW)^2) per pair at full resolution
    for 2-3 conv layers: the costliest kernel here."""
    from .conv_kernels import ConvKernel

    return ConvKernel("myrtle", kind="ntk", **{"depth": 5, **kw})


@register_kernel
def myrtle_nngp(ctx, **kw):
    """NNGP of Myrtle-5/7/10, exact; O((HW)^2) per image pair."""
    from .conv_kernels import ConvKernel

    return ConvKernel("myrtle", kind="nngp", **{"depth": 5, **kw})


@register_kernel(random=True)
def rf_nngp(ctx, **kw):
    """Random-feature NNGP of a registered network (n_models draws): a cheap approximation; one forward per image."""
    kw = {"model": ctx["model"], "seed": ctx["seed"], **kw}  # a seed or model in the spec wins
    return RandomFeatureKernel(ctx["in_shape"], ctx["num_classes"], device=ctx["device"], **kw)


@register_kernel
def rbf(ctx, **kw):
    """exp(-gamma ||x - x'||^2); O(D) per pair."""
    return RBFKernel(**kw)


@register_kernel
def linear(ctx, **kw):
    """x . x' / D; O(D) per pair."""
    return LinearKernel(**kw)


def parse_kernel_spec(spec: str) -> tuple[str, dict]:
    """``"fc_ntk(depth=3)"`` -> ``("fc_ntk", {"depth": 3})``; an unknown name lists the kernels.

    Examples
    --------
    >>> parse_kernel_spec("rf_nngp(n_models=4, model='convnet_w32')")
    ('rf_nngp', {'n_models': 4, 'model': 'convnet_w32'})
    """
    name, kwargs = parse_spec(spec, "kernel")
    KERNELS.get(name)  # raises UnknownNameError with the close matches
    return name, kwargs


def make_kernel(spec: str | Kernel, *, in_shape=None, num_classes: int = 10, seed: int = 0, device=None,
                model: str = "convnet") -> Kernel:
    """Build a kernel from a spec string (a :class:`Kernel` passes through).

    ``seed``, ``model`` and ``in_shape`` are used by random-feature kernels only, and a ``seed`` or
    ``model`` given in the spec wins.

    Examples
    --------
    >>> make_kernel("fc_ntk(depth=2)")
    fc_ntk(depth=2, kind='ntk', w_std=1.4142135623730951, b_std=0.1)
    """
    if isinstance(spec, Kernel):
        return spec
    name, kw = parse_kernel_spec(spec)
    ctx = {"in_shape": in_shape, "num_classes": num_classes, "seed": seed, "device": device, "model": model}
    return build_spec(KERNELS.get(name), "kernel", name, ctx, **kw)


def is_random_kernel(spec: str | Kernel) -> bool:
    """True when the kernel is built from sampled networks (needs a seed)."""
    if isinstance(spec, Kernel):
        return isinstance(spec, RandomFeatureKernel)
    return KERNELS.get(parse_kernel_spec(spec)[0]).random


# --------------------------------------------------------------------------- kernel ridge regression


def centered_one_hot(labels: torch.Tensor, num_classes: int, dtype=torch.float64) -> torch.Tensor:
    """(N, C) targets e_c - 1/C (KIP's regression labels)."""
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype) - 1.0 / num_classes


def psd_solve(a: torch.Tensor, b: torch.Tensor, max_tries: int = 5) -> torch.Tensor:
    """Solve ``a x = b`` for symmetric PSD ``a`` by Cholesky, retrying with growing jitter.

    Jitter is 0, then 1e-10, 1e-8, ... times the mean diagonal. Reading Cholesky's status is one host sync.
    """
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    scale = a.diagonal().mean().detach().abs().clamp_min(torch.finfo(a.dtype).tiny)
    for k in range(max_tries):
        jitter = 0.0 if k == 0 else scale * 10.0 ** (2 * k - 12)
        chol, info = torch.linalg.cholesky_ex(a + jitter * eye)
        if int(info) == 0:
            return torch.cholesky_solve(b, chol)
    raise NumericalError(f"Kernel matrix is not positive definite even with jitter {float(jitter):.3g}; "
                         f"raise the ridge 'reg'.")


def ridge_term(k: torch.Tensor, reg: float) -> torch.Tensor:
    """The trace-normalised ridge ``reg * tr(k) / n``."""
    return reg * k.diagonal().sum() / k.shape[0]


def krr_fit(k_ss: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """The dual coefficients ``(k_ss + reg tr(k_ss)/n I)^-1 y_s`` (n_s, C), in float64: the one KRR solve."""
    k_ss = k_ss.double()
    eye = torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)
    return psd_solve(k_ss + ridge_term(k_ss, reg) * eye, y_s.double())


def krr_predict(k_ss: torch.Tensor, k_ts: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """KRR predictions ``k_ts (k_ss + reg tr(k_ss)/n I)^-1 y_s``, in float64.

    Examples
    --------
    >>> x = torch.randn(3, 5, dtype=torch.float64); y = torch.randn(3, 2, dtype=torch.float64)
    >>> k = LinearKernel(normalize=False)
    >>> torch.allclose(krr_predict(k(x), k(x), y, reg=0.0), y)
    True
    """
    return k_ts.double() @ krr_fit(k_ss, y_s, reg)


def label_solve(kernel, x_s: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor, *, reg: float = 1e-6,
                ls_reg: float = 1e-6, chunk: int = 5000) -> torch.Tensor:
    """LS: support labels minimising ||K_ts (K_ss + lam I)^-1 y_s - y_t||^2 over the whole target set.

    With z = (K_ss + lam I)^-1 y_s the problem is least squares in z; its (ridge ``ls_reg * tr/n``)
    normal equations need only G = sum_b K_sb K_bs and h = sum_b K_sb y_b, accumulated over chunks of
    the target set, so K_ts is never held whole. Returns y_s = (K_ss + lam I) z (float64, (n_s, C)).
    """
    with torch.no_grad():
        n_s = x_s.shape[0]
        g = torch.zeros(n_s, n_s, dtype=torch.float64, device=x_s.device)
        h = torch.zeros(n_s, y_t.shape[1], dtype=torch.float64, device=x_s.device)
        for i in range(0, x_t.shape[0], chunk):
            k_sb = kernel(x_s, x_t[i:i + chunk]).double()  # (n_s, b)
            g += k_sb @ k_sb.T
            h += k_sb @ y_t[i:i + chunk].double()
        eye = torch.eye(n_s, dtype=torch.float64, device=x_s.device)
        z = psd_solve(g + ridge_term(g, ls_reg) * eye, h)  # (n_s, C)
        k_ss = kernel(x_s).double()
        return (k_ss + ridge_term(k_ss, reg) * eye) @ z


@torch.no_grad()
def kernel_accuracy(kernel, x_s: torch.Tensor, y_s: torch.Tensor, x_test: torch.Tensor, labels_test: torch.Tensor,
                    *, num_classes: int = 10, reg: float = 1e-6, chunk: int = 2000) -> float:
    """Test accuracy (%) of KRR from the support set under ``kernel``.

    ``y_s`` is int labels (turned into centred one-hot targets) or (n, C) float targets (used as they are).
    """
    y = y_s.double() if y_s.dim() == 2 else centered_one_hot(y_s, num_classes)
    alpha = krr_fit(kernel(x_s), y, reg)  # (n_s, C)
    correct = 0
    for i in range(0, x_test.shape[0], chunk):
        pred = (kernel(x_test[i:i + chunk], x_s).double() @ alpha).argmax(1)
        correct += int((pred == labels_test[i:i + chunk].to(pred.device)).sum())
    return 100.0 * correct / x_test.shape[0]
