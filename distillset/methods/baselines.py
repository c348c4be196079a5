"""Coreset baselines: random real subset, herding and k-center greedy selection.

They share the method interface (``fit(data).synthetic_``) and are evaluated with the same protocol,
so a distilled set is always compared against a baseline trained the same way.

Features for herding / k-center, as in the papers (DC, DM): the embedding of a ConvNet trained on
the real training set (``features="convnet"``, ``feature_epochs`` epochs of the evaluation protocol's
SGD recipe; 0 = a randomly initialised network), or ``features="pixels"`` (normalised pixels, no
training: fast, and the seed plays no part).
"""
from __future__ import annotations

import torch

from .._registry import parse_spec
from ..models import MODELS, canonical_model_name
from ..precision import PRECISIONS, chunk_size, frozen_embed, precision_name, resolve_precision
from ..utils import NO_ITERATIONS, Instance, Interval, Options, draw_seed
from .base import DistillMethod, RealData, State, register_method
from .common import class_labels


class _Selection(DistillMethod):
    """A baseline that picks ``ipc`` real images per class once (no iterations).

    Parameters
    ----------
    ipc : int, default=10
    features : str, default="convnet"
        ``"pixels"`` or a registered model name whose embedding is the feature space.
    feature_epochs : int, default=5
        Epochs of training that feature model on the real training set first (0 = random network).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of the feature network's training and embedding (``distillset.precision``).
    model, random_state, device, iterations, checkpoint_dir, checkpoint_every, log_every, progress :
        see ``DistillMethod``; ``iterations`` stays 0.
    """
    _distributed = True  # no iterations: every process makes the same selection

    _parameter_constraints = {"features": [Instance((str,))], "feature_epochs": [Interval(int, 0)],
                              "iterations": [NO_ITERATIONS], "precision": [Options(PRECISIONS)]}

    def __init__(self, ipc=10, *, features="convnet", feature_epochs=5, precision="auto", model="convnet",
                 random_state=None, device=None, iterations=0, checkpoint_dir=None, checkpoint_every=None, log_every=1,
                 progress=False):
        self.ipc = ipc
        self.features = features
        self.feature_epochs = feature_epochs
        self.precision = precision
        self.model = model
        self.random_state = random_state
        self.device = device
        self.iterations = iterations
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress

    def _validate_params(self, flags: dict[str, str] | None = None) -> None:
        super()._validate_params(flags)
        if self.features != "pixels":  # an unknown feature model lists close matches before any work
            MODELS.get(canonical_model_name(parse_spec(self.features, "features")[0]))

    def _select(self, feats: torch.Tensor, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (ipc,) into ``feats`` (n, d) of one class."""
        raise NotImplementedError

    def _init_state(self, data, real: RealData, generator):
        feats = self._features(data, real, generator)
        chosen = []
        for c in range(data.num_classes):  # per-class greedy selection; classes differ in size
            lo, n = int(real.offsets[c]), int(real.counts[c])
            chosen.append(lo + self._select(feats[lo:lo + n], self.ipc, generator))
        idx = torch.cat(chosen)
        return {"images": real.take(idx).clone(), "labels": class_labels(data.num_classes, self.ipc, idx.device)}

    def _features(self, data, real: RealData, generator) -> torch.Tensor:
        if self.features == "pixels":
            return real.images.flatten(1)
        from ..evaluate import train_network
        from ..models import get_model

        images = real.images
        net = get_model(self.features, data.image_shape, data.num_classes, seed=draw_seed(generator),
                        device=images.device)
        dtype = resolve_precision(self.precision, images.device)
        if self.feature_epochs:
            train_network(net, images, real.labels, epochs=self.feature_epochs, generator=generator,
                          precision=precision_name(dtype))
        net.eval()
        return frozen_embed(net, images, dtype=dtype, chunk=chunk_size(tuple(images.shape[1:])))

    def _step(self, state: State, it: int):  # selection happens in _init_state
        return {}


@register_method
class RandomSubset(_Selection):
    """Random real images, ``ipc`` per class (distinct). The baseline every table starts from.

    Parameters
    ----------
    ipc : int, default=10
    random_state : int, Generator or None
    Other parameters as ``_Selection`` (features are unused).

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> RandomSubset(ipc=2, random_state=0).fit(load_dataset("digits")).synthetic_.images.shape
    torch.Size([20, 1, 8, 8])
    """

    name = "random"

    def _features(self, data, real, generator):
        return torch.zeros(len(real.labels), 1, device=real.labels.device)  # unused: no float copy of the data

    def _select(self, feats, ipc, generator):
        keys = torch.rand(feats.shape[0], generator=generator, device=generator.device)
        return torch.argsort(keys)[:ipc].to(feats.device)


@register_method
class Herding(_Selection):
    """Herding (Welling 2009): greedily pick the sample that keeps the running mean closest to the class mean.

    Parameters
    ----------
    ipc : int, default=10
    features : str, default="convnet"
    feature_epochs : int, default=5
    Other parameters as ``_Selection``.
    """

    name = "herding"

    def _select(self, feats, ipc, generator):
        mu = feats.mean(0)
        total = torch.zeros_like(mu)
        taken = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
        picks = []
        for t in range(ipc):
            # distance of the new running mean (total + x) / (t + 1) to mu, for every candidate x
            dist = ((total + feats) / (t + 1) - mu).pow(2).sum(1).masked_fill(taken, float("inf"))
            i = torch.argmin(dist)
            picks.append(i)
            taken[i] = True
            total = total + feats[i]
        return torch.stack(picks)


@register_method
class KCenter(_Selection):
    """k-center greedy (Sener & Savarese 2018): start at the sample nearest the class mean, then repeatedly
    add the sample farthest from the chosen ones.

    Parameters
    ----------
    ipc : int, default=10
    features : str, default="convnet"
    feature_epochs : int, default=5
    Other parameters as ``_Selection``.
    """

    name = "kcenter"

    def _select(self, feats, ipc, generator):
        first = torch.argmin((feats - feats.mean(0)).pow(2).sum(1))
        min_dist = (feats - feats[first]).pow(2).sum(1)
        picks = [first]
        for _ in range(ipc - 1):
            i = torch.argmax(min_dist)
            picks.append(i)
            min_dist = torch.minimum(min_dist, (feats - feats[i]).pow(2).sum(1))
        return torch.stack(picks)
