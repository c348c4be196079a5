"""Checks on the real files in the shared data folder ($DISTILLSET_SHARED_DATA or <repo>/../shared/data).

Skipped, with the reason, where the folder is absent. The cifar10-jpeg test decodes 60000 JPEGs the
first time (about 10 s on 2 cores) and then loads the decoded arrays from the cache (about 1 s).
"""
import numpy as np
import pytest
import torch
from dsdata_helpers import require_shared

from distillset.data import DATASETS, channel_stats, load_dataset

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_real(name):
    root = require_shared(name)
    ds = load_dataset(name, root=root)
    assert len(ds.train) == 60000 and len(ds.test) == 10000
    assert ds.image_shape == (1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    if name == "mnist":
        assert ds.class_counts("train").tolist() == MNIST_TRAIN_COUNTS
        assert ds.class_counts("test").tolist() == MNIST_TEST_COUNTS
    else:
        assert ds.class_counts("train").tolist() == [6000] * 10
        assert ds.class_counts("test").tolist() == [1000] * 10
    mean, std = channel_stats(ds.train.images, decimals=None)
    spec = DATASETS.get(name)
    assert mean[0] == pytest.approx(spec.mean[0], abs=1e-3)
    assert std[0] == pytest.approx(spec.std[0], abs=1e-3)
    assert ds.mean == spec.mean and ds.std == spec.std  # constants come from the spec
    x = ds.normalize(ds.train.images[:5000])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_cifar10_jpeg_real():
    root = require_shared("cifar10-jpeg")
    ds = load_dataset("cifar10-jpeg", root=root)  # uses the decoded-image cache in ~/.cache/distillset
    assert len(ds.train) == 50000 and len(ds.test) == 10000
    assert ds.image_shape == (3, 32, 32)
    assert ds.class_counts("train").tolist() == [5000] * 10
    assert ds.class_counts("test").tolist() == [1000] * 10
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert "JPEG" in ds.source and "JPEG" in ds.meta()["source"]
    mean, std = channel_stats(ds.train.images, decimals=None)
    assert np.allclose(mean, (0.4914, 0.4822, 0.4465), atol=2e-3)
    assert np.allclose(std, (0.2470, 0.2435, 0.2616), atol=3e-3)  # JPEG smooths: ~0.3-0.7 % lower
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)


def test_normalize_is_the_formula_bit_for_bit_and_leaves_its_input_alone():
    ds = load_dataset("digits")
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    assert torch.equal(ds.normalize(ds.train.images), (ds.train.images.float() / 255.0 - mean) / std)
    x = torch.rand(4, *ds.image_shape) * 255
    before = x.clone()
    ds.normalize(x)
    assert torch.equal(x, before)  # in place only on its own copy
