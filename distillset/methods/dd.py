"""DD: Dataset Distillation (Wang, Zhu, Torralba, Efros, 2018).

Learn S batches of synthetic images (``ipc`` per class each) and T = S * E step sizes so that T plain
gradient steps from an initialisation theta_0 give a network that does well on real data
(REFERENCE section 2 "DD"). One iteration:
  1. draw a real batch (``batch_real`` images per class); in poisoning mode rewrite the labels of
     ``attack_class`` to ``target_class``;
  2. for each of ``n_nets`` initialisations theta_0 (the fixed one; fresh random nets; or nets drawn
     from the pretrained pool): unroll theta_{t+1} = theta_t - softplus(rho_t) * grad CE(x~_{t mod S}, theta_t)
     and take the exact meta-gradient of CE(f(theta_T, x_real), y_real) w.r.t. x~ and rho
     (``backward="autograd"`` BPTT, or ``"constant"``: stored theta_t, recomputed steps; see ``unroll``);
  3. one Adam step (lr 0.01, betas (0.5, 0.999)) on x~ and rho, with the lr halved every ``lr_decay_every``.

Deviations: an initialisation whose unrolled steps overflow (non-finite outer loss or meta-gradient)
is left out of that iteration's average instead of turning every image NaN (``history_["dropped_inits"]``
counts them; the reference has no such guard, and a 10000-iteration random-init run of ours diverged
without it). A dropped init also drops its penalty on large step sizes: a rising count means ``lr`` is
too high (benchmarks/NOTES.md, ``dd_mnist_random100_long``). The real batch is class-balanced (the reference draws a plain random batch); the run and the
lr halving count iterations (outer steps, one real batch each), not passes over the data. The defaults
are the reference's on MNIST: 400 passes of batch 1024 ~ 23600 iterations (our batch: 102 per class,
1020 on ten classes), halved every 10 % of the run (10 lr levels).

Sets are judged by DD's own protocol (``dd_protocol.evaluate_dd``, ``DD.own_protocol``, CLI
``distillset evaluate SET --protocol own``): the learned steps, with the learned step sizes, from the
init regime the set was made for. The pretrained pools and p(theta_0) live in ``dd_nets.py``, the
linear-case demonstration in ``dd_linear.py``. Observed: on 8x8 ``digits`` LeNet (4x4 and 2x2 conv maps)
learns slowly under DD (about 50-60 % after 3000 fixed-init iterations) where an MLP passes 90 % in 300.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import CheckpointMismatchError, InvalidParameterError
from ..models import get_model, has_batchnorm
from ..unroll import FlatNet, meta_grad
from ..utils import Instance, Interval, Options
from .dd_nets import InitSampler, load_pool_source, pretrain_pool
from .base import DistillMethod, State, grad_surrogate, register_method
from .common import class_labels


_OLD_BACKWARD = {"full": "autograd", "checkpoint": "constant"}


@register_method
class DD(DistillMethod):
    """Dataset Distillation with learned step sizes.

    Parameters
    ----------
    ipc : int, default=1
        Images per class per step; the set has ``steps * num_classes * ipc`` images, step-major.
    iterations : int, default=23600
        Outer steps (400 passes over MNIST's 60000 images at batch 1024, as in the reference).
    model : str, default="lenet"
        Any registered model without BatchNorm; the DD paper uses "lenet" on MNIST and "alexcifarnet"
        on CIFAR-10 (there its docs use ``distill_lr=0.001``).
    steps, epochs : int, default=10, 3
        S distinct synthetic batches, cycled E times: T = S * E unrolled steps, one step size each.
    distill_lr : float, default=0.02
        Initial step size (rho = softplus^-1(distill_lr)).
    lr : float, default=0.01
        Adam lr on images and rho (betas (0.5, 0.999)), halved every ``lr_decay_every`` iterations.
    lr_decay_every : int or None, default=None
        None = ``max(1, iterations // 10)``. To extend a finished run with ``resume``, pass the decay it
        used (a longer ``iterations`` would otherwise stretch the schedule; resuming refuses that).
    batch_real : int, default=102
        Real images per class per iteration (1020 on ten classes; the reference's batch is 1024). Until
        0.2 this was the total batch: divide an old value by the number of classes.
    net_init : {"fixed", "random", "pretrained"}, default="fixed"
        One fixed network init (drawn from the seed, kept in ``synthetic_.extra["theta0"]``); a fresh
        random init per net per iteration; or nets drawn from a pool pretrained on ``pool_source``
        (``synthetic_.extra["pool"]``).
    n_nets : int, default=1
        Initialisations per iteration (the meta-gradient is averaged); ignored for ``net_init="fixed"``.
    pool_source, pool_size, pool_epochs : str, int, int, default="digits", 4, 30
        The pretrained pool: ``pool_size`` nets trained ``pool_epochs`` on ``pool_source`` (resized).
    attack_class, target_class : int or None
        Poisoning mode: the outer loss sees the real labels ``attack_class`` rewritten to ``target_class``.
    backward : {"autograd", "constant"}, default="autograd"
        How the meta-gradient is computed (``distillset.unroll``): one graph over all steps, or the same
        gradient with one step's activations at a time. Until 0.3 these were "full" and "checkpoint".
    weight_init : {"xavier", "default"}, default="xavier"
        p(theta_0): Xavier-normal conv / linear weights (gain 1), norm weights 1 and zero biases, as we
        read the DD code's default, or the model registry's PyTorch initialisation.
    random_state, device, checkpoint_dir, checkpoint_every, log_every, progress : see ``DistillMethod``.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> dd = DD(steps=1, epochs=2, iterations=2, batch_real=64, random_state=0, device="cpu", progress=False)
    >>> s = dd.fit(load_dataset("digits")).synthetic_
    >>> s.images.shape, s.lrs.shape
    (torch.Size([10, 1, 8, 8]), torch.Size([2]))
    """

    name = "dd"
    _distributed = True  # its initialisations split across processes (distillset.distributed)
    _renamed_params = {"init": "net_init"}  # and net_init="xavier"/"default" -> weight_init, see _rename
    _parameter_constraints = {
        "steps": [Interval(int, 1)],
        "epochs": [Interval(int, 1)],
        "distill_lr": [Interval(float, 0, closed="neither")],
        "lr": [Interval(float, 0, closed="neither")],
        "lr_decay_every": [None, Interval(int, 1)],
        "batch_real": [Interval(int, 1)],
        "net_init": [Options(("fixed", "random", "pretrained"))],
        "n_nets": [Interval(int, 1)],
        "pool_source": [Instance((str,))],
        "pool_size": [Interval(int, 1)],
        "pool_epochs": [Interval(int, 1)],
        "attack_class": [None, Interval(int, 0)],
        "target_class": [None, Interval(int, 0)],
        "backward": [Options(("autograd", "constant"))],
        "weight_init": [Options(("xavier", "default"))],
    }

    def __init__(self, ipc=1, *, iterations=23600, model="lenet", steps=10, epochs=3, distill_lr=0.02, lr=0.01,
                 lr_decay_every=None, batch_real=102, net_init="fixed", n_nets=1, pool_source="digits", pool_size=4,
                 pool_epochs=30, attack_class=None, target_class=None, backward="autograd", weight_init="xavier",
                 random_state=None, device=None, checkpoint_dir=None, checkpoint_every=None, log_every=10,
                 progress=True):
        self.ipc = ipc
        self.iterations = iterations
        self.model = model
        self.steps = steps
        self.epochs = epochs
        self.distill_lr = distill_lr
        self.lr = lr
        self.lr_decay_every = lr_decay_every
        self.batch_real = batch_real
        self.net_init = net_init
        self.n_nets = n_nets
        self.pool_source = pool_source
        self.pool_size = pool_size
        self.pool_epochs = pool_epochs
        self.attack_class = attack_class
        self.target_class = target_class
        self.backward = backward
        self.weight_init = weight_init
        self.random_state = random_state
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    @classmethod
    def _rename(cls, params):
        if params.get("net_init") in ("xavier", "default"):  # the old meaning of net_init, before init took the name
            warnings.warn("DD's 'net_init' parameter now names the init regime (was 'init'); the weight distribution "
                          f"{params['net_init']!r} is 'weight_init'. The old use stops working in the next release.",
                          DeprecationWarning, stacklevel=3)
            params = {**params, "weight_init": params["net_init"]}
            del params["net_init"]
        if params.get("backward") in _OLD_BACKWARD:  # one vocabulary with MTT's backward
            warnings.warn(f"DD's backward={params['backward']!r} is now called {_OLD_BACKWARD[params['backward']]!r}; "
                          "the old name stops working in the next release.", DeprecationWarning, stacklevel=3)
            params = {**params, "backward": _OLD_BACKWARD[params["backward"]]}
        return super()._rename(params)

    def _validate(self, data):
        super()._validate(data)
        if (self.attack_class is None) != (self.target_class is None):
            raise InvalidParameterError("The 'attack_class' and 'target_class' parameters of DD must be set together.")
        for key in ("attack_class", "target_class"):
            if getattr(self, key) is not None and getattr(self, key) >= data.num_classes:
                raise InvalidParameterError(f"The {key!r} parameter of DD must be a class of {data.name!r} "
                                            f"(< {data.num_classes}). Got {getattr(self, key)} instead.")
        if self.attack_class is not None and self.attack_class == self.target_class:
            raise InvalidParameterError("The 'attack_class' and 'target_class' parameters of DD must differ "
                                        f"(both are {self.attack_class}): poisoning would change nothing.")
        if self.net_init == "pretrained":
            load_pool_source(self.pool_source, data)  # a misspelt or missing source, before any work
        if self.net_init == "pretrained" and self.pool_source == data.name:
            warnings.warn(f"DD's pool is pretrained on {data.name!r}, the data set being distilled: that is "
                          "fine-tuning, not adaptation from another data set (set pool_source).", stacklevel=3)
        if has_batchnorm(get_model(self.model, data.image_shape, data.num_classes, seed=0)):
            raise InvalidParameterError(
                f"The 'model' parameter of DD must name a network without BatchNorm. Got {self.model!r}: DD "
                "unrolls plain gradient steps on the weights, and BatchNorm's running statistics are state outside "
                "them. Use e.g. 'lenet', 'alexcifarnet', 'mlp' or 'convnet' (instance norm).")

    _resumable_changes = DistillMethod._resumable_changes + ("lr_decay_every",)  # checked as a schedule below

    def _decay_every(self, iterations=None, lr_decay_every=None) -> int:
        """Iterations between lr halvings: ``lr_decay_every``, or a tenth of the run."""
        return lr_decay_every or max(1, (iterations or self.iterations) // 10)

    def _check_resume(self, record, ckpt_dir, dataset, device):
        theirs = record["params"]
        before = self._decay_every(theirs["iterations"], theirs.get("lr_decay_every"))
        if self._decay_every(self.iterations, self.lr_decay_every) != before:
            raise CheckpointMismatchError(
                f"Cannot resume from {ckpt_dir}: its lr was halved every {before} iterations and this run would "
                f"halve it every {self._decay_every(self.iterations, self.lr_decay_every)} (lr_decay_every=None "
                f"means a tenth of 'iterations'). Pass lr_decay_every={before} to keep the schedule.")
        super()._check_resume(record, ckpt_dir, dataset, device)

    def _init_state(self, data, real, generator):
        k, device = data.num_classes, real.raw.device
        shape = (self.steps * k * self.ipc, *data.image_shape)
        images = torch.randn(shape, generator=generator, device=generator.device).to(device)
        rho = self.distill_lr + math.log(-math.expm1(-self.distill_lr))  # softplus^-1, stable for large lrs
        tensors = {
            "images": images.requires_grad_(True),  # (S*K*ipc, C, H, W), step-major, class-major within a step
            "lrs_raw": torch.full((self.steps * self.epochs,), rho, device=device, requires_grad=True),  # (T,)
            "labels": class_labels(k, self.ipc, device).repeat(self.steps),  # (S*K*ipc,)
        }
        if self.net_init == "fixed":
            p0 = InitSampler(self.model, data, device, self.weight_init)
            tensors["extra.theta0"] = p0.sample(1, generator)[0]  # (P,)
        elif self.net_init == "pretrained":
            tensors["extra.pool"] = self.prepared_["pool"]  # (pool_size, P)
        return tensors

    def _prepare_settings(self):
        if self.net_init != "pretrained":
            return None
        return {k: getattr(self, k) for k in ("model", "weight_init", "pool_source", "pool_size", "pool_epochs")}

    def _prepare(self, data, generator):
        p0 = InitSampler(self.model, data, generator.device, self.weight_init)
        return {"pool": pretrain_pool(p0, self.pool_source, self.pool_size, self.pool_epochs, generator)}

    def _make_optimizer(self, tensors):
        return torch.optim.Adam([tensors["images"], tensors["lrs_raw"]], lr=self.lr, betas=(0.5, 0.999))

    def _make_schedule(self, optimizers):
        decay = self._decay_every(self.iterations, self.lr_decay_every)
        return {"main": torch.optim.lr_scheduler.LambdaLR(optimizers["main"], lambda it: 0.5 ** (it // decay))}

    def _thetas(self, state: State) -> list[torch.Tensor]:
        """This iteration's initialisations theta_0, each (P,)."""
        t, g = state.tensors, state.generator
        if self.net_init == "fixed":
            return [t["extra.theta0"]]
        if self.net_init == "pretrained":
            idx = torch.randint(0, t["extra.pool"].shape[0], (self.n_nets,), generator=g, device=g.device)
            return list(t["extra.pool"][idx.to(state.device)].unbind(0))
        return list(state.cache["p0"].sample(self.n_nets, g).unbind(0))

    def _step(self, state: State, it: int):
        t, data = state.tensors, state.data
        if "p0" not in state.cache:  # p(theta_0), and its template network for the functional calls
            state.cache["p0"] = InitSampler(self.model, data, state.device, self.weight_init)
            state.cache["f"] = FlatNet(state.cache["p0"].template)
        f = state.cache["f"]
        # 1. a real batch, labels poisoned in attack mode
        x_real, y_real = state.real.sample(self.batch_real, state.generator)
        y_real = poison(y_real, self.attack_class, self.target_class)

        def outer(theta):
            return F.cross_entropy(f(theta, x_real), y_real)

        # 2. exact meta-gradient, averaged over the initialisations whose unrolled steps stayed finite
        #    (across processes each takes its share of the initialisations, all drawn on every process)
        loss = torch.zeros((), device=state.device)
        d_img, d_raw = torch.zeros_like(t["images"]), torch.zeros_like(t["lrs_raw"])
        kept, thetas = torch.zeros((), device=state.device), self._thetas(state)
        mine = distributed.share(len(thetas))
        for i in mine:
            l, gi, gr = meta_grad(f, thetas[i], t["images"], t["labels"], t["lrs_raw"], self.steps, outer, self.backward)
            ok = torch.isfinite(l) & torch.isfinite(gi).all() & torch.isfinite(gr).all()  # on device: no sync
            loss, kept = loss + torch.where(ok, l, 0.0), kept + ok
            d_img, d_raw = d_img + torch.where(ok, gi, 0.0), d_raw + torch.where(ok, gr, 0.0)
        kept_all = kept.clone()
        distributed.all_reduce_sum([kept_all])  # the mean is over every process's kept initialisations
        # 3. the loop takes an Adam step on images and raw step sizes (lr halved every lr_decay_every iterations);
        #    across processes it sums these shares of the mean first
        yield grad_surrogate({t["images"]: d_img / kept_all.clamp(min=1), t["lrs_raw"]: d_raw / kept_all.clamp(min=1)})
        return {"loss": loss / kept_all, "dropped_inits": len(mine) - kept}  # loss NaN when every init was dropped

    @classmethod
    def own_protocol(cls, synthetic, data, *, n_models=10, random_state=0, device=None):
        """DD's own evaluation: :func:`.dd_protocol.evaluate_dd` in the regime the set was made for."""
        from .dd_protocol import evaluate_dd

        return evaluate_dd(synthetic, data, n_models=n_models, random_state=random_state, device=device)

    def _to_synthetic(self, state):
        t = state.tensors
        return t["images"], t["labels"], F.softplus(t["lrs_raw"])  # lrs (T,), one per unrolled step


def poison(labels: torch.Tensor, attack_class: int | None, target_class: int | None) -> torch.Tensor:
    """``labels`` with ``attack_class`` rewritten to ``target_class`` (unchanged when either is None)."""
    if attack_class is None or target_class is None:
        return labels
    return torch.where(labels == attack_class, torch.full_like(labels, target_class), labels)
