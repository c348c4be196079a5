import numpy as np
import pytest
import torch
from PIL import Image

from distillset import SyntheticSet
from distillset.errors import ArgumentTypeError, InvalidParameterError, MissingDataError, OutputError


def make_set(soft=False, lrs=False):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    if soft:
        labels = torch.softmax(torch.randn(6, 3, generator=g), 1)
    meta = {"dataset": "toy", "num_classes": 3, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2],
            "classes": ["a", "b", "c"], "method": "dm", "params": {"ipc": 2}, "seed": 7}
    return SyntheticSet(images, labels, meta, torch.tensor([0.1, 0.2]) if lrs else None,
                        {"zca": torch.eye(3 * 8 * 8)} if lrs else {})


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
            assert torch.equal(t.lrs, s.lrs) and torch.equal(t.extra["zca"], torch.eye(3 * 8 * 8))
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


@pytest.mark.parametrize("meta", [{"num_classes": np.int64(3)}, {"mean": np.array([0.5, 0.4, 0.3])},
                                  {"std": [np.float32(0.25)] * 3}, {"mean": torch.tensor([0.5, 0.5, 0.5])},
                                  {"mean": (0.5, 0.4, 0.3), "image_shape": (3, 8, 8)}])
def test_numpy_torch_and_tuples_in_meta_save_as_numbers(tmp_path, meta):
    s = make_set()
    s = SyntheticSet(s.images, s.labels, {**s.meta, **meta})
    back = SyntheticSet.load(s.save(tmp_path / "s"))  # np.int64(3) was saved as "3", which load refused
    assert back.meta == s.meta and type(back.meta["num_classes"]) is int and s.check() is s


@pytest.mark.parametrize("change,message", [
    (lambda s: SyntheticSet(torch.full_like(s.images, float("nan")), s.labels, s.meta), "images holds 1152 NaN"),
    (lambda s: SyntheticSet(s.images, s.labels + 1, s.meta), "Labels must lie in [0, 3). Got values from 1 to 3."),
    (lambda s: SyntheticSet(s.images, s.labels, {**s.meta, "mean": [0.5]}), "The metadata's 'mean' must list one"),
    (lambda s: setattr(s, "meta", {**s.meta, "num_classes": "3"}) or s, "'num_classes' must be an int >= 1. Got '3'"),
])
def test_save_refuses_a_set_load_would_refuse_and_writes_nothing(tmp_path, change, message):
    stem = make_set(lrs=True).save(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InvalidParameterError) as e:
        change(make_set()).save(stem)
    assert str(e.value).startswith(f"SyntheticSet.save wrote nothing to {stem}: ") and message in str(e.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the user's set is intact


def test_save_under_a_file_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputError, match="SyntheticSet.save's path .*afile/s.safetensors is under .*afile, which is a file"):
        make_set().save(tmp_path / "afile" / "s")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("where", ["run", "", "."])
def test_save_to_a_folder_is_refused_not_written_beside_it(tmp_path, monkeypatch, where):
    """save(folder) wrote folder.json beside it while load(folder) reads the folder's own set: a silent swap."""
    monkeypatch.chdir(tmp_path)
    make_set().save(tmp_path / "run" / "synthetic")  # a distill run's folder: load("run") reads its set
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidParameterError, match="not a file stem; give a name in it"):
        make_set().save(where)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_save_beside_a_folder_of_pngs_of_the_same_name_round_trips(tmp_path):
    """save("out/digits") next to save_pngs("out/digits"): load("out/digits") reads this set back."""
    s = make_set()
    s.save_pngs(tmp_path / "digits")
    s.save(tmp_path / "digits")
    assert torch.equal(SyntheticSet.load(tmp_path / "digits").images, s.images)


def test_save_grid_writes_the_format_its_suffix_names_and_refuses_a_folder(tmp_path):
    from PIL import Image

    s = make_set()
    for name, kind in (("g.png", "PNG"), ("g.jpg", "JPEG"), ("g.grid", "PNG")):
        with Image.open(s.save_grid(tmp_path / name)) as image:
            assert image.format == kind
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match="save_grid's path .*folder exists and is not a file"):
        s.save_grid(tmp_path / "folder")


def test_a_number_as_lrs_is_one_step_size(tmp_path):
    s = make_set()
    one = SyntheticSet(s.images, s.labels, s.meta, lrs=0.01)  # was an AttributeError at save and at evaluation
    assert one.lrs.shape == (1,) and one.lrs.dtype == torch.float32 and float(one.lrs) == pytest.approx(0.01)
    assert torch.equal(SyntheticSet.load(one.save(tmp_path / "s")).lrs, one.lrs)
    with pytest.raises(InvalidParameterError, match="SyntheticSet lrs must be a tensor, a NumPy array or a nested list"):
        SyntheticSet(s.images, s.labels, lrs="0.01")


@pytest.mark.parametrize("kw,message", [
    ({"extra": {"note": "hi"}}, "SyntheticSet extra['note'] must be a tensor, a NumPy array or a nested list of "
     "numbers. Got str instead. Keep other values in meta."),
    ({"extra": [torch.eye(2)]}, "SyntheticSet extra must be a dict. Got list instead."),
    ({"meta": "digits"}, "SyntheticSet meta must be a dict. Got str instead."),
])
def test_wrong_meta_or_extra_is_refused_at_construction(kw, message):
    s = make_set()
    with pytest.raises(InvalidParameterError) as e:
        SyntheticSet(s.images, s.labels, **kw)
    assert str(e.value) == message


def test_extra_arrays_become_tensors():
    s = make_set()
    assert torch.equal(SyntheticSet(s.images, s.labels, extra={"zca": np.eye(2)}).extra["zca"], torch.eye(2))


def test_an_empty_set_is_refused():
    with pytest.raises(InvalidParameterError, match=r"SyntheticSet holds no images \(N = 0\); give at least one"):
        SyntheticSet(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))  # ipc was a raw RuntimeError


def test_save_and_save_pngs_name_a_bad_path(tmp_path):
    s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"num_classes": 2, "mean": [0.0], "std": [1.0]})
    with pytest.raises(ArgumentTypeError, match="SyntheticSet.save's path must be of type"):
        s.save(3)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        s.save_pngs(tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "mine"


def test_check_refuses_a_zca_matrix_that_does_not_fit_the_images():
    """The evaluator whitens the test images with it: a wrong shape was a matmul error after loading."""
    s = SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), {"num_classes": 2}, extra={"zca": torch.eye(4)})
    with pytest.raises(InvalidParameterError, match=r"extra\['zca'\] must be a float \(16, 16\) tensor"):
        s.check()
    ok = SyntheticSet(s.images, s.labels, s.meta, extra={"zca": torch.eye(16), "zca_mean": torch.zeros(16)})
    assert ok.check() is ok
