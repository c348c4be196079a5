"""Pure readers for the original on-disk formats of the benchmark data sets.

Every reader takes paths and returns NumPy arrays: images ``uint8`` of shape ``(N, C, H, W)`` and
labels ``int64`` of shape ``(N,)``. None of them writes into the data folder; the image-folder
readers keep a decoded copy in a cache folder (see :func:`cache_dir`) so that a second load of
60,000 JPEGs takes about a second instead of decoding them again.

A file that exists but cannot be parsed raises :class:`~distillset.errors.CorruptFileError` with
the file name and what is wrong (bad magic number, truncated payload, wrong array shape, ...).

Formats
-------
IDX (MNIST, Fashion-MNIST, KMNIST)
    :func:`read_idx`, :func:`read_idx_images`, :func:`read_idx_labels`; ``.gz`` or raw.
CIFAR-10 / CIFAR-100 python batches
    :func:`read_cifar`, from the extracted folder or straight from the ``.tar.gz`` archive, through
    a restricted unpickler (:func:`safe_pickle_load`).
SVHN cropped digits ``.mat``
    :func:`read_svhn_mat`.
TinyImageNet-200 folder layout
    :func:`read_tinyimagenet`.
Image folders ``root/<split>/<class>/*.png``
    :func:`read_image_folder`, :func:`read_image_folder_tree`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple, Sequence

import numpy as np

from .._io import umask_mode
from ..errors import CorruptFileError, DataError, MissingDataError

log = logging.getLogger(__name__)

__all__ = [
    "Arrays",
    "RawDataset",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_idx_pair",
    "safe_pickle_load",
    "read_cifar_batch",
    "read_cifar",
    "CIFAR10_FILES",
    "CIFAR100_FILES",
    "read_svhn_mat",
    "read_tinyimagenet",
    "read_image_folder",
    "read_image_folder_tree",
    "decode_images",
    "cache_dir",
    "IMAGE_EXTENSIONS",
]


class Arrays(NamedTuple):
    """One split as NumPy arrays: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class RawDataset:
    """What a multi-file reader returns: both splits, the class names and extra metadata."""

    train: Arrays
    test: Arrays
    classes: list[str] | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# IDX (MNIST family)
# --------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# IDX type byte -> big-endian NumPy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when the file starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except FileNotFoundError:
        raise MissingDataError(f"File not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CorruptFileError(f"{path}: corrupt or truncated gzip stream ({e}). Delete it and download it again.") from e


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into an array of its native shape.

    Parameters
    ----------
    path : path-like
        ``.gz`` or uncompressed IDX file. Gzip is detected from the content, not the name.
    expected_magic : int, optional
        Required magic number, e.g. ``0x00000803`` for 3-d ``uint8`` images.

    Returns
    -------
    numpy.ndarray
        Array of shape given by the header, native byte order.

    Raises
    ------
    CorruptFileError
        Bad magic number, unknown type byte, or a payload whose size differs from the header's.
    MissingDataError
        The file does not exist.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise CorruptFileError(f"{path}: truncated: only {len(data)} bytes, not even an IDX header.")
    magic = int.from_bytes(data[:4], "big")
    zero, type_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        raise CorruptFileError(
            f"{path}: bad magic number 0x{magic:08X}, expected 0x{expected_magic:08X}. "
            "This is not the IDX file it should be (images and labels swapped, or another format?)."
        )
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise CorruptFileError(f"{path}: bad magic number 0x{magic:08X}: not an IDX file.")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CorruptFileError(f"{path}: truncated: header needs {header_len} bytes, file holds {len(data)}.")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        what = "truncated" if got < expected else "too long"
        if ndim == 3:
            desc = f"{dims[0]} images of {dims[1]}x{dims[2]}"
        elif ndim == 1:
            desc = f"{dims[0]} labels"
        else:
            desc = f"shape {dims}"
        raise CorruptFileError(
            f"{path}: {what}: header says {desc} ({expected} bytes of {dtype.name}) "
            f"but payload holds {got} bytes. Delete the file and download it again."
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (magic ``0x00000803``) as uint8 ``(N, 1, H, W)``.

    Parameters
    ----------
    path : path-like
        e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (N, 1, H, W).
    """
    return read_idx(path, IDX_IMAGES_MAGIC)[:, None]


def read_idx_labels(path: str | os.PathLike, num_classes: int | None = 10) -> np.ndarray:
    """Read an IDX label file (magic ``0x00000801``) as int64 ``(N,)``.

    Parameters
    ----------
    path : path-like
        e.g. ``train-labels-idx1-ubyte.gz``.
    num_classes : int or None, default=10
        When given, labels outside ``0..num_classes-1`` raise :class:`CorruptFileError`.

    Returns
    -------
    numpy.ndarray
        int64 array of shape (N,).
    """
    labels = read_idx(path, IDX_LABELS_MAGIC).astype(np.int64)
    if num_classes is not None and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptFileError(f"{path}: labels outside 0..{num_classes - 1} (min {labels.min()}, max {labels.max()}).")
    return labels


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int | None = 10) -> Arrays:
    """Read matching IDX image and label files and check that their counts agree.

    Parameters
    ----------
    images_path, labels_path : path-like
        The image (``idx3``) and label (``idx1``) files of one split.
    num_classes : int or None, default=10
        Label range check, see :func:`read_idx_labels`.

    Returns
    -------
    Arrays
        uint8 images (N, 1, H, W) and int64 labels (N,).
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, num_classes)
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels."
        )
    return Arrays(images, labels)


# --------------------------------------------------------------------------------------------
# CIFAR python batches
# --------------------------------------------------------------------------------------------

_ndarray_reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array reconstructor, whatever module it lives in

# The only globals a CIFAR batch may reference. Real batches hold a NumPy array under b'data', so the
# array reconstructor, ndarray and dtype are needed beside builtins; nothing else may be loaded.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,  # how protocol 2 stores bytes written by Python 3
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "bytes"): bytes,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a data batch (only dict/list/bytes/str/int "
                "and NumPy arrays are)"
            ) from None


def safe_pickle_load(fileobj: IO[bytes], name: str = "<stream>"):
    """Unpickle a data batch allowing only plain containers and NumPy arrays.

    Parameters
    ----------
    fileobj : binary file object
        Open pickle stream (protocol 2 as written by the CIFAR authors' Python 2).
    name : str
        File name used in error messages.

    Returns
    -------
    object
        The unpickled object, loaded with ``encoding='bytes'``.

    Raises
    ------
    CorruptFileError
        Truncated or invalid pickle, or one that references any other class or function.
    """
    try:
        return _RestrictedUnpickler(fileobj, encoding="bytes").load()
    except (MemoryError, RecursionError):
        raise
    except Exception as e:  # any failure to parse a batch means the file is damaged or not a batch
        raise CorruptFileError(f"{name}: cannot unpickle ({type(e).__name__}: {e}).") from e


def _bkey(d: dict, key: str):
    """``d[b'key']`` tolerating str keys (batches re-pickled by Python 3)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _decode_names(names) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def read_cifar_batch(obj, name: str = "<batch>", label_key: str = "labels",
                     num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one CIFAR python batch.

    Parameters
    ----------
    obj : path-like or binary file object
        The batch file (``data_batch_1``, ``test_batch``, ``train``, ``test``).
    name : str
        Name used in error messages (defaults to the path when ``obj`` is a path).
    label_key : {"labels", "fine_labels"}
        ``"labels"`` for CIFAR-10, ``"fine_labels"`` for CIFAR-100.
    num_classes : int, optional
        When given, labels outside ``0..num_classes-1`` raise :class:`CorruptFileError`.

    Returns
    -------
    images : numpy.ndarray
        uint8 (N, 3, 32, 32), from the R, G, B planes of each 3072-byte row.
    labels : numpy.ndarray
        int64 (N,).
    batch : dict
        The raw unpickled dict (for ``coarse_labels`` and the like).
    """
    if isinstance(obj, (str, os.PathLike)):
        name = str(obj) if name == "<batch>" else name
        try:
            with open(obj, "rb") as f:
                d = safe_pickle_load(f, name)
        except FileNotFoundError:
            raise MissingDataError(f"File not found: {obj}") from None
    else:
        d = safe_pickle_load(obj, name)
    if not isinstance(d, dict):
        raise CorruptFileError(f"{name}: expected a pickled dict, got {type(d).__name__}.")
    data, labels = _bkey(d, "data"), _bkey(d, label_key)
    if data is None or labels is None:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d)
        raise CorruptFileError(f"{name}: batch lacks 'data' or {label_key!r} (keys: {', '.join(keys)}).")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptFileError(f"{name}: 'data' should be uint8 of shape (N, 3072), got {data.dtype} {data.shape}.")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise CorruptFileError(f"{name}: {len(data)} images but {len(labels)} labels.")
    if num_classes is not None and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptFileError(f"{name}: labels outside 0..{num_classes - 1}.")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels, d


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int


CIFAR10_FILES = _CifarLayout(
    folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",), meta="batches.meta",
    label_key="labels", names_key="label_names", num_classes=10,
)
CIFAR100_FILES = _CifarLayout(
    folder="cifar-100-python", archive="cifar-100-python.tar.gz",
    train=("train",), test=("test",), meta="meta",
    label_key="fine_labels", names_key="fine_label_names", num_classes=100,
)


def _cifar_members_from_tar(archive: Path, layout: _CifarLayout) -> dict[str, bytes]:
    """The needed batch files' bytes, in one streaming pass over the archive (no extraction)."""
    wanted = set(layout.train + layout.test + (layout.meta,))
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    f = tar.extractfile(member)
                    assert f is not None
                    found[base] = f.read()
    except FileNotFoundError:
        raise MissingDataError(f"File not found: {archive}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CorruptFileError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}).") from e
    missing = sorted(wanted - set(found) - {layout.meta})
    if missing:
        raise CorruptFileError(f"{archive}: archive lacks {', '.join(missing)} (is it the right archive?).")
    return found


def read_cifar(path: str | os.PathLike, variant: str = "cifar10") -> RawDataset:
    """Read CIFAR-10 or CIFAR-100 from the batches folder or the ``.tar.gz`` archive.

    Parameters
    ----------
    path : path-like
        Either the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or the archive
        (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``), read without extracting.
    variant : {"cifar10", "cifar100"}

    Returns
    -------
    RawDataset
        50000 train and 10000 test images (uint8, (N, 3, 32, 32)), class names from the meta file
        (``None`` if it is absent) and, for CIFAR-100, ``extra["coarse_labels"]`` / ``extra["coarse_classes"]``.
    """
    layout = {"cifar10": CIFAR10_FILES, "cifar100": CIFAR100_FILES}[variant]
    path = Path(path)
    if path.is_dir():
        def get(name):
            p = path / name
            if not p.is_file():
                raise MissingDataError(f"File not found: {p}")
            return open(p, "rb"), str(p)
        meta_path = path / layout.meta
        has_meta = meta_path.is_file()
    else:
        blobs = _cifar_members_from_tar(path, layout)
        def get(name):
            return io.BytesIO(blobs[name]), f"{path}:{name}"
        has_meta = layout.meta in blobs

    def read_split(names):
        xs, ys, coarse = [], [], []
        for n in names:
            f, label = get(n)
            with f:
                x, y, d = read_cifar_batch(f, label, layout.label_key, layout.num_classes)
            xs.append(x)
            ys.append(y)
            c = _bkey(d, "coarse_labels")
            if c is not None:
                coarse.append(np.asarray(c, dtype=np.int64))
        return Arrays(np.concatenate(xs), np.concatenate(ys)), (np.concatenate(coarse) if coarse else None)

    train, train_coarse = read_split(layout.train)
    test, test_coarse = read_split(layout.test)
    classes, extra = None, {}
    if has_meta:
        f, label = get(layout.meta)
        with f:
            meta = safe_pickle_load(f, label)
        names = _bkey(meta, layout.names_key) if isinstance(meta, dict) else None
        if names is not None:
            classes = _decode_names(names)
        coarse_names = _bkey(meta, "coarse_label_names") if isinstance(meta, dict) else None
        if coarse_names is not None:
            extra["coarse_classes"] = _decode_names(coarse_names)
    if train_coarse is not None:
        extra["coarse_labels"] = {"train": train_coarse, "test": test_coarse}
    return RawDataset(train, test, classes, extra)


# --------------------------------------------------------------------------------------------
# SVHN .mat
# --------------------------------------------------------------------------------------------


def read_svhn_mat(path: str | os.PathLike) -> Arrays:
    """Read an SVHN cropped-digits file (``train_32x32.mat`` / ``test_32x32.mat``).

    Parameters
    ----------
    path : path-like
        MATLAB file with ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) labels 1..10, where 10 is digit 0.

    Returns
    -------
    Arrays
        uint8 images (N, 3, 32, 32) and int64 labels 0..9 (label 10 mapped to 0).
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"File not found: {path}")
    try:
        m = scipy.io.loadmat(path, variable_names=["X", "y"])
    except MemoryError:
        raise
    except Exception as e:  # scipy raises ValueError, OSError, TypeError... on damaged files
        raise CorruptFileError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e}).") from e
    if "X" not in m or "y" not in m:
        raise CorruptFileError(f"{path}: MATLAB file lacks the 'X' and 'y' variables of SVHN.")
    x, y = m["X"], np.asarray(m["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise CorruptFileError(f"{path}: 'X' should be uint8 (H, W, 3, N), got {x.dtype} {x.shape}.")
    if x.shape[3] != len(y):
        raise CorruptFileError(f"{path}: {x.shape[3]} images but {len(y)} labels.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise CorruptFileError(f"{path}: labels outside 1..10 (min {y.min()}, max {y.max()}).")
    y[y == 10] = 0
    return Arrays(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y)


# --------------------------------------------------------------------------------------------
# Decoding image files, with an on-disk cache of the decoded arrays
# --------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
CACHE_VERSION = 1
_GRAY_MODES = {"1", "L", "LA", "P;L", "I", "I;16", "I;16B", "I;16L", "F"}


def cache_dir() -> Path:
    """Folder for decoded-image caches: ``decoded/`` under the library's one cache root
    (:func:`distillset.cache.cache_root`: ``$DISTILLSET_CACHE``, else ``~/.cache/distillset``), where
    ``distillset cache list`` / ``clear`` see it. Never inside a data root.

    ``$DISTILLSET_CACHE_DIR``, this folder's own variable before the two caches shared a root, is still
    honoured for one release, with a FutureWarning.

    Returns
    -------
    pathlib.Path
    """
    from ..cache import DECODED, cache_root

    legacy = os.environ.get("DISTILLSET_CACHE_DIR")
    if legacy:
        warnings.warn("$DISTILLSET_CACHE_DIR is deprecated and will be ignored in the next release: set "
                      "$DISTILLSET_CACHE, the root of every cache (decoded images go to its decoded/ folder).",
                      FutureWarning, stacklevel=2)
        return Path(legacy).expanduser()
    return cache_root() / DECODED


def _decode_one(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode == "auto":
                mode = "L" if im.mode in _GRAY_MODES else "RGB"
            arr = np.asarray(im.convert(mode))
    except FileNotFoundError:
        raise MissingDataError(f"File not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(f"{path}: cannot decode image ({type(e).__name__}: {e}); replace or remove the "
                               "file.") from e
    return arr if arr.ndim == 3 else arr[:, :, None]


def decode_images(paths: Sequence[str | os.PathLike], workers: int | None = None) -> np.ndarray:
    """Decode image files into one uint8 ``(N, C, H, W)`` array, using a thread pool.

    Grayscale images give ``C = 1``; if any image is in colour, all are converted to RGB (``C = 3``).

    Parameters
    ----------
    paths : sequence of path-like
        Image files, all of the same height and width.
    workers : int, optional
        Decoding threads (default ``min(8, os.cpu_count())``).

    Returns
    -------
    numpy.ndarray
        uint8 (N, C, H, W), in the order of ``paths``.

    Raises
    ------
    CorruptFileError
        A file that Pillow cannot decode.
    DataError
        Images of different sizes (resize them first).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("decode_images: no image files given.")
    first = _decode_one(paths[0], "auto")
    h, w, c = first.shape
    out = np.empty((len(paths), c, h, w), dtype=np.uint8)
    needs_rgb: list[int] = []

    def work(lo: int, hi: int) -> list[int]:
        promote = []
        for i in range(lo, hi):
            arr = _decode_one(paths[i], "auto")
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"Images differ in size: {paths[0]} is {w}x{h} but {paths[i]} is "
                    f"{arr.shape[1]}x{arr.shape[0]}; resize them to one size first."
                )
            if arr.shape[2] != c:
                if c == 3:
                    arr = np.repeat(arr, 3, axis=2)
                else:
                    promote.append(i)
                    continue
            out[i] = arr.transpose(2, 0, 1)
        return promote

    n = len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(64, -(-n // (workers * 8)))
    ranges = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    if workers <= 1 or len(ranges) == 1:
        results = [work(lo, hi) for lo, hi in ranges]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(lambda r: work(*r), ranges))
    for r in results:
        needs_rgb.extend(r)
    if needs_rgb:  # a grayscale first image, but colour ones later: redo as RGB
        rgb = np.repeat(out, 3, axis=1)
        for i in needs_rgb:
            rgb[i] = _decode_one(paths[i], "RGB").transpose(2, 0, 1)
        out = rgb
    return out


def _fingerprint(folder: Path, paths: Sequence[Path], labels: np.ndarray, classes: Sequence[str]) -> str:
    """Cheap content key: relative names, sizes and mtimes of all files, plus labels and classes."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}\0{folder}\0{len(paths)}\0".encode())
    h.update("\0".join(classes).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.relpath(p, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cached_decode(folder: Path, tag: str, paths: list[Path], labels: np.ndarray, classes: list[str],
                   cache: bool | str | os.PathLike = True, workers: int | None = None) -> np.ndarray:
    """Decode ``paths`` or load them from the cache, keyed by folder path and fingerprint."""
    folder = folder.resolve()
    if cache is False or cache is None:
        return decode_images(paths, workers)
    cdir = cache_dir() if cache is True else Path(cache)
    key_path = hashlib.sha256(f"{folder}\0{tag}".encode()).hexdigest()[:16]
    fp = _fingerprint(folder, paths, labels, classes)[:24]
    target = cdir / f"{key_path}-{fp}.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as z:
                images = z["images"]
                ok = len(images) == len(paths) and np.array_equal(z["labels"], labels)
            if ok:
                log.debug("decoded images of %s loaded from cache %s", folder, target)
                return images
        except Exception as e:  # a damaged cache file is just a cache miss
            log.warning("ignoring unreadable cache %s (%s)", target, e)
    images = decode_images(paths, workers)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        for old in cdir.glob(f"{key_path}-*.npz"):  # stale copies of the same folder
            if old != target:
                old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cdir, prefix=f".{key_path}-", suffix=".npz.part")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str),
                         folder=np.array(str(folder)))
            umask_mode(tmp)  # mkstemp made it 0600
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.warning("could not write decoded-image cache in %s (%s); continuing without it", cdir, e)
    return images


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_image_folder(folder: Path, classes: Sequence[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    if not folder.is_dir():
        raise MissingDataError(f"Image folder not found: {folder}")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = found
    else:
        classes = list(classes)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{folder}: class folders {', '.join(unknown)} are not among the training classes "
                f"({', '.join(classes)}); a test class needs training images: add its folder to the training "
                "images, or remove it here."
            )
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for c in found:
        names = sorted(n for n in os.listdir(folder / c) if _is_image(n))
        paths.extend(folder / c / n for n in names)
        labels.extend([index[c]] * len(names))
    if not paths:
        raise MissingDataError(
            f"No images found under {folder}: expected {folder}/<class>/*.png|jpg|jpeg "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)})."
        )
    return paths, np.asarray(labels, dtype=np.int64), list(classes)


def read_image_folder(folder: str | os.PathLike, classes: Sequence[str] | None = None, *,
                      cache: bool | str | os.PathLike = True, workers: int | None = None
                      ) -> tuple[Arrays, list[str]]:
    """Read one split stored as ``folder/<class>/<image>``.

    Class names are the sorted sub-folder names (label ids 0..K-1 in that order) unless ``classes``
    fixes them (e.g. the training classes, for the test split). Files are read in sorted order.

    Parameters
    ----------
    folder : path-like
        The split folder, e.g. ``cifar10-jpeg/train``.
    classes : sequence of str, optional
        Class names defining the label ids; sub-folders not in it raise :class:`DataError`.
    cache : bool or path-like, default=True
        Keep the decoded arrays in :func:`cache_dir` (or the given folder) as ``.npz``, keyed by the
        folder path and a fingerprint of the file names, sizes and mtimes. ``False`` decodes every time.
    workers : int, optional
        Decoding threads.

    Returns
    -------
    split : Arrays
        uint8 images (N, C, H, W) and int64 labels.
    classes : list of str
    """
    folder = Path(folder)
    paths, labels, classes = _list_image_folder(folder, classes)
    images = _cached_decode(folder, "imagefolder", paths, labels, classes, cache, workers)
    return Arrays(images, labels), classes


def read_image_folder_tree(root: str | os.PathLike, *, cache: bool | str | os.PathLike = True,
                           workers: int | None = None) -> RawDataset:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` (``val`` if there is no ``test``).

    Parameters
    ----------
    root : path-like
        Tree with ``train`` and ``test`` (or ``val``) split folders.
    cache, workers
        See :func:`read_image_folder`.

    Returns
    -------
    RawDataset
        Labels follow the sorted class folders of ``train``.
    """
    root = Path(root)
    test_dir = root / "test"
    if not test_dir.is_dir() and (root / "val").is_dir():
        test_dir = root / "val"
    missing = [str(p) for p in (root / "train", test_dir) if not p.is_dir()]
    if missing:
        raise MissingDataError(
            f"Image folder tree incomplete: {' and '.join(missing)} not found. Expected "
            f"{root}/train/<class>/*.png|jpg and {root}/test/<class>/*.png|jpg; point root=... (CLI: --data-root) "
            "at the tree's folder."
        )
    train, classes = read_image_folder(root / "train", cache=cache, workers=workers)
    test, _ = read_image_folder(test_dir, classes, cache=cache, workers=workers)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{root}: train images are {train.images.shape[1:]} but test images {test.images.shape[1:]}.")
    return RawDataset(train, test, classes, {"test_folder": test_dir.name})


# --------------------------------------------------------------------------------------------
# TinyImageNet-200
# --------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.rstrip("\n\r") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        raise MissingDataError(f"File not found: {path}") from None


def read_tinyimagenet(root: str | os.PathLike, *, cache: bool | str | os.PathLike = True,
                      workers: int | None = None) -> RawDataset:
    """Read the TinyImageNet-200 folder layout; the labelled ``val`` split serves as test.

    Layout: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG``
    with ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box...``). Label ids follow the sorted
    wnids. Grayscale images are converted to RGB.

    Parameters
    ----------
    root : path-like
        The ``tiny-imagenet-200`` folder.
    cache, workers
        See :func:`read_image_folder`.

    Returns
    -------
    RawDataset
        uint8 (N, 3, 64, 64) images; ``classes`` are the first name in ``words.txt`` for each wnid
        (the wnid if absent); ``extra["wnids"]`` lists the wnids in label order.
    """
    root = Path(root)
    wnids = sorted(set(_read_lines(root / "wnids.txt")))
    if not wnids:
        raise CorruptFileError(f"{root / 'wnids.txt'}: empty.")
    index = {w: i for i, w in enumerate(wnids)}
    words: dict[str, str] = {}
    if (root / "words.txt").is_file():
        for ln in _read_lines(root / "words.txt"):
            wnid, _, text = ln.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    if len(set(names)) != len(names):  # keep names unique
        names = [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]

    train_paths: list[Path] = []
    train_labels: list[int] = []
    for w in wnids:
        d = root / "train" / w / "images"
        if not d.is_dir():
            raise MissingDataError(f"TinyImageNet train folder not found: {d}")
        files = sorted(n for n in os.listdir(d) if _is_image(n))
        train_paths.extend(d / n for n in files)
        train_labels.extend([index[w]] * len(files))

    ann = root / "val" / "val_annotations.txt"
    val_paths: list[Path] = []
    val_labels: list[int] = []
    for k, ln in enumerate(_read_lines(ann), 1):
        parts = ln.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise CorruptFileError(f"{ann}: line {k} is not '<file>\\t<wnid>...' with a known wnid: {ln!r}")
        val_paths.append(root / "val" / "images" / parts[0])
        val_labels.append(index[parts[1]])

    ytr = np.asarray(train_labels, dtype=np.int64)
    yte = np.asarray(val_labels, dtype=np.int64)
    xtr = _cached_decode(root / "train", "tinyimagenet-train", train_paths, ytr, wnids, cache, workers)
    xte = _cached_decode(root / "val", "tinyimagenet-val", val_paths, yte, wnids, cache, workers)
    if xtr.shape[1] == 1:
        xtr = np.repeat(xtr, 3, axis=1)
    if xte.shape[1] == 1:
        xte = np.repeat(xte, 3, axis=1)
    return RawDataset(Arrays(xtr, ytr), Arrays(xte, yte), names, {"wnids": wnids})

