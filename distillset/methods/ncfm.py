"""NCFM: Neural Characteristic Function Matching (Wang et al., CVPR 2025).

DANCE's scaffold (a pool of trained encoders, each iteration a random one blended with its initial
weights, lambda ~ U(0, 1); multi-formation ``factor`` 2; a calibration cross-entropy step through the
trained encoder) with the mean-embedding distance replaced by a distance between characteristic
functions of the L2-normalised embeddings. For frequencies t_1..t_F ~ N(0, I) and a feature set {f_j},
phi(t) = mean_j exp(i t.f_j); per class c and frequency t (REFERENCE: NCFM eq. 8),
  amplitude  a(t) = (|phi_real(t)| - |phi_syn(t)|)^2
  phase      p(t) = 2 (|phi_real(t)| |phi_syn(t)| - Re phi_real Re phi_syn - Im phi_real Im phi_syn)
             (= 2 |phi_real| |phi_syn| (1 - cos of the phase difference))
  CF distance = 300 * mean_t sqrt(amplitude_weight * a(t) + phase_weight * p(t)),
summed over classes. With both weights 0.5 (the paper's configs) it is 300 / sqrt(2) * mean_t |phi_real - phi_syn|.
The images are updated with AdamW and clamped to the pixel range [0, 1]. The weight decay shrinks them
by the reference's 5e-7 per step (its lr 1e-3 x weight decay 5e-4), towards the data set's mean here
(normalised images) where the reference's pulls [0, 1] pixels towards black.

As in the reference, each class takes its own AdamW step per view (2K steps per iteration), each with a
fresh draw of frequencies; with AdamW that is not the same as one step on the sum over classes.

Deviations: the sqrt is taken of the sum plus 1e-12, minus sqrt(1e-12) (the reference clamps the phase
term at 1e-12), and 1e-12 is added under the moduli' square roots, so the distance is exactly 0 for
identical feature sets and its gradient finite there (values differ from the reference's by ~1e-6).
The sampling network (``sampling_net``, off as in every released config) is the paper's min-max: its
means are trained to raise the distance the images lower (gradient reversal, one update), and each of its
num_freqs / 16 means spreads 16 frequencies as a unit Gaussian. The released code's sampler makes 64
frequencies (4 outputs, each repeated 16 times, whatever num_freqs says), has BatchNorm after each linear
layer (ours has none, so its means start near 0) and its update cancels to zero (the gradients of loss
and -loss are summed), so it never trains. No plateau lr schedule (the reference halves the lr after 500
iterations without improvement). lr_img is in normalised units: NCFM's 1e-3 on [0, 1] pixels (its
configs' ``lr_img: 0.01`` times ``lr_scale_adam: 0.1`` for AdamW) is about 1e-3 / std here (MNIST: 0.003,
CIFAR-10: 0.005, CIFAR-100: 0.004); its CIFAR-100 IPC 10 config alone uses SGD (lr 0.01, momentum 0.5), ours AdamW throughout.
Reference quirks not reproduced: its real loader matches every iteration against the same first 1024
images of each class (DANCE's, and ours, draw a fresh batch), and it prefetches the synthetic images in
a background thread, so its network sees images up to about ten class steps old.
The encoder pool follows DANCE's (see there); NCFM pre-trains with batch 128 where DANCE uses 64.

Cost on CPU: the fresh frequencies per class step are the bulk of an iteration there (profiled, MNIST IPC 1,
one thread: 56 %; 10 x 4096 x 2048 normal draws, ~10 ns each from torch's CPU generator, where the
projections take a fifth of that). Drawing them once per iteration would cut it tenfold, but the
reference draws per step, so we do too; on a GPU the draws are cheap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import Redraw, get_model
from ..unroll import FlatNet
from ..utils import Instance, Interval, Options
from .base import register_method
from .dance import DANCE

MIXTURE = 16  # frequencies per mixture component of the sampling network (the reference repeats each output 16x)
CF_SCALE = 300.0  # the reference multiplies the distance by 300 (matters for SGD, not for AdamW)
EPS = 1e-12
REFERENCE_DECAY_PER_STEP = 1e-3 * 5e-4  # the reference's AdamW lr x weight decay: the images' shrink per step


def cf_distance(real: torch.Tensor, syn: torch.Tensor, freqs: torch.Tensor, amplitude_weight: float = 0.5,
                phase_weight: float = 0.5) -> torch.Tensor:
    """Characteristic-function distance between feature sets, batched over classes (without the 300).

    Parameters
    ----------
    real, syn : Tensor (..., N, D) and (..., M, D)
        Feature sets (NCFM normalises them to unit length first).
    freqs : Tensor (T, D)
        Frequencies t.
    amplitude_weight, phase_weight : float
        Weights of the amplitude and phase terms.

    Returns
    -------
    Tensor (...,): mean over frequencies of sqrt(amplitude_weight * a(t) + phase_weight * p(t)).

    Examples
    --------
    >>> x, t = torch.randn(5, 3), torch.randn(7, 3)
    >>> float(cf_distance(x, x, t)), bool(cf_distance(x, x + 1, t) > 0)
    (0.0, True)
    """
    def phi(f):  # (..., T): real and imaginary parts of the empirical characteristic function
        angles = f @ freqs.T  # (..., N, T)
        return torch.cos(angles).mean(-2), torch.sin(angles).mean(-2)

    (re_r, im_r), (re_s, im_s) = phi(real), phi(syn)
    mod_r, mod_s = torch.sqrt(re_r ** 2 + im_r ** 2 + EPS), torch.sqrt(re_s ** 2 + im_s ** 2 + EPS)
    amplitude = (mod_r - mod_s) ** 2
    # phase = 2 (|r||s| - Re r s*) = |r - s|^2 - amplitude: written so, it is exactly 0 for identical sets
    # (the direct form leaves float rounding that the square root below magnifies to ~1e-4)
    phase = ((re_r - re_s) ** 2 + (im_r - im_s) ** 2 - amplitude).clamp_min(0)
    return (torch.sqrt(amplitude_weight * amplitude + phase_weight * phase + EPS) - math.sqrt(EPS)).mean(-1)


@register_method
class NCFM(DANCE):
    """Neural Characteristic Function Matching.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=20000
    model : str, default="convnet"
    batch_real : int, default=1024
    lr_img : float, default=0.005
        AdamW on the (normalised) images.
    weight_decay_img : float or "auto", default="auto"
        AdamW's decoupled weight decay on the images; "auto" = 5e-7 / lr_img, the reference's shrink per
        step (1e-4 at the default lr_img).
    num_freqs : int, default=4096
        Frequencies t drawn from N(0, I) each iteration.
    amplitude_weight, phase_weight : float, default=0.5
        Weights of the amplitude and phase terms of the distance (the paper's alpha and beta).
    sampling_net : bool, default=False
        Draw the frequencies from a mixture whose means a network learns adversarially (see above).
    lr_sampler : float, default=1e-3
        SGD (momentum 0.5) on the sampling network.
    image_init, factor, calibration_weight, num_experts, train_epochs, expert_seed : see :class:`DANCE`
        (NCFM: 20 encoders trained 60 epochs).
    augment, precision, random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DM``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> ncfm = NCFM(ipc=1, iterations=3, batch_real=8, num_freqs=64, num_experts=1, train_epochs=1, model="mlp",
    ...             random_state=0, device="cpu", progress=False)
    >>> len(ncfm.fit(load_dataset("digits")).history_["loss"])
    3
    """

    name = "ncfm"
    _parameter_constraints = {
        **{k: v for k, v in DANCE._parameter_constraints.items() if k != "momentum"},
        "weight_decay_img": [Interval(float, 0), Options(("auto",))],
        "num_freqs": [Interval(int, 1)],
        "amplitude_weight": [Interval(float, 0)],
        "phase_weight": [Interval(float, 0)],
        "sampling_net": [Instance((bool,))],
        "lr_sampler": [Interval(float, 0, closed="neither")],
    }

    def __init__(self, ipc=10, *, iterations=20000, model="convnet", batch_real=1024, lr_img=0.005,
                 weight_decay_img="auto", num_freqs=4096, amplitude_weight=0.5, phase_weight=0.5, sampling_net=False,
                 lr_sampler=1e-3, image_init="real",
                 factor=2, calibration_weight=1.0, num_experts=20, train_epochs=60, expert_seed=0, augment="auto",
                 precision="auto", random_state=None, device=None, checkpoint_dir=None, checkpoint_every=None,
                 log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.batch_real = batch_real
        self.lr_img = lr_img
        self.weight_decay_img = weight_decay_img
        self.num_freqs = num_freqs
        self.amplitude_weight = amplitude_weight
        self.phase_weight = phase_weight
        self.sampling_net = sampling_net
        self.lr_sampler = lr_sampler
        self.image_init = image_init
        self.factor = factor
        self.calibration_weight = calibration_weight
        self.num_experts = num_experts
        self.train_epochs = train_epochs
        self.expert_seed = expert_seed
        self.augment = augment
        self.precision = precision
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def _init_state(self, data, real, generator):
        tensors = super()._init_state(data, real, generator)
        if self.sampling_net:  # the sampler's weights are learnable state: checkpointed, resumed
            sampler = _sampler(self, data, real.raw.device)
            Redraw(sampler)(generator)
            tensors["sampler"] = FlatNet(sampler).flatten().requires_grad_(True)
        return tensors

    def _make_optimizer(self, tensors):
        decay = REFERENCE_DECAY_PER_STEP / self.lr_img if self.weight_decay_img == "auto" else self.weight_decay_img
        images = torch.optim.AdamW([tensors["images"]], lr=self.lr_img, weight_decay=decay)
        if not self.sampling_net:
            return images
        return {"images": images, "sampler": torch.optim.SGD([tensors["sampler"]], lr=self.lr_sampler, momentum=0.5)}

    def _frequencies(self, state, dim: int, device) -> torch.Tensor:
        """(num_freqs, dim) frequencies: N(0, I), or (``sampling_net``) a mixture of unit Gaussians whose
        num_freqs // 16 means the sampling network makes from noise. The means pass through a gradient
        reversal (value mu, gradient -grad), so the one backward that lowers the distance for the images
        raises it for the sampler: NCFM's min-max in a single update."""
        g = state.generator
        if not self.sampling_net:
            return torch.randn(self.num_freqs, dim, generator=g, device=g.device).to(device)
        if "sampler" not in state.cache:
            state.cache["sampler"] = FlatNet(_sampler(self, state.data, device))
        components = max(1, self.num_freqs // MIXTURE)
        noise = torch.randn(components, dim, generator=g, device=g.device).to(device)
        means = state.cache["sampler"](state.tensors["sampler"], noise)  # (C, dim) in [-1, 1]
        means = 2 * means.detach() - means  # gradient reversal
        spread = torch.randn(components * MIXTURE, dim, generator=g, device=g.device).to(device)
        return means.repeat_interleave(MIXTURE, 0) + spread

    def _match(self, state, f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
        """Sum over classes of the CF distance between unit-length embeddings (K, n, F) and (K, m, F)."""
        freqs = self._frequencies(state, f_real.shape[-1], f_real.device)
        d = cf_distance(F.normalize(f_real, dim=-1), F.normalize(f_syn, dim=-1), freqs, self.amplitude_weight,
                        self.phase_weight)  # (K,)
        return CF_SCALE * d.sum()


def _sampler(method: NCFM, data, device) -> torch.nn.Module:
    """NCFM's sampling network: three width-D layers, LeakyReLU(0.2) between them, Tanh out (D = embedding width)."""
    net = get_model(method.model, data.image_shape, data.num_classes, seed=0)
    dim = net.embed(torch.zeros(1, *data.image_shape)).shape[-1]
    layers = [torch.nn.Linear(dim, dim), torch.nn.LeakyReLU(0.2), torch.nn.Linear(dim, dim), torch.nn.LeakyReLU(0.2),
              torch.nn.Linear(dim, dim), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers).to(device)
