"""Class-incremental learning with a condensed memory (the DM paper's protocol, GDumb-style training).

For each of ``orders`` seeded class orders, the classes are split into ``steps`` equal groups. At each
step:
  1. the new classes (and only they) are condensed by ``method`` into ``ipc`` images per class;
  2. those images join the memory (the earlier steps' images are kept as they are);
  3. ``n_models`` fresh networks are trained from scratch on the whole memory and tested on the test
     images of every class seen so far (a classifier over the seen classes).

Reported: the accuracy after each step (mean ± std over orders x networks), the final accuracy (after
the last step) and the average over steps. Each order has its own streams, derived from the root seed
(the condensation of a step, and the evaluation, never share draws).

Examples
--------
>>> from distillset.data import load_dataset
>>> cl = ClassIncremental("random", steps=2, ipc=2, orders=1, n_models=1, epochs=2).fit(load_dataset("digits"))
>>> cl.memory_sizes_, len(cl.step_means_)
([10, 20], 2)
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ..data import require_dataset
from ..errors import InvalidParameterError
from ..evaluate import Evaluator
from ..synthetic import SyntheticSet
from ..utils import Interval, derive_seed, resolve_seed, validate_params
from ._checks import check_training


class ClassIncremental:
    """Class-incremental learning with a memory condensed step by step.

    Parameters
    ----------
    method : str, default="dm"
        A registered method or baseline (``random``, ``herding``...) that condenses each step's classes.
    steps : int, default=5
        Class groups (the classes must divide evenly).
    ipc : int, default=10
        Images per class condensed into the memory.
    orders : int, default=5
        Seeded class orders; order 0 is the natural order 0, 1, ..., K-1, the others are permutations.
    params : dict, optional
        The method's parameters (e.g. ``{"iterations": 1000}``).
    n_models, epochs, model, augment : the evaluation of each step (see :class:`~distillset.Evaluator`).
    random_state : int, default=0
    device : str, optional

    Attributes
    ----------
    orders_ : list of list of int
    per_step_ : list of list of list of float
        Test accuracies [order][step][network].
    step_means_, step_stds_ : list of float
        Per step, over orders x networks (sample std, ddof 1; an EvalResult's own std is the population std).
    memory_sizes_ : list of int
        Images in the memory after each step.
    seed_ : int
        The root seed used (``random_state`` resolved once).
    final_, average_ : float
        Mean accuracy after the last step; mean over the steps of the step means.
    seconds_ : dict
        Condensation and evaluation seconds.
    """

    def __init__(self, method: str = "dm", *, steps: int = 5, ipc: int = 10, orders: int = 5, params: dict | None = None,
                 n_models: int = 3, epochs: int = 300, model: str = "convnet", augment="auto", random_state: int = 0,
                 device=None):
        self.method = method
        self.steps = steps
        self.ipc = ipc
        self.orders = orders
        self.params = params
        self.n_models = n_models
        self.epochs = epochs
        self.model = model
        self.augment = augment
        self.random_state = random_state
        self.device = device

    def _validate(self, data) -> None:
        from ..methods import get_method

        require_dataset(data, "ClassIncremental.fit's data")
        k = data.num_classes
        counts = ("steps", "ipc", "orders", "n_models")  # a NumPy int too (validate_params' Interval takes one)
        validate_params(type(self).__name__, vars(self), dict.fromkeys(counts, [Interval(int, 1)]))
        check_training(self, data)  # the evaluation networks, params, seed and device
        if k % self.steps:
            divisors = [d for d in range(1, k + 1) if k % d == 0]
            raise InvalidParameterError(f"steps={self.steps} does not split the {k} classes of {data.name!r} evenly; "
                                        f"use one of {divisors}.")
        if "ipc" in (self.params or {}):
            raise InvalidParameterError("Set the images per class with ClassIncremental(ipc=...), not in params.")
        method = get_method(self.method, ipc=self.ipc, **(self.params or {}))
        method._validate(data)  # its parameters, and ipc against the smallest class (each class is condensed once)
        planned = method.planned_output()
        if planned["label_kind"] != "hard" or planned["zca"]:
            made = f"{planned['label_kind']} labels" + (" and ZCA-whitened images" if planned["zca"] else "")
            raise InvalidParameterError(f"{self.method!r} with these parameters makes {made}; the memory keeps raw "
                                        "images with hard labels across steps. Use a hard-label method or baseline, or turn "
                                        "those options off (e.g. soft_labels=False, zca=False).")

    def class_orders(self, num_classes: int, seed: int | None = None) -> list[list[int]]:
        """Order 0 is 0..K-1; order o > 0 a permutation from its own stream of the root seed (``seed``, else
        ``random_state`` resolved)."""
        seed = resolve_seed(self.random_state) if seed is None else seed
        return [list(range(num_classes)) if o == 0 else
                np.random.default_rng(derive_seed(seed, f"continual/order/{o}")).permutation(num_classes).tolist()
                for o in range(self.orders)]

    def fit(self, data) -> "ClassIncremental":
        """Run every order; returns self."""
        self._validate(data)
        seed = self.seed_ = resolve_seed(self.random_state)  # once: random_state=None draws one root for everything
        per = data.num_classes // self.steps
        self.orders_ = self.class_orders(data.num_classes, seed)
        self.per_step_, self.memory_sizes_ = [], []
        self.seconds_ = {"condense": 0.0, "evaluate": 0.0}
        for o, order in enumerate(self.orders_):
            memory_x, memory_y, accuracies = [], [], []
            for step in range(self.steps):
                new = order[step * per:(step + 1) * per]
                x, y = self._condense(data, new, derive_seed(seed, f"continual/{o}/{step}"))
                memory_x.append(x)
                memory_y.append(y)
                seen = order[:(step + 1) * per]
                accuracies.append(self._score(data, seen, torch.cat(memory_x), torch.cat(memory_y),
                                              derive_seed(seed, f"continual/{o}/{step}/evaluate")))
                if o == 0:
                    self.memory_sizes_.append(sum(len(m) for m in memory_x))
            self.per_step_.append(accuracies)
        by_step = [[a for order in self.per_step_ for a in order[s]] for s in range(self.steps)]
        self.step_means_ = [statistics.fmean(v) for v in by_step]
        self.step_stds_ = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_step]
        self.final_, self.average_ = self.step_means_[-1], statistics.fmean(self.step_means_)
        return self

    def _condense(self, data, new: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The new classes' memory: ``ipc`` images per class (their decoded images), labelled with the
        original class ids."""
        from ..methods import get_method

        t0 = time.perf_counter()
        params = {"progress": False, **(self.params or {}), "ipc": self.ipc, "random_state": seed, "device": self.device}
        syn = get_method(self.method, **params).fit(data.select_classes(new)).synthetic_.decoded()
        self.seconds_["condense"] += time.perf_counter() - t0
        whitening = sorted({"zca", "zca_mean"} & syn.extra.keys())  # other extras (DD's theta0) are harmless here
        if syn.labels.dim() != 1 or whitening:  # _validate refuses these first; a method that misdeclares lands here
            raise RuntimeError(f"{self.method!r} made {syn.label_kind} labels / {whitening} although planned_output() "
                               "promised raw images with hard labels.")
        ids = torch.tensor(new)
        return syn.images.detach().cpu(), ids[syn.labels.cpu()]

    def _score(self, data, seen: list[int], x: torch.Tensor, y: torch.Tensor, seed: int) -> list[float]:
        """Fresh networks trained on the memory, tested on the seen classes' test images."""
        t0 = time.perf_counter()
        view = data.select_classes(seen)
        position = torch.full((data.num_classes,), -1, dtype=torch.long)
        position[seen] = torch.arange(len(seen))
        memory = SyntheticSet(x, position[y], view.meta())
        ev = Evaluator(self.model, n_models=self.n_models, epochs=self.epochs, augment=self.augment,
                       random_state=seed, device=self.device, progress=False)
        result = next(iter(ev.score(memory, view).values()))
        self.seconds_["evaluate"] += time.perf_counter() - t0
        return result.accuracies

    def settings(self) -> dict:
        """The settings a result depends on, as :meth:`to_dict` records them (``orders`` there lists the orders
        drawn; here it counts them): what ``distillset continual --resume`` compares."""
        return {"method": self.method, "steps": int(self.steps), "ipc": int(self.ipc), "orders": int(self.orders),
                "params": self.params or {}, "n_models": int(self.n_models), "epochs": self.epochs, "model": self.model,
                "augment": self.augment, "random_state": self.random_state}

    def to_dict(self) -> dict:
        """The settings and results, JSON-able."""
        return {**self.settings(), "orders": self.orders_, "seed": self.seed_, "memory_sizes": self.memory_sizes_,
                "classes_seen": [len(self.orders_[0]) // int(self.steps) * (s + 1) for s in range(self.steps)],
                "per_step": self.per_step_, "step_means": self.step_means_, "step_stds": self.step_stds_,
                "final": self.final_, "average": self.average_, "seconds": self.seconds_}


def plot_curves(results: list[dict], path, title: str = "") -> None:
    """Accuracy after each step, one line per method (``to_dict()`` records)."""
    from ..plots import _save, accuracy_figure

    lines = {r["method"]: list(zip(r["classes_seen"], r["step_means"], r["step_stds"])) for r in results}
    _save(accuracy_figure(lines, "classes seen", title or "class-incremental learning"), path)
