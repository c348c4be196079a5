"""Distilled sets as a proxy for neural architecture search: does training on the set rank architectures
the way training on the real data does?

Every architecture of a grid of ConvNets (model specs) is trained on each proxy (distilled sets, a random
subset of the same size) and on the real training data (all of it, or ``full_per_class`` images per class,
stated in the record). Rankings use **validation** accuracy (a class-balanced hold-out of the training
data, never the test set); the test set gives only the real accuracy of each proxy's pick. Reported per
proxy: Spearman and Kendall rank correlation with the real ranking over all architectures and over the
top 5 / 10 / 20 by real validation accuracy, the proxy's training time, and the architecture it picks
with that architecture's real test accuracy. The real-data trainings are the expensive part and go into
the preparation cache, shared by every proxy and every later search with the same settings.

Examples
--------
>>> len(search_space("paper")), len(search_space("cpu"))
(720, 24)
>>> r = rank_correlations([1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60], top=(5,))
>>> round(r["all"]["spearman"], 12), round(r["top5"]["kendall"], 12)
(1.0, 1.0)
"""
from __future__ import annotations

import collections
import itertools
import reprlib
import time

import torch

from ..data import require_dataset
from ..errors import InvalidParameterError, require_type
from ..evaluate import Evaluator
from ..models import check_model, model_spec_name
from ..synthetic import SyntheticSet
from ..utils import SEED_RANGE, Instance, Interval, derive_seed, resolve_device, resolve_seed, validate_params

GRIDS = {  # (depth, width, act, norm, pooling)
    "paper": ((1, 2, 3, 4), (32, 64, 128, 256), ("sigmoid", "relu", "leakyrelu"),
              ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"), ("none", "maxpool", "avgpool")),
    "cpu": ((1, 2, 3), (16, 32), ("relu", "sigmoid"), ("instancenorm", "batchnorm"), ("avgpool",)),
}


def search_space(grid: str = "cpu") -> list[str]:
    """The ConvNet specs of a grid: ``"paper"`` (the DC paper's 720) or ``"cpu"`` (24)."""
    if not isinstance(grid, str) or grid not in GRIDS:
        raise InvalidParameterError(f"Unknown grid {grid!r}; use one of {sorted(GRIDS)}.")
    return [f"convnet(depth={d}, width={w}, act='{a}', norm='{n}', pooling='{p}')"
            for d, w, a, n, p in itertools.product(*GRIDS[grid])]


def rank_correlations(proxy, real, top=(5, 10, 20)) -> dict[str, dict[str, float]]:
    """Spearman and Kendall (tau-b) correlation of two accuracy lists over all items and over the ``top``
    k items by ``real`` (k below the number of items only). NaN where either list is constant over the
    items: a proxy that scores every architecture alike ranks none of them, and no correlation is defined
    (the CLI's record writes it as null)."""
    import warnings

    from scipy.stats import ConstantInputWarning, kendalltau, spearmanr

    proxy, real = _accuracies(proxy, "proxy"), _accuracies(real, "real")
    if len(proxy) != len(real) or len(real) < 2:
        raise InvalidParameterError(f"rank_correlations needs one proxy and one real accuracy per architecture, in "
                                    f"the same order, for at least 2; got {len(proxy)} and {len(real)}.")
    require_type(top, (tuple, list), "rank_correlations' top", "Give the cut-offs as a tuple, e.g. top=(5, 10).")
    for k in top:
        validate_params("rank_correlations", {"top": k}, {"top": [Interval(int, 2)]})
    subsets = {"all": torch.arange(len(real))}
    order = torch.argsort(real, descending=True, stable=True)  # ties at a cut-off: the earlier grid entry
    subsets.update({f"top{k}": order[:k] for k in top if k < len(real)})
    out = {}
    for name, idx in subsets.items():
        p, r = proxy[idx].numpy(), real[idx].numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)  # NaN, as documented above
            out[name] = {"spearman": float(spearmanr(p, r)[0]), "kendall": float(kendalltau(p, r)[0]), "n": len(idx)}
    return out


def _accuracies(values, what: str) -> torch.Tensor:
    """``values`` as a 1-D float64 tensor of finite numbers, or one line saying what rank_correlations takes."""
    try:
        out = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        out = None
    if out is None or out.dim() != 1 or not torch.isfinite(out).all():
        raise InvalidParameterError(f"rank_correlations' {what} must be a list of finite accuracies, one per "
                                    f"architecture. Got {reprlib.repr(values)}.")
    return out


def check_proxies(proxies: dict[str, SyntheticSet], data) -> None:
    """Refuse, before any training, a proxy made from other data or from images the validation split holds:
    the rankings must come from images no proxy saw."""
    held = data.extra.get("val_per_class")
    for name, syn in proxies.items():
        require_type(syn, SyntheticSet, f"Proxy {name!r}", "Read a saved set with SyntheticSet.load(path).")
        if "val_per_class" not in syn.meta or "val_seed" not in syn.meta:
            raise InvalidParameterError(f"Proxy {name!r} does not record which validation images it was distilled "
                                        f"without (meta 'val_per_class' / 'val_seed'); distil it with distillset "
                                        f"(--val-per-class {held}) so the search can check it saw none.")
        if syn.meta.get("dataset", data.name) != data.name or tuple(syn.images.shape[1:]) != tuple(data.image_shape):
            raise InvalidParameterError(f"Proxy {name!r} was made from {syn.meta.get('dataset')!r} "
                                        f"{tuple(syn.images.shape[1:])}, not {data.name!r} {tuple(data.image_shape)}; "
                                        "rank on its own data set (--dataset) or leave it out.")
        if syn.meta.get("val_per_class", held) != held or syn.meta.get("val_seed", data.extra.get("val_seed")) != \
                data.extra.get("val_seed"):
            raise InvalidParameterError(
                f"Proxy {name!r} was distilled with val_per_class={syn.meta.get('val_per_class')!r} held out, but the "
                f"search validates on {held} per class: it may hold validation images. Distil it with "
                f"--val-per-class {held} (or data.holdout({held})).")


class ArchitectureSearch:
    """Rank a grid of architectures by training on proxies, against training on the real data.

    Parameters
    ----------
    grid : str or list of str, default="cpu"
        ``"cpu"`` (24 ConvNets), ``"paper"`` (720), or a list of model specs.
    epochs : int, default=300
        Training epochs on a proxy set.
    full_epochs : int, default=10
        Training epochs on the real data.
    full_per_class : int or None, default=None
        Real images per class for the reference training (None: the whole training split).
    val_per_class : int, default=100
        Validation images per class held out of the training data (skipped when the data holds some out).
    n_models : int, default=1
        Networks per architecture and proxy (their mean validation accuracy ranks it).
    random_state : int or None, default=0
        Root of the networks' streams. An architecture starts from the same initial weights on every proxy
        and on the real data (a paired design: proxies are compared on equal draws); an initialisation that
        fails to train fails on both sides, which raises every proxy's correlation alike.
    device : str, optional

    Networks train without augmentation on proxies and real data alike (one recipe for every set).

    Attributes
    ----------
    architectures_ : list of str
    seed_ : int
        The root seed used (``random_state`` resolved once).
    val_per_class_ : int
        The validation images per class the rankings used (the data's own hold-out when it came with one).
    real_ : dict
        Per architecture: ``val`` and ``test`` accuracy of the real-data training, and its ``seconds``.
    proxies_ : dict
        Per proxy: ``val`` accuracies (one per architecture), ``seconds``, ``correlations``, ``pick`` (its
        top architecture) and ``pick_real_test`` (that architecture's real test accuracy).
    best_real_ : dict
        The architecture the real validation accuracy picks, and its test accuracy (the ceiling).
    """

    def __init__(self, grid="cpu", *, epochs: int = 300, full_epochs: int = 10, full_per_class: int | None = None,
                 val_per_class: int = 100, n_models: int = 1, random_state: int = 0, device=None):
        self.grid = grid
        self.epochs = epochs
        self.full_epochs = full_epochs
        self.full_per_class = full_per_class
        self.val_per_class = val_per_class
        self.n_models = n_models
        self.random_state = random_state
        self.device = device

    _parameter_constraints = {
        "grid": [Instance((str, list, tuple))], "epochs": [Interval(int, 1)], "full_epochs": [Interval(int, 1)],
        "full_per_class": [None, Interval(int, 1)], "val_per_class": [Interval(int, 1)],
        "n_models": [Interval(int, 1)], "random_state": [None, SEED_RANGE],
    }

    def _validate(self) -> list[str]:
        """Check every setting (the CLI calls this before any work); returns the architectures."""
        validate_params(type(self).__name__, vars(self), self._parameter_constraints)
        resolve_device(self.device)
        specs = search_space(self.grid) if isinstance(self.grid, str) else list(self.grid)
        if not all(isinstance(s, str) for s in specs):
            raise InvalidParameterError(f"The 'grid' parameter of ArchitectureSearch must be 'cpu', 'paper' or a list of "
                                        f"model specs (strings such as 'convnet(depth=2)'). Got {self.grid!r} instead.")
        twice = [s for s, n in collections.Counter(map(model_spec_name, specs)).items() if n > 1]
        if twice:
            raise InvalidParameterError(f"The 'grid' parameter of ArchitectureSearch lists {', '.join(twice)} more than "
                                        "once; give each architecture once.")
        if len(specs) < 3:
            raise InvalidParameterError(f"An architecture search needs at least 3 architectures; got {len(specs)}.")
        return specs

    def _check_data(self, data, specs: list[str]) -> None:
        """Every architecture on the data's images, and ``full_per_class`` within the smallest class, before any
        training (a typo in the last architecture is not an error after the others trained)."""
        for spec in specs:
            check_model(spec, data.image_shape, data.num_classes, type(self).__name__)
        smallest = int(data.class_counts().min())
        if self.full_per_class is not None and self.full_per_class > smallest:
            raise InvalidParameterError(
                f"The 'full_per_class' parameter of ArchitectureSearch is {self.full_per_class}, more than the smallest "
                f"class of {data.name!r} holds besides the validation images ({smallest}). Use at most {smallest}, "
                "or None for the whole training split.")

    def fit(self, data, proxies: dict[str, SyntheticSet]) -> "ArchitectureSearch":
        """Train every architecture on each proxy and on the real data; ``proxies`` maps a name to a set."""
        from ..cache import fingerprint

        specs = self._validate()
        require_dataset(data, "ArchitectureSearch.fit's data")
        require_type(proxies, dict, "ArchitectureSearch.fit's proxies", "Name each set: fit(data, {'dm': synthetic_set}).")
        if not proxies:
            raise InvalidParameterError("An architecture search needs at least one proxy set.")
        data = data if data.val is not None else data.holdout(self.val_per_class)
        check_proxies(proxies, data)
        self._check_data(data, specs)
        self.seed_ = resolve_seed(self.random_state)
        self.val_per_class_ = data.extra.get("val_per_class")  # the data may come held out already
        self._data_key = fingerprint(data)  # once, not per architecture
        self.architectures_ = specs
        self.real_ = {s: self._real(data, s) for s in specs}
        real_val = [self.real_[s]["val"] for s in specs]
        best = max(specs, key=lambda s: self.real_[s]["val"])
        self.best_real_ = {"architecture": best, "test": self.real_[best]["test"]}
        self.proxies_ = {}
        for name, syn in proxies.items():
            t0 = time.perf_counter()
            val = [self._val_accuracy(syn, data, s, self.epochs) for s in specs]
            pick = specs[max(range(len(specs)), key=lambda i: val[i])]
            self.proxies_[name] = {"images": len(syn), "val": val, "seconds": time.perf_counter() - t0,
                                   "correlations": rank_correlations(val, real_val), "pick": pick,
                                   "pick_real_test": self.real_[pick]["test"]}
        return self

    def _evaluator(self, spec: str, epochs: int, seed_label: str) -> Evaluator:
        return Evaluator(spec, n_models=self.n_models, epochs=epochs, augment=None, progress=False, device=self.device,
                         random_state=derive_seed(self.seed_, seed_label))

    def _val_accuracy(self, syn: SyntheticSet, data, spec: str, epochs: int) -> float:
        result = next(iter(self._evaluator(spec, epochs, f"nas/{spec}").score(syn, data).values()))
        return sum(result.extra["val_accuracies"]) / len(result.extra["val_accuracies"])

    def _real(self, data, spec: str) -> dict[str, float]:
        """The reference training of one architecture (cached: it is shared by every proxy)."""
        from ..cache import NAS_REAL, cached

        def build():
            t0 = time.perf_counter()
            result = next(iter(self._evaluator(spec, self.full_epochs, f"nas/{spec}").score(self._full(data), data).values()))
            return {"val": torch.tensor(result.extra["val_accuracies"]), "test": torch.tensor(result.accuracies),
                    "seconds": torch.tensor(time.perf_counter() - t0)}

        settings = {"spec": spec, "data": self._data_key, "val_per_class": data.extra.get("val_per_class"),
                    "epochs": self.full_epochs, "per_class": self.full_per_class, "n_models": self.n_models,
                    "seed": self.seed_}
        out = cached(NAS_REAL, settings, build)
        return {"val": float(out["val"].mean()), "test": float(out["test"].mean()), "seconds": float(out["seconds"])}

    def _full(self, data) -> SyntheticSet:
        """The real training data as a set: all of it, or ``full_per_class`` seeded images of each class."""
        from ..data.base import per_class_mask

        x, y = data.train.images, data.train.labels
        if self.full_per_class is not None:
            keep = per_class_mask(y, data.num_classes, self.full_per_class, derive_seed(self.seed_, "nas/full"))
            x, y = x[keep], y[keep]
        return SyntheticSet(data.normalize(x), y, {**data.meta(), "val_per_class": data.extra.get("val_per_class")})

    def to_dict(self) -> dict:
        return {"grid": self.grid if isinstance(self.grid, str) else "custom", "architectures": self.architectures_,
                "epochs": self.epochs, "full_epochs": self.full_epochs, "full_per_class": self.full_per_class,
                "val_per_class": self.val_per_class_, "n_models": self.n_models, "random_state": self.random_state,
                "seed": self.seed_,
                "real": self.real_, "best_real": self.best_real_, "proxies": self.proxies_}


def plot_ranking(search: ArchitectureSearch, path, dataset: str) -> None:
    """Each architecture's validation accuracy after training on each proxy against after training on real data."""
    from ..plots import _figure, _save

    fig, ax = _figure((6, 4.5))
    real = [search.real_[s]["val"] for s in search.architectures_]
    for name, p in search.proxies_.items():
        ax.scatter(p["val"], real, s=12, label=f"{name} (Spearman {p['correlations']['all']['spearman']:.2f})")
    ax.set(xlabel="validation accuracy after training on the proxy (%)",
           ylabel="validation accuracy after training on real data (%)", title=f"{dataset}: architecture ranking")
    ax.legend(fontsize=8)
    _save(fig, path)
