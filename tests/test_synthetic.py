import numpy as np
import pytest
import torch
from PIL import Image

from distillset import SyntheticSet
from distillset.errors import ArgumentTypeError, MissingDataError


def make_set(soft=False, lrs=False):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    if soft:
        labels = torch.softmax(torch.randn(6, 3, generator=g), 1)
    meta = {"dataset": "toy", "num_classes": 3, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2],
            "classes": ["a", "b", "c"], "method": "dm", "params": {"ipc": 2}, "seed": 7}
    return SyntheticSet(images, labels, meta, torch.tensor([0.1, 0.2]) if lrs else None,
                        {"zca": torch.eye(4)} if lrs else {})


@pytest.mark.parametrize("soft,lrs", [(False, False), (True, True)])
def test_round_trip(tmp_path, soft, lrs):
    s = make_set(soft, lrs)
    stem = s.save(tmp_path / "sub" / "set")
    assert (tmp_path / "sub" / "set.safetensors").is_file() and (tmp_path / "sub" / "set.json").is_file()
    for p in (stem, str(stem) + ".json", str(stem) + ".safetensors"):
        t = SyntheticSet.load(p)
        assert torch.equal(t.images, s.images) and torch.equal(t.labels, s.labels)
        assert t.meta["seed"] == 7 and t.meta["version"]
        assert (t.lrs is None) == (s.lrs is None)
        if lrs:
            assert torch.equal(t.lrs, s.lrs) and torch.equal(t.extra["zca"], torch.eye(4))
    assert s.ipc == 2 and s.num_classes == 3 and len(s.as_dataset()) == 6


def test_grid_one_row_per_class(tmp_path):
    s = make_set()
    path = s.save_grid(tmp_path / "grid.png")
    img = np.asarray(Image.open(path))
    # 8x8 images are upscaled 4x to 32 px cells + 1 px border: 3 rows, 2 columns
    assert img.shape == (3 * 33 + 1, 2 * 33 + 1, 3)
    # the first cell shows the de-normalised first image
    first = (s.denormalized()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img[1:33:4, 1:33:4], first)


def test_pngs(tmp_path):
    files = make_set().save_pngs(tmp_path / "pngs")
    assert len(files) == 6 and files[0].name == "a_0000.png"
    assert Image.open(files[0]).size == (8, 8)


def test_load_missing_names_the_file(tmp_path):
    with pytest.raises(MissingDataError, match="nothere"):
        SyntheticSet.load(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="empty is a folder without a synthetic set; give the set's .json"):
        SyntheticSet.load(tmp_path / "empty")
    with pytest.raises(ArgumentTypeError, match="SyntheticSet.load's path must be of type str or PathLike, not NoneType"):
        SyntheticSet.load(None)


def test_a_distill_run_folder_loads_its_set(tmp_path):
    s = make_set()
    s.save(tmp_path / "run" / "synthetic")
    assert torch.equal(SyntheticSet.load(tmp_path / "run").images, s.images)


def test_shape_errors():
    with pytest.raises(ValueError, match="must be"):
        SyntheticSet(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="must match"):
        SyntheticSet(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_arrays_and_lists_become_tensors():
    s = SyntheticSet(np.zeros((2, 1, 8, 8)), [0, 1], {"num_classes": 2, "mean": [0.0], "std": [1.0]})
    assert s.images.dtype == torch.float32 and s.labels.dtype == torch.int64 and s.ipc == 1
    assert SyntheticSet(s.images, np.array([0, 1], dtype=np.int32)).labels.dtype == torch.int64  # the loss's dtype
    for images in ("abc", None, [[1.0], [1.0, 2.0]]):  # were raw TypeErrors / ValueErrors from .dim()
        with pytest.raises(ValueError, match="images must be a tensor, a NumPy array or a nested list"):
            SyntheticSet(images, [0, 1])
