"""Writers of tiny data files in the original formats, and a local HTTP server, for tests/data."""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path | None:
    """``$DISTILLSET_SHARED_DATA`` or ``<repo>/../shared/data``, if it exists."""
    env = os.environ.get("DISTILLSET_SHARED_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


def require_shared(sub: str) -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared data not found: set DISTILLSET_SHARED_DATA or provide <repo>/../shared/data")
    if not (root / sub).is_dir():
        pytest.skip(f"shared data has no {sub}/ folder ({root})")
    return root


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """The cache root in a temp folder, so tests never touch ~/.cache; returns its decoded-image folder."""
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILLSET_CACHE_DIR", raising=False)
    monkeypatch.delenv("DISTILLSET_MIRROR", raising=False)
    return tmp_path / "cache" / "decoded"


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ---- IDX ------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else (0x0800 | arr.ndim)
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path, arr, gz: bool = True, magic: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(arr, magic)
    if gz:
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_idx_set(folder, n_train=30, n_test=10, size=28, gz=True, seed=0):
    """Four MNIST-named IDX files; returns (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    xte = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    folder = Path(folder)
    write_idx(folder / f"train-images-idx3-ubyte{ext}", xtr, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", ytr, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", xte, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", yte, gz)
    return xtr, ytr, xte, yte


# ---- CIFAR ----------------------------------------------------------------------------------


def _batch(rng, n, label_key, num_classes):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, n)]
    d = {b"batch_label": b"testing batch", label_key.encode(): labels, b"data": data,
         b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if label_key == "fine_labels":
        d[b"coarse_labels"] = [v // 5 for v in labels]
    return d


def make_cifar(folder, variant="cifar10", n=8, archive=False, seed=0):
    """A tiny CIFAR-10/100 in the original pickle format (folder or tar.gz); returns expected arrays."""
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        top, arch = "cifar-10-batches-py", "cifar-10-python.tar.gz"
        train_names, test_names, meta_name = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"
        key, k = "labels", 10
        meta = {b"label_names": [c.encode() for c in
                                 ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")],
                b"num_cases_per_batch": n, b"num_vis": 3072}
    else:
        top, arch = "cifar-100-python", "cifar-100-python.tar.gz"
        train_names, test_names, meta_name = ["train"], ["test"], "meta"
        key, k = "fine_labels", 100
        meta = {b"fine_label_names": [f"class{i:03d}".encode() for i in range(100)],
                b"coarse_label_names": [f"super{i:02d}".encode() for i in range(20)]}
    blobs, xs, ys = {}, {"train": [], "test": []}, {"train": [], "test": []}
    for split, names in (("train", train_names), ("test", test_names)):
        for name in names:
            b = _batch(rng, n, key, k)
            blobs[name] = pickle.dumps(b, protocol=2)
            xs[split].append(b[b"data"].reshape(-1, 3, 32, 32))
            ys[split].append(np.array(b[key.encode()]))
    blobs[meta_name] = pickle.dumps(meta, protocol=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        path = folder / arch
        with tarfile.open(path, "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        path = folder / top
        path.mkdir(exist_ok=True)
        for name, blob in blobs.items():
            (path / name).write_bytes(blob)
    expected = {s: (np.concatenate(xs[s]), np.concatenate(ys[s])) for s in xs}
    return path, expected


# ---- SVHN -----------------------------------------------------------------------------------


def write_svhn(path, n=12, seed=0):
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)  # 1..10, 10 = digit 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


# ---- image folders --------------------------------------------------------------------------


def save_image(path, arr, fmt=None):
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    img.save(path, format=fmt, **({"quality": 95} if str(path).lower().endswith((".jpg", ".jpeg")) else {}))


def make_image_folder(root, classes=("cat", "dog", "frog"), per_class=(3, 2), size=8, ext=".png",
                      gray=False, seed=0):
    """``root/{train,test}/<class>/NN<ext>``; returns {split: (images (N,C,H,W), labels)} for PNG."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    out = {}
    for split, k in zip(("train", "test"), per_class):
        xs, ys = [], []
        for ci, c in enumerate(sorted(classes)):
            for i in range(k):
                shape = (size, size) if gray else (size, size, 3)
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                save_image(root / split / c / f"{i:02d}{ext}", a)
                xs.append(a[None] if gray else a.transpose(2, 0, 1))
                ys.append(ci)
        out[split] = (np.stack(xs), np.array(ys))
    return out


def make_tinyimagenet(root, wnids=("n02", "n01", "n03"), n_train=2, n_val=4, size=64, seed=0):
    """A miniature tiny-imagenet-200 tree (PNG bytes named .JPEG would not be faithful: we write JPEG)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tname of {w}, other name\n" for w in wnids) + "n99\tunused\n")
    for w in wnids:
        for i in range(n_train):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            save_image(root / "train" / w / "images" / f"{w}_{i}.JPEG", a, fmt="JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i in range(n_val):
        w = wnids[i % len(wnids)]
        if i == 0:  # one grayscale image, as in the real data
            save_image(root / "val" / "images" / f"val_{i}.JPEG", rng.integers(0, 256, (size, size), dtype=np.uint8), "JPEG")
        else:
            save_image(root / "val" / "images" / f"val_{i}.JPEG", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t{size - 1}\t{size - 1}\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


# ---- HTTP -----------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(directory):
    """Serve ``directory`` on 127.0.0.1 at an ephemeral port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)
