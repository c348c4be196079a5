"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022), with
TESLA's constant memory (Cui et al., ICML 2023), FTD's image EMA (Du et al., CVPR 2023) and DATM's
difficulty-aligned window and learned soft labels (Guo et al., ICLR 2024) as options.

Preparation: ``num_experts`` experts trained on the real data, their weights kept after every epoch
(``distillset.experts``; cached and shared across runs). One iteration (REFERENCE section 2 "MTT"):
  1. pick an expert and a start epoch s in [min_start_epoch, max_start_epoch) (DATM: the upper end
     grows from ``initial_max_start_epoch`` to ``max_start_epoch`` over ``expansion_iterations``);
  2. start a student at theta*_s and take ``syn_steps`` plain SGD steps on the synthetic set, a
     mini-batch of ``batch_syn`` images per step (a fresh permutation each pass), each image DSA-augmented
     (own parameters, not siamese), with the learned step size alpha:
     theta_{n+1} = theta_n - alpha * grad CE(f(theta_n, A(x_b)), y_b);
  3. loss = ||theta_N - theta*_{s+M}||^2 / ||theta*_s - theta*_{s+M}||^2, M = ``expert_epochs``;
  4. SGD with momentum 0.5 on the images (``lr_img``) and on alpha (``lr_lr``); with soft labels, SGD
     (``lr_y``, momentum ``momentum_y``) on the label logits too.

The gradient of step 3 w.r.t. images, alpha and label logits comes from ``distillset.unroll``:
``backward="autograd"`` (one graph over the N steps, memory grows with N), ``"constant"`` (the same
gradient, one step's activations at a time) or ``"tesla"`` (TESLA's published accumulation, which holds
the adjoint fixed at theta_N and so drops the later steps' Hessian terms; see ``unroll``).

Options: ``gsam_rho`` (FTD) trains flat experts (adaptive GSAM); ``ema_decay`` (FTD) makes the saved
set the exponential moving average of the images;
``soft_labels`` (DATM) learns logits initialised from the last epoch of expert 0 on the initial images,
and the set stores their softmax (label kind "soft", trained with soft cross-entropy);
``image_init="correct"`` (DATM) starts from real images that expert classifies correctly;
``loss_threshold`` (DATM) skips the update when the loss exceeds it. The set carries the learned step
size in ``lrs`` (MTT evaluates with it: ``Evaluator(lr="learned")``).

Observed: on 8x8 ``digits`` ConvNet-3's last maps are 1-2 px, whose instance norm makes the unrolled
steps extremely ill-conditioned (the loss is linear in the images only within ~1e-4); use an MLP there.
On MNIST IPC 1 (300 iterations, 5 experts x 4 epochs) MTT reaches 83.7 %: benchmarks/NOTES.md.

Deviations: experts are trained once per ``expert_seed`` and shared by every distillation seed (as the
papers' buffers are); each iteration picks an expert uniformly at random (the reference walks through
shuffled buffer files). ZCA is our regularised, centred ``distillset.zca`` (kornia's in the reference).
``image_init="correct"`` draws 10 * ipc random candidates per class (DATM scans the class in order).
One host sync per iteration reads the expert pick (a second one with ``loss_threshold``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import apply, resolve_strategy, sample_params
from ..errors import InvalidParameterError
from ..experts import check_expert_model, fit_whitening, train_experts
from ..models import get_model
from ..precision import PRECISIONS, autocast, resolve_precision
from ..unroll import BACKWARDS, FlatNet, unrolled_grad
from ..utils import Instance, Interval, Options
from ..zca import apply_zca
from .base import DistillMethod, State, grad_surrogate, register_method
from .common import class_labels, init_images


@register_method
class MTT(DistillMethod):
    """Matching Training Trajectories.

    Parameters
    ----------
    ipc : int, default=1
    iterations : int, default=5000
    model : str, default="convnet"
        A model without BatchNorm (the trajectory is the weights alone).
    num_experts, train_epochs, lr_teacher, batch_train : int, int, float, int, default=10, 50, 0.01, 256
        The experts (``distillset.experts.train_experts``).
    syn_lr : float or None, default=None
        The student step size alpha's initial value (MTT's ``distill.py --lr_teacher``); None = ``lr_teacher``.
    gsam_rho, gsam_alpha : float or None, float, default=None, 0.3
        FTD's flat experts (trained with adaptive GSAM; FTD uses 0.01 and 0.3). None: MTT's plain SGD.
    expert_seed : int, default=0
        Seed of the experts, shared by every distillation seed.
    expert_precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of the experts' training passes.
    precision : {"auto", "fp32", "bf16"}, default="fp32"
        Arithmetic of the student's unrolled network passes (``distillset.precision``); weights, images,
        their augmentation and the matching loss stay float32. Unlike the other methods the default is
        float32: bf16 runs the unroll 1.35-1.47x faster on this project's CPU (100 MNIST images) with an
        image gradient at cosine 0.99 to float32's, and its effect on accuracy is measured only where
        benchmarks/NOTES.md says.
    syn_steps : int, default=50
        N, student steps per iteration.
    expert_epochs : int, default=2
        M, the expert epochs the N steps must cover.
    min_start_epoch, max_start_epoch : int, default=0, 2
        The start epoch s is drawn from [min_start_epoch, max_start_epoch).
    initial_max_start_epoch : int or None, default=None
        DATM's growing window: the upper end starts here and reaches ``max_start_epoch`` after
        ``expansion_iterations`` iterations. None: a fixed window.
    expansion_iterations : int, default=1000
    lr_img, lr_lr : float, default=100, 1e-7
        SGD (momentum 0.5) learning rates of the images and of alpha (the authors' CIFAR-10 IPC 1 command,
        with ZCA; sources differ, TESLA's uses lr_img 1000). The scale depends on the data: choose it on a
        validation split (benchmarks/mtt_choice.py chose 100 on MNIST).
    batch_syn : int or None, default=None
        Synthetic images per student step; None = all of them.
    image_init : {"real", "noise", "correct"}, default="real"
    soft_labels : bool, default=False
        Learn soft labels (DATM); ``lr_y`` and ``momentum_y`` (2.0, 0.9) are their SGD settings.
    ema_decay : float or None, default=None
        FTD's EMA of the images (e.g. 0.995); the set holds the average.
    loss_threshold : float or None, default=None
        Skip the update of an iteration whose loss exceeds this (DATM's ``threshold``).
    augment : str or None, default="auto"
    zca : bool, default=False
    zca_strength : float, default=0.1
    backward : {"autograd", "constant", "tesla"}, default="autograd"
        How the gradient through the N steps is computed (see above). "constant" does one more first-order
        pass per step: 1.1-1.35x autograd's time at 10 MNIST images, and faster than autograd once the graph
        outgrows memory (100 images, 20 steps: 438 MiB vs 5.9 GiB; benchmarks/NOTES.md).
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> mtt = MTT(ipc=1, iterations=2, model="mlp", num_experts=1, train_epochs=2, syn_steps=3, expert_epochs=1,
    ...           max_start_epoch=1, lr_img=10.0, random_state=0, device="cpu", progress=False)
    >>> s = mtt.fit(load_dataset("digits")).synthetic_
    >>> s.images.shape, s.lrs.shape
    (torch.Size([10, 1, 8, 8]), torch.Size([1]))
    """

    name = "mtt"
    _distributed = "its student trains on batches mixing all classes, so its loss does not split by class"
    _parameter_constraints = {
        "num_experts": [Interval(int, 1)],
        "train_epochs": [Interval(int, 1)],
        "lr_teacher": [Interval(float, 0, closed="neither")],
        "syn_lr": [None, Interval(float, 0, closed="neither")],
        "batch_train": [Interval(int, 1)],
        "gsam_rho": [None, Interval(float, 0, closed="neither")],
        "gsam_alpha": [Interval(float, 0)],
        "expert_seed": [Interval(int, 0)],
        "expert_precision": [Options(PRECISIONS)],
        "precision": [Options(PRECISIONS)],
        "syn_steps": [Interval(int, 1)],
        "expert_epochs": [Interval(int, 1)],
        "min_start_epoch": [Interval(int, 0)],
        "max_start_epoch": [Interval(int, 1)],
        "initial_max_start_epoch": [None, Interval(int, 1)],
        "expansion_iterations": [Interval(int, 1)],
        "lr_img": [Interval(float, 0, closed="neither")],
        "lr_lr": [Interval(float, 0)],
        "batch_syn": [None, Interval(int, 1)],
        "image_init": [Options(("real", "noise", "correct"))],
        "soft_labels": [Instance((bool,))],
        "lr_y": [Interval(float, 0, closed="neither")],
        "momentum_y": [Interval(float, 0, 1)],
        "ema_decay": [None, Interval(float, 0, 1, closed="left")],
        "loss_threshold": [None, Interval(float, 0, closed="neither")],
        "augment": [None, Instance((str,))],
        "zca": [Instance((bool,))],
        "zca_strength": [Interval(float, 0)],
        "backward": [Options(BACKWARDS)],
    }

    def __init__(self, ipc=1, *, iterations=5000, model="convnet", num_experts=10, train_epochs=50, lr_teacher=0.01,
                 syn_lr=None, batch_train=256, gsam_rho=None, gsam_alpha=0.3, expert_seed=0, expert_precision="auto",
                 syn_steps=50, expert_epochs=2,
                 min_start_epoch=0, max_start_epoch=2, initial_max_start_epoch=None, expansion_iterations=1000,
                 lr_img=100.0, lr_lr=1e-7, batch_syn=None, image_init="real", soft_labels=False, lr_y=2.0,
                 momentum_y=0.9, ema_decay=None, loss_threshold=None, augment="auto", zca=False, zca_strength=0.1,
                 backward="autograd", precision="fp32", random_state=None, device=None, checkpoint_dir=None,
                 checkpoint_every=None, log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.num_experts = num_experts
        self.train_epochs = train_epochs
        self.lr_teacher = lr_teacher
        self.syn_lr = syn_lr
        self.batch_train = batch_train
        self.gsam_rho = gsam_rho
        self.gsam_alpha = gsam_alpha
        self.expert_seed = expert_seed
        self.expert_precision = expert_precision
        self.syn_steps = syn_steps
        self.expert_epochs = expert_epochs
        self.min_start_epoch = min_start_epoch
        self.max_start_epoch = max_start_epoch
        self.initial_max_start_epoch = initial_max_start_epoch
        self.expansion_iterations = expansion_iterations
        self.lr_img = lr_img
        self.lr_lr = lr_lr
        self.batch_syn = batch_syn
        self.image_init = image_init
        self.soft_labels = soft_labels
        self.lr_y = lr_y
        self.momentum_y = momentum_y
        self.ema_decay = ema_decay
        self.loss_threshold = loss_threshold
        self.augment = augment
        self.zca = zca
        self.zca_strength = zca_strength
        self.backward = backward
        self.precision = precision
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def planned_output(self) -> dict:
        return {**super().planned_output(), "label_kind": "soft" if self.soft_labels else "hard"}

    def _validate(self, data):
        super()._validate(data)
        last = self.max_start_epoch - 1 + self.expert_epochs  # the latest target epoch
        if last > self.train_epochs or self.min_start_epoch >= self.max_start_epoch:
            raise InvalidParameterError(
                f"MTT's window needs min_start_epoch < max_start_epoch and max_start_epoch - 1 + expert_epochs <= "
                f"train_epochs. Got {self.min_start_epoch}, {self.max_start_epoch}, {self.expert_epochs} and "
                f"{self.train_epochs}: lower the start epochs or expert_epochs, or train longer experts.")
        if self.initial_max_start_epoch is not None and not \
                self.min_start_epoch < self.initial_max_start_epoch <= self.max_start_epoch:
            raise InvalidParameterError(f"MTT's initial_max_start_epoch must lie in (min_start_epoch, max_start_epoch]."
                                        f" Got {self.initial_max_start_epoch}.")
        check_expert_model(self.model, data, type(self).__name__)

    def _prepared(self, data, device):
        self.experts_ = train_experts(
            data, model=self.model, num_experts=self.num_experts, train_epochs=self.train_epochs,
            lr_teacher=self.lr_teacher, batch_train=self.batch_train, augment=self.augment, zca=self.zca,
            zca_strength=self.zca_strength, gsam_rho=self.gsam_rho, gsam_alpha=self.gsam_alpha,
            precision=self.expert_precision, random_state=self.expert_seed,
            device=device, progress=self.progress)
        return {}

    def _init_state(self, data, real, generator):
        extra = {}
        if self.zca:  # the experts' matrix, applied to the class-sorted images real.take reads
            extra = fit_whitening(data, self.zca_strength, real.raw.device)
            real.images = apply_zca(real.images, extra["zca"], extra["zca_mean"])
        net = get_model(self.model, data.image_shape, data.num_classes, seed=0, device=real.raw.device)
        f = FlatNet(net)
        teacher = self.experts_.trajectories[0, -1].to(real.raw.device)  # expert 0, last epoch (DATM's labeller)
        if self.image_init == "correct":
            images = _correctly_classified(real, self.ipc, lambda x: f(teacher, x), generator).requires_grad_(True)
        else:
            images = init_images(real, self.ipc, self.image_init, generator)
        labels = class_labels(data.num_classes, self.ipc, images.device)
        if self.soft_labels:
            with torch.no_grad():
                labels = f(teacher, images).detach().requires_grad_(True)  # (K*ipc, K) logits
        lr = torch.tensor(float(self.syn_lr or self.lr_teacher), device=images.device, requires_grad=True)
        tensors = {"images": images, "labels": labels, "lr": lr, **{f"extra.{k}": v for k, v in extra.items()}}
        if self.ema_decay is not None:
            tensors["images_ema"] = images.detach().clone()
        return tensors

    def _make_optimizer(self, tensors):
        opts = {"images": torch.optim.SGD([tensors["images"]], lr=self.lr_img, momentum=0.5),
                "lr": torch.optim.SGD([tensors["lr"]], lr=self.lr_lr, momentum=0.5)}
        if self.soft_labels:
            opts["labels"] = torch.optim.SGD([tensors["labels"]], lr=self.lr_y, momentum=self.momentum_y)
        return opts

    def _step(self, state: State, it: int):
        t, g, data = state.tensors, state.generator, state.data
        if "f" not in state.cache:  # built once per run (setdefault would build a network every iteration)
            state.cache["f"] = FlatNet(get_model(self.model, data.image_shape, data.num_classes, seed=0,
                                                 device=state.device))
            state.cache["dtype"] = resolve_precision(self.precision, state.device)
        f = state.cache["f"]
        # 1. an expert and a start epoch
        high = self.max_start_epoch
        if self.initial_max_start_epoch is not None:
            grown = (self.max_start_epoch - self.initial_max_start_epoch) * it // self.expansion_iterations
            high = min(self.initial_max_start_epoch + grown, self.max_start_epoch)
        pick = torch.stack([torch.randint(self.num_experts, (), generator=g, device=g.device),
                            torch.randint(self.min_start_epoch, high, (), generator=g, device=g.device)])
        expert, start = pick.tolist()  # the one host sync: the trajectories are indexed on the host
        theta0 = self.experts_.trajectories[expert, start].to(state.device)
        target = self.experts_.trajectories[expert, start + self.expert_epochs].to(state.device)
        # 2. the student's mini-batches and augmentations, drawn now so the reverse sweep replays them
        batches = _minibatches(t["images"].shape[0], self.batch_syn, self.syn_steps, g, state.device)
        strategy = resolve_strategy(self.augment, data.name)
        augs = [sample_params(strategy, len(b), data.image_shape, generator=g, device=state.device)
                if strategy else None for b in batches]

        def batch(n, leaves):  # leaves: images, alpha (and the label logits)
            x = leaves[0][batches[n]]
            if augs[n] is not None:
                with torch.autocast(state.device.type, enabled=False):  # augmentation stays float32, as in DM / DC
                    x = apply(x, augs[n])
            y = F.softmax(leaves[2][batches[n]], 1) if self.soft_labels else t["labels"][batches[n]]
            return x, y, leaves[1]

        # 3. normalised distance to the expert's later weights, and its gradient
        scale = ((theta0 - target) ** 2).sum()

        def outer(theta):
            return ((theta - target) ** 2).sum() / scale

        leaves = [t["images"], t["lr"]] + ([t["labels"]] if self.soft_labels else [])
        with autocast(state.device, state.cache["dtype"]):
            loss, grads = unrolled_grad(f, theta0, self.syn_steps, batch, leaves, outer, self.backward)
        # 4. the loop updates images, alpha (and the label logits)
        if self.loss_threshold is None or float(loss) <= self.loss_threshold:
            yield grad_surrogate(dict(zip(leaves, grads)))
            if self.ema_decay is not None:
                with torch.no_grad():
                    t["images_ema"].lerp_(t["images"], 1 - self.ema_decay)
        return {"loss": loss, "lr": t["lr"].detach(), "start_epoch": pick[1].float()}

    def _to_synthetic(self, state):
        t = state.tensors
        images = t["images_ema"] if self.ema_decay is not None else t["images"]
        labels = F.softmax(t["labels"], 1) if self.soft_labels else t["labels"]
        return images, labels, t["lr"].reshape(1)


def _minibatches(n: int, batch_syn: int | None, steps: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """Index batches for ``steps`` student steps: passes over a fresh permutation, ``batch_syn`` images each."""
    size = batch_syn or n
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
        out.extend(torch.split(perm, size))
    return out[:steps]


def _correctly_classified(real, ipc: int, classify, generator: torch.Generator, candidates: int = 10) -> torch.Tensor:
    """``ipc`` random real images per class, preferring those ``classify`` gets right (DATM's initialisation).

    Draws ``candidates * ipc`` images per class (as many as the smallest class has, if fewer), and keeps
    per class the first ``ipc`` classified correctly, topped up with misclassified ones if too few are right.
    """
    k = real.num_classes
    m = max(ipc, min(candidates * ipc, real.min_count))
    idx = real.sample_indices(m, generator).view(k, m)  # (K, m), class-major
    with torch.no_grad():
        pred = torch.cat([classify(real.take(chunk)).argmax(1) for chunk in idx.flatten().split(1024)]).view(k, m)
    wrong = (pred != torch.arange(k, device=pred.device)[:, None]).to(torch.int64)  # (K, m): 0 = correct
    order = torch.argsort(wrong, dim=1, stable=True)[:, :ipc]  # correct ones first, random order kept
    return real.take(torch.gather(idx, 1, order).flatten()).clone()


@register_method
class DATM(MTT):
    """DATM: MTT with learned soft labels and a difficulty-aligned window (Guo et al., ICLR 2024).

    Also starts from correctly classified real images and skips iterations over a loss threshold.

    Parameters
    ----------
    Those of :class:`MTT`, with DATM's defaults (its CIFAR-10 IPC 1 settings: N = 80, window [0, 4),
    lr_img 100, lr_y 5, threshold 1.1, EMA 0.995, soft labels, correctly classified initial images).

    Evaluate its sets with their soft labels (the evaluator's default: soft cross-entropy) and learned step
    size (``Evaluator(lr="learned")``); report them apart from hard-label results.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> datm = DATM(ipc=1, iterations=1, model="mlp", num_experts=1, train_epochs=2, syn_steps=2, expert_epochs=1,
    ...             max_start_epoch=1, random_state=0, device="cpu", progress=False)
    >>> datm.fit(load_dataset("digits")).synthetic_.label_kind
    'soft'
    """

    name = "datm"

    def __init__(self, ipc=1, *, iterations=5000, model="convnet", num_experts=10, train_epochs=50, lr_teacher=0.01,
                 syn_lr=None, batch_train=256, gsam_rho=None, gsam_alpha=0.3, expert_seed=0, expert_precision="auto",
                 syn_steps=80, expert_epochs=2,
                 min_start_epoch=0, max_start_epoch=4, initial_max_start_epoch=None, expansion_iterations=1000,
                 lr_img=100.0, lr_lr=1e-7, batch_syn=None, image_init="correct", soft_labels=True, lr_y=5.0,
                 momentum_y=0.9, ema_decay=0.995, loss_threshold=1.1, augment="auto", zca=False, zca_strength=0.1,
                 backward="autograd", precision="fp32", random_state=None, device=None, checkpoint_dir=None,
                 checkpoint_every=None, log_every=10, progress=True):
        super().__init__(
            ipc, iterations=iterations, model=model, num_experts=num_experts, train_epochs=train_epochs,
            lr_teacher=lr_teacher, syn_lr=syn_lr, batch_train=batch_train, gsam_rho=gsam_rho, gsam_alpha=gsam_alpha,
            expert_seed=expert_seed, expert_precision=expert_precision,
            syn_steps=syn_steps, expert_epochs=expert_epochs, min_start_epoch=min_start_epoch,
            max_start_epoch=max_start_epoch, initial_max_start_epoch=initial_max_start_epoch,
            expansion_iterations=expansion_iterations, lr_img=lr_img, lr_lr=lr_lr, batch_syn=batch_syn,
            image_init=image_init, soft_labels=soft_labels, lr_y=lr_y, momentum_y=momentum_y, ema_decay=ema_decay,
            loss_threshold=loss_threshold, augment=augment, zca=zca, zca_strength=zca_strength, backward=backward,
            precision=precision, random_state=random_state, device=device, checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every, log_every=log_every, progress=progress)
