"""A membership-inference audit: does a network trained on a released set reveal which real images the
set was made from?

The pool: ``pool_size`` real training images (class-balanced, seeded). Each of ``n_models`` models takes
a random half of each class's pool images as its members and runs the pipeline under audit on them: ``full`` trains a
network on the members themselves, ``random`` on a random subset of ``ipc`` members per class, a method
name (``dm``, ...) distils the members into ``ipc`` images per class and trains a network on that set.
Every model then scores every pool image by LiRA's confidence ``log p_y - log(1 - p_y)``.

Two attacks, each model in turn the target and the others its shadows:
  * **LiRA** (Carlini et al., S&P 2022, online, global variances): the target's confidence on x is
    compared with the shadows that had x as a member and those that did not, as a likelihood ratio of
    two Gaussians (means per image, one variance each for IN and OUT, as the paper advises below 64
    shadows). Deviation: the reference code's global variance is that of all raw IN (OUT) confidences;
    ours is the pooled spread around each image's own mean, which leaves out the between-image spread
    the per-image means already model;
  * **loss threshold**, the simple baseline: the target's confidence itself.
Reported over all (target, image) pairs: TPR at 0.1 % and 1 % FPR, the AUC and the ROC. With P pool
images and M models there are M P / 2 non-member pairs, so an FPR of 0.1 % is resolved by about
M P / 2000 false positives: the record states the count. A method whose images start from real members
(``image_init="real"``) can leak membership through them.

Examples
--------
>>> members = torch.tensor([[True, False], [False, True], [True, False], [False, True]])
>>> conf = torch.where(members, 5.0, -5.0) + torch.tensor([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [0.1, 0.1]])
>>> tpr_at_fpr(lira_scores(conf, members).flatten(), members.flatten(), 0.0)
1.0
"""
from __future__ import annotations

import math
import time

import torch

from ..data import require_dataset
from ..errors import InvalidParameterError, require_type
from ..evaluate import Evaluator, real_inputs
from ..utils import Interval, derive_seed, resolve_seed, validate_params
from ._checks import check_training


def confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(1 - p_y)``, computed stably from the logits (N, C)."""
    z = logits.double()
    true = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf")).logsumexp(1)
    return true - others


def _check_pairs(scores, members) -> None:
    """Scores and membership flags: two tensors of one shape."""
    for what, value in (("scores", scores), ("members", members)):
        require_type(value, torch.Tensor, f"The {what}", "Pass a tensor: torch.as_tensor(values).")
    if scores.shape != members.shape:
        raise InvalidParameterError(f"The scores {tuple(scores.shape)} and members {tuple(members.shape)} differ in "
                                    "shape; give one membership flag per score.")


def lira_scores(conf: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Online LiRA scores (M, P): for each model t as the target, the log likelihood ratio of its confidence
    under the IN and OUT Gaussians fitted on the other models (per-image means, pooled variances)."""
    _check_pairs(conf, members)
    if conf.dim() != 2 or conf.shape[0] < 2:
        raise InvalidParameterError(f"lira_scores takes (models, pool) confidences from at least 2 models (each the "
                                    f"target once, the others its shadows). Got shape {tuple(conf.shape)}.")
    conf, members = conf.double(), members.bool()
    m = conf.shape[0]
    scores = torch.empty_like(conf)
    for t in range(m):
        others = torch.arange(m) != t
        c, inside = conf[others], members[others]
        mu_in, sd_in = _gaussian(c, inside)
        mu_out, sd_out = _gaussian(c, ~inside)
        scores[t] = _log_normal(conf[t], mu_in, sd_in) - _log_normal(conf[t], mu_out, sd_out)
    return scores


def _gaussian(conf: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image means over the masked models (the global mean where an image has none) and one pooled std,
    unbiased: each image's own mean costs its residuals one degree of freedom."""
    n = mask.sum(0)
    mean = torch.where(n > 0, (conf * mask).sum(0) / n.clamp(min=1), conf[mask].mean())
    dof = int(mask.sum() - (n > 0).sum())
    if dof < 1:
        return mean, torch.tensor(1.0, dtype=conf.dtype)
    return mean, ((conf - mean)[mask].pow(2).sum() / dof).sqrt().clamp(min=1e-6)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)


def roc(scores: torch.Tensor, members: torch.Tensor):
    """(fpr, tpr, auc) of scores that should be high for members."""
    from sklearn.metrics import roc_auc_score, roc_curve

    _check_pairs(scores, members)
    bad = int((~torch.isfinite(scores.double())).sum())
    if bad:  # sklearn's "Input contains NaN" named neither the argument nor the fix
        raise InvalidParameterError(f"The scores hold {bad} NaN or infinite value(s); an ROC ranks finite scores. "
                                    "Drop those pairs or score them again.")
    n = int(members.bool().sum())
    if n in (0, members.numel()):
        raise InvalidParameterError(f"An ROC needs members and non-members; members holds {n} members and "
                                    f"{members.numel() - n} non-members.")
    y, s = members.flatten().numpy().astype(int), scores.flatten().double().numpy()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # every threshold: tied scores keep their corners
    return fpr, tpr, float(roc_auc_score(y, s))


def tpr_at_fpr(scores: torch.Tensor, members: torch.Tensor, fpr: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``fpr`` (a rate: 0.01 for 1 %)."""
    validate_params("tpr_at_fpr", {"fpr": fpr}, {"fpr": [Interval(float, 0, 1)]})
    f, t, _ = roc(scores, members)
    return float(t[f <= fpr].max())


class MembershipAudit:
    """Membership inference against networks trained on a pipeline's output.

    Parameters
    ----------
    pipeline : str, default="dm"
        ``"full"`` (train on the members), ``"random"`` (a random subset of the members, ``ipc`` per class)
        or a registered method (distil the members).
    pool_size : int, default=500
    n_models : int, default=17
        Models (each the target once, the others its shadows); at least 3.
    ipc : int, default=10
    params : dict, optional
        The method's parameters.
    model, epochs, augment : the network trained on each pipeline's output (see :class:`~distillset.Evaluator`).
    random_state : int or None, default=0
    device : str, optional

    Attributes
    ----------
    seed_ : int
        The root seed used (``random_state`` resolved once).
    members_ : BoolTensor (n_models, pool_size)
    confidences_ : Tensor (n_models, pool_size)
    results_ : dict
        Per attack (``lira``, ``loss``): ``tpr_at_0.1%``, ``tpr_at_1%``, ``auc``; plus the pool size, the
        non-member pairs and the models' test accuracy (mean).
    """

    def __init__(self, pipeline: str = "dm", *, pool_size: int = 500, n_models: int = 17, ipc: int = 10,
                 params: dict | None = None, model: str = "convnet", epochs: int = 300, augment="auto",
                 random_state: int = 0, device=None):
        self.pipeline = pipeline
        self.pool_size = pool_size
        self.n_models = n_models
        self.ipc = ipc
        self.params = params
        self.model = model
        self.epochs = epochs
        self.augment = augment
        self.random_state = random_state
        self.device = device

    def _validate(self, data) -> None:
        from ..methods import get_method

        require_dataset(data, "MembershipAudit.fit's data")
        k = data.num_classes
        if not Interval(int, 3).accepts(self.n_models):  # a NumPy int too
            raise InvalidParameterError(f"n_models must be an int >= 3 (each model is the target once, the others its "
                                        f"shadows). Got {self.n_models!r}.")
        check_training(self, data)  # the networks each model trains, params, seed and device: before the first model
        smallest = int(data.class_counts().min())
        if not Interval(int, 2 * k, smallest * k).accepts(self.pool_size):
            raise InvalidParameterError(f"pool_size must be an int in [{2 * k}, {smallest * k}] for {data.name!r}. "
                                        f"Got {self.pool_size!r}.")
        if self.pipeline == "full" and self.params:
            raise InvalidParameterError("The 'full' pipeline trains on the members as they are and takes no params; "
                                        "leave params out or name a method as the pipeline.")
        if self.pipeline != "full":
            if "ipc" in (self.params or {}):
                raise InvalidParameterError("Set the images per class with MembershipAudit(ipc=...), not in params.")
            get_method(self.pipeline, ipc=self.ipc, **(self.params or {}))._validate(data)
            if self.ipc >= self.pool_size // k // 2:
                raise InvalidParameterError(f"ipc={self.ipc} leaves nothing to condense: each model has "
                                            f"{self.pool_size // k // 2} members per class; use a larger pool_size "
                                            "or a smaller ipc.")

    def fit(self, data) -> "MembershipAudit":
        from ..data.base import per_class_mask

        self._validate(data)
        self.seed_ = resolve_seed(self.random_state)
        pool = torch.nonzero(per_class_mask(data.train.labels, data.num_classes, self.pool_size // data.num_classes,
                                            derive_seed(self.seed_, "audit/pool"))).flatten()
        g = torch.Generator().manual_seed(derive_seed(self.seed_, "audit/members"))
        labels = data.train.labels[pool]
        self.members_ = torch.stack([per_class_mask(labels, data.num_classes, self.pool_size // data.num_classes // 2,
                                                    int(torch.randint(2**62, (1,), generator=g)))
                                     for _ in range(self.n_models)])  # half of each class's pool images
        t0 = time.perf_counter()
        confs, accs = zip(*(self._model(data, pool, pool[self.members_[i]], i) for i in range(self.n_models)))
        self.confidences_ = torch.stack(confs)
        lira, loss = lira_scores(self.confidences_, self.members_), self.confidences_
        self.results_ = {"pool_size": len(pool), "non_member_pairs": int((~self.members_).sum()),
                         "test_accuracy": sum(accs) / len(accs), "seconds": time.perf_counter() - t0}
        for name, scores in (("lira", lira), ("loss", loss)):
            fpr, tpr, auc = roc(scores, self.members_)
            self.results_[name] = {"tpr_at_0.1%": tpr_at_fpr(scores, self.members_, 0.001),
                                   "tpr_at_1%": tpr_at_fpr(scores, self.members_, 0.01), "auc": auc}
        return self

    def _model(self, data, pool: torch.Tensor, members: torch.Tensor, i: int) -> tuple[torch.Tensor, float]:
        """Run the pipeline on the members; the trained network's confidences on the pool, its test accuracy."""
        from ..methods import get_method
        from ..synthetic import SyntheticSet

        seed = derive_seed(self.seed_, f"audit/model/{i}")
        own = data.with_train(members)
        if self.pipeline == "full":
            syn = SyntheticSet(data.normalize(own.train.images), own.train.labels, data.meta())
        else:
            params = {"progress": False, **(self.params or {}), "ipc": self.ipc, "random_state": seed,
                      "device": self.device}
            syn = get_method(self.pipeline, **params).fit(own).synthetic_
        ev = Evaluator(self.model, n_models=1, epochs=self.epochs, augment=self.augment, progress=False,
                       random_state=seed, device=self.device)
        result = next(iter(ev.score(syn, data, keep_networks=True).values()))
        net = next(iter(ev.networks_.values()))[0].eval()
        with torch.no_grad():
            x = real_inputs(syn, data, data.train.images[pool], next(net.parameters()).device)
            logits = net(x).float().cpu()
        return confidence(logits, data.train.labels[pool]), result.mean

    def roc_curves(self) -> dict[str, tuple]:
        """(fpr, tpr) per attack, for plotting."""
        lira = lira_scores(self.confidences_, self.members_)
        return {name: roc(s, self.members_)[:2] for name, s in (("lira", lira), ("loss", self.confidences_))}

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "pool_size": int(self.pool_size), "n_models": int(self.n_models), "ipc": self.ipc,
                "params": self.params or {}, "model": self.model, "epochs": self.epochs, "augment": self.augment,
                "random_state": self.random_state, "seed": self.seed_, **self.results_}


def plot_roc(audits: dict[str, MembershipAudit], path, title: str = "") -> None:
    """Log-log ROC of each pipeline's LiRA (solid) and loss attack (dashed), with the chance line."""
    from ..plots import _figure, _save

    fig, ax = _figure((6, 4.5))
    for i, (name, audit) in enumerate(audits.items()):
        for attack, (fpr, tpr) in audit.roc_curves().items():
            ax.plot(fpr, tpr, color=f"C{i}", linestyle="-" if attack == "lira" else "--", linewidth=1,
                    label=f"{name} {attack} (AUC {audit.results_[attack]['auc']:.2f})")
    ax.plot([1e-4, 1], [1e-4, 1], color="grey", linewidth=0.5, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false-positive rate",
           ylabel="true-positive rate", title=title or "membership inference")
    ax.legend(fontsize=7)
    _save(fig, path)
