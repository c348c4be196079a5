"""KIP and LS: kernel inducing points and label solve (Nguyen, Chen, Lee, ICLR 2021; Nguyen, Novak,
Xiao, Lee, NeurIPS 2021; REFERENCE section 2 "KIP and LS").

KIP, one iteration:
  1. pick the kernel: one spec of ``kernel`` (a list is a family, one member drawn per step); a
     random-feature kernel gets freshly sampled networks (RFAD);
  2. draw a class-balanced target batch (X_t, y_t) of real images (optionally DSA-augmented per image),
     y_t = centred one-hot e_c - 1/C;
  3. KRR from the support set: y_hat = K_ts (K_ss + reg tr(K_ss)/n I)^-1 y_s, solved in float64;
  4. loss = 0.5 mean((y_hat - y_t)^2) (or "platt": cross-entropy of y_hat / temperature, learned);
  5. one Adam step on the support images (and labels when ``learn_labels``, and the temperature).

LS (no iterations): support images drawn from the real set, then the labels minimising the KRR loss
over the whole training set in closed form (``distillset.kernels.label_solve``, streamed in chunks).

Labels in the synthetic set: int class labels when fixed; float (N, C) regression targets in the
centred one-hot space when learned (KIP) or solved (LS); evaluate those with ``loss="mse"`` (or as
kernel accuracy). ``zca=True`` whitens the real data first (``distillset.zca``) and stores the matrix
as ``extra["zca"]``; the set's images are then whitened.

Finite networks: a KIP set is made for its kernel's mean prediction. To train the kernel's own network on
it, use the centred network without weight decay (``Evaluator(models="ntk_fc(centred=True)", loss="mse",
weight_decay=0.0)``); a plain network adds the random function it was drawn with, and the protocol's weight
decay pulls it out of the kernel regime (``benchmarks/kip_transfer_sweep.py``: 46.6 % -> 87.9 % on MNIST
IPC 10, kernel 95.8 %).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import augment, resolve_strategy
from ..errors import InvalidParameterError
from ..kernels import (centered_one_hot, is_random_kernel, kernel_accuracy, krr_predict, label_solve, make_kernel,
                       parse_kernel_spec)
from ..utils import NO_ITERATIONS, Instance, Interval, Options, draw_seed
from ..zca import ZCA
from .base import DistillMethod, State, register_method
from .common import class_labels, init_images


def _whiten(real, zca: bool, strength: float) -> dict[str, torch.Tensor]:
    """Whiten ``real.images`` in place (this run's copy) and return the tensors to store with the set."""
    if not zca:
        return {}
    z = ZCA(strength).fit(real.images)
    real.images = z.transform(real.images)
    return {f"extra.{k}": v for k, v in z.extra().items()}


def _check_specs(kernel, data, model: str) -> list[str]:
    """The kernel family's specs, each built once on the data's shape: an unknown name, option or bad value
    (a Myrtle depth of 4) is one clear error before any work, not in the first step."""
    specs = [kernel] if isinstance(kernel, str) else list(kernel) if isinstance(kernel, (list, tuple)) else None
    if not specs or not all(isinstance(s, str) for s in specs):
        raise InvalidParameterError(f"kernel must be a kernel spec such as 'fc_ntk', or a non-empty list of them. "
                                    f"Got {kernel!r}.")
    for s in specs:
        parse_kernel_spec(s)  # raises on an unknown name or a bad spec
        make_kernel(s, in_shape=data.image_shape, num_classes=data.num_classes, seed=0, model=model).check(data.image_shape)
    return specs


def _build_kernel(spec, state: State, model: str):
    seed = draw_seed(state.generator) if is_random_kernel(spec) else 0
    data = state.data
    return make_kernel(spec, in_shape=data.image_shape, num_classes=data.num_classes, seed=seed,
                       device=state.device, model=model)


def kernel_protocol(synthetic, data, *, n_models: int = 10, random_state: int = 0, device=None) -> dict:
    """KIP's and LS's own evaluation: kernel accuracy, the test accuracy (%) of kernel ridge regression
    from the set under the kernel it was made with (its first family member), on the whole test set.

    A closed-form kernel gives one number; a random-feature kernel is drawn ``n_models`` times (seeds
    derived from ``random_state``). This is never a network's accuracy: report the two apart.
    """
    from ..evaluate import real_inputs
    from ..utils import derive_seed, resolve_device

    params = synthetic.meta["params"]
    spec = params["kernel"] if isinstance(params["kernel"], str) else params["kernel"][0]
    device = resolve_device(device)
    x_test = real_inputs(synthetic, data, data.test.images, device)  # whitened when the set is
    draws = n_models if is_random_kernel(spec) else 1
    accuracies = [kernel_accuracy(make_kernel(spec, in_shape=data.image_shape, num_classes=data.num_classes,
                                              seed=derive_seed(random_state, f"kernel/{i}"), device=device,
                                              model=params.get("model", "convnet")),
                                  synthetic.images.to(device).float(), synthetic.labels.to(device), x_test,
                                  data.test.labels, num_classes=data.num_classes, reg=params.get("reg", 1e-6))
                  for i in range(draws)]
    mean = sum(accuracies) / len(accuracies)
    std = (sum((a - mean) ** 2 for a in accuracies) / len(accuracies)) ** 0.5
    return {"protocol": f"kernel accuracy, KRR under {spec}" + (f", {draws} kernel draws" if draws > 1 else ""),
            "mean": mean, "std": std, "accuracies": accuracies}


@register_method
class KIP(DistillMethod):
    """Kernel Inducing Points.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=1000
    model : str, default="convnet"
        Network of the random-feature kernel ``rf_nngp`` (unused by the closed-form kernels).
    kernel : str or list of str, default="fc_ntk"
        Kernel spec (``distillset.kernels.make_kernel``), e.g. ``"fc_ntk(depth=3)"``, ``"rf_nngp(n_models=8)"``;
        a list is a family from which each step draws one uniformly.
    reg : float, default=1e-6
        Ridge, relative to tr(K_ss)/n.
    lr : float, default=0.04
        Adam learning rate on the images (and labels, temperature).
    batch_target : int, default=5000
        Target images per step, class-balanced (``batch_target // num_classes`` per class).
    learn_labels : bool, default=False
    loss : {"mse", "platt"}, default="mse"
    image_init : {"real", "noise"}, default="real"
        How the synthetic images start: distinct random real images, or N(0, 1) noise (was ``init``).
    augment : str or None, default=None
        DSA strategy applied per image to the target batch; "auto" = the data set's default.
    zca : bool, default=False
        Whiten the data (ZCA, regularised by ``zca_strength``) before distilling.
    zca_strength : float, default=0.1
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> kip = KIP(ipc=1, iterations=3, batch_target=100, random_state=0, device="cpu", progress=False)
    >>> kip.fit(load_dataset("digits")).synthetic_.images.shape
    torch.Size([10, 1, 8, 8])
    """

    name = "kip"
    _distributed = "its kernel regression couples every class in one solve, which is not split across processes yet"
    _renamed_params = {"init": "image_init"}
    _parameter_constraints = {
        "kernel": [Instance((str, list, tuple))],
        "reg": [Interval(float, 0)],
        "lr": [Interval(float, 0, closed="neither")],
        "batch_target": [Interval(int, 1)],
        "learn_labels": [Instance((bool,))],
        "loss": [Options(("mse", "platt"))],
        "image_init": [Options(("real", "noise"))],
        "augment": [None, Instance((str,))],
        "zca": [Instance((bool,))],
        "zca_strength": [Interval(float, 0)],
    }

    def __init__(self, ipc=10, *, iterations=1000, model="convnet", kernel="fc_ntk", reg=1e-6, lr=0.04,
                 batch_target=5000, learn_labels=False, loss="mse", image_init="real", augment=None, zca=False,
                 zca_strength=0.1, random_state=None, device=None, checkpoint_dir=None, checkpoint_every=None,
                 log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.kernel = kernel
        self.reg = reg
        self.lr = lr
        self.batch_target = batch_target
        self.learn_labels = learn_labels
        self.loss = loss
        self.image_init = image_init
        self.augment = augment
        self.zca = zca
        self.zca_strength = zca_strength
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def planned_output(self) -> dict:
        return {**super().planned_output(), "label_kind": "learned" if self.learn_labels else "hard"}

    def _validate(self, data) -> None:
        super()._validate(data)
        self.kernel_specs_ = _check_specs(self.kernel, data, self.model)

    def _init_state(self, data, real, generator):
        tensors = _whiten(real, self.zca, self.zca_strength)
        images = init_images(real, self.ipc, self.image_init, generator)
        labels = class_labels(data.num_classes, self.ipc, images.device)
        if self.learn_labels:
            labels = centered_one_hot(labels, data.num_classes, torch.float32).requires_grad_(True)
        tensors.update(images=images, labels=labels)
        if self.loss == "platt":
            tensors["log_temperature"] = torch.full((), -2.0, device=images.device, requires_grad=True)
        return tensors

    def _make_optimizer(self, tensors):
        leaves = [t for k, t in tensors.items() if t.requires_grad]
        return torch.optim.Adam(leaves, lr=self.lr)

    def _step(self, state: State, it: int) -> dict[str, torch.Tensor]:
        t, g, k = state.tensors, state.generator, state.data.num_classes
        # 1. the kernel of this step (a family member; fresh random networks for random-feature kernels)
        spec = self.kernel_specs_[0] if len(self.kernel_specs_) == 1 else \
            self.kernel_specs_[int(torch.randint(len(self.kernel_specs_), (1,), generator=g, device=g.device))]
        kernel = _build_kernel(spec, state, self.model)
        # 2. a class-balanced target batch, optionally augmented per image
        x_t, labels_t = state.real.sample(max(1, self.batch_target // k), g)  # (B, C, H, W), (B,)
        strategy = resolve_strategy(self.augment, state.data.name)
        if strategy:
            x_t = augment(x_t, strategy, generator=g)
        y_t = centered_one_hot(labels_t, k)  # (B, K) float64
        y_s = t["labels"] if self.learn_labels else centered_one_hot(t["labels"], k)  # (n_s, K)
        # 3. KRR from the support set to the target batch
        k_ss, k_ts = kernel.pair(t["images"], x_t)  # (n_s, n_s), (B, n_s)
        y_hat = krr_predict(k_ss, k_ts, y_s, self.reg)  # (B, K) float64
        # 4. the loss
        if self.loss == "platt":
            loss = F.cross_entropy(y_hat * torch.exp(-t["log_temperature"].double()), labels_t)
        else:
            loss = 0.5 * ((y_hat - y_t) ** 2).mean()
        return {"loss": loss.float()}  # 5. the loop takes one Adam step

    def _to_synthetic(self, state):
        t = state.tensors
        return t["images"], t["labels"], None

    @classmethod
    def own_protocol(cls, synthetic, data, *, n_models=10, random_state=0, device=None):
        """Kernel accuracy (:func:`kernel_protocol`)."""
        return kernel_protocol(synthetic, data, n_models=n_models, random_state=random_state, device=device)


@register_method
class LS(DistillMethod):
    """Label Solve: random real support images with the KRR-optimal labels over the whole training set.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=0
        Must be 0 (closed form).
    model : str, default="convnet"
        Network of ``rf_nngp`` (seeded from ``random_state``).
    kernel : str, default="fc_ntk"
    reg : float, default=1e-6
        KRR ridge on K_ss, relative to tr(K_ss)/n.
    ls_reg : float, default=1e-6
        Ridge of the least-squares solve, relative to tr(K_st K_ts)/n.
    chunk : int, default=5000
        Target images per kernel block.
    max_target : int or None, default=None
        Use a random class-balanced subset of this many training images as the target (None = all).
    zca, zca_strength : as in ``KIP``.
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> LS(ipc=1, random_state=0, device="cpu", progress=False).fit(load_dataset("digits")).synthetic_.labels.shape
    torch.Size([10, 10])
    """

    name = "ls"
    _distributed = True  # closed form, no iterations: every process solves the same
    _parameter_constraints = {
        "iterations": [NO_ITERATIONS],
        "kernel": [Instance((str,))],
        "reg": [Interval(float, 0)],
        "ls_reg": [Interval(float, 0)],
        "chunk": [Interval(int, 1)],
        "max_target": [None, Interval(int, 1)],
        "zca": [Instance((bool,))],
        "zca_strength": [Interval(float, 0)],
    }

    def __init__(self, ipc=10, *, iterations=0, model="convnet", kernel="fc_ntk", reg=1e-6, ls_reg=1e-6, chunk=5000,
                 max_target=None, zca=False, zca_strength=0.1, random_state=None, device=None, checkpoint_dir=None,
                 checkpoint_every=None, log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.kernel = kernel
        self.reg = reg
        self.ls_reg = ls_reg
        self.chunk = chunk
        self.max_target = max_target
        self.zca = zca
        self.zca_strength = zca_strength
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def planned_output(self) -> dict:
        return {**super().planned_output(), "label_kind": "learned"}  # the solved labels

    def _validate(self, data) -> None:
        super()._validate(data)
        _check_specs(self.kernel, data, self.model)

    def _init_state(self, data, real, generator):
        tensors = _whiten(real, self.zca, self.zca_strength)
        images = init_images(real, self.ipc, "real", generator).detach()
        seed = draw_seed(generator) if is_random_kernel(self.kernel) else 0
        kernel = make_kernel(self.kernel, in_shape=data.image_shape, num_classes=data.num_classes, seed=seed,
                             device=images.device, model=self.model)
        x_t, labels_t = real.images, real.labels
        if self.max_target is not None and self.max_target < x_t.shape[0]:
            idx = real.sample_indices(min(real.min_count, max(1, self.max_target // data.num_classes)), generator)
            x_t, labels_t = x_t[idx], labels_t[idx]
        y_s = label_solve(kernel, images, x_t, centered_one_hot(labels_t, data.num_classes), reg=self.reg,
                          ls_reg=self.ls_reg, chunk=self.chunk)
        tensors.update(images=images, labels=y_s.float())
        return tensors

    own_protocol = KIP.__dict__["own_protocol"]  # the same classmethod, bound to LS

    def _step(self, state, it):  # never called: iterations is 0
        raise AssertionError("LS has no iterations")
