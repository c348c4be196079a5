"""The standard evaluation protocol (REFERENCE section 1).

Train freshly initialised networks on a synthetic set, test each once on the full real test set,
report mean ± std over the networks. The test set is touched only after training: no checkpoint
selection on it.

Speed: the networks are independent, so on CPU they train at the same time, one per core (a 10-image
set gives each convolution too little work to spread over cores; whole networks side by side scale
with the cores). Each network has its own random stream, derived from the evaluator's seed, the
architecture's position and the network's index, so its result does not depend on how many run at once.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import statistics
import sys
import threading
import time
import types
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save

from . import __version__
from ._io import atomic_write, check_writable
from .augment import check_augment
from .data import ImageDataset, require_dataset
from .errors import InvalidParameterError, UnknownNameError, check_named_once, require_type
from .models import check_model, get_model, model_spec_name
from .precision import PRECISIONS, autocast, chunk_size, precision_name, resolve_precision, to_channels_last
from .synthetic import SyntheticSet
from . import distributed
from .utils import (RANDOM_STATE, content_hash, keep_freed_memory, make_generator, release_freed_memory, resolve_device,
                    resolve_seed, validate_params, Interval, Options, Instance)
from .zca import apply_zca


@dataclass
class EvalResult:
    """Accuracies (in %) of ``n_models`` networks of one architecture trained on one set."""

    model: str
    accuracies: list[float]
    epochs: int
    augment: str | None
    seconds: float
    dataset: str = ""
    source: str = ""
    precision: str = "fp32"
    loss: str = "ce"
    extra: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # the recipe: optimizer, lr, schedule, batch size, CutMix...

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.model}: {self.mean:.2f} ± {self.std:.2f} % over {len(self.accuracies)} nets"

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "std": self.std}


# lr schedules: (fractions of the epochs at which the lr is multiplied, the factor)
SCHEDULES = {"half": ((0.5,), 0.1),  # the standard protocol: x0.1 at half the epochs
             "fifths": ((0.2, 0.4, 0.6, 0.8), 0.5),  # NCFM's: x0.5 at 400, 800, 1200, 1600 of 2000
             "idc": ((2 / 3, 5 / 6), 0.2),  # IDC's and DANCE's: x0.2 at 2/3 and 5/6 of the epochs
             "constant": ((), 1.0)}
# Evaluator settings by name; "long" is NCFM's released evaluation (its configs; IDC's and DANCE's are alike)
PROTOCOLS = {
    "standard": {},
    "long": dict(epochs=2000, optimizer="adamw", lr=0.001, weight_decay=0.01, batch_size=128, schedule="fifths",
                 cutmix_prob=0.5),
}


def cutmix(x: torch.Tensor, generator: torch.Generator, box: Sequence[float] | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019): paste a box of area ~(1 - lam), lam ~ U(0, 1), from a permutation of the batch
    (one box per batch, as the papers' code does). Returns the images, the permutation and the share of each
    image that is its own; the loss is ``kept * loss(y) + (1 - kept) * loss(y[perm])``. ``box`` = (lam, centre
    row, centre column) as fractions, drawn here if not given (one host read).

    >>> xm, perm, kept = cutmix(torch.rand(4, 3, 8, 8), torch.Generator().manual_seed(0))
    >>> xm.shape, sorted(perm.tolist()), 0 <= kept <= 1
    (torch.Size([4, 3, 8, 8]), [0, 1, 2, 3], True)
    """
    n, _, h, w = x.shape
    dev = generator.device
    lam, cy, cx = torch.rand(3, generator=generator, device=dev).tolist() if box is None else box
    perm = torch.randperm(n, generator=generator, device=dev).to(x.device)
    rh, rw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    y0, x0 = int(cy * h), int(cx * w)
    top, bottom, left, right = max(y0 - rh // 2, 0), min(y0 + rh // 2, h), max(x0 - rw // 2, 0), min(x0 + rw // 2, w)
    x = x.clone()  # the caller's batch stays as it was
    x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    return x, perm, 1 - (bottom - top) * (right - left) / (h * w)


def train_network(
    net: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    generator: torch.Generator,
    lr: float = 0.01,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augment: str | None = None,
    loss: str = "ce",
    precision: str = "fp32",
    schedule: str = "half",
    optimizer: str = "sgd",
    cutmix_prob: float = 0.0,
    on_epoch=None,
    gsam: tuple[float, float] | None = None,
    should_stop=None,
) -> torch.nn.Module:
    """Train ``net`` in place with the protocol's SGD recipe (lr x0.1 at half the epochs).

    ``targets`` are int64 class labels or float soft targets (N, C); ``loss`` is ``"ce"`` (cross-entropy,
    soft targets allowed) or ``"mse"`` (regression onto the targets, for kernel-method labels).
    ``precision`` (``distillset.precision``) sets the arithmetic of the passes; weights stay float32.
    ``schedule`` names a :data:`SCHEDULES` entry (``"constant"``: DC's inner loop); ``optimizer`` is ``"sgd"``
    (with ``momentum``) or ``"adamw"``; ``cutmix_prob`` applies :func:`cutmix` to a batch with that probability.
    ``on_epoch(epoch)`` is called after each epoch (1-based), e.g. to keep the checkpoint that does best on a
    validation split. ``gsam=(rho, alpha)`` takes each step with adaptive GSAM (:func:`gsam_gradient`; FTD's
    flat experts): twice the passes. ``should_stop()`` is asked before each batch; when it says True the
    training ends with ``KeyboardInterrupt`` (how a Ctrl-C in the main thread stops networks trained in others).
    """
    from .augment import augment as dsa

    dtype = resolve_precision(precision, images.device)
    images, targets = images.detach(), targets.detach()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    fractions, gamma = SCHEDULES[schedule]
    milestones = sorted({int(epochs * f) for f in fractions} - {0}) if epochs >= 2 else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    n = images.shape[0]
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
        if cutmix_prob:  # (coin, lam, centre row, centre column) per batch: one host read per epoch
            mixing = torch.rand(-(-n // batch_size), 4, generator=generator, device=generator.device).tolist()
        for start in range(0, n, batch_size):
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            idx = perm[start:start + batch_size]
            xb, yb = images[idx], targets[idx]
            if augment:
                xb = dsa(xb, augment, generator=generator)
            mix = None
            if cutmix_prob and mixing[start // batch_size][0] < cutmix_prob:
                xb, partner, kept = cutmix(xb, generator, mixing[start // batch_size][1:])
                mix = (yb[partner], kept)
            def batch_loss():
                with autocast(images.device, dtype):
                    out = net(xb).float()
                fn = F.mse_loss if loss == "mse" else F.cross_entropy
                return fn(out, yb) if mix is None else mix[1] * fn(out, yb) + (1 - mix[1]) * fn(out, mix[0])

            opt.zero_grad(set_to_none=True)
            if gsam is None:
                batch_loss().backward()
            else:
                gsam_gradient(net, batch_loss, *gsam)
            opt.step()
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return net


def gsam_gradient(net: torch.nn.Module, loss_fn, rho: float, alpha: float, eps: float = 1e-12) -> None:
    """Leave in ``.grad`` the adaptive GSAM direction at the current weights (Zhuang et al., ICLR 2022).

    g = grad L(w); e = rho * w^2 * g / ||w * g|| (adaptive SAM's ascent); h = grad L(w + e); the direction
    is h - alpha * (g - its projection on h): the sharpness-aware gradient with the surrogate gap
    descended along the part of g orthogonal to h. FTD trains its experts this way (rho 0.01, alpha 0.3).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    g = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        weighted_norm = torch.linalg.vector_norm(torch.stack([(p.abs() * gi).norm() for p, gi in zip(params, g)]))
        e = [gi * (rho / (weighted_norm + eps)) * p.square() for p, gi in zip(params, g)]
        for p, ei in zip(params, e):
            p.add_(ei)  # climb to w + e
    h = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, ei in zip(params, e):
            p.sub_(ei)  # and back to w
        h_norm = torch.linalg.vector_norm(torch.stack([hi.norm() for hi in h]))
        g_norm = torch.linalg.vector_norm(torch.stack([gi.norm() for gi in g]))
        cosine = sum((gi * hi).sum() for gi, hi in zip(g, h)) / (g_norm * h_norm + eps)
        for p, gi, hi in zip(params, g, h):
            vertical = gi - cosine * g_norm * hi / (h_norm + eps)
            p.grad = hi - alpha * vertical


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None,
                  precision: str = "fp32") -> float:
    """Top-1 accuracy in % of ``net`` (eval mode) on normalised ``images``.

    Batches are bounded in memory (``precision.chunk_size`` by default) and, on CPU, run channels-last
    (the layout oneDNN is fastest in; the weights are converted for the call and back).
    """
    net.eval()
    dtype = resolve_precision(precision, images.device)
    batch_size = batch_size or chunk_size(tuple(images.shape[1:]))
    layout = images.device.type == "cpu" and images.dim() == 4
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    try:
        if layout:
            net.to(memory_format=torch.channels_last)
        for start in range(0, images.shape[0], batch_size):
            xb = images[start:start + batch_size]
            with autocast(images.device, dtype):
                pred = net(to_channels_last(xb) if layout else xb).argmax(1)
            correct += (pred == labels[start:start + batch_size]).sum()
    finally:
        if layout:
            net.to(memory_format=torch.contiguous_format)
    return 100.0 * correct.item() / images.shape[0]


def _listed(names, most: int = 4) -> str:
    return ", ".join(map(str, names[:most])) + (", ..." if len(names) > most else "")


def network_seeds(random_state: int, model_index: int, n_models: int) -> list[tuple[int, int]]:
    """(init seed, training-stream seed) of each network: independent streams derived from one root.

    >>> network_seeds(0, 0, 2) == network_seeds(0, 0, 2), network_seeds(0, 0, 2)[0] != network_seeds(0, 1, 2)[0]
    (True, True)
    """
    children = np.random.SeedSequence([int(random_state), model_index]).spawn(n_models)
    return [tuple(int(v) for v in c.generate_state(2, np.uint64) >> np.uint64(1)) for c in children]


def check_set_fits(synthetic: SyntheticSet, data: ImageDataset) -> None:
    """Refuse scoring ``synthetic`` on ``data`` when it was distilled from other data (image shape, classes) or
    ``data`` has no test images."""
    if len(data.test) == 0:
        raise InvalidParameterError(f"The data set {data.name!r} has no test images to score on (e.g. select_classes "
                                    "of classes its test split lacks); evaluate on a data set with a test split.")
    if tuple(synthetic.images.shape[1:]) != tuple(data.image_shape):
        raise InvalidParameterError(f"The synthetic set's images are {tuple(synthetic.images.shape[1:])} but the data set "
                                    f"{data.name!r} has images {tuple(data.image_shape)}; evaluate on the data set it was distilled from.")
    declared = synthetic._declared_classes()  # None: a bare set, its labels within the data's classes will do
    columns = int(synthetic.labels.shape[1]) if synthetic.labels.dim() == 2 else None  # soft labels: one a class
    too_many = int(synthetic.hard_labels.max()) >= data.num_classes
    found = [k for k in (declared, columns, synthetic.num_classes if too_many else None)
             if k is not None and k != data.num_classes]
    if found:
        raise InvalidParameterError(f"The synthetic set has {found[0]} classes but the data set "
                                    f"{data.name!r} has {data.num_classes}; evaluate on the data set it was distilled from.")
    names = synthetic.meta.get("classes")
    if isinstance(names, list) and names != list(data.classes):  # e.g. another image folder with as many classes
        raise InvalidParameterError(f"The synthetic set's classes ({_listed(names)}) are not those of the data set "
                                    f"{data.name!r} ({_listed(data.classes)}); evaluate on the data it was distilled from.")
    for key in ("mean", "std"):  # e.g. another image folder with these classes: the set is in another scale
        recorded, ours = synthetic.meta.get(key), getattr(data, key)
        if isinstance(recorded, list) and not (len(recorded) == len(ours) and np.allclose(recorded, ours, rtol=1e-4,
                                                                                          atol=1e-6)):
            raise InvalidParameterError(f"The synthetic set was normalised with {key} {_listed(recorded)} but the data set "
                                        f"{data.name!r} has {key} {_listed(list(ours))}; evaluate on the data it was "
                                        "distilled from.")


class Evaluator:
    """Train fresh networks on a synthetic set and test them on the real test set.

    Parameters
    ----------
    models : str, dict or list of them, default="convnet"
        Architectures: registered names or model specs (``"convnet(depth=4)"``); several give the
        cross-architecture table. Results are keyed by the spec's canonical string.
    n_models : int, default=5
        Networks per architecture; the result is mean ± std over them.
    epochs : int, default=1000
        Training epochs (lr x0.1 at epochs // 2). DC's recipe uses 300 without augmentation.
    augment : str or None, default="auto"
        DSA strategy applied per image during training; ``"auto"`` = the data set's default strategy,
        ``None``/``"none"`` = no augmentation.
    lr : float, "learned" or a sequence of them, default=0.01
        SGD learning rate; several = try each (``n_models`` networks apiece) and keep the one whose networks
        do best on the validation split (needs ``val_per_class``). Only the kept lr's networks see the test set.
        ``"learned"`` is the step size the set carries (``synthetic.lrs``, one value: MTT and DATM learn it
        and their papers evaluate with it).
    batch_size, momentum, weight_decay : protocol SGD settings (256, 0.9, 5e-4).
    optimizer : {"sgd", "adamw"}, default="sgd"
        AdamW ignores ``momentum``.
    schedule : {"half", "fifths", "idc", "constant"}, default="half"
        lr x0.1 at half the epochs; x0.5 at each fifth (NCFM); x0.2 at 2/3 and 5/6 (IDC, DANCE); constant
        (:data:`SCHEDULES`).
    cutmix_prob : float, default=0.0
        Probability of CutMix per batch, after augmentation (:func:`cutmix`; IDC, DANCE and NCFM use 0.5). With
        ``augment="auto"`` it replaces the strategy's cutout, as they do.
        ``PROTOCOLS["long"]`` holds NCFM's whole evaluation: ``Evaluator(**PROTOCOLS["long"])``.
    loss : {"ce", "mse"} or None, default=None
        None trains on each set with the loss its labels need (``SyntheticSet.loss``: cross-entropy for hard
        and soft labels, MSE for learned ones such as LS / KIP labels); a value overrides that, with a
        warning when it differs (MSE on hard labels regresses onto centred one-hot targets).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of training and testing (``distillset.precision``); weights stay float32.
    val_per_class : int or None, default=None
        Hold out this many training images per class (``ImageDataset.holdout``, seed 0; the data set's own
        hold-out if it has one) as the validation split every choice is made on. None = the paper protocol:
        no choices, the test set read once per network after its last epoch.
    checkpoint : {"last", "best_val"}, default="last"
        The weights tested: after the last epoch, or those with the best validation accuracy (checked every
        ``max(1, epochs // 10)`` epochs; needs ``val_per_class``).
    random_state : int, Generator or None, default=0
        Root of the networks' random streams (each network gets its own, see ``network_seeds``).
    device : str or None (auto)
    resume_dir : path or None, default=None
        Keep each trained network here as it finishes (one safetensors file, written atomically, named by
        a hash of everything its training depends on: the set, the validation split, the recipe, its seeds,
        the device type, torch threads and the distillset and torch versions). A later ``score`` with the
        same settings loads a kept network instead of training it again, so an interrupted evaluation
        resumes network by network with the same accuracies (``extra["resumed_networks"]`` counts them).
        The hash sees neither edits to the code nor the exact CPU or GPU model: use a fresh folder after
        changing the code; networks kept on another machine may differ from this one's in the last bits.
    workers : int or None, default=None
        Networks trained at the same time on CPU, one thread each; ``None`` = one per torch thread.
        On CUDA networks train one after another.
    progress : bool, default=False
        A progress bar over the networks.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> from distillset.methods import get_method
    >>> data = load_dataset("digits")
    >>> syn = get_method("random", ipc=1, random_state=0).fit(data).synthetic_
    >>> res = Evaluator(n_models=1, epochs=2, augment=None, device="cpu").score(syn, data)
    >>> len(res["convnet"].accuracies), res["convnet"].epochs
    (1, 2)
    """

    _parameter_constraints = {
        "n_models": [Interval(int, 1)],
        "epochs": [Interval(int, 0)],
        "lr": [Interval(float, 0, closed="neither"), Options(("learned",)), Instance((list, tuple))],
        "val_per_class": [None, Interval(int, 1)],
        "checkpoint": [Options(("last", "best_val"))],
        "batch_size": [Interval(int, 1)],
        "momentum": [Interval(float, 0, 1)],
        "weight_decay": [Interval(float, 0)],
        "optimizer": [Options(("sgd", "adamw"))],
        "schedule": [Options(tuple(SCHEDULES))],
        "cutmix_prob": [Interval(float, 0, 1)],
        "loss": [None, Options(("ce", "mse"))],
        "augment": [None, Instance((str,))],
        "models": [Instance((str, dict, list, tuple))],
        "precision": [Options(PRECISIONS)],
        "workers": [None, Interval(int, 1)],
        "resume_dir": [None, Instance((str, Path))],
        "progress": [Instance((bool,))],
        "random_state": RANDOM_STATE,
    }

    def __init__(self, models: str | Sequence[str] = "convnet", *, n_models=5, epochs=1000, augment="auto",
                 lr=0.01, batch_size=256, momentum=0.9, weight_decay=5e-4, optimizer="sgd", schedule="half",
                 cutmix_prob=0.0, loss=None, precision="auto",
                 val_per_class=None, checkpoint="last", random_state=0, device=None, workers=None, resume_dir=None,
                 progress=False):
        self.models = models
        self.n_models = n_models
        self.epochs = epochs
        self.augment = augment
        self.lr = lr
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.schedule = schedule
        self.cutmix_prob = cutmix_prob
        self.loss = loss
        self.precision = precision
        self.val_per_class = val_per_class
        self.checkpoint = checkpoint
        self.random_state = random_state
        self.device = device
        self.workers = workers
        self.resume_dir = resume_dir
        self.progress = progress

    def _strategy(self, dataset_name: str) -> str | None:
        from .augment import resolve_strategy

        strategy = resolve_strategy(self.augment, dataset_name)
        if strategy and self.augment == "auto" and self.cutmix_prob > 0:  # CutMix replaces cutout (IDC, DANCE, NCFM)
            strategy = "_".join(f for f in strategy.split("_") if f != "cutout") or None
        return strategy

    def _check(self, synthetic: SyntheticSet, data: ImageDataset) -> None:
        """Everything :meth:`score` checks before it trains (the CLI calls it before saying what it will do)."""
        validate_params(type(self).__name__, vars(self), self._parameter_constraints)
        require_type(synthetic, SyntheticSet, "Evaluator.score's synthetic set",
                     "Read a saved one with SyntheticSet.load(path), or take a method's synthetic_ after fit.")
        require_dataset(data, "Evaluator.score's data")
        check_set_fits(synthetic, data)
        synthetic.check()  # a NaN pixel or a label out of range is an error, not a chance-level score
        self._with_validation(data, len(self._lrs(synthetic)) > 1 or self.checkpoint == "best_val",
                              synthetic.meta.get("val_per_class"), warn=False)  # a split too large for the classes
        for spec in self._model_specs():  # a typo in the last model is an error before the first one trains
            check_model(spec, data.image_shape, data.num_classes, type(self).__name__)
        # results are keyed by the name: a second copy's networks replaced the first's
        check_named_once([model_spec_name(spec) for spec in self._model_specs()], " in 'models' (more networks: n_models)")
        check_augment(self.augment)
        if self.resume_dir is not None:  # before the first network trains, not when it is kept
            check_writable(Path(self.resume_dir), "resume_dir", folder=True)

    def _model_specs(self) -> list:
        models = [self.models] if isinstance(self.models, (str, dict)) else list(self.models)
        if not models:
            raise InvalidParameterError("The 'models' parameter of Evaluator names no model; give at least one, "
                                        "e.g. 'convnet'.")
        return models

    def score(self, synthetic: SyntheticSet, data: ImageDataset, *, keep_networks: bool = False) -> dict[str, EvalResult]:
        """Evaluate ``synthetic`` on ``data.test``; returns ``{model_name: EvalResult}``.

        ``keep_networks`` keeps the trained networks in ``self.networks_`` ({model_name: [net, ...]}, this
        process's share) for a closer look, e.g. a membership audit."""
        self._check(synthetic, data)
        synthetic = synthetic.decoded()  # multi-formation: networks train on the f x f tiles of each image
        lrs = self._lrs(synthetic)
        data = self._with_validation(data, len(lrs) > 1 or self.checkpoint == "best_val", synthetic.meta.get("val_per_class"))
        device = resolve_device(self.device)
        keep_freed_memory(device)
        root = resolve_seed(self.random_state)
        loss = self._loss(synthetic)
        x_syn, y_syn = synthetic.images.to(device).float(), synthetic.labels.to(device)
        if loss == "mse" and y_syn.dim() == 1:  # hard labels -> centred one-hot regression targets (KIP/LS)
            y_syn = F.one_hot(y_syn, data.num_classes).float() - 1.0 / data.num_classes
        x_test = real_inputs(synthetic, data, data.test.images, device)
        y_test = data.test.labels.to(device)
        val = (real_inputs(synthetic, data, data.val.images, device), data.val.labels.to(device)) \
            if data.val is not None else None
        strategy = self._strategy(data.name)
        models = self._model_specs()
        precision = precision_name(resolve_precision(self.precision, device))

        nets = {}  # (lr, i) -> the trained network i, on the process that trained it
        self.networks_ = {}
        journal = None if self.resume_dir is None else _NetworkJournal(self.resume_dir, {
            "set": content_hash(x_syn, y_syn), "val": None if val is None else content_hash(*val), "strategy": strategy,
            "loss": loss, "precision": precision, "device": device.type, "classes": data.num_classes,
            "epochs": self.epochs, **self._recipe()})

        stop = threading.Event()  # set on a Ctrl-C or a network's error: the networks in other threads stop too

        def train(job):
            i, net, name, (init_seed, stream_seed), lr = job
            path = journal and journal.path(model=name, init=init_seed, stream=stream_seed, lr=lr)
            kept = journal and journal.load(path, net)
            if kept is not None:
                nets[lr, i] = net
                return kept["val_acc"], kept["epochs"], kept["seconds"]
            t0 = time.perf_counter()
            keep = _BestOnValidation(net, val, precision, self.epochs) if self.checkpoint == "best_val" else None
            train_network(net, x_syn, y_syn, epochs=self.epochs, generator=make_generator(stream_seed, device),
                          lr=lr, batch_size=self.batch_size, momentum=self.momentum, weight_decay=self.weight_decay,
                          optimizer=self.optimizer, schedule=self.schedule, cutmix_prob=self.cutmix_prob,
                          augment=strategy, loss=loss, precision=precision, on_epoch=keep, should_stop=stop.is_set)
            if keep is not None:
                net, val_acc, epochs = keep.restore()
            else:
                val_acc, epochs = (test_accuracy(net, *val, precision=precision) if val is not None else None), self.epochs
            nets[lr, i] = net
            if journal:
                journal.keep(path, net, val_acc=val_acc, epochs=epochs, seconds=time.perf_counter() - t0)
            return val_acc, epochs, None

        results = {}
        for m, spec in enumerate(models):
            t0 = time.perf_counter()
            seeds = network_seeds(root, m, self.n_models)
            trained = {}
            for lr in lrs:  # the same initialisations and streams for every lr: a like-for-like choice
                # built here, one after another: get_model seeds torch's global RNG, which threads must not share
                jobs = [(i, get_model(spec, data.image_shape, data.num_classes, seed=seeds[i][0], device=device),
                         model_spec_name(spec), seeds[i], lr) for i in distributed.share(self.n_models)]
                trained[lr] = self._map(train, jobs, device, stop)
            lr = max(lrs, key=lambda v: statistics.fmean(t[0] for t in trained[v])) if len(lrs) > 1 else lrs[0]
            # the test set, once per network of the chosen lr
            accs = self._map(lambda i: test_accuracy(nets[lr, i], x_test, y_test, precision=precision),
                             distributed.share(self.n_models), device)
            if keep_networks:
                self.networks_[model_spec_name(spec)] = [nets[lr, i] for i in distributed.share(self.n_models)]
            nets.clear()
            name = model_spec_name(spec)
            extra = {} if val is None else {
                "val_per_class": data.extra.get("val_per_class"), "lr": lr, "checkpoint": self.checkpoint,
                "val_accuracies": [t[0] for t in trained[lr]], "epochs_kept": [t[1] for t in trained[lr]],
                "val_mean_by_lr": {str(v): statistics.fmean(t[0] for t in trained[v]) for v in lrs}}
            if journal:  # networks loaded from resume_dir, and the training seconds they took back then
                kept = [t[2] for ts in trained.values() for t in ts if t[2] is not None]
                extra = {**extra, "resumed_networks": len(kept), "resumed_training_seconds": sum(kept)}
            training = {**self._recipe(), "lr": lr, "momentum": self.momentum if self.optimizer == "sgd" else None}
            results[name] = EvalResult(name, accs, self.epochs, strategy, time.perf_counter() - t0, dataset=data.name,
                                       source=data.source, precision=precision, loss=loss, extra=extra, training=training)
        release_freed_memory()
        return results

    def _recipe(self) -> dict:
        return {"optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "schedule": self.schedule,
                "cutmix_prob": self.cutmix_prob, "checkpoint": self.checkpoint}

    def _lrs(self, synthetic: SyntheticSet) -> list[float]:
        """The step sizes to try on ``synthetic`` ("learned": the one it carries); checked without the data."""
        lrs = list(self.lr) if isinstance(self.lr, (list, tuple)) else [self.lr]
        lrs = [_learned_lr(synthetic) if v == "learned" else v for v in lrs]
        if not lrs or not all(Interval(float, 0, closed="neither").accepts(v) for v in lrs):  # a finite float > 0
            raise InvalidParameterError(f"The 'lr' parameter of Evaluator must be a float > 0, 'learned' or a non-empty "
                                        f"list of them. Got {self.lr!r} instead.")
        return [float(v) for v in lrs]

    def _with_validation(self, data: ImageDataset, choices: bool, synthetic_held_out: int | None,
                         warn: bool = True) -> ImageDataset:
        """``data`` with its validation split (held out here if ``val_per_class`` asks and data has none); ``warn``:
        about a set that may contain the validation images (once, when scoring, not in every pre-flight check)."""
        if self.val_per_class is not None and data.val is None:
            data = data.holdout(self.val_per_class)
        elif self.val_per_class is not None and data.extra.get("val_per_class") != self.val_per_class:
            raise InvalidParameterError(f"The data set already holds out {data.extra.get('val_per_class')} validation "
                                        f"images per class but val_per_class={self.val_per_class}; use one hold-out.")
        if warn and data.val is not None and synthetic_held_out != data.extra.get("val_per_class"):
            warnings.warn(f"The set was distilled without holding out the {data.extra.get('val_per_class')} validation "
                          "images per class, so it may contain them and validation accuracy reads high; distil from "
                          "data.holdout(n) with the same n.", stacklevel=3)
        if choices and data.val is None:
            raise InvalidParameterError("Choosing an lr from several, or checkpoint='best_val', needs a validation "
                                        "split: set val_per_class (the test set is never used for a choice).")
        return data

    def _loss(self, synthetic: SyntheticSet) -> str:
        """The set's own loss unless ``loss`` overrides it (with a warning when they differ)."""
        if self.loss is None or self.loss == synthetic.loss:
            return synthetic.loss
        warnings.warn(f"Training with loss={self.loss!r} on a set whose {synthetic.label_kind} labels are meant for "
                      f"loss={synthetic.loss!r}; leave loss unset to use the set's own.", stacklevel=3)
        return self.loss

    def _map(self, fn, jobs: list, device: torch.device, stop: threading.Event | None = None) -> list:
        """``[fn(job) for job in jobs]`` for this process's share of the networks, gathered from every
        process in network order (``distillset.distributed``); on CPU several at once, one torch thread each.
        An error or Ctrl-C in this thread sets ``stop``, which ``fn`` heeds, so it ends without waiting for
        the networks other threads are training."""
        return distributed.gather(self._map_here(fn, jobs, device, stop), self.n_models)

    def _map_here(self, fn, jobs: list, device: torch.device, stop: threading.Event | None) -> list:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="evaluate", unit="net", disable=not self.progress, dynamic_ncols=True)
        threads = torch.get_num_threads()
        workers = min(len(jobs), self.workers or threads) if device.type == "cpu" else 1
        if workers <= 1:
            out = []
            for job in jobs:
                out.append(fn(job))
                bar.update(1)
            bar.close()
            return out

        def in_worker(job):
            torch.set_num_threads(max(1, threads // workers))  # this thread's share of the cores
            acc = fn(job)
            bar.update(1)
            return acc

        try:
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(in_worker, job) for job in jobs]
                try:
                    done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # an error now, not after the jobs before it
                    failed = next((f.exception() for f in futures if f in done and f.exception() is not None), None)
                    if failed is not None:
                        raise failed
                    return [f.result() for f in futures]
                except BaseException:
                    for f in futures:
                        f.cancel()  # the jobs not started yet never start
                    if stop is not None:
                        stop.set()  # before the pool's exit waits for its threads
                    raise
        finally:
            torch.set_num_threads(threads)  # the workers' setting is process-wide too: put it back
            bar.close()


def real_inputs(synthetic: SyntheticSet, data: ImageDataset, images: torch.Tensor, device=None) -> torch.Tensor:
    """Real uint8 images normalised the way the synthetic set was made (incl. ZCA when the set carries one):
    what a network or kernel fit on the set must see."""
    x = data.normalize(images.to(device) if device is not None else images)
    if "zca" in synthetic.extra:  # (D, D) whitening matrix fit on the training set; the set is already whitened
        x = apply_zca(x, synthetic.extra["zca"].to(x.device), synthetic.extra.get("zca_mean"))
    return x


def _learned_lr(synthetic: SyntheticSet) -> float:
    """The one step size a set learned (MTT, DATM), for ``lr="learned"``."""
    lrs = synthetic.lrs
    if lrs is None or lrs.numel() != 1 or not bool(torch.isfinite(lrs).all()) or float(lrs) <= 0:
        got = "none" if lrs is None else f"lrs {[round(v, 6) for v in lrs.flatten()[:3].tolist()]}" + \
            ("..." if lrs.numel() > 3 else "")
        raise InvalidParameterError(f"lr='learned' needs a set that carries one positive learned step size (MTT, "
                                    f"DATM); this {synthetic.meta.get('method', '?')} set has {got}. Pass a number.")
    return float(lrs)


class _NetworkJournal:
    """``Evaluator(resume_dir=...)``: trained networks kept as files named by what their training depends on."""

    def __init__(self, folder, fingerprint: dict):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def path(self, **network) -> Path:
        key = {**self.fingerprint, **network, "threads": torch.get_num_threads(), "distillset": __version__,
               "torch": torch.__version__}
        text = json.dumps(key, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))  # NumPy numbers
        return self.folder / f"net-{hashlib.sha256(text.encode()).hexdigest()[:32]}.safetensors"

    def load(self, path: Path, net: torch.nn.Module) -> dict | None:
        """The kept record ({val_acc, epochs, seconds}) with ``net`` set to the kept weights, or None."""
        if not path.is_file():
            return None
        mine = net.state_dict()
        try:
            with safe_open(path, framework="pt") as f:
                record = json.loads(f.metadata()["record"])
                state = {k: f.get_tensor(k) for k in f.keys()}
            if state.keys() != mine.keys() or any(state[k].shape != v.shape or state[k].dtype != v.dtype
                                                  for k, v in mine.items()):
                raise ValueError("its tensors do not fit this network")
        except Exception as e:  # a damaged file is retrained and replaced, never trusted
            warnings.warn(f"Ignoring the unreadable kept network {path} ({e}); training it again.", stacklevel=2)
            return None
        net.load_state_dict(state)  # checked above: nothing is half-loaded
        return record

    def keep(self, path: Path, net: torch.nn.Module, **record) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        atomic_write(path, save(state, metadata={"record": json.dumps(record)}))


class _BestOnValidation:
    """``on_epoch`` hook: validation accuracy every ``max(1, epochs // 10)`` epochs and the best weights so far."""

    def __init__(self, net: torch.nn.Module, val, precision: str, epochs: int):
        self.net, self.val, self.precision, self.epochs = net, val, precision, epochs
        self.every = max(1, epochs // 10)
        self.best = (-1.0, 0, None)  # (accuracy, epoch, weights)

    def __call__(self, epoch: int) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        acc = test_accuracy(self.net, *self.val, precision=self.precision)
        self.net.train()  # test_accuracy left it in eval mode; training goes on
        if acc > self.best[0]:
            self.best = (acc, epoch, {k: v.detach().clone() for k, v in self.net.state_dict().items()})

    def restore(self):
        """(net with the best weights, their validation accuracy, their epoch); an untrained net if epochs = 0."""
        acc, epoch, state = self.best
        if state is None:
            return self.net, test_accuracy(self.net, *self.val, precision=self.precision), 0
        self.net.load_state_dict(state)
        return self.net, acc, epoch


def evaluate(synthetic: SyntheticSet, data: ImageDataset, **kwargs) -> dict[str, EvalResult]:
    """Shortcut for ``Evaluator(**kwargs).score(synthetic, data)``."""
    names = list(inspect.signature(Evaluator).parameters)
    for key in kwargs:  # a misspelt keyword is named with its close matches, not a bare TypeError
        if key not in names:
            raise UnknownNameError("Evaluator parameter", key, names)
    return Evaluator(**kwargs).score(synthetic, data)


class _CallableModule(types.ModuleType):
    """This module, called, is its :func:`evaluate`. The package exports the function under the module's own
    name, and Python binds ``distillset.evaluate`` to the module whenever the module is imported first (by
    ``get_method``, ``Evaluator``...): one object that is both keeps ``distillset.evaluate(set, data)`` working
    whichever name a program touched first."""

    __call__ = staticmethod(evaluate)

    def __reduce__(self):  # pickled by name, as a function is (e.g. for ProcessPoolExecutor.submit)
        import importlib

        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _CallableModule
