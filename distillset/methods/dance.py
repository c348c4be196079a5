"""DANCE: Dual-View Distribution Alignment for Dataset Condensation (Zhang et al., IJCAI 2024).

DM's scaffold with trained encoders instead of random ones. Preparation: a pool of ``num_experts``
networks trained on the real data (``distillset.experts``, cached and shared; ``keep="ends"``: each one's
initial and final weights). One iteration:
  1. pick an expert e and lambda ~ U(0, 1); the "middle" encoder has weights
     lambda * theta_e(init) + (1 - lambda) * theta_e(trained);
  2. draw ``batch_real`` real images per class and decode the synthetic set (multi-formation ``factor``,
     2 as in the paper), one DSA transformation per class shared by both sides;
  3. inner-class view: loss = sum_c || mean psi_mid(A(x_real_c)) - mean psi_mid(A(x_syn_c)) ||^2 ; one update;
  4. inter-class view (calibration): loss = ``calibration_weight`` * sum_c CE(f_trained(A'(x_syn_c)), c), the
     trained encoder's cross-entropy on freshly augmented synthetic images (a mean per class); one update.
The images are SGD-updated (``lr_img``, momentum 0.5) and clamped to the valid pixel range [0, 1].

Deviations: the reference takes one image step per class for each view (2K steps per iteration); we take
one step per view on the sum over classes, which gives each image the same gradient (its loss involves
only its own class) and differs only in how often momentum ticks. The experts follow our shared recipe
(SGD 0.01, momentum 0.9, weight decay 5e-4, batch 256, DSA, constant lr) where DANCE's use batch 64,
lr x0.2 at epochs 40 and 50, and CutMix. DANCE's images live in [0, 1] pixels, ours normalised: an lr in
pixel space is ``lr / std**2`` here (CIFAR-10: about x16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import augment, resolve_strategy
from ..experts import check_expert_model, train_experts
from ..formation import decode, decode_labels
from ..models import get_model
from ..precision import autocast, resolve_precision
from ..utils import Interval
from .base import State, register_method
from .common import load_flat_
from .dm import DM


@register_method
class DANCE(DM):
    """Dual-view distribution alignment: DM through interpolated trained encoders, plus their calibration.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=10000
    model : str, default="convnet"
    batch_real : int, default=128
    lr_img : float, default=1.0
        SGD on the (normalised) images, momentum ``momentum``.
    momentum : float, default=0.5
    image_init : {"real", "noise"}, default="real"
    factor : int, default=2
        Multi-formation factor (``distillset.formation``; 1 turns it off).
    calibration_weight : float, default=1.0
        Weight of the inter-class cross-entropy step; 0 skips it (inner-class matching only).
    num_experts : int, default=5
        Encoders in the pool (DANCE loads 5 of its 20).
    train_epochs : int, default=60
        Epochs each encoder is trained on the real data.
    expert_seed : int, default=0
        Seed of the pool (shared by every distillation seed, as the paper's pre-trained encoders are).
    augment, precision, random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DM``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dance = DANCE(ipc=1, iterations=3, batch_real=8, num_experts=1, train_epochs=1, model="mlp",
    ...               random_state=0, device="cpu", progress=False)
    >>> dance.fit(load_dataset("digits")).synthetic_.meta["factor"]
    2
    """

    name = "dance"
    _parameter_constraints = {
        **DM._parameter_constraints,
        "calibration_weight": [Interval(float, 0)],
        "num_experts": [Interval(int, 1)],
        "train_epochs": [Interval(int, 1)],
        "expert_seed": [Interval(int, 0)],
    }

    def __init__(self, ipc=10, *, iterations=10000, model="convnet", batch_real=128, lr_img=1.0, momentum=0.5,
                 image_init="real", factor=2, calibration_weight=1.0, num_experts=5, train_epochs=60, expert_seed=0,
                 augment="auto", precision="auto", random_state=None, device=None, checkpoint_dir=None,
                 checkpoint_every=None, log_every=10, progress=True):
        super().__init__(ipc, iterations=iterations, model=model, batch_real=batch_real, lr_img=lr_img,
                         momentum=momentum, image_init=image_init, factor=factor, augment=augment,
                         precision=precision, random_state=random_state, device=device, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, log_every=log_every, progress=progress)
        self.calibration_weight = calibration_weight
        self.num_experts = num_experts
        self.train_epochs = train_epochs
        self.expert_seed = expert_seed

    def _validate(self, data):
        super()._validate(data)
        check_expert_model(self.model, data, type(self).__name__)

    def _prepared(self, data, device):
        """The pool: each encoder's initial and trained weights (E, 2, P), from the cache when made before."""
        self.experts_ = train_experts(data, model=self.model, num_experts=self.num_experts,
                                      train_epochs=self.train_epochs, momentum=0.9, weight_decay=5e-4,
                                      augment=self.augment, precision=self.precision, random_state=self.expert_seed,
                                      keep="ends", device=device, progress=self.progress)
        return {}

    def _step(self, state: State, it: int):
        clamp_pixels(state)
        # 1. an encoder pair from the pool: the middle encoder and the trained one
        middle, trained = self._encoders(state)
        # 2. a real batch per class and the decoded synthetic images, one shared augmentation per class
        x_real, x_syn, _ = self._siamese_batch(state)
        # 3. inner-class view: match the per-class means through the middle encoder
        match = self._match(state, *self._embed_pair(state, middle, x_real, x_syn))
        yield match
        # 4. inter-class view: the trained encoder's cross-entropy on the (updated) synthetic images
        calibration = match.new_zeros(())
        if self.calibration_weight > 0:
            calibration = self.calibration_weight * calibration_loss(self, state, trained)
            yield calibration
        return {"loss": match.detach(), "calibration": calibration.detach()}

    def _match(self, state: State, f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
        """DM's distance: sum over classes of the squared distance between mean embeddings (K, n, F), (K, m, F)."""
        return ((f_real.mean(1) - f_syn.mean(1)) ** 2).sum()

    def _encoders(self, state: State) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(middle, trained) networks of a random pool member, lambda ~ U(0, 1); frozen, weights set in place."""
        if "encoders" not in state.cache:  # two templates and the pool on the device, once per run
            data = state.data
            state.cache["encoders"] = [get_model(self.model, data.image_shape, data.num_classes, seed=0,
                                                 device=state.device).requires_grad_(False) for _ in range(2)]
            state.cache["pool"] = self.experts_.trajectories.to(state.device)  # (E, 2, P): initial, trained
            state.cache["dtype"] = resolve_precision(self.precision, state.device)
        middle, trained = state.cache["encoders"]
        g = state.generator
        pair = state.cache["pool"][torch.randint(self.num_experts, (), generator=g, device=g.device)]  # (2, P), no sync
        lam = torch.rand((), generator=g, device=g.device)
        return load_flat_(middle, torch.lerp(pair[1], pair[0], lam)), load_flat_(trained, pair[1])


def clamp_pixels(state: State) -> None:
    """Clamp the (normalised) synthetic images to the pixel range [0, 1], per channel (DANCE, NCFM)."""
    data, images = state.data, state.tensors["images"]
    if "pixel_range" not in state.cache:
        mean = torch.tensor(data.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=images.device).view(1, -1, 1, 1)
        state.cache["pixel_range"] = (-mean / std, (1 - mean) / std)
    with torch.no_grad():
        images.copy_(torch.maximum(torch.minimum(images, state.cache["pixel_range"][1]), state.cache["pixel_range"][0]))


def calibration_loss(method, state: State, net: torch.nn.Module) -> torch.Tensor:
    """sum_c mean_{i in c} CE(net(A(x_syn_i)), c): ``net``'s cross-entropy on the decoded synthetic images,
    each augmented with its own DSA draw (IDM, DANCE, NCFM)."""
    data, g = state.data, state.generator
    x = decode(state.tensors["images"], method.factor)
    y = decode_labels(state.tensors["labels"], method.factor)
    strategy = resolve_strategy(method.augment, data.name)
    if strategy:
        x = augment(x, strategy, generator=g)
    with autocast(state.device, state.cache["dtype"]):
        logits = net(x).float()
    return F.cross_entropy(logits, y, reduction="none").view(data.num_classes, -1).mean(1).sum()
