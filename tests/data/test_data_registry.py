"""load_dataset on tiny trees in the shared-data layout; missing files; unknown names; digits."""
import numpy as np
import pytest
import torch
from dsdata_helpers import (
    isolated_cache,  # noqa: F401  (fixture)
    make_cifar,
    make_idx_set,
    make_image_folder,
    make_tinyimagenet,
    write_svhn,
)

from distillset.data import DATASETS, ImageDataset, channel_stats, list_datasets, load_dataset
from distillset.errors import CorruptFileError, MissingDataError, UnknownNameError

ALL = ["cifar10", "cifar10-jpeg", "cifar100", "digits", "fashion-mnist", "imagefolder", "kmnist", "mnist",
       "svhn", "tinyimagenet"]


def check_contract(ds: ImageDataset):
    for split in (ds.train, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.dim() == 4
        assert split.labels.dtype == torch.int64 and split.labels.shape == (split.images.shape[0],)
    assert len(ds.mean) == len(ds.std) == ds.image_shape[0]
    assert int(ds.train.labels.max()) < ds.num_classes


def test_registered_names_and_specs():
    assert set(ALL) <= set(list_datasets())
    for name in ALL:
        spec = DATASETS.get(name)
        assert spec.source
        for f in spec.files:
            assert f.url.startswith(("http://", "https://")) and f.md5 and len(f.md5) == 32
    assert DATASETS.get("mnist").mean == (0.1307,) and DATASETS.get("fashion-mnist").std == (0.3530,)
    assert DATASETS.get("cifar10").mean == (0.4914, 0.4822, 0.4465)
    assert DATASETS.get("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert DATASETS.get("cifar100").mean == (0.5071, 0.4866, 0.4409)
    assert DATASETS.get("svhn").std == (0.1980, 0.2010, 0.1970)
    assert DATASETS.get("tinyimagenet").mean == (0.485, 0.456, 0.406)
    assert DATASETS.get("cifar10-jpeg").mean == DATASETS.get("cifar10").mean
    assert "JPEG" in DATASETS.get("cifar10-jpeg").source and "NOT the original" in DATASETS.get("cifar10-jpeg").source
    urls = [f.url for f in DATASETS.get("mnist").files]
    assert urls[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"


def test_unknown_name_lists_known():
    with pytest.raises(UnknownNameError) as e:
        load_dataset("mnsit")
    msg = str(e.value)
    assert "'mnist'" in msg and "cifar10-jpeg" in msg and "tinyimagenet" in msg


@pytest.mark.parametrize("name,sub", [("mnist", "mnist"), ("fashion-mnist", "fashion-mnist"), ("kmnist", "kmnist"),
                                      ("mnist", "MNIST/raw")])
def test_idx_datasets_from_root(tmp_path, name, sub):
    xtr, ytr, xte, yte = make_idx_set(tmp_path / sub, gz=(sub != "MNIST/raw"))
    ds = load_dataset(name, root=tmp_path)
    check_contract(ds)
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), xtr)
    np.testing.assert_array_equal(ds.test.labels.numpy(), yte)
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    if name == "kmnist":  # no reference constants: computed from train
        m = xtr.astype(np.float64) / 255
        assert ds.mean[0] == pytest.approx(m.mean(), abs=1e-4) and ds.std[0] == pytest.approx(m.std(ddof=1), abs=1e-4)
        assert ds.classes[0] == "o"


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_and_100_from_root(tmp_path, archive):
    _, e10 = make_cifar(tmp_path / "cifar10", "cifar10", n=4, archive=archive)
    _, e100 = make_cifar(tmp_path / "cifar100", "cifar100", n=4, archive=archive)
    ds = load_dataset("cifar10", root=tmp_path)
    check_contract(ds)
    assert len(ds.train) == 20 and len(ds.test) == 4 and ds.classes[9] == "truck"
    np.testing.assert_array_equal(ds.train.images.numpy(), e10["train"][0])
    ds = load_dataset("cifar100", root=tmp_path)
    check_contract(ds)
    assert ds.num_classes == 100 and ds.classes[0] == "class000"  # names from the meta file
    assert ds.extra["coarse_labels"]["train"].dtype == torch.int64


def test_svhn_from_root(tmp_path):
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", n=10)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", n=5, seed=1)
    ds = load_dataset("svhn", root=tmp_path)
    check_contract(ds)
    assert ds.train.labels.tolist()[-1] == 0 and ds.image_shape == (3, 32, 32)


def test_tinyimagenet_from_root(tmp_path, isolated_cache):
    make_tinyimagenet(tmp_path / "tiny-imagenet-200")
    ds = load_dataset("tinyimagenet", root=tmp_path)
    check_contract(ds)
    assert ds.image_shape == (3, 64, 64) and ds.classes[0] == "name of n01" and ds.extra["wnids"][0] == "n01"


def test_cifar10_jpeg_and_imagefolder(tmp_path, isolated_cache):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    make_image_folder(tmp_path / "cifar10-jpeg", classes=classes, per_class=(2, 1), size=32, ext=".jpg")
    ds = load_dataset("cifar10-jpeg", root=tmp_path)
    check_contract(ds)
    assert ds.classes == list(classes) and ds.mean == (0.4914, 0.4822, 0.4465)
    assert ds.class_counts().tolist() == [2] * 10
    exp = make_image_folder(tmp_path / "tree", ext=".png")
    ds = load_dataset("imagefolder", root=tmp_path / "tree")
    check_contract(ds)
    assert ds.classes == ["cat", "dog", "frog"]
    x = exp["train"][0].astype(np.float64) / 255
    assert ds.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=1e-4)
    assert ds.std == pytest.approx(tuple(x.std(axis=(0, 2, 3), ddof=1)), abs=1e-4)
    assert not list((tmp_path / "tree").rglob("*.npz"))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn", "tinyimagenet",
                                  "cifar10-jpeg", "imagefolder"])
def test_missing_files_message(tmp_path, name, isolated_cache):
    with pytest.raises(MissingDataError) as e:
        load_dataset(name, root=tmp_path / "empty")
    msg = str(e.value)
    assert str(tmp_path / "empty") in msg
    assert isinstance(e.value, FileNotFoundError)  # callers catching the builtin keep working
    spec = DATASETS.get(name)
    if spec.files:
        assert "download=True" in msg and spec.files[0].url in msg and "DISTILLSET_DATA" in msg


def test_missing_message_names_full_paths(tmp_path):
    make_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError) as e:
        load_dataset("mnist", root=tmp_path)
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz") in str(e.value)


def test_truncated_real_layout_gives_corrupt_error(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=50)
    p = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    import gzip

    data = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(data[:-28 * 28 - 3]))
    with pytest.raises(CorruptFileError, match="truncated: header says 50 images of 28x28"):
        load_dataset("mnist", root=tmp_path)


def test_default_root_from_env(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "mnist")
    monkeypatch.setenv("DISTILLSET_DATA", str(tmp_path))
    assert len(load_dataset("mnist").train) == 30


# ---- digits ----------------------------------------------------------------------------------


def test_digits_split_deterministic_and_balanced():
    a, b = load_dataset("digits"), load_dataset("digits")
    check_contract(a)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 450
    from sklearn.datasets import load_digits

    total = np.bincount(load_digits().target, minlength=10)
    test = a.class_counts("test").numpy()
    assert (np.abs(test - total * 0.25) <= 1).all()  # stratified 75/25
    assert (a.class_counts("train").numpy() + test == total).all()
    x = a.train.images.double() / 255
    assert a.mean[0] == pytest.approx(round(float(x.mean()), 4)) and a.std[0] == pytest.approx(round(float(x.std()), 4))


def test_channel_stats_matches_float_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 5, 5), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x, decimals=None)
    xf = x.double() / 255
    assert mean == pytest.approx(tuple(xf.mean(dim=(0, 2, 3)).tolist()), abs=1e-12)
    assert std == pytest.approx(tuple(xf.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1).tolist()), abs=1e-12)


def test_load_dataset_argument_types_are_one_line():
    from distillset.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="load_dataset's root must be of type str or PathLike, not int"):
        load_dataset("digits", root=123)
    with pytest.raises(ArgumentTypeError, match="load_dataset's name must be of type str, not NoneType"):
        load_dataset(None)


def test_load_dataset_names_a_bad_cache_argument():
    from distillset.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="load_dataset's cache must be of type bool or str or PathLike"):
        load_dataset("digits", cache=3)
