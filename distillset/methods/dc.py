"""DC: Dataset Condensation with Gradient Matching (Zhao, Mopuri & Bilen, ICLR 2021), and
DSA: Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021), its augmented variant.

Algorithm (one outer iteration, REFERENCE section 2 "DC"):
  1. sample a freshly initialised network theta;
  2. repeat ``outer_loop`` times:
     a. draw ``batch_real`` real images of every class (DSA: one transformation per class, applied to
        the class's real AND synthetic images with shared parameters);
     b. per class c: g_real_c = grad_theta CE(theta; real_c), g_syn_c = grad_theta CE(theta; syn_c);
     c. loss = sum_c D(g_real_c, g_syn_c); one SGD step on the synthetic images (lr 0.1, momentum 0.5);
     d. unless this was the last step: train theta ``inner_loop`` epochs on the (detached) synthetic
        set, SGD lr 0.01, batch 256 (DSA: per-image augmentation, as the reference trains it).

(outer_loop, inner_loop) by IPC, from the reference code: 1 -> (1, 1), 10 -> (10, 50), 20 -> (20, 25),
30 -> (30, 20), 40 -> (40, 15), 50 -> (50, 10). Our rule for other IPCs: the entry of the nearest listed
IPC (ties go to the smaller one), so 2-5 -> (1, 1), 6-14 -> (10, 50), and every IPC above 50 ->
(50, 10), one of the two settings the authors used there. ``outer_loop``/``inner_loop`` override it.

Per-class gradients, two paths (``path``). "batched": for per-sample networks (instance/layer/group/
no norm) ``torch.func.grad`` is ``vmap``-ed over the class axis, one batched forward/backward for all
classes on each side; the synthetic side keeps its graph only to the images (the parameters enter
detached). "looped": the reference path, one forward/backward per class (BN statistics per class, as
in the reference code). "auto" takes "batched" on CUDA for per-sample nets (one launch per op instead
of K), "looped" for BatchNorm nets and on CPU, where we measured the batched path slower and
heavier: on MNIST-sized input, IPC 1, 32 real images per class, one thread, a matching step took
~4.4 s and +1.6 GiB peak RSS batched vs ~1.7 s and +0.3 GiB looped (vmap's conv-weight and
group-norm batching rules; compute is the same, the loop's Python overhead is negligible there).

Speed: the network is built once per run and its weights re-drawn from the run's generator at each
outer iteration (PyTorch's default initialisation, on the device, no host round trip). On the looped
path the real side, which keeps no graph, runs each class in chunks of bounded memory (the summed
chunk gradients equal the class gradient; not for BatchNorm nets, whose statistics would change) and
under ``precision`` (bf16 autocast by default where the device has it; measured on MNIST with a fresh
ConvNet-3: 0.4 % relative error of a class's gradient at 256 images, against 5 % between the
gradients of two real batches of the class). The synthetic
side, whose graph reaches the images through a double backward, stays float32.

Evaluation recipes (REFERENCE section 1): DC trains 300 epochs without augmentation (MNIST: 1000
epochs with crop/scale/rotate); DSA trains 1000 epochs with per-image DSA augmentation
(``Evaluator(epochs=1000, augment="auto")``).

Deviation: if a class has fewer than ``batch_real`` training images, the real batch takes all of them.
Small inputs: lr_img 0.1 is the reference value for 28x28/32x32 images. On 8x8 digits the image
gradient is ~50x larger (measured), so use ~0.01 there, and ConvNet-2: ConvNet-3's last block sees
2x2 maps where instance norm leaves near-random gradients and the matching loss does not descend.
"""
from __future__ import annotations

import torch

from .. import distributed
from ..augment import apply, resolve_strategy, sample_params
from ..errors import InvalidParameterError
from ..evaluate import train_network
from ..models import get_model, has_batchnorm
from ..precision import PRECISIONS, chunk_size, precision_name
from ..utils import Instance, Interval, Options
from .base import DistillMethod, State, register_method
from .common import class_labels, fresh_network, init_images
from .matching import DISTANCES, class_gradients_batched, class_gradients_looped, match_distance

LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}  # ipc -> (outer, inner)


def default_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: the reference table, else its nearest entry (ties: smaller IPC).

    >>> default_loops(10), default_loops(5), default_loops(100)
    ((10, 50), (1, 1), (50, 10))
    """
    return LOOPS[min(LOOPS, key=lambda k: (abs(k - ipc), k))]


@register_method
class DC(DistillMethod):
    """Dataset Condensation with gradient matching.

    Parameters
    ----------
    ipc : int, default=10
    iterations : int, default=1000
        Outer iterations (a fresh network each).
    model : str, default="convnet"
    outer_loop, inner_loop : int or None, default=None
        Matching steps per network and training epochs between them; ``None`` = by IPC (module doc).
    batch_real : int, default=256
        Real images per class per matching step.
    batch_syn : int, default=256
        Batch size when training the network on the synthetic set.
    lr_img : float, default=0.1
    momentum : float, default=0.5
        SGD on the images.
    lr_net : float, default=0.01
        SGD (no momentum) on the network in the inner loop.
    distance : {"layerwise", "mse", "cosine"}, default="layerwise"
    image_init : {"real", "noise"}, default="real"
        How the synthetic images start: distinct random real images, or N(0, 1) noise (was ``init``).
    augment : str or None, default=None
        DSA strategy for siamese augmentation while matching (and per-image in the inner loop);
        ``"auto"`` = the data set's default. ``None`` for DC; the ``dsa`` method defaults to ``"auto"``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of the real-image gradients and the inner training (``distillset.precision``); the
        synthetic side of the matching, whose graph reaches the images, stays float32.
    path : {"auto", "batched", "looped"}, default="auto"
        How per-class gradients are computed; ``"auto"`` = batched on CUDA for per-sample nets, looped
        for BatchNorm nets and on CPU (module doc).
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Attributes
    ----------
    path_ : str
        The gradient path used (``"batched"`` or ``"looped"``).

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dc = DC(ipc=1, iterations=2, batch_real=8, random_state=0, device="cpu", progress=False)
    >>> dc.fit(load_dataset("digits")).synthetic_.images.shape
    torch.Size([10, 1, 8, 8])
    """

    name = "dc"
    _distributed = True  # classes split across processes (distillset.distributed); the inner training repeats
    _renamed_params = {"init": "image_init"}
    _parameter_constraints = {
        "outer_loop": [None, Interval(int, 1)],
        "inner_loop": [None, Interval(int, 0)],
        "batch_real": [Interval(int, 1)],
        "batch_syn": [Interval(int, 1)],
        "lr_img": [Interval(float, 0, closed="neither")],
        "momentum": [Interval(float, 0, 1)],
        "lr_net": [Interval(float, 0, closed="neither")],
        "distance": [Options(tuple(DISTANCES))],
        "image_init": [Options(("real", "noise"))],
        "augment": [None, Instance((str,))],
        "path": [Options(("auto", "batched", "looped"))],
        "precision": [Options(PRECISIONS)],
    }

    def __init__(self, ipc=10, *, iterations=1000, model="convnet", outer_loop=None, inner_loop=None,
                 batch_real=256, batch_syn=256, lr_img=0.1, momentum=0.5, lr_net=0.01, distance="layerwise",
                 image_init="real", augment=None, path="auto", precision="auto", random_state=None, device=None,
                 checkpoint_dir=None, checkpoint_every=None, log_every=10, progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.outer_loop = outer_loop
        self.inner_loop = inner_loop
        self.batch_real = batch_real
        self.batch_syn = batch_syn
        self.lr_img = lr_img
        self.momentum = momentum
        self.lr_net = lr_net
        self.distance = distance
        self.image_init = image_init
        self.augment = augment
        self.path = path
        self.precision = precision
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def _init_state(self, data, real, generator):
        bn = has_batchnorm(get_model(self.model, data.image_shape, data.num_classes, seed=0))  # seed 0: no draw
        if bn and self.path == "batched":
            raise InvalidParameterError(
                f"The 'path' parameter of {type(self).__name__} is 'batched', but {self.model!r} has BatchNorm, "
                "whose per-class statistics the batched path cannot reproduce. Use path='looped' or 'auto'."
            )
        auto = "batched" if real.raw.device.type == "cuda" and not bn else "looped"
        self.path_ = auto if self.path == "auto" else self.path
        images = init_images(real, self.ipc, self.image_init, generator)
        return {"images": images, "labels": class_labels(data.num_classes, self.ipc, images.device)}

    def _make_optimizer(self, tensors):
        return torch.optim.SGD([tensors["images"]], lr=self.lr_img, momentum=self.momentum)

    def _step(self, state: State, it: int):
        data, g = state.data, state.generator
        syn, syn_labels = state.tensors["images"], state.tensors["labels"]
        k = data.num_classes
        default_outer, default_inner = default_loops(self.ipc)
        outer = self.outer_loop or default_outer
        inner = default_inner if self.inner_loop is None else self.inner_loop
        strategy = resolve_strategy(self.augment, data.name)
        # 1. a fresh network (built once per run, its weights re-drawn from the run's generator)
        net = self._network(state)
        net.train()
        total = syn.new_zeros(())
        mine = self._classes_here(state)  # across processes: this one's share of the classes
        for step in range(outer):
            # 2a. a real batch per class; DSA: one shared transformation per class (drawn for every class)
            x_real, y_real = state.real.sample(self.batch_real, g)  # (K*n, C, H, W), class-major
            x_syn = syn
            if strategy:
                params = sample_params(strategy, k, data.image_shape, generator=g, device=state.device)
                x_real, x_syn = apply(x_real, params, y_real), apply(syn, params, syn_labels)
            x_real, y_real, x_syn, y_syn = (self._rows(x, mine, k) for x in (x_real, y_real, x_syn, syn_labels))
            # 2b. per-class gradients, (K, *param_shape) per parameter
            g_real = self._real_gradients(state, net, x_real, y_real, len(mine))
            g_syn = self._class_gradients(net, x_syn, y_syn, len(mine), create_graph=True)
            # 2c. match; the loop updates the images (gradients summed across processes)
            loss = match_distance(g_real, g_syn, self.distance)
            yield loss
            total = total + loss.detach()
            if step == outer - 1:
                break  # no network update after the last matching step
            # 2d. train the network on the current synthetic set: plain SGD, constant lr, per-image augmentation
            train_network(net, syn, syn_labels, epochs=inner, generator=g, lr=self.lr_net, batch_size=self.batch_syn,
                          momentum=0.0, weight_decay=0.0, augment=strategy, schedule="constant",
                          precision=precision_name(state.cache["dtype"]))
            distributed.broadcast_module_(net)  # every process trained it alike; rank 0's copy rules
        return {"loss": total / (outer * k)}  # mean per class and matching step, as the reference logs

    def _network(self, state: State):
        """The network of this outer iteration (fresh weights), and the real side's chunk size."""
        net = fresh_network(self, state)
        if "chunk" not in state.cache:  # BatchNorm statistics would change with the chunk
            state.cache["chunk"] = None if has_batchnorm(net) else chunk_size(state.data.image_shape)
        return net

    def _class_gradients(self, net, x, y, k, create_graph=False, **kw):
        if self.path_ == "batched":
            return class_gradients_batched(net, x, y, k, create_graph=create_graph)
        return class_gradients_looped(net, x, y, k, create_graph=create_graph, **kw)

    def _real_gradients(self, state: State, net, x_real, y_real, k: int):
        """The real side (``k`` classes): no graph kept, so it may run in chunks and in bf16."""
        return self._class_gradients(net, x_real, y_real, k, chunk=state.cache["chunk"], dtype=state.cache["dtype"])


@register_method
class DSA(DC):
    """DC with Differentiable Siamese Augmentation: the same loop, ``augment="auto"`` by default.

    Parameters are those of :class:`DC`. Evaluate with DSA augmentation, 1000 epochs
    (``Evaluator(epochs=1000, augment="auto")``).

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dsa = DSA(ipc=1, iterations=2, batch_real=8, random_state=0, device="cpu", progress=False)
    >>> dsa.fit(load_dataset("digits")).synthetic_.meta["method"]
    'dsa'
    """

    name = "dsa"

    def __init__(self, ipc=10, *, iterations=1000, model="convnet", outer_loop=None, inner_loop=None,
                 batch_real=256, batch_syn=256, lr_img=0.1, momentum=0.5, lr_net=0.01, distance="layerwise",
                 image_init="real", augment="auto", path="auto", precision="auto", random_state=None, device=None,
                 checkpoint_dir=None, checkpoint_every=None, log_every=10, progress=True):
        super().__init__(ipc, iterations=iterations, model=model, outer_loop=outer_loop, inner_loop=inner_loop,
                         batch_real=batch_real, batch_syn=batch_syn, lr_img=lr_img, momentum=momentum,
                         lr_net=lr_net, distance=distance, image_init=image_init, augment=augment, path=path,
                         precision=precision, random_state=random_state, device=device, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, log_every=log_every, progress=progress)
