"""Each reader on tiny files in the original formats, written by the tests themselves."""
import gzip
import io
import os
import pickle
import stat

import numpy as np
import pytest
from dsdata_helpers import (
    idx_bytes,
    isolated_cache,  # noqa: F401  (fixture)
    make_cifar,
    make_idx_set,
    make_image_folder,
    make_tinyimagenet,
    write_idx,
    write_svhn,
)

from distillset.data import readers
from distillset.errors import CorruptFileError, DataError, MissingDataError

# ---- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_roundtrip(tmp_path, gz):
    xtr, ytr, _, _ = make_idx_set(tmp_path, gz=gz)
    ext = ".gz" if gz else ""
    a = readers.read_idx_pair(tmp_path / f"train-images-idx3-ubyte{ext}", tmp_path / f"train-labels-idx1-ubyte{ext}")
    assert a.images.dtype == np.uint8 and a.images.shape == (30, 1, 28, 28)
    assert a.labels.dtype == np.int64 and a.labels.shape == (30,)
    np.testing.assert_array_equal(a.images[:, 0], xtr)
    np.testing.assert_array_equal(a.labels, ytr)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / "images-without-gz-suffix", x, gz=True)
    np.testing.assert_array_equal(readers.read_idx_images(p)[:, 0], x)


def test_idx_truncated_names_file_and_sizes(tmp_path):
    data = idx_bytes(np.zeros((60, 28, 28), np.uint8))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(data[: len(data) - 100])
    with pytest.raises(CorruptFileError) as e:
        readers.read_idx_images(p)
    msg = str(e.value)
    assert str(p) in msg and "truncated" in msg and "60 images of 28x28" in msg
    assert str(60 * 28 * 28 - 100) in msg


def test_idx_truncated_gzip_stream(tmp_path):
    p = write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28), np.uint8))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="t.gz"):
        readers.read_idx_images(p)


def test_idx_bad_magic(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", np.arange(10, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match=r"bad magic number 0x00000801, expected 0x00000803"):
        readers.read_idx_images(labels)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(CorruptFileError, match="bad magic"):
        readers.read_idx(junk)


def test_idx_count_mismatch_and_label_range(tmp_path):
    xi = write_idx(tmp_path / "i.gz", np.zeros((5, 4, 4), np.uint8))
    yl = write_idx(tmp_path / "l.gz", np.zeros(4, np.uint8))
    with pytest.raises(CorruptFileError, match="5 images but .* 4 labels"):
        readers.read_idx_pair(xi, yl)
    bad = write_idx(tmp_path / "bad.gz", np.array([0, 1, 12], np.uint8))
    with pytest.raises(CorruptFileError, match="labels outside"):
        readers.read_idx_labels(bad)


def test_idx_missing_file(tmp_path):
    with pytest.raises(MissingDataError, match="nope.gz"):
        readers.read_idx(tmp_path / "nope.gz")


# ---- CIFAR -----------------------------------------------------------------------------------


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_folder_and_archive(tmp_path, variant, archive):
    path, expected = make_cifar(tmp_path, variant, n=6, archive=archive)
    raw = readers.read_cifar(path, variant)
    for split in ("train", "test"):
        a = getattr(raw, split)
        x, y = expected[split]
        assert a.images.dtype == np.uint8 and a.images.shape[1:] == (3, 32, 32)
        np.testing.assert_array_equal(a.images, x)
        np.testing.assert_array_equal(a.labels, y)
        assert a.labels.dtype == np.int64
    if variant == "cifar10":
        assert len(raw.train.labels) == 30 and raw.classes[0] == "airplane" and len(raw.classes) == 10
    else:
        assert len(raw.train.labels) == 6 and raw.classes[5] == "class005" and len(raw.classes) == 100
        np.testing.assert_array_equal(raw.extra["coarse_labels"]["train"], expected["train"][1] // 5)
        assert len(raw.extra["coarse_classes"]) == 20


def test_cifar_plane_order(tmp_path):
    """A row of 3072 bytes is the R plane, then G, then B (row-major 32x32 each)."""
    path, _ = make_cifar(tmp_path, n=1)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    b = {b"data": row[None], b"labels": [3]}
    with open(path / "test_batch", "wb") as f:
        pickle.dump(b, f, protocol=2)
    raw = readers.read_cifar(path)
    img = raw.test.images[0]
    assert (img[0] == 10).all() and (img[1] == 20).all()
    assert img[2, 0, 5] == 5 and img[2, 1, 0] == 32


def test_cifar_restricted_unpickler_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    blob = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    with pytest.raises(CorruptFileError, match="not allowed"):
        readers.read_cifar_batch(io.BytesIO(blob), "evil_batch")


def test_cifar_corrupt_batch_and_archive(tmp_path):
    path, _ = make_cifar(tmp_path / "f", n=4)
    raw = (path / "data_batch_2").read_bytes()
    (path / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="data_batch_2"):
        readers.read_cifar(path)
    arch, _ = make_cifar(tmp_path / "a", n=4, archive=True)
    raw = arch.read_bytes()
    arch.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="cifar-10-python.tar.gz"):
        readers.read_cifar(arch)


def test_cifar_wrong_shape(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    with pytest.raises(CorruptFileError, match=r"\(N, 3072\)"):
        readers.read_cifar_batch(io.BytesIO(blob), "b")


# ---- SVHN ------------------------------------------------------------------------------------


def test_svhn_mat(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", n=12)
    a = readers.read_svhn_mat(tmp_path / "train_32x32.mat")
    assert a.images.shape == (12, 3, 32, 32) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images[3], x[:, :, :, 3].transpose(2, 0, 1))
    assert a.labels.dtype == np.int64
    assert a.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 -> 0


def test_svhn_corrupt(tmp_path):
    p = tmp_path / "test_32x32.mat"
    write_svhn(p, n=40)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CorruptFileError, match="test_32x32.mat"):
        readers.read_svhn_mat(p)


# ---- image folders ---------------------------------------------------------------------------


def test_image_folder_png_exact_and_cached(tmp_path, isolated_cache):
    exp = make_image_folder(tmp_path / "tree", ext=".png")
    raw = readers.read_image_folder_tree(tmp_path / "tree")
    assert raw.classes == ["cat", "dog", "frog"]
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(raw, split).images, exp[split][0])
        np.testing.assert_array_equal(getattr(raw, split).labels, exp[split][1])
    cached = sorted(isolated_cache.glob("*.npz"))
    assert len(cached) == 2  # one per split
    assert not any(p.suffix == ".npz" for p in (tmp_path / "tree").rglob("*"))  # nothing written in the data
    # second read comes from the cache (break decoding to prove it)
    orig = readers.decode_images
    readers.decode_images = lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again"))
    try:
        again = readers.read_image_folder_tree(tmp_path / "tree")
    finally:
        readers.decode_images = orig
    np.testing.assert_array_equal(again.train.images, raw.train.images)


def test_image_folder_cache_invalidated_on_change(tmp_path, isolated_cache):
    make_image_folder(tmp_path / "tree", ext=".png")
    a = readers.read_image_folder(tmp_path / "tree" / "train")[0]
    from dsdata_helpers import save_image

    save_image(tmp_path / "tree" / "train" / "cat" / "99.png", np.zeros((8, 8, 3), np.uint8))
    b = readers.read_image_folder(tmp_path / "tree" / "train")[0]
    assert len(b.labels) == len(a.labels) + 1
    assert len(list(isolated_cache.glob("*.npz"))) == 1  # the stale copy was replaced


def test_image_folder_jpg_readonly_root_and_gray(tmp_path, isolated_cache):
    exp = make_image_folder(tmp_path / "tree", ext=".jpg", size=16)
    for p in sorted((tmp_path / "tree").rglob("*"), reverse=True):
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        raw = readers.read_image_folder_tree(tmp_path / "tree", workers=2)
    finally:
        for p in (tmp_path / "tree").rglob("*"):
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert raw.train.images.shape == (9, 3, 16, 16)
    np.testing.assert_array_equal(raw.train.labels, exp["train"][1])
    from PIL import Image

    files = sorted((tmp_path / "tree" / "train").glob("*/*.jpg"))  # class, then file order
    ref = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
    np.testing.assert_array_equal(raw.train.images, ref)  # exactly what Pillow decodes, in sorted order
    g = make_image_folder(tmp_path / "gray", gray=True)
    graw = readers.read_image_folder_tree(tmp_path / "gray", cache=False)
    assert graw.train.images.shape == (9, 1, 8, 8)
    np.testing.assert_array_equal(graw.train.images, g["train"][0])


def test_image_folder_errors(tmp_path, isolated_cache):
    with pytest.raises(MissingDataError, match="train"):
        readers.read_image_folder_tree(tmp_path / "nothing")
    make_image_folder(tmp_path / "t", ext=".png")
    (tmp_path / "t" / "train" / "cat" / "00.png").write_bytes(b"not a png at all")
    with pytest.raises(CorruptFileError, match="00.png"):
        readers.read_image_folder_tree(tmp_path / "t", cache=False)
    make_image_folder(tmp_path / "u", ext=".png")
    from dsdata_helpers import save_image

    save_image(tmp_path / "u" / "train" / "dog" / "big.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        readers.read_image_folder_tree(tmp_path / "u", cache=False)
    make_image_folder(tmp_path / "v", ext=".png")
    save_image(tmp_path / "v" / "test" / "zebra" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="zebra.*add its folder to the training images, or remove it here"):
        readers.read_image_folder_tree(tmp_path / "v", cache=False)


def test_an_undecodable_image_names_the_file_and_the_fix(tmp_path):
    make_image_folder(tmp_path / "w", ext=".png")
    (tmp_path / "w" / "train" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(CorruptFileError, match=r"bad\.png: cannot decode image .*; replace or remove the file\."):
        readers.read_image_folder_tree(tmp_path / "w", cache=False)


def test_decode_mixed_gray_then_color(tmp_path):
    from dsdata_helpers import save_image

    save_image(tmp_path / "a.png", np.full((4, 4), 7, np.uint8))
    save_image(tmp_path / "b.png", np.full((4, 4, 3), (1, 2, 3), np.uint8))
    x = readers.decode_images([tmp_path / "a.png", tmp_path / "b.png"], workers=1)
    assert x.shape == (2, 3, 4, 4)
    assert (x[0] == 7).all() and x[1, :, 0, 0].tolist() == [1, 2, 3]


# ---- TinyImageNet ------------------------------------------------------------------------------


def test_tinyimagenet_layout(tmp_path, isolated_cache):
    root = make_tinyimagenet(tmp_path / "tiny-imagenet-200", wnids=("n02", "n01", "n03"), n_train=2, n_val=4)
    raw = readers.read_tinyimagenet(root)
    assert raw.extra["wnids"] == ["n01", "n02", "n03"]  # sorted wnids define the label ids
    assert raw.classes == ["name of n01", "name of n02", "name of n03"]
    assert raw.train.images.shape == (6, 3, 64, 64) and raw.train.images.dtype == np.uint8
    assert raw.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert raw.test.images.shape == (4, 3, 64, 64)  # val_0 is grayscale: converted to RGB
    assert raw.test.labels.tolist() == [1, 0, 2, 1]  # val_i has wnid ("n02", "n01", "n03")[i % 3]
    assert (raw.test.images[0, 0] == raw.test.images[0, 1]).all()


def test_tinyimagenet_bad_annotation(tmp_path, isolated_cache):
    root = make_tinyimagenet(tmp_path / "tiny-imagenet-200", n_val=2)
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(CorruptFileError, match="val_annotations.txt.*line 3"):
        readers.read_tinyimagenet(root)
