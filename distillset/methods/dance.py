"""DANCE: Dual-View Distribution Alignment for Dataset Condensation (Zhang et al., IJCAI 2024).

DM's scaffold with trained encoders instead of random ones. Preparation: a pool of ``num_experts``
networks trained on the real data (``distillset.experts``, cached and shared; ``keep="ends"``: each one's
initial and final weights). One iteration:
  1. pick an expert e and lambda ~ U(0, 1); the "middle" encoder has weights
     lambda * theta_e(init) + (1 - lambda) * theta_e(trained);
  2. draw ``batch_real`` real images per class and one transformation per class, shared with the
     class's decoded synthetic images (multi-formation ``factor``, 2 as in the paper): with the default
     ``augment="auto"`` the reference's color, crop and cutout, all three in that order (its DiffAug in
     batch mode, on every data set); an explicit DSA strategy applies one of its families per draw, as DSA;
  3. inner-class view, for each class c, one update:
     loss_c = || mean psi_mid(A(x_real_c)) - mean psi_mid(A(x_syn_c)) ||^2;
  4. inter-class view (calibration), for each class c, one update:
     loss_c = ``calibration_weight`` * CE(f_trained(A'(x_syn_c)), c), the trained encoder's cross-entropy on
     the class's images under a fresh transformation A' shared by the class.
The images are SGD-updated (``lr_img``, momentum 0.5) and clamped to the valid pixel range [0, 1]. As in
the reference, each class takes its own step per view (2K steps per iteration).

Deviations: the experts follow our shared recipe (SGD 0.01, momentum 0.9, weight decay 5e-4, batch 256,
``augment``'s DSA, constant lr) where DANCE's use batch 64, lr x0.2 at epochs 40 and 50, color/crop and
CutMix. A real start tiles distinct random images of the class, area-downsampled (the reference: the
first ipc * f**2 images of the class, nearest-neighbour). The reference samples at most 200 decoded
images per class per step (``batch_syn_max``), we use them all (equal up to ipc * f**2 = 200). DANCE's images live in [0, 1] pixels, ours
normalised: an SGD lr in pixel space is ``lr / std**2`` here (its 0.01 * ipc is 0.25 * ipc on CIFAR-10,
0.1 * ipc on MNIST); the default 1.0 is DM's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import apply, resolve_strategy, sample_params
from ..experts import check_expert_model, train_experts
from ..formation import decode
from ..precision import autocast, chunk_size, frozen_embed
from ..unroll import FlatNet
from ..utils import Interval
from .base import State, register_method
from .common import frozen_template
from .dm import DM


# DANCE's and NCFM's matching augmentation (``aug_type`` in their configs), all three families on each draw
REFERENCE_AUGMENTATION = "color_crop_cutout"


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
        SGD on the (normalised) images, momentum ``momentum`` (DANCE: 0.01 * ipc on [0, 1] pixels, see above).
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
    augment : str or None, default="auto"
        Augmentation while matching ("auto": color, crop and cutout together, as the reference; a DSA
        strategy: one of its families per draw) and while training the pool ("auto": the data set's DSA
        strategy).
    precision, random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DM``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dance = DANCE(ipc=1, iterations=3, batch_real=8, num_experts=1, train_epochs=1, model="mlp",
    ...               random_state=0, device="cpu", progress=False)
    >>> dance.fit(load_dataset("digits")).synthetic_.meta["factor"]
    2
    """

    name = "dance"
    _distributed = ("it takes one optimizer step per class, each from the images the previous step left, a "
                    "sequence that cannot be split")
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
        data, g, k = state.data, state.generator, state.data.num_classes
        clamp_pixels(state)
        # 1. an encoder pair from the pool: the middle encoder and the trained one
        middle, trained = self._encoders(state)
        # 2. a real batch per class, one transformation per class (shared with the synthetic images)
        strategy, family_per = self._matching_augmentation(data)
        x_real, y_real = state.real.sample(self.batch_real, g)  # (K*n, C, H, W), class-major
        params = sample_params(strategy, k, data.image_shape, generator=g, device=state.device,
                               family_per=family_per) if strategy else None
        if params is not None:
            x_real = apply(x_real, params, y_real)
        f_real = frozen_embed(middle, x_real, dtype=state.cache["dtype"], chunk=chunk_size(data.image_shape))
        f_real = f_real.view(k, -1, f_real.shape[-1])  # (K, n, F)
        # 3. inner-class view: per class, match through the middle encoder; one step each
        match = f_real.new_zeros(())
        for c in range(k):
            with autocast(state.device, state.cache["dtype"]):
                f_syn = middle.embed(self._class_images(state, c, params)).float()  # (m, F)
            loss = self._match(state, f_real[c:c + 1], f_syn[None])
            yield loss
            match = match + loss.detach()
        # 4. inter-class view: per class, the trained encoder's cross-entropy on its (updated) images; one step each
        calibration = f_real.new_zeros(())
        for c in range(k) if self.calibration_weight > 0 else ():
            one = sample_params(strategy, 1, data.image_shape, generator=g, device=state.device,
                                family_per=family_per) if strategy else None
            x = self._class_images(state, c, one, row=0)
            with autocast(state.device, state.cache["dtype"]):
                logits = trained(x).float()
            loss = self.calibration_weight * F.cross_entropy(logits, torch.full_like(logits[:, 0], c, dtype=torch.long))
            yield loss
            calibration = calibration + loss.detach()
        return {"loss": match, "calibration": calibration}

    def _matching_augmentation(self, data) -> tuple[str | None, str]:
        """(strategy, family_per) of the matching transformations: "auto" is the reference's DiffAug."""
        if self.augment == "auto":
            return REFERENCE_AUGMENTATION, "all"
        return resolve_strategy(self.augment, data.name), "call"

    def _class_images(self, state: State, c: int, params, row: int | None = None) -> torch.Tensor:
        """Class ``c``'s decoded synthetic images (m, C, H, W), transformed with ``params`` row ``row`` (default c)."""
        x = decode(state.tensors["images"][c * self.ipc:(c + 1) * self.ipc], self.factor)
        if params is None:
            return x
        return apply(x, params, torch.full((x.shape[0],), c if row is None else row, device=x.device))

    def _encoders(self, state: State) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(middle, trained) networks of a random pool member, lambda ~ U(0, 1); frozen, weights set in place."""
        middle, trained = frozen_template(self, state, "middle"), frozen_template(self, state, "trained")
        if "pool" not in state.cache:
            state.cache["pool"] = self.experts_.trajectories.to(state.device)  # (E, 2, P): initial, trained
            state.cache["flat"] = FlatNet(middle)
        g = state.generator
        e = torch.randint(self.num_experts, (1,), generator=g, device=g.device).to(state.device)
        pair = state.cache["pool"].index_select(0, e)[0]  # (2, P); a 1-element index: no host sync
        lam = torch.rand((), generator=g, device=g.device).to(state.device)
        f = state.cache["flat"]
        return f.load_(torch.lerp(pair[1], pair[0], lam), middle), f.load_(pair[1], trained)


def clamp_pixels(state: State) -> None:
    """Clamp the (normalised) synthetic images to the pixel range [0, 1], per channel (DANCE, NCFM)."""
    data, images = state.data, state.tensors["images"]
    if "pixel_range" not in state.cache:
        mean = torch.tensor(data.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=images.device).view(1, -1, 1, 1)
        state.cache["pixel_range"] = (-mean / std, (1 - mean) / std)
    low, high = state.cache["pixel_range"]
    with torch.no_grad():
        images.copy_(torch.maximum(torch.minimum(images, high), low))
