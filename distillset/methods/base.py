"""The method framework: one registry, one loop (progress, logging, update, checkpoint/resume) for every method.

A method subclasses :class:`DistillMethod` and implements

- ``_prepare(data, generator) -> dict[str, Tensor]`` and ``_prepare_settings()`` (optional): costly,
  deterministic set-up (DD's pretrained pool), cached by :mod:`distillset.cache` under a key of its
  settings, the data set, the seed, the device type and the library version; the result is ``prepared_``,
- ``_init_state(data, real, generator) -> dict[str, Tensor]``: the learnable tensors (leaves),
- ``_make_optimizer(tensors) -> Optimizer | dict[str, Optimizer]`` (optional; default none),
- ``_make_schedule(optimizers) -> dict[str, LRScheduler]`` (optional; default none),
- ``_step(state, it)``: one iteration of the paper's algorithm box, which returns its losses and never
  touches an optimizer (see :meth:`DistillMethod._step`),
- ``_to_synthetic(state) -> (images, labels, lrs)`` (optional),

and lists its hyper-parameters in ``__init__`` (which only stores them) and ``_parameter_constraints``.
The base class owns seeding, validation, the loop, the update (backward, the gradient hook, the
optimizers, the schedules), tqdm, logging and checkpoints. Every random draw goes through
``state.generator``, so a checkpoint (tensors + optimizers + schedules + generator state + iteration)
resumes bit-identically. ``own_protocol`` (optional) is the method's own evaluation.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load, save

from .. import __version__
from .._io import atomic_write, check_writable
from .._registry import Registry, parse_spec
from ..augment import check_augment
from ..data import ImageDataset, require_dataset
from ..data.real import RealData
from .. import distributed
from ..errors import (ArgumentTypeError, CheckpointMismatchError, CorruptFileError, DivergenceError,
                      InvalidParameterError, OutputError, UnknownNameError, require_type)
from ..formation import check_factor
from ..models import MODELS, canonical_model_name, check_model
from ..cache import cached, fingerprint
from ..synthetic import LABEL_KINDS, SyntheticSet, infer_label_kind
from ..utils import (RANDOM_STATE, Instance, Interval, content_hash, derive_seed, keep_freed_memory, make_generator,
                     release_freed_memory, resolve_device, resolve_seed, validate_params)

METHODS: Registry[type] = Registry("method")
CHECKPOINT = "checkpoint.safetensors"  # one file: tensors + the JSON record in its header, replaced atomically


def register_method(cls: type) -> type:
    return METHODS.register(cls, name=cls.name)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def get_method(name: str, **params) -> "DistillMethod":
    """Build a registered method: ``get_method("dm", ipc=10, iterations=1000)`` (a misspelt parameter: its
    close matches)."""
    cls = METHODS.get(name)
    return cls(**cls._checked_params(params))


@dataclass
class State:
    """What a run carries from one iteration to the next."""

    tensors: dict[str, torch.Tensor]
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    real: RealData
    data: ImageDataset
    device: torch.device
    iteration: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # per-run constants (not checkpointed; rebuilt on resume)
    schedules: dict[str, torch.optim.lr_scheduler.LRScheduler] = field(default_factory=dict)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The first optimizer (the checkpoint stores it as ``optim.*``; any others go through the extras hook)."""
        return next(iter(self.optimizers.values()), None)


def _after_holdout(data: ImageDataset) -> str:
    """Where ``data`` holds out a validation split, a note saying so (a class left smaller than it seems)."""
    n = data.extra.get("val_per_class") if data.val is not None else None
    return f" after {n} per class were held out for validation" if n else ""


def _python_number(value: Any) -> Any:
    """A NumPy number as the Python one (a record compares and restores it), anything else as it is."""
    return value.item() if isinstance(value, numbers.Number) and hasattr(value, "item") else value


def _json_default(value: Any) -> Any:
    """``json.dumps``' fallback for a checkpoint's record: e.g. a NumPy lr in the optimizer's state."""
    plain = _python_number(value)
    return plain if plain is not value else str(value)


def _as_optimizers(opt) -> dict[str, torch.optim.Optimizer]:
    """``_make_optimizer``'s answer as a name -> optimizer dict (a single optimizer is ``"main"``)."""
    if opt is None:
        return {}
    return dict(opt) if isinstance(opt, dict) else {"main": opt}


def grad_surrogate(grads: dict[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A scalar whose gradient w.r.t. each tensor is the given one, exactly: ``sum_x (x * g).sum()``.

    For a method that computes its gradients itself (DD's checkpointed meta-gradient) and still lets the
    loop own the update. Its value means nothing; log the real loss.

    Examples
    --------
    >>> x = torch.zeros(3, requires_grad=True)
    >>> grad_surrogate({x: torch.tensor([1.0, 2.0, 3.0])}).backward()
    >>> x.grad
    tensor([1., 2., 3.])
    """
    return sum((x * g.detach()).sum() for x, g in grads.items())


def optimizer_to_flat(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict split into tensors (``{prefix}.{param id}.{key}``) and a JSON-able rest."""
    sd = optimizer.state_dict()
    flat = {f"{prefix}.{pid}.{k}": v for pid, ps in sd["state"].items() for k, v in ps.items() if torch.is_tensor(v)}
    meta = {"param_groups": sd["param_groups"],
            "scalars": {str(pid): {k: v for k, v in ps.items() if not torch.is_tensor(v)}
                        for pid, ps in sd["state"].items()}}
    return flat, meta


def optimizer_from_flat(optimizer: torch.optim.Optimizer, prefix: str, flat: dict[str, torch.Tensor], meta: dict):
    """Inverse of :func:`optimizer_to_flat`: load the state back into ``optimizer``."""
    sd = {"param_groups": meta["param_groups"], "state": {int(pid): dict(s) for pid, s in meta["scalars"].items()}}
    for k, v in flat.items():
        if k.startswith(prefix + "."):
            pid, name = k[len(prefix) + 1:].split(".", 1)
            sd["state"].setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict(sd)


class DistillMethod:
    """Base class of distillation methods and coreset baselines (sklearn-style estimator).

    Common parameters (every subclass accepts them)
    -----------------------------------------------
    ipc : int
        Images per class of the synthetic set.
    iterations : int
        Outer iterations of the method's loop (0 for selection baselines).
    model : str or dict
        Registered architecture used while distilling, or a model spec (``"convnet(width=64, depth=4)"``,
        ``{"name": "convnet", "width": 64}``; see :func:`distillset.models.get_model`).
    random_state : int, Generator or None
        Seed; the resolved seed is recorded as ``seed_`` and in the set's metadata.
    device : str or None
        ``None``/``"auto"`` = CUDA when present.
    checkpoint_dir : path or None
        Where to write ``checkpoint.safetensors`` (one file, replaced atomically: a kill at any instant
        leaves the previous complete checkpoint); ``fit(..., resume=True)`` reads it. It carries a SHA-256
        of its record and tensors: a resume refuses one edited or damaged since (one without it, written
        before checkpoints carried one, is checked by its record alone).
    checkpoint_every : int or None
        Iterations between checkpoints (a final one is always written when ``checkpoint_dir`` is set).
    log_every : int
        Iterations between loss logs (one host sync each).
    progress : bool
        Show a tqdm bar.

    Attributes (after ``fit``)
    --------------------------
    synthetic_ : SyntheticSet
    history_ : dict of lists, the logged losses.
    snapshots_ : {iteration: SyntheticSet}, the sets kept at ``fit(snapshots=...)`` (this call's only: a
        resumed fit keeps those it passes after the resume).
    fit_seconds_ : float, seconds in ``fit`` (preparation included), counting those of the run a resume
        continues (up to its checkpoint).
    """

    name: ClassVar[str] = "base"
    _parameter_constraints: ClassVar[dict] = {}
    _common_constraints: ClassVar[dict] = {
        "ipc": [Interval(int, 1)],
        "iterations": [Interval(int, 0)],  # 0: the initialisation (tests' starting point); fit warns, the CLI refuses
        "model": [Instance((str, dict))],
        "random_state": RANDOM_STATE,
        "device": [None, Instance((str, torch.device))],
        "checkpoint_dir": [None, Instance((str, os.PathLike))],
        "checkpoint_every": [None, Interval(int, 1)],
        "log_every": [Interval(int, 1)],
        "progress": [Instance((bool,))],
    }
    # documented names renamed for one vocabulary, accepted with a DeprecationWarning for one release: old -> new
    _renamed_params: ClassVar[dict[str, str]] = {}
    # True: runs across processes (torch.distributed), its iteration split by class or, if it has none,
    # replicated; else the reason it cannot (``distributed.check_supported`` refuses with it). A splitting
    # method's logged values must be sums over classes: the loop sums them across processes.
    _distributed: ClassVar[bool | str] = "its iteration is not split across processes yet"
    # parameters that may change between a checkpoint and a resume; any other change is refused
    _resumable_changes: ClassVar[tuple[str, ...]] = ("iterations", "progress", "log_every", "checkpoint_every",
                                                     "checkpoint_dir", "device")

    # ------------------------------------------------------------------ sklearn-style params
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):  # every constructor accepts the renamed names (the signature shows the new)
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self, *args, **params):
                init(self, *args, **type(self)._rename(params))

            cls.__init__ = __init__

    @classmethod
    def _rename(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with each renamed parameter under its new name (and a DeprecationWarning)."""
        out = dict(params)
        for old, new in cls._renamed_params.items():
            if old not in out:
                continue
            if new in out:
                raise InvalidParameterError(
                    f"{cls.__name__} got both {old!r} and its new name {new!r}; pass {new!r} only.")
            warnings.warn(f"The {old!r} parameter of {cls.__name__} is now called {new!r}; the old name stops working "
                          "in the next release.", DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
        return out

    @classmethod
    def _checked_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` under their current names, each checked to be a parameter of the method (values are
        checked by ``fit``): what the CLI and the ablation runner do with user-named parameters."""
        out, names = cls._rename(params), cls._get_param_names()
        for key in out:
            if key not in names:
                raise UnknownNameError(f"{cls.__name__} parameter", key, names)
        return out

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters; ``deep`` is scikit-learn's signature (``sklearn.base.clone`` passes it):
        a method holds no nested estimators, so it changes nothing."""
        return {k: getattr(self, k) for k in self._get_param_names()}

    def set_params(self, **params) -> "DistillMethod":
        valid = self._get_param_names()
        for k, v in self._rename(params).items():
            if k not in valid:
                raise InvalidParameterError(f"Invalid parameter {k!r} for {type(self).__name__}. Valid: {', '.join(valid)}.")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _json_params(self) -> dict[str, Any]:
        params = {k: _python_number(v) for k, v in self.get_params().items()}
        return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else repr(v))
                for k, v in params.items()}

    @classmethod
    def own_protocol(cls, synthetic, data: ImageDataset, *, n_models: int = 10, random_state: int = 0,
                     device=None) -> dict | None:
        """The method's own evaluation of a set it made, where it has one; None otherwise.

        DD overrides it: its sets are images *and* a learned step schedule for one kind of init, which
        the standard protocol (fresh nets, plain SGD) ignores. Returns a dict with at least ``mean``,
        ``std``, ``accuracies`` and ``protocol`` (one line saying what was measured).
        """
        return None

    # ------------------------------------------------------------------ to implement
    def _init_state(self, data: ImageDataset, real: RealData, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _prepare_settings(self) -> dict | None:
        """The parameters ``_prepare``'s result depends on (the cache key); None when there is nothing to prepare."""
        return None

    def _prepare(self, data: ImageDataset, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Costly, deterministic set-up; ``generator`` is its own stream (derived from the seed), not the run's."""
        return {}

    def _prepared(self, data: ImageDataset, device: torch.device) -> dict[str, torch.Tensor]:
        """``_prepare``'s result, from the cache when a run with the same settings made it before."""
        settings = self._prepare_settings()
        if settings is None:
            return {}

        def build():  # its own stream: the run's draws are the same whether the cache answers or not
            return self._prepare(data, make_generator(derive_seed(self.seed_, "prepare"), device))

        key = {**settings, "method": self.name, "data": fingerprint(data), "seed": self.seed_, "device": device.type}
        return cached(self.name, key, build, device)

    def _make_optimizer(self, tensors: dict[str, torch.Tensor]):
        """The optimizer of the learnable tensors, or a dict ``{name: optimizer}`` (e.g. images and a step size)."""
        return None

    def _make_schedule(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """Learning-rate schedules ``{optimizer name: LRScheduler}``, stepped once per update."""
        return {}

    def _step(self, state: State, it: int):
        """One iteration of the algorithm box. It never calls an optimizer: it hands its losses to the loop.

        Either return the losses to log, ``{"loss": loss, ...}``: the loop minimises ``"loss"`` (one update);
        or be a generator that yields what to minimise once per update (DC's several matching steps per
        network; DD's surrogate carrying its hand-computed meta-gradient, see :func:`grad_surrogate`) and
        returns the losses to log. A yielded value is a scalar for every optimizer, or a dict
        ``{optimizer name: scalar}``.
        """
        raise NotImplementedError

    def _to_synthetic(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        t = state.tensors
        return t["images"], t["labels"], t.get("lrs")

    # ------------------------------------------------------------------ validation
    def planned_output(self) -> dict:
        """What ``fit`` makes with these parameters, known before any work: the labels' kind (``"hard"``,
        ``"learned"``, ``"soft"``) and whether the images are ZCA-whitened. A consumer that needs raw images
        with hard labels (a continual-learning memory) checks this first."""
        return {"label_kind": "hard", "zca": bool(getattr(self, "zca", False))}

    def _validate_params(self, flags: dict[str, str] | None = None) -> None:
        """Check every parameter, the model name and the device; needs no data (the CLI calls it first, with
        ``flags`` naming the options it set from its flags, e.g. ``{"random_state": "--seed"}``)."""
        validate_params(type(self).__name__, self.get_params(),
                        {**self._common_constraints, **self._parameter_constraints}, flags)
        distributed.check_supported(self)  # several processes: only where the method's work splits
        MODELS.get(canonical_model_name(parse_spec(self.model, "model")[0]))  # unknown: lists close matches
        check_augment(self.get_params().get("augment"))  # an unknown family: before any work, not in the first step
        resolve_device(getattr(self, "device", None))  # e.g. 'cuda' on a machine without CUDA

    def _validate(self, data: ImageDataset) -> None:
        """:meth:`_validate_params`, then the data set's fit: classes, ``ipc``, the model on its images."""
        self._validate_params()
        require_dataset(data, f"{type(self).__name__}.fit's data")
        if self.iterations == 0 and type(self)().iterations != 0:
            warnings.warn(f"{type(self).__name__}(iterations=0) returns its initialisation, not a distilled set.",
                          stacklevel=3)
        distributed.check_supported(self, data.num_classes)
        counts = data.class_counts()
        if int(counts.min()) == 0:
            empty = [data.classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
            raise InvalidParameterError(f"Data set {data.name!r} has no training images of class(es) {empty}; "
                                        f"every class needs at least ipc images.")
        smallest = int(counts.min())
        if self.ipc > smallest:
            raise InvalidParameterError(
                f"The 'ipc' parameter of {type(self).__name__} is {self.ipc}, larger than the smallest class of "
                f"{data.name!r} ({smallest} training images{_after_holdout(data)}). Use ipc <= {smallest}"
                f"{', or hold out fewer' if data.val is not None else ''}."
            )
        self._validate_factor(data, smallest)
        check_model(self.model, data.image_shape, data.num_classes, type(self).__name__)

    def _validate_factor(self, data: ImageDataset, smallest: int) -> None:
        """Multi-formation (``factor``, where a method has it): tiles must divide the images, and a real
        initialisation needs ``ipc * factor**2`` distinct images per class."""
        params = self.get_params()
        factor = params.get("factor", 1)
        check_factor(factor, data.image_shape)
        if params.get("image_init") == "real" and self.ipc * factor ** 2 > smallest:
            raise InvalidParameterError(
                f"ipc={self.ipc} at factor={factor} starts from {self.ipc * factor ** 2} real images per class, more "
                f"than the smallest class of {data.name!r} ({smallest}). Lower ipc or factor, or use image_init='noise'.")

    # ------------------------------------------------------------------ the loop
    def fit(self, data: ImageDataset, *, resume: bool = False, callback=None, snapshots=(), logger=None) -> "DistillMethod":
        """Distill ``data`` (its training split) into ``self.synthetic_``.

        Parameters
        ----------
        data : ImageDataset
        resume : bool, default=False
            Continue from ``checkpoint_dir`` if a checkpoint is there (bit-identical to an uninterrupted run
            on the same device).
        callback : callable, optional
            ``callback(method, it, losses)`` after each iteration (tests use it to simulate interruptions).
        snapshots : iterable of int, optional
            Iteration counts at which to keep a copy of the set in ``self.snapshots_`` ({count: SyntheticSet}):
            the accuracy-vs-budget curve of one run. With a constant learning rate the snapshot at ``n`` is the
            set a run of ``n`` iterations makes (same seed), bit for bit.
        logger : TensorBoardLogger, optional
            Gets the losses at each log flush and the set every ``logger.image_every`` iterations
            (``distillset.tensorboard``); the caller closes it.

        Returns
        -------
        self
        """
        started = time.perf_counter()
        self._validate(data)
        snapshots = self._check_snapshots(snapshots)
        if logger is not None and not all(callable(getattr(logger, m, None)) for m in ("open", "scalars", "synthetic")):
            raise ArgumentTypeError(f"fit's logger must be a distillset.tensorboard.TensorBoardLogger (or one like it), "
                                    f"not {type(logger).__name__}.")
        device = resolve_device(getattr(self, "device", None))
        keep_freed_memory(device)
        self.seed_ = resolve_seed(self.random_state)
        generator = make_generator(self.seed_, device)
        ckpt_dir = Path(self.checkpoint_dir) if getattr(self, "checkpoint_dir", None) else None
        self._check_checkpoint_dir(ckpt_dir, resume)
        self._data_fingerprint = fingerprint(data) if ckpt_dir is not None else None  # a resume must find the same
        record = self._resume_record(data, self._data_fingerprint) if resume else None  # refused before any work
        distributed.agree(record and record["iteration"], "the checkpoint to resume")
        # the clock of the whole run (preparation included): a resumed one goes on from its checkpoint's count
        self._fit_started = started - (record.get("fit_seconds", 0.0) if record else 0.0)
        real = RealData(data, device)
        self.prepared_ = self._prepared(data, device)  # before the run's stream is touched, as a resume needs it
        if resume and record is None:
            warnings.warn(f"No checkpoint in {ckpt_dir}; starting from scratch.", stacklevel=2)
            resume = False
        tensors = self._init_state(data, real, generator)
        optimizers = _as_optimizers(self._make_optimizer(tensors))
        state = State(tensors, optimizers, generator, real, data, device, schedules=self._make_schedule(optimizers))
        if record is not None:
            self._load_checkpoint(state, ckpt_dir / CHECKPOINT, record)
        if logger is not None:
            logger.open(self, state.iteration, state.history)
        self.snapshots_ = {}
        self._run_loop(state, ckpt_dir, callback, snapshots, logger)
        if ckpt_dir is not None:
            self._save_checkpoint(state, ckpt_dir)
        self.history_ = state.history
        self.synthetic_ = self._build_synthetic(state)
        self.fit_seconds_ = time.perf_counter() - self._fit_started
        release_freed_memory()
        return self

    def _check_snapshots(self, snapshots) -> set[int]:
        require_type(snapshots, (list, tuple, set, frozenset, range), "fit's snapshots",
                     "Give iteration counts, e.g. snapshots=[100, 300].")
        bad = [n for n in snapshots if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.iterations]
        if bad:
            raise InvalidParameterError(f"snapshots must be iteration counts in [1, {self.iterations}] (the run's "
                                        f"iterations). Got {bad!r}.")
        return set(snapshots)

    def _run_loop(self, state: State, ckpt_dir: Path | None, callback, snapshots: set[int], logger=None) -> None:
        # note for methods: anything drawn from state.generator must be drawn inside _step or _init_state,
        # never lazily into state.cache, or resume stops being bit-identical
        from tqdm.auto import tqdm

        pending: list[dict[str, torch.Tensor]] = []
        bar = tqdm(total=self.iterations, initial=state.iteration, desc=self.name, disable=not self.progress,
                   dynamic_ncols=True)
        while state.iteration < self.iterations:
            it = state.iteration
            losses = self._run_step(state, it)
            pending.append({k: v.detach() for k, v in losses.items()})  # stays on device: no sync here
            state.iteration = it + 1
            bar.update(1)
            if state.iteration % self.log_every == 0 or state.iteration == self.iterations:
                self._flush_logs(state, pending, bar)
                pending = []
            if ckpt_dir is not None and self.checkpoint_every and state.iteration % self.checkpoint_every == 0:
                self._flush_logs(state, pending, bar)  # also checks the state: a diverged one is never saved
                pending = []
                self._save_checkpoint(state, ckpt_dir)
            if logger is not None:
                self._feed(logger, state)
            if state.iteration in snapshots:
                self.snapshots_[state.iteration] = self._build_synthetic(state)
            if callback is not None:
                callback(self, it, losses)
        bar.close()

    def _feed(self, logger, state: State) -> None:
        """Hand the logger the values flushed so far, and the set when one is due (or the run ends)."""
        logger.scalars(state.history)
        if state.iteration % logger.image_every == 0 or state.iteration == self.iterations:
            logger.synthetic(state.iteration, self._build_synthetic(state))

    def _run_step(self, state: State, it: int) -> dict[str, torch.Tensor]:
        """Run ``_step`` and make the update(s) it asks for; returns the losses to log."""
        out = self._step(state, it)
        if not inspect.isgenerator(out):
            if state.optimizers and out:
                self._update(state, out["loss"])
            return out
        while True:
            try:
                objective = next(out)
            except StopIteration as stop:
                return stop.value
            self._update(state, objective)

    def _update(self, state: State, objective: torch.Tensor | dict[str, torch.Tensor]) -> None:
        """The one place the learnable tensors change: backward, the gradient hook, the optimizers, the schedules."""
        for opt in state.optimizers.values():
            opt.zero_grad(set_to_none=True)
        if torch.is_tensor(objective):
            objective.backward()
        else:  # one objective per optimizer, each reaching only that optimizer's tensors
            for name, loss in objective.items():
                loss.backward(inputs=[p for g in state.optimizers[name].param_groups for p in g["params"]])
        self._on_gradients(state)
        for opt in state.optimizers.values():
            opt.step()
        for schedule in state.schedules.values():
            schedule.step()

    def _on_gradients(self, state: State) -> None:
        """Hook between backward and the optimizer steps (unscaling or clipping would go here): across
        processes, each learnable tensor's gradient is summed over the ranks' shares of the classes."""
        if distributed.active():
            distributed.all_reduce_sum([p.grad for opt in state.optimizers.values() for g in opt.param_groups
                                        for p in g["params"] if p.grad is not None])

    def _classes_here(self, state: State) -> list[int]:
        """The classes whose loss this process computes (all of them in a one-process run)."""
        return distributed.share(state.data.num_classes)

    @staticmethod
    def _rows(x: torch.Tensor, classes: list[int], num_classes: int) -> torch.Tensor:
        """The rows of a class-major batch (K * n, ...) that belong to ``classes`` (x itself when all)."""
        if len(classes) == num_classes:
            return x
        return x.view(num_classes, -1, *x.shape[1:])[classes].flatten(0, 1)

    @staticmethod
    def _flush_logs(state: State, pending: list[dict[str, torch.Tensor]], bar) -> None:
        """Move the losses logged since the last flush to ``state.history`` and check the state (one host sync).

        Raises :class:`DivergenceError` when a learnable tensor holds NaN or inf: the run cannot recover,
        and the last checkpoint (written before this check passed) still holds a good state.
        """
        floats = {k: v for k, v in state.tensors.items() if v.is_floating_point()}
        finite = torch.stack([torch.isfinite(v).all() for v in floats.values()]).cpu().tolist() if floats else []
        stacked = {key: torch.stack([p[key].float() for p in pending]) for key in (pending[0] if pending else ())}
        distributed.all_reduce_sum(list(stacked.values()))  # each rank logged its classes' share: the sums
        for key, values in stacked.items():
            state.history.setdefault(key, []).extend(values.cpu().tolist())
        if not all(finite):
            losses = state.history.get("loss", [])
            since = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            hint = f"; the loss first became non-finite at iteration {since}" if since is not None else ""
            raise DivergenceError(
                f"The run diverged: {', '.join(k for k, ok in zip(floats, finite) if not ok)} hold NaN or infinite "
                f"values by iteration {state.iteration}{hint}. Lower the "
                "learning rate(s); with checkpoints on, resume from the last one, which predates the divergence.")
        if state.history:
            bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in state.history.items()})

    def _build_synthetic(self, state: State) -> SyntheticSet:
        images, labels, lrs = self._to_synthetic(state)
        meta = {
            **state.data.meta(),
            "method": self.name,
            "params": self._json_params(),
            "seed": self.seed_,
            "iterations_done": state.iteration,
            "version": __version__,
            "torch": torch.__version__,
            "device": str(state.device),
            "val_per_class": state.data.extra.get("val_per_class"),  # images held out of what was distilled
            "val_seed": state.data.extra.get("val_seed"),
            "factor": self.get_params().get("factor", 1),  # multi-formation: the evaluator decodes the tiles
        }
        meta["label_kind"] = infer_label_kind(labels)
        meta["loss"] = LABEL_KINDS[meta["label_kind"]]  # what a network trained on the set must minimise
        extra = {k[len("extra."):]: v.detach() for k, v in state.tensors.items() if k.startswith("extra.")}
        # copies, never views of the learnable tensors: the run may go on updating them in place (snapshots)
        return SyntheticSet(images.detach().cpu().clone(), labels.detach().cpu().clone(), meta,
                            None if lrs is None else lrs.detach().cpu(), {k: v.cpu() for k, v in extra.items()})

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, state: State, ckpt_dir: Path) -> None:
        """One nanoGPT-style record: tensors + optimizer state + RNG state + iteration + params.

        Everything goes into one safetensors file (the JSON record in its header), written by
        :func:`atomic_write`: a kill at any instant leaves either the previous checkpoint or this one.
        Across processes rank 0 writes it (every rank holds the same state).
        """
        if not distributed.is_main():
            return
        flat = {f"tensor.{k}": v.detach() for k, v in state.tensors.items()}
        flat["rng.generator"] = state.generator.get_state()
        opt_meta = None
        if state.optimizer is not None:
            opt_flat, opt_meta = optimizer_to_flat(state.optimizer, "optim")
            flat.update(opt_flat)
        record = {"method": self.name, "params": self._json_params(), "seed": self.seed_,
                  "dataset": state.data.name, "data": self._data_fingerprint, "iteration": state.iteration, "history": state.history,
                  "optimizer": opt_meta, "version": __version__, "device": str(state.device),
                  "fit_seconds": time.perf_counter() - self._fit_started,
                  "sealed": True}  # under the seal itself: a checkpoint whose seal was cut off does not pass as old
        extra_flat, record["extras"] = self._checkpoint_extras(state)
        flat.update(extra_flat)
        flat = {k: v.detach().cpu().contiguous() for k, v in flat.items()}
        text = json.dumps(record, default=_json_default)
        blob = save(flat, metadata={"record": text, "sha256": _checkpoint_digest(text, flat)})
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(ckpt_dir / CHECKPOINT, blob)

    def _check_checkpoint_dir(self, ckpt_dir: Path | None, resume: bool) -> None:
        """Before any work: the folder can be written, and a fresh fit never replaces a checkpoint there."""
        if ckpt_dir is None:
            if resume:
                raise InvalidParameterError(f"fit(resume=True) needs checkpoint_dir; {type(self).__name__} has none set.")
            return
        check_writable(ckpt_dir, "checkpoint_dir", folder=True)
        if not resume and (ckpt_dir / CHECKPOINT).is_file():
            raise OutputError(f"checkpoint_dir {ckpt_dir} holds a checkpoint; pass fit(..., resume=True) to continue "
                              "it, or delete it or choose another checkpoint_dir to start afresh.")

    def _resume_record(self, data: ImageDataset, data_hash: str | None = None) -> dict | None:
        """The checkpoint's record if ``checkpoint_dir`` holds one this run may resume, else None
        (``data_hash``: ``cache.fingerprint(data)`` where the caller has it).

        Reads and checks without changing anything (the CLI calls it before writing a file).

        Raises
        ------
        CorruptFileError
            The checkpoint is damaged or not a distillset checkpoint.
        CheckpointMismatchError
            It was made with settings this run changes (other than ``_resumable_changes``).
        """
        path = Path(self.checkpoint_dir) / CHECKPOINT
        if not path.is_file():
            return None
        record, _ = _read_checkpoint(path)
        self._check_resume(record, path.parent, data.name, resolve_device(getattr(self, "device", None)))
        theirs = record.get("data")  # None: written before the data's hash was kept, checked by its name only
        if theirs is not None and theirs != (data_hash or fingerprint(data)):
            raise CheckpointMismatchError(
                f"Cannot resume from {path.parent}: the checkpoint was made on other training images of "
                f"{data.name!r} (another holdout(val_per_class), or the data changed). Use the same data (the same "
                "--val-per-class), or another checkpoint_dir (--out) to start afresh.")
        return record

    def _check_resume(self, record: dict, ckpt_dir: Path, dataset: str, device: torch.device) -> None:
        """Refuse a resume whose settings differ from the checkpoint's, naming the key (methods may add checks)."""
        mine = self._json_params()
        checks = {"method": (record["method"], self.name), "dataset": (record["dataset"], dataset),
                  "device type": (record["device"].split(":")[0], device.type)}
        checks.update({k: (v, mine.get(k)) for k, v in record["params"].items() if k not in self._resumable_changes})
        defaults = inspect.signature(type(self).__init__).parameters
        for k in set(mine) - set(record["params"]) - set(self._resumable_changes):  # newer than the checkpoint:
            if k in defaults and getattr(self, k) != defaults[k].default:  # it resumes at its default only
                checks[k] = ("absent (made before it existed)", mine[k])
        if record["iteration"] > self.iterations:  # its set is already past this run's end: it would be mislabelled
            raise CheckpointMismatchError(
                f"Cannot resume from {ckpt_dir}: the checkpoint is at iteration {record['iteration']}, past this "
                f"run's iterations={self.iterations}. Give iterations >= {record['iteration']}, or another "
                "checkpoint_dir (--out) to start afresh.")
        for key, (theirs, ours) in checks.items():
            if theirs != ours:
                raise CheckpointMismatchError(
                    f"Cannot resume from {ckpt_dir}: the checkpoint has {key}={theirs!r} but this run has "
                    f"{key}={ours!r}. Use the same {key!r}, or another checkpoint_dir (--out) to start afresh."
                )

    def _load_checkpoint(self, state: State, path: Path, record: dict) -> None:
        """Overwrite ``state`` with the checkpoint at ``path`` (whose ``record`` passed :meth:`_check_resume`)."""
        _, flat = _read_checkpoint(path)
        try:
            for k, v in state.tensors.items():  # copy_ would broadcast a wrong shape silently
                saved = flat[f"tensor.{k}"]
                if saved.shape != v.shape or saved.dtype != v.dtype:
                    raise ValueError(f"tensor {k!r} is {tuple(saved.shape)} {saved.dtype}, the run needs "
                                     f"{tuple(v.shape)} {v.dtype}")
            with torch.no_grad():
                for k, v in state.tensors.items():
                    v.copy_(flat[f"tensor.{k}"])
            state.generator.set_state(flat["rng.generator"])
            if state.optimizer is not None and record["optimizer"] is not None:
                optimizer_from_flat(state.optimizer, "optim", flat, record["optimizer"])  # moves it to the device
            self._restore_extras(state, flat, record.get("extras") or {})
            state.history = {k: [float(x) for x in v] for k, v in record["history"].items()}
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise CorruptFileError(f"Checkpoint {path} does not fit this run ({type(e).__name__}: {e}). Delete it "
                                   "(or pass --overwrite) to start afresh.") from None
        state.iteration = record["iteration"]
        self.seed_ = record["seed"]


    def _checkpoint_extras(self, state: State) -> tuple[dict[str, torch.Tensor], dict]:
        """What a checkpoint holds beyond the first optimizer: the other optimizers and the schedules."""
        flat, meta = {}, {"optimizers": {}, "schedules": {}}
        for name, opt in list(state.optimizers.items())[1:]:
            tensors, meta["optimizers"][name] = optimizer_to_flat(opt, f"optim:{name}")
            flat.update(tensors)
        meta["schedules"] = {name: s.state_dict() for name, s in state.schedules.items()}
        return flat, meta

    def _restore_extras(self, state: State, flat: dict[str, torch.Tensor], meta: dict) -> None:
        for name, opt_meta in meta.get("optimizers", {}).items():
            optimizer_from_flat(state.optimizers[name], f"optim:{name}", flat, opt_meta)
        for name, sd in meta.get("schedules", {}).items():
            state.schedules[name].load_state_dict(sd)

# the record's keys and their JSON types: a record that parses but lacks one is as damaged as a truncated file
_RECORD_SCHEMA = {"method": str, "params": dict, "seed": int, "dataset": str, "iteration": int, "history": dict,
                  "optimizer": (dict, type(None)), "device": str}


def checkpoint_record(path: Path) -> dict:
    """The JSON record of a checkpoint, read from its header only (no tensors): for a look at a running run."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > os.fstat(f.fileno()).st_size:  # garbage for a size: not a read of petabytes
                raise ValueError(f"its header claims {size} bytes, more than the file holds")
            return json.loads(json.loads(f.read(size))["__metadata__"]["record"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(f"Checkpoint {path} is unreadable ({type(e).__name__}: {e}); it is damaged or not a "
                               "distillset checkpoint.") from None


def _checkpoint_digest(record: str, flat: dict[str, torch.Tensor]) -> str:
    """The seal a checkpoint carries: its record's text and every tensor, by name (a hand-edited label, a
    missing optimizer buffer or a cut history is found before any work, not as a traceback or a silent
    change mid-run)."""
    names = sorted(flat)
    return content_hash(*(flat[k] for k in names), text="\n".join([record, *names]))


def _read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The record and tensors of a checkpoint file; :class:`CorruptFileError` naming the file if damaged."""
    fix = "Delete it (or pass --overwrite) to start afresh."
    try:
        blob = path.read_bytes()
        flat = load(blob)
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])  # safetensors: u64 size + JSON
        record = json.loads(header["__metadata__"]["record"])
        sealed = header["__metadata__"].get("sha256")  # None: written before checkpoints were sealed
    except Exception as e:  # safetensors raises its own (Rust) error types; json, KeyError, TypeError...
        raise CorruptFileError(f"Checkpoint {path} is unreadable ({type(e).__name__}: {e}); it is damaged or not "
                               f"a distillset checkpoint. {fix}") from None
    if sealed is None and isinstance(record, dict) and record.get("sealed"):
        raise CorruptFileError(f"Checkpoint {path} lost the checksum it was written with: it was edited after it "
                               f"was written. {fix}")
    if sealed is not None and sealed != _checkpoint_digest(header["__metadata__"]["record"], flat):
        raise CorruptFileError(f"Checkpoint {path} does not match the checksum it was written with: it was edited "
                               f"or damaged after it was written. {fix}")
    bad = [k for k, t in _RECORD_SCHEMA.items() if not isinstance(record.get(k) if isinstance(record, dict) else None, t)]
    if bad or isinstance(record.get("iteration"), bool) or record["iteration"] < 0 or "rng.generator" not in flat:
        raise CorruptFileError(f"Checkpoint {path} has a damaged record (bad or missing: "
                               f"{', '.join(bad) or 'iteration or rng state'}). {fix}")
    # a diverged state is never saved (_flush_logs checks first), so a non-finite value is damage
    broken = [k for k, v in flat.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CorruptFileError(f"Checkpoint {path} holds NaN or infinite values in {', '.join(broken)}. {fix}")
    return record, flat
