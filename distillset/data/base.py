"""Data set types and the data set registry.

Images are stored as ``uint8`` tensors of shape ``(N, C, H, W)`` (pixels 0..255), labels as
``int64`` of shape ``(N,)``. Methods and evaluation work on *normalised* float images,
``(x / 255 - mean) / std``, which :meth:`ImageDataset.normalize` computes; the constants live in the
data set's spec only, so data and models can't disagree.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._registry import Registry
from ..errors import InvalidParameterError, require_type


@dataclass
class Split:
    """One split of a data set: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        # errors, not asserts: a user builds splits by hand, and python -O drops asserts
        x, y = self.images, self.labels
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4):
            raise InvalidParameterError(f"Split images must be a uint8 tensor (N, C, H, W) of pixels 0..255. Got {_kind(x)} "
                                        "instead; convert floats in [0, 1] with (x * 255).round().to(torch.uint8) and "
                                        "a NumPy array with torch.from_numpy (channels last: .permute(0, 3, 1, 2)).")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (x.shape[0],)):
            raise InvalidParameterError(f"Split labels must be an int64 tensor (N,), one per image (N={x.shape[0]}). "
                                        f"Got {_kind(y)} instead; convert with labels.long() (NumPy: torch.from_numpy).")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _kind(value) -> str:
    """``value`` described for an error message: its type, and dtype and shape where it has them."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{type(value).__name__} (dtype {value.dtype}, shape {tuple(value.shape)})"
    return type(value).__name__


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a data set.

    Attributes
    ----------
    path : str
        Where the file goes, relative to the data root (``"mnist/train-images-idx3-ubyte.gz"``).
        A mirror (``$DISTILLSET_MIRROR``) is expected to serve it at ``<mirror>/<path>``.
    url : str
        Canonical download address.
    md5 : str or None
        Published md5 of the file; ``None`` means unknown (not checked, a warning says so).
    size : int or None
        Size in bytes, when known (informational).
    """

    path: str
    url: str
    md5: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class DatasetSpec:
    """What a data set is: names, constants, and the function that reads it from ``root``.

    ``read(root: Path, download: bool) -> (train, test)`` returns two :class:`Split`.
    It may also return ``(train, test, extra)`` where ``extra`` is a dict; ``extra["classes"]``
    (names read from the files) then overrides ``classes``, the rest lands in ``ImageDataset.extra``.
    ``mean``/``std`` of ``None`` mean "compute from the training split" (image folders).
    ``files`` lists the published files with their canonical URLs and md5s (for ``download=True``).
    """

    name: str
    classes: tuple[str, ...] | None
    image_shape: tuple[int, int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    read: Callable[..., tuple[Split, Split]]
    source: str = ""  # shown in every result, e.g. "CIFAR-10 lossy JPEG copy"
    description: str = ""
    files: tuple[RemoteFile, ...] = ()


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry under ``spec.name``.

    Parameters
    ----------
    spec : DatasetSpec

    Returns
    -------
    DatasetSpec
        ``spec`` itself. A name registered twice raises ``ValueError``.
    """
    return DATASETS.register(spec, name=spec.name)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered data set names matching a shell-style ``pattern``, sorted.

    Parameters
    ----------
    pattern : str, default="*"

    Returns
    -------
    list of str
    """
    return DATASETS.names(pattern)


def default_root() -> Path:
    """Data root: ``$DISTILLSET_DATA`` if set, else ``~/.cache/distillset/data``."""
    env = os.environ.get("DISTILLSET_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "distillset" / "data"


def per_class_mask(labels: torch.Tensor, num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    """A boolean mask choosing ``per_class`` items of each class (all of a smaller class), in a random
    order within each class fixed by ``seed``: depends only on the labels, ``per_class`` and ``seed``.

    >>> per_class_mask(torch.tensor([0, 0, 0, 1, 1]), 2, 1).tolist().count(True)
    2
    """
    g = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(len(labels), generator=g)  # a random order within each class, fixed by the seed
    order = torch.argsort(labels.double() + keys.double() / 2)  # class-major, shuffled within a class
    counts = torch.bincount(labels, minlength=num_classes)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank - first[labels] < per_class


@dataclass
class ImageDataset:
    """A loaded data set: train/test splits plus everything needed to use them.

    Attributes
    ----------
    name : str
        Registry name (``"mnist"``, ``"cifar10-jpeg"``, ...).
    train, test : Split
        uint8 images (N, C, H, W) and int64 labels.
    classes : list of str
    mean, std : tuple of float
        Per-channel normalisation constants for pixels in [0, 1].
    source : str
        Provenance label carried into every result (e.g. the JPEG copy of CIFAR-10).
    val : Split or None
        Validation images held out of the training split by :meth:`holdout` (None: no hold-out).

    Construction checks what a hand-built data set gets wrong, cheaply (label minimum and maximum, no
    per-image loop): every split is a :class:`Split` (wrap an ``(images, labels)`` pair in one) holding at
    least one image of the training images' (C, H, W), with labels in ``[0, len(classes))``; ``mean`` and
    ``std`` (a sequence, NumPy array or tensor) become one Python float per channel, ``std`` above 0.
    """

    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    root: str | None = None
    extra: dict = field(default_factory=dict)
    val: Split | None = None

    def __post_init__(self):
        # checked here, once: each of these failed only later, deep in fit or evaluation, as a raw error
        require_type(self.classes, (list, tuple), f"The classes of ImageDataset {self.name!r}", "List one name per class.")
        for key in ("train", "test", "val"):
            self._check_split(key)
        channels = self.image_shape[0]
        self.mean, self.std = self._per_channel("mean", channels), self._per_channel("std", channels)

    def _check_split(self, key: str) -> None:
        """Refuse a split that is not a non-empty :class:`Split` of the training images' (C, H, W) with labels
        in ``[0, num_classes)``; ``val`` may be None."""
        split, what = getattr(self, key), f"ImageDataset {self.name!r}"
        if split is None and key == "val":
            return
        require_type(split, Split, f"The {key} split of {what}", "Wrap the tensors: Split(images, labels).")
        if len(split) == 0 and key != "test":  # an empty test split is a data set's (select_classes of a folder
            # whose test split lacks those classes); the Evaluator refuses to score on it
            raise InvalidParameterError(f"The {key} split of {what} holds no images; give it at least one "
                                        "(fit distils from train, evaluation scores on test).")
        shape = tuple(split.images.shape[1:])
        if shape != self.image_shape:
            raise InvalidParameterError(f"The {key} images of {what} are {shape} but its training images are "
                                        f"{self.image_shape}; give every split one (C, H, W).")
        if len(split) == 0:
            return
        lo, hi, k = int(split.labels.min()), int(split.labels.max()), self.num_classes
        if lo < 0 or hi >= k:
            raise InvalidParameterError(f"The {key} labels of {what} must lie in [0, {k}) (one per class name). Got "
                                        f"values from {lo} to {hi}; name every class in classes, or relabel to 0..{k - 1}.")

    def _per_channel(self, key: str, channels: int) -> tuple[float, ...]:
        """``mean`` or ``std`` as one Python float per channel: a NumPy or torch number stored in a set's
        metadata made every later step refuse the set, and a wrong count broadcast silently."""
        value, positive = getattr(self, key), key == "std"  # the pixels are divided by std
        try:
            values = tuple(float(v) for v in (value.tolist() if hasattr(value, "tolist") else value))
        except (TypeError, ValueError):
            values = ()
        if isinstance(value, (str, bytes)) or len(values) != channels or not all(
                math.isfinite(v) and (v > 0 or not positive) for v in values):
            zero = " (0: computed from images whose pixels in that channel are all equal)" if positive and 0 in values else ""
            raise InvalidParameterError(f"The {key!r} of ImageDataset {self.name!r} must list one finite number"
                                        f"{' > 0' if positive else ''} per channel: {channels} for its training "
                                        f"images {self.image_shape}. Got {reprlib.repr(value)} instead{zero}.")
        return values

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 normalised, on the images' device."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        # in place on one fresh copy: a whole training split normalised at once holds one float copy, not three
        return images.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float -> float pixels in [0, 1] (clamped, for display)."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def holdout(self, val_per_class: int, seed: int = 0) -> "ImageDataset":
        """A copy whose training split lacks ``val_per_class`` images of each class, which become ``val``.

        The choice depends only on the training labels, ``val_per_class`` and ``seed``, so a method and an
        evaluator that hold out the same number get the same split: the validation images are never
        distilled from, and choices made on them (learning rate, epochs, checkpoint) never see the test set.

        >>> from distillset.data import load_dataset
        >>> d = load_dataset("digits").holdout(5)
        >>> len(d.val), int(d.class_counts("val").min()), len(d.train) + len(d.val) == len(load_dataset("digits").train)
        (50, 5, True)
        """
        if self.val is not None:
            raise InvalidParameterError(f"Data set {self.name!r} already holds out {len(self.val)} validation images; "
                                        "call holdout once, on the loaded data set.")
        counts = self.class_counts()
        if not isinstance(val_per_class, numbers.Integral) or isinstance(val_per_class, bool) or \
                not 1 <= val_per_class < int(counts.min()):
            raise InvalidParameterError(f"val_per_class must be an int in [1, {int(counts.min()) - 1}] for {self.name!r} "
                                        f"(its smallest class has {int(counts.min())} training images). Got {val_per_class!r}.")
        labels, val_per_class = self.train.labels, int(val_per_class)  # a NumPy int too, recorded as Python's
        is_val = per_class_mask(labels, self.num_classes, val_per_class, seed)
        return dataclasses.replace(self, train=Split(self.train.images[~is_val], labels[~is_val]),
                                   val=Split(self.train.images[is_val], labels[is_val]),
                                   extra={**self.extra, "val_per_class": val_per_class, "val_seed": int(seed)})

    def select_classes(self, classes: list[int]) -> "ImageDataset":
        """A copy holding only ``classes`` (every split), relabelled 0..len(classes)-1 in the given order;
        ``extra["class_ids"]`` maps the new labels back to the original ones.

        >>> from distillset.data import load_dataset
        >>> d = load_dataset("digits").select_classes([7, 2])
        >>> d.classes, d.num_classes, sorted(d.train.labels.unique().tolist()), d.extra["class_ids"]
        (['7', '2'], 2, [0, 1], [7, 2])
        """
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes) or not all(0 <= c < self.num_classes for c in classes):
            raise InvalidParameterError(f"classes must be distinct class indices in [0, {self.num_classes - 1}] of "
                                        f"{self.name!r}. Got {classes!r}.")
        new = torch.full((self.num_classes,), -1, dtype=torch.long)
        new[classes] = torch.arange(len(classes))

        def keep(split: Split | None) -> Split | None:
            if split is None:
                return None
            mine = new[split.labels] >= 0
            return Split(split.images[mine], new[split.labels[mine]])

        ids = [self.extra["class_ids"][c] for c in classes] if "class_ids" in self.extra else classes
        return dataclasses.replace(self, train=keep(self.train), test=keep(self.test), val=keep(self.val),
                                   classes=[self.classes[c] for c in classes], extra={**self.extra, "class_ids": ids})

    def with_train(self, indices: torch.Tensor) -> "ImageDataset":
        """A copy whose training split is ``train[indices]`` (test and validation unchanged)."""
        indices, n = torch.as_tensor(indices), len(self.train)
        if indices.dtype == torch.bool and indices.shape != (n,):
            raise InvalidParameterError(f"A with_train mask must hold one bool per training image of {self.name!r} "
                                        f"({n}). Got shape {tuple(indices.shape)}.")
        if indices.dtype != torch.bool and indices.numel() and not (-n <= indices.min() <= indices.max() < n):
            raise InvalidParameterError(f"with_train indices must lie in [0, {n - 1}] (the training split of "
                                        f"{self.name!r} holds {n} images). Got {indices.min()}..{indices.max()}.")
        return dataclasses.replace(self, train=Split(self.train.images[indices], self.train.labels[indices]))

    def class_counts(self, split: str = "train") -> torch.Tensor:
        return torch.bincount(getattr(self, split).labels, minlength=self.num_classes)

    def meta(self) -> dict:
        """JSON-able description stored with synthetic sets and results."""
        return {
            "dataset": self.name,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def require_dataset(data, what: str) -> None:
    """A loaded :class:`ImageDataset` as ``what`` (e.g. a data set's name there is one line with the fix)."""
    require_type(data, ImageDataset, what, "Load one first: distillset.data.load_dataset('digits'), or another name "
                 "from distillset.data.list_datasets().")
