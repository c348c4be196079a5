"""Expert trajectories for trajectory matching (MTT and its successors).

An expert is a network trained on the real training images with the trajectory methods' recipe (MTT's
``buffer.py``: SGD lr ``lr_teacher`` = 0.01, no momentum, no weight decay, batch 256, constant lr, DSA
augmentation per image, ZCA-whitened images where the method whitens) whose flat parameter vector is
kept after every epoch: ``train_epochs + 1`` vectors, from the initialisation to the last epoch.

Each expert is one entry of the preparation cache (:mod:`distillset.cache`), keyed by the recipe, the
data set's fingerprint, the seed and the expert's index, so experts are made once and shared: a run
asking for 10 experts reuses the 5 a previous run made and trains 5 more, and an interrupted
``train_experts`` resumes at the first missing expert. Expert ``i`` draws from its own stream
(``derive_seed(random_state, "expert/i")``), so it is the same network whichever run makes it.

Examples
--------
>>> import os, tempfile
>>> os.environ["DISTILLSET_CACHE"] = tempfile.mkdtemp()
>>> from distillset.data import load_dataset
>>> ex = train_experts(load_dataset("digits"), num_experts=2, train_epochs=1, model="mlp", progress=False)
>>> ex.trajectories.shape[:2], len(ex.test_accuracy)
(torch.Size([2, 2]), 2)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .augment import check_augment, resolve_strategy
from .cache import EXPERT, cached, fingerprint, is_cached
from .data import ImageDataset
from .evaluate import test_accuracy, train_network
from .errors import InvalidParameterError
from .models import get_model, has_batchnorm
from .precision import PRECISIONS, precision_name, resolve_precision
from .unroll import FlatNet
from .utils import (SEED_RANGE, Instance, Interval, Options, derive_seed, keep_freed_memory, make_generator,
                    release_freed_memory, resolve_device, validate_params)
from .zca import ZCA, apply_zca

EXPERT_CONSTRAINTS = {
    "model": [Instance((str, dict))],
    "num_experts": [Interval(int, 1)],
    "train_epochs": [Interval(int, 1)],
    "lr_teacher": [Interval(float, 0, closed="neither")],
    "batch_train": [Interval(int, 1)],
    "momentum": [Interval(float, 0, 1)],
    "weight_decay": [Interval(float, 0)],
    "augment": [None, Instance((str,))],
    "zca": [Instance((bool,))],
    "zca_strength": [Interval(float, 0)],
    "gsam_rho": [None, Interval(float, 0, closed="neither")],
    "gsam_alpha": [Interval(float, 0)],
    "precision": [Options(PRECISIONS)],
    "random_state": [SEED_RANGE],
    "keep": [Options(("all", "ends"))],
}


@dataclass
class Experts:
    """Trajectories (E, T, P) of E experts (T = train_epochs + 1, or 2 with ``keep="ends"``), their test
    accuracy (%) and the recipe."""

    trajectories: torch.Tensor
    test_accuracy: list[float]
    settings: dict = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return self.trajectories.shape[-1]


def check_expert_model(model, data: ImageDataset, owner: str) -> None:
    """Refuse a model with BatchNorm: its running statistics are state outside the weight trajectory."""
    if has_batchnorm(get_model(model, data.image_shape, data.num_classes, seed=0)):
        raise InvalidParameterError(f"The 'model' parameter of {owner} must name a network without BatchNorm (its "
                                    f"running statistics are not part of a weight trajectory). Got {model!r}; use "
                                    "e.g. 'convnet' (instance norm).")


def fit_whitening(data: ImageDataset, zca_strength: float, device) -> dict[str, torch.Tensor]:
    """ZCA fit on the normalised training split, centred (as the trajectory methods' kornia ``ZCAWhitening``).

    Returns the set's ``extra`` (``zca``, ``zca_mean``) for :func:`distillset.zca.apply_zca`. The experts and
    the method that matches them both call this, so both whiten with the very same matrix.
    """
    return ZCA(zca_strength, center=True).fit(data.normalize(data.train.images.to(device))).extra()


def train_experts(data: ImageDataset, *, model="convnet", num_experts=10, train_epochs=50, lr_teacher=0.01,
                  batch_train=256, momentum=0.0, weight_decay=0.0, augment="auto", zca=False, zca_strength=0.1,
                  gsam_rho=None, gsam_alpha=0.3, precision="auto", random_state=0, keep="all", device=None,
                  progress=True, before_training: Callable[[], None] | None = None) -> Experts:
    """Train (or load from the cache) ``num_experts`` experts on ``data``'s training split.

    Parameters
    ----------
    data : ImageDataset
    model : str or dict, default="convnet"
        The architecture the method will unroll (a model without BatchNorm: the trajectory is the weights).
    num_experts : int, default=10
        MTT trains 100 per data set; fewer give a less varied target at the same quality per expert.
    train_epochs : int, default=50
        Epochs per expert; the trajectory keeps ``train_epochs + 1`` parameter vectors.
    lr_teacher, batch_train, momentum, weight_decay : the SGD recipe (0.01, 256, 0, 0: MTT's defaults).
    augment : str or None, default="auto"
        DSA strategy per image while training; "auto" = the data set's default.
    zca, zca_strength : bool, float
        Train on ZCA-whitened images (MTT does on CIFAR); the matching method must whiten the same way.
    gsam_rho, gsam_alpha : float or None, float, default=None, 0.3
        FTD's flat experts: every step is an adaptive GSAM step (``distillset.evaluate.gsam_gradient``)
        with this radius and surrogate-gap weight (FTD: 0.01 and 0.3). None: plain SGD (MTT).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of the training passes; the recorded weights are float32 either way.
    random_state : int, default=0
    keep : {"all", "ends"}, default="all"
        The weights kept: after every epoch (MTT's trajectories, ``train_epochs + 1`` vectors), or only the
        initial and final ones (the DM family's pools of initial/trained pairs: 2 vectors).
    device : str or None
    progress : bool
        A progress bar over the experts.
    before_training : callable or None
        Called once, before any work or progress bar, when an expert must be trained (not when every one
        is in the cache): e.g. the CLI refuses a cache it cannot write to, since keeping the experts is the
        command's purpose.

    Returns
    -------
    Experts
    """
    settings = {"model": model, "num_experts": num_experts, "train_epochs": train_epochs, "lr_teacher": lr_teacher,
                "batch_train": batch_train, "momentum": momentum, "weight_decay": weight_decay, "augment": augment,
                "zca": zca, "zca_strength": zca_strength, "gsam_rho": gsam_rho, "gsam_alpha": gsam_alpha,
                "precision": precision, "random_state": random_state, "keep": keep}
    validate_params("train_experts", settings, EXPERT_CONSTRAINTS)
    check_expert_model(model, data, "train_experts")
    check_augment(augment)  # an unknown family is an error before the first expert, not inside it
    strategy = resolve_strategy(augment, data.name)
    from tqdm.auto import tqdm

    device = resolve_device(device)
    keep_freed_memory(device)
    # an expert does not depend on how many there are; GSAM's and keep's keys only when not the default
    # (older entries stay valid)
    recipe = {k: v for k, v in settings.items() if k != "num_experts" and not (k.startswith("gsam") and gsam_rho is None)
              and not (k == "keep" and keep == "all")}
    recipe.update(data=fingerprint(data), device=device.type, strategy=strategy,
                  precision=precision_name(resolve_precision(precision, device)))
    if before_training is not None and not all(is_cached(EXPERT, {**recipe, "index": i}) for i in range(num_experts)):
        before_training()  # before the progress bar: its refusal is then the only output
    images = None  # made on the first cache miss only
    trajectories, accuracies = [], []
    for i in tqdm(range(num_experts), desc="experts", disable=not progress, dynamic_ncols=True):
        def build(i=i):
            nonlocal images
            if images is None:
                extra = fit_whitening(data, zca_strength, device) if zca else {}
                x = data.normalize(data.train.images.to(device))
                images = (apply_zca(x, extra["zca"], extra["zca_mean"]) if zca else x), extra
            return _train_one(data, images, recipe, derive_seed(random_state, f"expert/{i}"), device)

        entry = cached(EXPERT, {**recipe, "index": i}, build, device)
        trajectories.append(entry["trajectory"])
        accuracies.append(float(entry["test_accuracy"]))
    release_freed_memory()
    return Experts(torch.stack(trajectories), accuracies, settings)


def _train_one(data: ImageDataset, images: tuple[torch.Tensor, dict], recipe: dict, seed: int, device
               ) -> dict[str, torch.Tensor]:
    """One expert: the shared training routine, the flat weights recorded after every epoch."""
    x, extra = images
    net = get_model(recipe["model"], data.image_shape, data.num_classes, seed=seed, device=device)
    flat = FlatNet(net)
    trajectory = [flat.flatten()]

    def record(epoch):  # every epoch's weights, or (keep="ends") the last one only
        if recipe.get("keep", "all") == "all" or epoch == recipe["train_epochs"]:
            trajectory.append(flat.flatten())

    train_network(net, x, data.train.labels.to(device), epochs=recipe["train_epochs"],
                  generator=make_generator(derive_seed(seed, "stream"), device), lr=recipe["lr_teacher"],
                  batch_size=recipe["batch_train"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
                  augment=recipe["strategy"], precision=recipe["precision"], schedule="constant",
                  gsam=(recipe["gsam_rho"], recipe["gsam_alpha"]) if recipe.get("gsam_rho") else None,
                  on_epoch=record)
    x_test = data.normalize(data.test.images.to(device))
    if "zca" in extra:
        x_test = apply_zca(x_test, extra["zca"], extra["zca_mean"])
    acc = test_accuracy(net, x_test, data.test.labels.to(device), precision=recipe["precision"])  # reported only
    return {"trajectory": torch.stack(trajectory), "test_accuracy": torch.tensor(acc)}
