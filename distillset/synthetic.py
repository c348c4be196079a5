"""``SyntheticSet``: a distilled data set with everything needed to use, inspect and reproduce it.

Stored as two files, ``<stem>.safetensors`` (tensors) and ``<stem>.json`` (metadata): no pickle.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

from . import __version__
from ._io import atomic_save, atomic_write, check_writable
from .errors import CorruptFileError, InvalidParameterError, MissingDataError, require_type
from .formation import check_factor, decode, decode_labels


LABEL_KINDS = {"hard": "ce", "soft": "ce", "learned": "mse"}  # label kind -> the loss a network trains with


def infer_label_kind(labels: torch.Tensor) -> str:
    """``"hard"`` for (N,) indices; for (N, K) floats ``"soft"`` when each row is a distribution, else ``"learned"``."""
    if labels.dim() == 1:
        return "hard"
    y = labels.detach().float()
    is_distribution = bool((y >= 0).all()) and bool(torch.allclose(y.sum(1), torch.ones(len(y), device=y.device), atol=1e-3))
    return "soft" if is_distribution else "learned"


GRID_SOFTWARE = "distillset SyntheticSet.save_grid"  # the PNG text a grid carries (see drawn_by_save_grid)


def drawn_by_save_grid(path: Path) -> bool:
    """Whether the file at ``path`` is a PNG grid :meth:`SyntheticSet.save_grid` wrote (else it is the user's)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == GRID_SOFTWARE
    except Exception:  # not an image Pillow reads (OSError, DecompressionBombError...): someone else's file
        return False


def _stem(path: str | Path) -> Path:
    """``out/set``, ``out/set.json`` and ``out/set.safetensors`` all name the same pair of files."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def set_stem(path: str | Path) -> Path:
    """The stem of the saved set ``path`` names: a file of the pair, their stem, or a distill run's folder."""
    stem = _stem(path)
    if stem.is_dir() and (stem / "synthetic.json").is_file():  # the --out folder of `distillset distill`
        return stem / "synthetic"
    return stem


def _as_tensor(value, name: str, how: str = "") -> torch.Tensor:
    """A tensor as given; a NumPy array or nested list as a tensor (float64, NumPy's default, as float32:
    the networks' dtype). ``how`` ends the error message (a fix that fits ``name``)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidParameterError(f"SyntheticSet {name} must be a tensor, a NumPy array or a nested list of numbers. "
                                    f"Got {type(value).__name__} instead.{how}") from None
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _plain(value):
    """``value`` as its JSON file holds it: tuples as lists, NumPy and torch numbers and arrays as Python
    numbers and lists (JSON wrote those as text, ``"10"``, which :meth:`SyntheticSet.load` refused)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()  # a NumPy scalar's or a 0-d tensor's tolist() is a Python scalar
    return value


@dataclass
class SyntheticSet:
    """A synthetic (distilled) training set.

    Parameters
    ----------
    images : Tensor (N, C, H, W)
        Normalised float images (the space the networks see).
    labels : Tensor
        Hard int64 labels (N,) or soft / regression float targets (N, num_classes).
        Their kind (:attr:`label_kind`) says how a network must be trained on them (:attr:`loss`):
        ``"hard"`` class indices and ``"soft"`` probability rows train with cross-entropy; ``"learned"``
        regression targets (KIP's learned labels, LS's solved labels: centred one-hot space, rows sum to
        about 0) train with mean squared error. Methods record both in ``meta``.
    meta : dict
        Data set description (``ImageDataset.meta()``: name, source, mean, std, classes, image shape) plus
        method, hyper-parameters, seed and package version.
        Kept as its JSON file holds it: tuples become lists, NumPy and torch numbers Python ones.
    lrs : Tensor, optional
        Learned step sizes (DD), one per inner step; a single number becomes a tensor of shape (1,) (MTT's).
    extra : dict of Tensor
        Other tensors a method needs at evaluation (e.g. a ZCA matrix); NumPy arrays become tensors, any
        other value is an error (it belongs in ``meta``).

    Examples
    --------
    >>> s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"num_classes": 2, "mean": [0.], "std": [1.]})
    >>> s.ipc, s.num_classes
    (1, 2)
    """

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict = field(default_factory=dict)
    lrs: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images, self.labels = _as_tensor(self.images, "images"), _as_tensor(self.labels, "labels")
        if self.labels.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
            self.labels = self.labels.long()  # class indices as int32 / uint8 (NumPy's): the loss takes int64
        if self.images.dim() != 4:
            raise InvalidParameterError(f"SyntheticSet images must be (N, C, H, W). Got shape {tuple(self.images.shape)}.")
        if len(self) == 0:  # ipc, num_classes and every network trained on it need an image
            raise InvalidParameterError("SyntheticSet holds no images (N = 0); give at least one image and its label.")
        if self.labels.dim() not in (1, 2) or self.labels.shape[0] != self.images.shape[0]:
            raise InvalidParameterError(
                f"SyntheticSet has {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}; they must match: "
                "(N,) class indices or (N, num_classes) soft targets."
            )
        self._as_saved()

    def _as_saved(self) -> None:
        """``meta`` as its JSON file will hold it, ``lrs`` and ``extra`` as tensors: a float or a string there
        was an AttributeError at save or evaluation, a NumPy number in ``meta`` text that load refused."""
        for name, value in (("meta", self.meta), ("extra", self.extra)):
            if not isinstance(value, dict):
                raise InvalidParameterError(f"SyntheticSet {name} must be a dict. Got {type(value).__name__} instead.")
        self.meta = _plain(self.meta)
        self.meta.setdefault("version", __version__)
        if isinstance(self.lrs, numbers.Real) and not isinstance(self.lrs, bool):  # one step size, as MTT stores it
            self.lrs = torch.tensor([float(self.lrs)])
        elif self.lrs is not None:
            self.lrs = _as_tensor(self.lrs, "lrs")
        self.extra = {k: _as_tensor(v, f"extra[{k!r}]", " Keep other values in meta.") for k, v in self.extra.items()}

    def check(self) -> "SyntheticSet":
        """Raise :class:`InvalidParameterError` unless every tensor is usable for training; returns self.

        Checks dtypes, finite values, label kind and range, and agreement with the metadata
        (``num_classes``/``classes``, ``image_shape``, ``mean``/``std`` per channel): a set that fails
        would otherwise train to chance level or lose images silently.
        """
        x, y = self.images, self.labels
        if not x.is_floating_point():
            raise InvalidParameterError(f"The images must be float (normalised). Got dtype {x.dtype} instead.")
        k = self._declared_classes()
        if y.dim() == 1:
            if y.is_floating_point() or y.dtype == torch.bool:
                raise InvalidParameterError(f"Hard labels must be integer class indices. Got dtype {y.dtype} instead.")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or (k is not None and hi >= k):
                raise InvalidParameterError(f"Labels must lie in [0, {k if k is not None else 'num_classes'}). "
                                            f"Got values from {lo} to {hi}.")
        elif not y.is_floating_point() or (k is not None and y.shape[1] != k):
            raise InvalidParameterError(f"Soft labels must be float (N, {k if k is not None else 'num_classes'}). "
                                        f"Got dtype {y.dtype}, shape {tuple(y.shape)}.")
        c, h, w = x.shape[1:]
        shape = self.meta.get("image_shape")
        if shape is not None and list(shape) != [c, h, w]:
            raise InvalidParameterError(f"The images are {[c, h, w]} but the metadata says image_shape={shape}.")
        for key in ("mean", "std"):
            value = self.meta.get(key)
            if value is not None and not (isinstance(value, list) and len(value) == c and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise InvalidParameterError(f"The metadata's {key!r} must list one finite number per channel ({c}). "
                                            f"Got {value!r}.")
        kind, loss = self.meta.get("label_kind"), self.meta.get("loss")
        if kind is not None and (kind not in LABEL_KINDS or (kind == "hard") != (y.dim() == 1)):
            raise InvalidParameterError(f"The metadata's 'label_kind' is {kind!r}, which does not fit labels of shape "
                                        f"{tuple(y.shape)}: use 'hard' for (N,) class indices, 'soft' or 'learned' "
                                        "for (N, num_classes) float labels.")
        if loss is not None and loss not in ("ce", "mse"):
            raise InvalidParameterError(f"The metadata's 'loss' must be 'ce' or 'mse'. Got {loss!r}.")
        classes = self.meta.get("classes")
        if classes is not None and (not isinstance(classes, list) or (k is not None and len(classes) != k)):
            raise InvalidParameterError(f"The metadata's 'classes' must list {k} class names. Got {classes!r}.")
        factor = self.meta.get("factor", 1)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise InvalidParameterError(f"The metadata's 'factor' (multi-formation) must be an int >= 1. Got {factor!r}.")
        check_factor(factor, x.shape)
        if not isinstance(self.meta.get("dataset", ""), str):
            raise InvalidParameterError(f"The metadata's 'dataset' must be a data set name. "
                                        f"Got {self.meta['dataset']!r}.")
        d, zca = c * h * w, self.extra.get("zca")  # the evaluator whitens the (C, H, W) test images with it
        wants = {"zca": (d, d), "zca_mean": (d,)}
        for key in wants:
            t = self.extra.get(key) if key == "zca" or zca is not None else None
            if t is not None and (not t.is_floating_point() or t.numel() != math.prod(wants[key])):
                raise InvalidParameterError(f"extra[{key!r}] must be a float {wants[key]} tensor for images of "
                                            f"{[c, h, w]}. Got {t.dtype} {tuple(t.shape)}.")
        tensors = {"images": x, "labels": y, "lrs": self.lrs, **{f"extra.{k}": v for k, v in self.extra.items()}}
        for name, t in tensors.items():
            if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise InvalidParameterError(f"{name} holds {bad} NaN or infinite value(s); a network trained on "
                                            "them learns nothing. Re-create the set (the run may have diverged).")
        return self

    def _declared_classes(self) -> int | None:
        """The class count the metadata declares (``num_classes``, else ``len(classes)``), or None."""
        k = self.meta.get("num_classes", len(self.meta["classes"]) if isinstance(self.meta.get("classes"), list) else None)
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise InvalidParameterError(f"The metadata's 'num_classes' must be an int >= 1. Got {k!r} instead.")
        return k

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        if "num_classes" in self.meta:
            return int(self.meta["num_classes"])
        return int(self.labels.shape[1]) if self.labels.dim() == 2 else int(self.labels.max()) + 1

    @property
    def hard_labels(self) -> torch.Tensor:
        """Int64 labels (argmax of soft labels)."""
        return self.labels if self.labels.dim() == 1 else self.labels.argmax(1)

    @property
    def label_kind(self) -> str:
        """``"hard"``, ``"soft"`` or ``"learned"``: as recorded, else read off the labels (see the class doc).

        >>> SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([[0.9, -0.9], [-0.9, 0.9]])).label_kind
        'learned'
        """
        return self.meta.get("label_kind") or infer_label_kind(self.labels)

    @property
    def loss(self) -> str:
        """The loss a network must be trained with on these labels: as recorded, else by :attr:`label_kind`."""
        return self.meta.get("loss") or LABEL_KINDS[self.label_kind]

    @property
    def ipc(self) -> int:
        """Images per class: the largest class for hard labels, N // num_classes for soft ones."""
        if self.labels.dim() == 2:
            return len(self) // self.num_classes
        return int(torch.bincount(self.hard_labels.cpu(), minlength=self.num_classes).max())

    @property
    def factor(self) -> int:
        """Multi-formation factor (:mod:`distillset.formation`): each stored image holds factor x factor images."""
        return int(self.meta.get("factor", 1))

    def decoded(self) -> "SyntheticSet":
        """The images networks train on: each stored image cut into its factor x factor tiles, upsampled
        (:func:`distillset.formation.decode`); the set itself when ``factor`` is 1.

        >>> s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"factor": 2})
        >>> len(s.decoded()), s.decoded().labels.tolist(), s.decoded().factor
        (8, [0, 0, 0, 0, 1, 1, 1, 1], 1)
        """
        f = self.factor
        if f == 1:
            return self
        return SyntheticSet(decode(self.images.detach(), f), decode_labels(self.labels, f),
                            {**self.meta, "factor": 1, "stored_factor": f}, self.lrs, dict(self.extra))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "SyntheticSet":
        return SyntheticSet(self.images.to(device), self.labels.to(device), dict(self.meta),
                            None if self.lrs is None else self.lrs.to(device),
                            {k: v.to(device) for k, v in self.extra.items()})

    def as_dataset(self) -> torch.utils.data.TensorDataset:
        """A torch ``Dataset`` of (image, label) pairs."""
        return torch.utils.data.TensorDataset(self.images.detach().cpu(), self.labels.detach().cpu())

    def denormalized(self) -> torch.Tensor:
        """Images as float pixels in [0, 1] (clamped), for display."""
        c = self.images.shape[1]
        mean = torch.tensor(self.meta.get("mean", [0.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.meta.get("std", [1.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        return (self.images.detach().float().cpu() * std + mean).clamp(0, 1)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.safetensors`` and ``<stem>.json`` (each atomically); returns the stem.

        Raises
        ------
        InvalidParameterError
            The set fails :meth:`check` on the metadata as :meth:`load` will read it back; nothing is written
            (a pair already at ``path`` stays as it was).
        """
        require_type(path, (str, os.PathLike), "SyntheticSet.save's path", "Give a file name, e.g. 'runs/set'.")
        stem = _stem(path)
        # where load(path) would read another set (a run folder's) or none (".", ".."): a silent swap later
        if not stem.name or stem.name == ".." or set_stem(stem) != stem or (stem / "checkpoint").is_dir():
            raise InvalidParameterError(f"SyntheticSet.save's path {str(path)!r} names the folder {str(stem)!r} (a run's, "
                                        f"or the current one), not a file stem; give a name in it, e.g. "
                                        f"{str(stem / 'set')!r} (save writes <stem>.json and <stem>.safetensors).")
        for suffix in (".safetensors", ".json"):  # e.g. a file where its folder should be: before any write
            check_writable(Path(str(stem) + suffix), "SyntheticSet.save's path", folder=False)
        text = json.dumps(_plain(self.meta), indent=2, sort_keys=True, default=str)
        try:  # the set as load will read it back (fields may have been edited since construction), load's check
            saved = type(self)(self.images, self.labels, json.loads(text), self.lrs, self.extra).check()
        except InvalidParameterError as e:  # a file load refuses is never written
            raise InvalidParameterError(f"SyntheticSet.save wrote nothing to {stem}: {e}") from e
        tensors = {"images": saved.images, "labels": saved.labels}
        if saved.lrs is not None:
            tensors["lrs"] = saved.lrs
        tensors.update({f"extra.{k}": v for k, v in saved.extra.items()})
        blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        stem.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(str(stem) + ".safetensors", blob)
        atomic_write(str(stem) + ".json", text)
        return stem

    @classmethod
    def load(cls, path: str | Path) -> "SyntheticSet":
        """Read a set written by :meth:`save` (or the one in a ``distillset distill`` folder), validated by :meth:`check`.

        Raises
        ------
        MissingDataError
            Either file of the pair is missing.
        CorruptFileError
            A file cannot be parsed, or its contents fail :meth:`check` (the message names the file).
        """
        require_type(path, (str, os.PathLike), "SyntheticSet.load's path", "Give the set's .json or .safetensors file.")
        stem = set_stem(path)
        if stem.is_dir() and (stem / "checkpoint").is_dir():  # a distill run that has not written its set yet
            raise MissingDataError(f"{stem} is a distill run that has not finished (a checkpoint, no synthetic set "
                                   f"yet); finish it with 'distillset distill --out {stem} --resume' and its settings.")
        if stem.is_dir() and not Path(str(stem) + ".json").is_file():
            raise MissingDataError(f"{stem} is a folder without a synthetic set; give the set's .json or .safetensors "
                                   "file, or a distill run's --out folder.")
        st, js = Path(str(stem) + ".safetensors"), Path(str(stem) + ".json")
        for f in (st, js):
            if not f.is_file():
                raise MissingDataError(f"Synthetic set file not found: {f}. Pass the path given to SyntheticSet.save "
                                       f"(either file of the pair, or their common stem), or a distill run's folder.")
        try:
            tensors = load(st.read_bytes())
        except Exception as e:  # safetensors raises its own (Rust) error types on a damaged file
            raise CorruptFileError(f"Cannot read synthetic set file {st}: {e}. Re-create or re-download it.") from e
        try:
            meta = json.loads(js.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"Cannot read synthetic set file {js}: not valid JSON ({e}). Re-create the set, "
                                   "or restore this file as it was saved.") from e
        if not isinstance(meta, dict):
            raise CorruptFileError(f"Synthetic set file {js} must hold a JSON object (the set's metadata). "
                                   f"Got a {type(meta).__name__} instead.")
        missing = [k for k in ("images", "labels") if k not in tensors]
        if missing:
            raise CorruptFileError(f"Synthetic set file {st} has no {' or '.join(missing)} tensor; it is not a "
                                   "distillset set (SyntheticSet.save writes both).")
        extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        try:
            return cls(tensors["images"], tensors["labels"], meta, tensors.get("lrs"), extra).check()
        except InvalidParameterError as e:
            raise CorruptFileError(f"Synthetic set {stem}: {e} If its files were edited or mixed up, restore them "
                                   "as SyntheticSet.save wrote them.") from e

    # ------------------------------------------------------------------ pictures
    def grid(self, max_per_class: int | None = None, min_cell: int = 32) -> np.ndarray:
        """An (H, W, C) uint8 image: one row per class, de-normalised, small images upscaled (nearest)."""
        x = self.denormalized()
        y = self.hard_labels.cpu()
        per_class = [torch.nonzero(y == c).flatten()[:max_per_class] for c in range(self.num_classes)]
        cols = max(1, max(len(i) for i in per_class))
        _, ch, h, w = x.shape
        up = max(1, math.ceil(min_cell / max(h, w)))
        pad = 1
        cell_h, cell_w = h * up + pad, w * up + pad
        canvas = torch.ones(ch, self.num_classes * cell_h + pad, cols * cell_w + pad)
        for c, idx in enumerate(per_class):  # loop over classes only, to place rows
            if len(idx) == 0:
                continue
            imgs = x[idx].repeat_interleave(up, 2).repeat_interleave(up, 3)  # (k, C, h*up, w*up)
            for j in range(len(idx)):
                top, left = c * cell_h + pad, j * cell_w + pad
                canvas[:, top:top + h * up, left:left + w * up] = imgs[j]
        arr = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return arr[..., 0] if ch == 1 else arr

    def save_grid(self, path: str | Path, **kw) -> Path:
        """Save :meth:`grid` as an image in the format its suffix names (``.png``, ``.jpg``, ...; PNG when
        the suffix names none)."""
        from PIL import Image

        path = Path(path)
        check_writable(path, "SyntheticSet.save_grid's path", folder=False)  # e.g. a folder there: before drawing
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL.PngImagePlugin import PngInfo

        image = Image.fromarray(self.grid(**kw))
        kind = Image.registered_extensions().get(path.suffix.lower(), "PNG")
        mark = {}
        if kind == "PNG":  # `distillset show` redraws a grid it finds marked so, and keeps any other file
            mark["pnginfo"] = PngInfo()
            mark["pnginfo"].add_text("Software", GRID_SOFTWARE)
        return atomic_save(path, lambda buf: image.save(buf, format=kind, **mark))

    def png_paths(self, directory: str | Path) -> list[Path]:
        """Where :meth:`save_pngs` writes each image: ``<directory>/<class>_<index>.png``, the class name kept
        to letters, digits, spaces and dashes (Fashion-MNIST's "T-shirt/top" is ``T-shirt_top``: a name is
        never a path).

        >>> s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"classes": ["T-shirt/top", "../up"]})
        >>> [p.name for p in s.png_paths("pngs")]
        ['T-shirt_top_0000.png', '_up_0001.png']
        """
        classes = self.meta.get("classes") or [str(c) for c in range(self.num_classes)]
        names = [re.sub(r"[^\w\- ]+", "_", str(name)) or str(c) for c, name in enumerate(classes)]
        return [Path(directory) / f"{names[c]}_{i:04d}.png" for i, c in enumerate(self.hard_labels.tolist())]

    def save_pngs(self, directory: str | Path) -> list[Path]:
        """One PNG per image, named ``<class>_<index>.png`` (native resolution)."""
        from PIL import Image

        require_type(directory, (str, os.PathLike), "save_pngs' directory", "Give a folder name.")
        check_writable(Path(directory), "save_pngs' directory", folder=True)
        Path(directory).mkdir(parents=True, exist_ok=True)
        x = (self.denormalized() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = self.png_paths(directory)
        for p, img in zip(out, x):
            image = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            atomic_save(p, lambda buf: image.save(buf, format="PNG"))  # noqa: B023 (called right away)
        return out
