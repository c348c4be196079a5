"""Hand-built data sets: ``Split`` and ``ImageDataset`` refuse what would fail later, in one line."""
import numpy as np
import pytest
import torch

from distillset import SyntheticSet
from distillset.data import ImageDataset, Split
from distillset.errors import ArgumentTypeError, InvalidParameterError


def split(n=6, channels=1, size=8, offset=0):
    g = torch.Generator().manual_seed(n)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return Split(images, torch.arange(n) % 3 + offset)


def make(**kw):
    args = dict(name="mine", train=split(), test=split(3), classes=["a", "b", "c"], mean=(0.5,), std=(0.25,))
    return ImageDataset(**{**args, **kw})


@pytest.mark.parametrize("kw,error,message", [
    ({"mean": (0.5, 0.5, 0.5)}, InvalidParameterError,
     "The 'mean' of ImageDataset 'mine' must list one finite number per channel: 1 for its training images (1, 8, 8)"),
    ({"mean": 0.5}, InvalidParameterError, "The 'mean' of ImageDataset 'mine' must list one finite number per channel"),
    ({"mean": "5"}, InvalidParameterError, "The 'mean' of ImageDataset 'mine' must list"),
    ({"mean": (float("nan"),)}, InvalidParameterError, "The 'mean' of ImageDataset 'mine' must list one finite"),
    ({"std": (0.0,)}, InvalidParameterError, "The 'std' of ImageDataset 'mine' must list one finite number > 0"),
    ({"std": np.array([-0.2])}, InvalidParameterError, "The 'std' of ImageDataset 'mine' must list one finite number > 0"),
    ({"train": split(channels=3), "test": split(3, channels=3)}, InvalidParameterError,
     "per channel: 3 for its training images (3, 8, 8). Got (0.5,) instead."),
    ({"classes": ["a", "b"]}, InvalidParameterError,
     "The train labels of ImageDataset 'mine' must lie in [0, 2) (one per class name). Got values from 0 to 2"),
    ({"test": split(3, offset=1)}, InvalidParameterError, "The test labels of ImageDataset 'mine' must lie in [0, 3)"),
    ({"train": split(offset=-1)}, InvalidParameterError, "Got values from -1 to 1; name every class in classes"),
    ({"val": split(3, offset=3)}, InvalidParameterError, "The val labels of ImageDataset 'mine' must lie in [0, 3)"),
    ({"test": split(3, size=4)}, InvalidParameterError,
     "The test images of ImageDataset 'mine' are (1, 4, 4) but its training images are (1, 8, 8)"),
    ({"val": split(3, channels=3)}, InvalidParameterError, "The val images of ImageDataset 'mine' are (3, 8, 8)"),
    ({"train": split(0)}, InvalidParameterError, "The train split of ImageDataset 'mine' holds no images"),
    ({"train": tuple(vars(split()).values())}, ArgumentTypeError,
     "The train split of ImageDataset 'mine' must be of type Split, not tuple. Wrap the tensors: Split(images, labels)."),
    ({"classes": None}, ArgumentTypeError, "The classes of ImageDataset 'mine' must be of type list or tuple"),
])
def test_a_wrong_data_set_is_one_line_at_construction(kw, error, message):
    # each used to pass here and fail in fit or evaluation: a broadcast, an IndexError, a ZeroDivisionError
    with pytest.raises(error) as e:
        make(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("images,labels,message", [
    (torch.rand(4, 1, 8, 8), torch.arange(4), "Split images must be a uint8 tensor (N, C, H, W) of pixels 0..255. "
     "Got Tensor (dtype torch.float32, shape (4, 1, 8, 8)) instead; convert floats in [0, 1] with "
     "(x * 255).round().to(torch.uint8)"),
    (np.zeros((4, 1, 8, 8), np.uint8), torch.arange(4), "Got ndarray (dtype uint8, shape (4, 1, 8, 8)) instead"),
    (torch.zeros(4, 8, 8, dtype=torch.uint8), torch.arange(4), "Split images must be a uint8 tensor (N, C, H, W)"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4).int(), "Split labels must be an int64 tensor (N,), "
     "one per image (N=4). Got Tensor (dtype torch.int32, shape (4,)) instead; convert with labels.long()"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(3), "one per image (N=4). Got Tensor (dtype torch.int64"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), [0, 1, 2, 3], "Split labels must be an int64 tensor (N,), one per image "
     "(N=4). Got list instead"),
])
def test_a_wrong_split_says_what_it_needs(images, labels, message):
    with pytest.raises(InvalidParameterError) as e:  # was a bare assert (gone under python -O)
        Split(images, labels)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mean", [np.float32([0.5]), torch.tensor([0.5]), [0.5], (np.float64(0.5),)])
def test_mean_and_std_become_python_floats(mean):
    d = make(mean=mean, std=torch.tensor([0.25]))
    assert d.mean == (0.5,) and d.std == (0.25,) and all(type(v) is float for v in d.mean + d.std)
    synthetic = SyntheticSet(d.normalize(d.train.images[:3]), d.train.labels[:3], d.meta())
    assert synthetic.check() is synthetic  # was: "The metadata's 'mean' must list one finite number per channel"


def test_copies_are_checked_and_still_work():
    d = make(train=split(12))
    held = d.holdout(1)
    assert len(held.val) == 3 and len(held.train) == 9
    two = held.select_classes([2, 0])
    assert two.classes == ["c", "a"] and len(two.test) == 2 and len(two.val) == 2
    assert len(d.with_train(torch.tensor([0, 1])).train) == 2
    with pytest.raises(InvalidParameterError, match="The train split of ImageDataset 'mine' holds no images"):
        d.with_train(torch.tensor([], dtype=torch.long))
    with pytest.raises(InvalidParameterError, match=r"with_train indices must lie in \[0, 11\].*Got 0\.\.12"):
        d.with_train(torch.tensor([0, 12]))  # was a bare IndexError
    with pytest.raises(InvalidParameterError, match=r"one bool per training image of 'mine' \(12\). Got shape \(3,\)"):
        d.with_train(torch.ones(3, dtype=torch.bool))
    assert len(d.with_train(torch.arange(12) < 5).train) == 5


def test_an_empty_test_split_is_a_data_set_the_evaluator_refuses_to_score_on():
    from distillset import Evaluator
    from distillset.methods import get_method

    d = make(train=split(12), test=Split(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)))
    synthetic = get_method("random", ipc=1, random_state=0).fit(d).synthetic_  # distilling needs no test images
    with pytest.raises(InvalidParameterError, match="The data set 'mine' has no test images to score on"):
        Evaluator("mlp", n_models=1, epochs=1).score(synthetic, d)
