"""The standard evaluation protocol (REFERENCE section 1).

Train freshly initialised networks on a synthetic set, test each once on the full real test set,
report mean ± std over the networks. The test set is touched only after training: no checkpoint
selection on it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .data import ImageDataset
from .errors import InvalidParameterError
from .models import get_model
from .synthetic import SyntheticSet
from .utils import draw_seed, make_generator, resolve_device, resolve_seed, validate_params, Interval, Options, Instance


@dataclass
class EvalResult:
    """Accuracies (in %) of ``n_models`` networks of one architecture trained on one set."""

    model: str
    accuracies: list[float]
    epochs: int
    augment: str | None
    seconds: float
    dataset: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.model}: {self.mean:.2f} ± {self.std:.2f} % over {len(self.accuracies)} nets"

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "std": self.std}


def train_network(
    net: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    generator: torch.Generator,
    lr: float = 0.01,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augment: str | None = None,
    loss: str = "ce",
) -> torch.nn.Module:
    """Train ``net`` in place with the protocol's SGD recipe (lr x0.1 at half the epochs).

    ``targets`` are int64 class labels or float soft targets (N, C); ``loss`` is ``"ce"`` (cross-entropy,
    soft targets allowed) or ``"mse"`` (regression onto the targets, for kernel-method labels).
    """
    from .augment import augment as dsa

    images, targets = images.detach(), targets.detach()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[epochs // 2] if epochs >= 2 else [], gamma=0.1)
    n = images.shape[0]
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = images[idx], targets[idx]
            if augment:
                xb = dsa(xb, augment, generator=generator)
            out = net(xb)
            batch_loss = F.mse_loss(out, yb) if loss == "mse" else F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
        sched.step()
    return net


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in % of ``net`` (eval mode) on normalised ``images``."""
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, images.shape[0], batch_size):
        pred = net(images[start:start + batch_size]).argmax(1)
        correct += (pred == labels[start:start + batch_size]).sum()
    return 100.0 * correct.item() / images.shape[0]


class Evaluator:
    """Train fresh networks on a synthetic set and test them on the real test set.

    Parameters
    ----------
    models : str or list of str, default="convnet"
        Architectures (any registered name); several give the cross-architecture table.
    n_models : int, default=5
        Networks per architecture; the result is mean ± std over them.
    epochs : int, default=1000
        Training epochs (lr x0.1 at epochs // 2). DC's recipe uses 300 without augmentation.
    augment : str or None, default="auto"
        DSA strategy applied per image during training; ``"auto"`` = the data set's default strategy,
        ``None``/``"none"`` = no augmentation.
    lr, batch_size, momentum, weight_decay : protocol SGD settings (0.01, 256, 0.9, 5e-4).
    loss : {"ce", "mse"}
    random_state : int, Generator or None, default=0
    device : str or None (auto)

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> from distillset.methods import get_method
    >>> data = load_dataset("digits")
    >>> syn = get_method("random", ipc=1, random_state=0).fit(data).synthetic_
    >>> res = Evaluator(n_models=1, epochs=2, augment=None, device="cpu").score(syn, data)
    >>> 0 <= res["convnet"].mean <= 100
    True
    """

    _parameter_constraints = {
        "n_models": [Interval(int, 1)],
        "epochs": [Interval(int, 0)],
        "lr": [Interval(float, 0, closed="neither")],
        "batch_size": [Interval(int, 1)],
        "momentum": [Interval(float, 0, 1)],
        "weight_decay": [Interval(float, 0)],
        "loss": [Options(("ce", "mse"))],
        "augment": [None, Instance((str,))],
        "models": [Instance((str, list, tuple))],
    }

    def __init__(self, models: str | Sequence[str] = "convnet", *, n_models=5, epochs=1000, augment="auto",
                 lr=0.01, batch_size=256, momentum=0.9, weight_decay=5e-4, loss="ce", random_state=0,
                 device=None, progress=False):
        self.models = models
        self.n_models = n_models
        self.epochs = epochs
        self.augment = augment
        self.lr = lr
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.loss = loss
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def _strategy(self, dataset_name: str) -> str | None:
        from .augment import default_strategy

        if self.augment in (None, "none", ""):
            return None
        return default_strategy(dataset_name) if self.augment == "auto" else self.augment

    def score(self, synthetic: SyntheticSet, data: ImageDataset) -> dict[str, EvalResult]:
        """Evaluate ``synthetic`` on ``data.test``; returns ``{model_name: EvalResult}``."""
        validate_params(type(self).__name__, vars(self), self._parameter_constraints)
        if tuple(synthetic.images.shape[1:]) != tuple(data.image_shape):
            raise InvalidParameterError(f"The synthetic set's images are {tuple(synthetic.images.shape[1:])} but the data set "
                                        f"{data.name!r} has images {tuple(data.image_shape)}; evaluate on the data set it was distilled from.")
        synthetic.check()  # a NaN pixel or a label out of range is an error, not a chance-level score
        device = resolve_device(self.device)
        g = make_generator(resolve_seed(self.random_state), device)
        x_syn, y_syn = synthetic.images.to(device).float(), synthetic.labels.to(device)
        if self.loss == "mse" and y_syn.dim() == 1:  # hard labels -> centred one-hot regression targets (KIP/LS)
            y_syn = F.one_hot(y_syn, data.num_classes).float() - 1.0 / data.num_classes
        x_syn, x_test = self._preprocess(synthetic, data, x_syn, device)
        y_test = data.test.labels.to(device)
        strategy = self._strategy(data.name)
        models = [self.models] if isinstance(self.models, str) else list(self.models)
        results = {}
        for name in models:
            t0 = time.perf_counter()
            accs = []
            for _ in range(self.n_models):
                net = get_model(name, data.image_shape, data.num_classes, seed=draw_seed(g), device=device)
                train_network(net, x_syn, y_syn, epochs=self.epochs, generator=g, lr=self.lr,
                              batch_size=self.batch_size, momentum=self.momentum, weight_decay=self.weight_decay,
                              augment=strategy, loss=self.loss)
                accs.append(test_accuracy(net, x_test, y_test))
            results[name] = EvalResult(name, accs, self.epochs, strategy, time.perf_counter() - t0,
                                       dataset=data.name, source=data.source)
        return results

    @staticmethod
    def _preprocess(synthetic: SyntheticSet, data: ImageDataset, x_syn, device):
        """Normalise test images the way the synthetic set was made (incl. ZCA when the set carries one)."""
        x_test = data.normalize(data.test.images.to(device))
        zca = synthetic.extra.get("zca")
        if zca is not None:  # (D, D) whitening matrix fit on the training set; the set is already whitened
            flat = x_test.flatten(1)
            if "zca_mean" in synthetic.extra:  # a centred ZCA subtracts the training mean first
                flat = flat - synthetic.extra["zca_mean"].to(device).flatten()
            x_test = (flat @ zca.to(device).T).view_as(x_test)
        return x_syn, x_test


def evaluate(synthetic: SyntheticSet, data: ImageDataset, **kwargs) -> dict[str, EvalResult]:
    """Shortcut for ``Evaluator(**kwargs).score(synthetic, data)``."""
    return Evaluator(**kwargs).score(synthetic, data)
