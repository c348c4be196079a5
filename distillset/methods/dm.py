"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Algorithm (one iteration, REFERENCE section 2 "DM"):
  1. sample a randomly initialised network psi (never trained, weights frozen);
  2. draw ``batch_real`` real images of every class and one DSA transformation per class, applied
     to the class's real AND synthetic images (siamese: shared parameters);
  3. loss = sum_c || mean psi(A(x_real_c)) - mean psi(A(x_syn_c)) ||^2  over the embedding (features
     before the classifier);
  4. one SGD step (lr ``lr_img``, momentum 0.5) on the synthetic images.

Batching: all classes go through the network in one forward for the real batch and one for the
synthetic batch, then the embeddings are averaged per class. For per-sample networks (instance norm,
no norm) that is exactly the per-class computation. For BatchNorm networks the reference code does
the same thing: it concatenates all classes into one real and one synthetic batch so BN statistics
are taken over the whole (real or synthetic) batch, and splits the embeddings by class afterwards;
we follow it. The real forward runs under ``no_grad`` in chunks of bounded memory (the reference
forwards one class at a time; one 2,560-image batch costs 1.3 GB per activation and page faults),
except with BatchNorm, where a chunk would change the statistics: there it is one forward.

Speed: the network is built once per run and its weights are re-drawn from the run's generator
each iteration (PyTorch's default initialisation, on the device: no host round trip). ``precision``
("auto" = bf16 where the device has it) runs both forwards under bf16 autocast; the synthetic
images stay float32 and the loss is computed in float32.

Deviations: the reference draws a separate DSA call per class, so each class also picks its own
augmentation family; we draw one family per iteration for all classes (``family_per="call"``) with per-class
parameters within it. If a class has fewer than ``batch_real`` training images, the real batch
takes all of them (digits has ~134 per class).
"""
from __future__ import annotations

import torch

from .. import distributed
from ..augment import apply, resolve_strategy, sample_params
from ..errors import InvalidParameterError
from ..models import get_model, has_batchnorm
from ..precision import PRECISIONS, autocast, chunk_size, frozen_embed
from ..utils import Instance, Interval, Options
from .base import DistillMethod, State, register_method
from ..formation import decode, decode_labels
from .common import class_labels, fresh_network, init_images


@register_method
class DM(DistillMethod):
    """Distribution Matching.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=20000
    model : str, default="convnet"
    batch_real : int, default=256
        Real images per class per iteration.
    lr_img : float, default=1.0
        SGD learning rate on the images (the reference uses 10 for CIFAR-10 at IPC >= 100).
    momentum : float, default=0.5
    image_init : {"real", "noise"}, default="real"
        How the synthetic images start: distinct random real images, or N(0, 1) noise (was ``init``).
    factor : int, default=1
        Multi-formation (IDC; ``distillset.formation``): each stored image holds factor x factor images that
        are matched (and evaluated) upsampled; a real start tiles factor**2 real images per stored image.
    augment : str or None, default="auto"
        DSA strategy for the siamese augmentation; "auto" = the data set's default; None = off.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of the network passes (``distillset.precision``); the images stay float32.
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dm = DM(ipc=1, iterations=5, batch_real=16, random_state=0, device="cpu", progress=False)
    >>> dm.fit(load_dataset("digits")).synthetic_.images.shape
    torch.Size([10, 1, 8, 8])
    """

    name = "dm"
    _distributed = True  # classes split across processes (distillset.distributed); BatchNorm nets refused
    _renamed_params = {"init": "image_init"}
    _parameter_constraints = {
        "batch_real": [Interval(int, 1)],
        "lr_img": [Interval(float, 0, closed="neither")],
        "momentum": [Interval(float, 0, 1)],
        "image_init": [Options(("real", "noise"))],
        "factor": [Interval(int, 1)],
        "augment": [None, Instance((str,))],
        "precision": [Options(PRECISIONS)],
    }

    def __init__(self, ipc=10, *, iterations=20000, model="convnet", batch_real=256, lr_img=1.0, momentum=0.5,
                 image_init="real", factor=1, augment="auto", precision="auto", random_state=None, device=None,
                 checkpoint_dir=None, checkpoint_every=None, log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.batch_real = batch_real
        self.lr_img = lr_img
        self.momentum = momentum
        self.image_init = image_init
        self.factor = factor
        self.augment = augment
        self.precision = precision
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def _validate(self, data):
        super()._validate(data)
        if distributed.active() and has_batchnorm(get_model(self.model, data.image_shape, data.num_classes, seed=0)):
            raise InvalidParameterError(
                f"{self.model!r} has BatchNorm, whose statistics over the real batch would depend on how the classes "
                f"are split across processes; use an instance-norm model (e.g. 'convnet') or one process.")

    def _init_state(self, data, real, generator):
        images = init_images(real, self.ipc, self.image_init, generator, self.factor)
        return {"images": images, "labels": class_labels(data.num_classes, self.ipc, images.device)}

    def _make_optimizer(self, tensors):
        return torch.optim.SGD([tensors["images"]], lr=self.lr_img, momentum=self.momentum)

    def _step(self, state: State, it: int) -> dict[str, torch.Tensor]:
        k = state.data.num_classes
        # 1. a fresh random network, frozen
        net = fresh_network(self, state).requires_grad_(False)
        # 2. a real batch per class, one shared augmentation per class (drawn for every class on every process)
        x_real, x_syn, _ = self._siamese_batch(state)
        mine = self._classes_here(state)  # across processes: this one's share of the classes
        x_real, x_syn = self._rows(x_real, mine, k), self._rows(x_syn, mine, k)
        # 3. match the per-class mean embeddings
        loss = self._match(state, *self._embed_pair(state, net, x_real, x_syn, len(mine)))
        return {"loss": loss}  # 4. the loop updates the synthetic images (gradients summed across processes)

    def _match(self, state: State, f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
        """Sum over classes of the squared distance between mean embeddings, (K, n, F) and (K, m, F)."""
        return ((f_real.mean(1) - f_syn.mean(1)) ** 2).sum()

    # the pieces the DM family (IDM, DANCE, NCFM) shares
    def _siamese_batch(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_real (K*n, C, H, W), x_syn (K*m, C, H, W), y_syn (K*m,)), class-major: ``batch_real`` real images
        per class and the decoded synthetic images (m = ipc * factor**2), one DSA transformation per class
        shared by both sides."""
        data, g = state.data, state.generator
        x_syn = decode(state.tensors["images"], self.factor)
        y_syn = decode_labels(state.tensors["labels"], self.factor)
        x_real, y_real = state.real.sample(self.batch_real, g)
        strategy = resolve_strategy(self.augment, data.name)
        if strategy:
            params = sample_params(strategy, data.num_classes, data.image_shape, generator=g, device=state.device)
            x_real, x_syn = apply(x_real, params, y_real), apply(x_syn, params, y_syn)
        return x_real, x_syn, y_syn

    def _embed_pair(self, state: State, net, x_real, x_syn, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class embeddings (K, n, F) of the real images (no graph, chunked) and (K, m, F) of the synthetic;
        the batches hold ``k`` classes (default: all)."""
        k, dtype = k if k is not None else state.data.num_classes, state.cache["dtype"]
        if "bn" not in state.cache:  # BatchNorm statistics are the whole real batch's, as in the reference
            state.cache["bn"] = has_batchnorm(net)
        chunk = len(x_real) if state.cache["bn"] else chunk_size(state.data.image_shape)
        f_real = frozen_embed(net, x_real, dtype=dtype, chunk=max(chunk, 1))
        with autocast(state.device, dtype):
            f_syn = net.embed(x_syn).float()
        return f_real.view(k, -1, f_real.shape[-1]), f_syn.view(k, -1, f_syn.shape[-1])
