"""Property tests: a damaged file of any kind ends in distillset's own error with a message.

Synthetic sets, checkpoints, configs and IDX files are corrupted at random (truncated, bytes
overwritten, bytes inserted; overwrites favour the header, where the structure is). Loading must
either succeed with a valid result or raise a :class:`DistillsetError`, never anything else.
Examples are derandomized: the same bytes on every run.
"""
import gzip
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from safetensors.torch import load, save, save_file

from distillset import SyntheticSet
from distillset.cli.common import apply_config
from distillset.cli.distill import method_params
from distillset.cli.main import build_parser
from distillset.data.readers import read_idx_images, read_idx_labels
from distillset.errors import DistillsetError
from distillset.methods import DM

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# any JSON value, nested a little
values = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=6)

@st.composite
def corrupted(draw, data: bytes):
    """``data`` truncated, with up to 8 bytes overwritten, or with a few bytes inserted."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.one_of(st.integers(0, min(len(out), 256) - 1), st.integers(0, len(out) - 1)))
        out[i] = draw(st.integers(0, 255))
    return bytes(out)


def expect_ours(load):
    """Run ``load``; a DistillsetError with a message is fine, any other exception fails the test."""
    try:
        return load()
    except DistillsetError as e:
        assert str(e).strip()
        return None


@pytest.fixture(scope="module")
def saved_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    meta = {"dataset": "digits", "num_classes": 3, "classes": ["a", "b", "c"], "image_shape": [1, 4, 4],
            "mean": [0.5], "std": [0.25], "method": "dm"}
    SyntheticSet(torch.linspace(-1, 1, 96).view(6, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2]), meta).save(d / "s")
    return {suffix: (d / f"s.{suffix}").read_bytes() for suffix in ("safetensors", "json")}


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["safetensors", "json"]))
def test_damaged_synthetic_set(saved_set, tmp_path, data, which):
    blob = data.draw(corrupted(saved_set[which]))
    for suffix, content in saved_set.items():
        (tmp_path / f"s.{suffix}").write_bytes(blob if suffix == which else content)
    s = expect_ours(lambda: SyntheticSet.load(tmp_path / "s"))
    if s is not None:
        s.check()  # whatever loads is usable: finite, labels in range, shapes agree


tensors = arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
                 array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
META = {"dataset": "digits", "num_classes": 3, "classes": ["a", "b", "c"], "image_shape": [1, 4, 4], "mean": [0.5],
        "std": [0.25], "method": "dm"}


@SETTINGS
@given(images=st.one_of(tensors, st.just(np.zeros((6, 1, 4, 4), np.float32))),
       labels=st.one_of(tensors, st.just(np.array([0, 0, 1, 1, 2, 2]))),
       meta=st.dictionaries(st.sampled_from(sorted(META)), values, max_size=2).map(lambda m: {**META, **m}))
def test_wrong_synthetic_set_contents(tmp_path, images, labels, meta):
    """Well-formed files whose contents are wrong: shapes, dtypes, NaNs, label ranges, metadata."""
    save_file({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, str(tmp_path / "s.safetensors"))
    (tmp_path / "s.json").write_text(json.dumps(meta))
    s = expect_ours(lambda: SyntheticSet.load(tmp_path / "s"))
    if s is not None:
        s.check()
        s.grid()  # and it can be shown: no label out of range, no meta the grid cannot use


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("ckpt")
    kw = dict(ipc=1, iterations=2, batch_real=4, random_state=0, device="cpu", progress=False, checkpoint_dir=str(d))
    DM(**kw).fit(digits)
    return kw, (d / "checkpoint.safetensors").read_bytes()


@SETTINGS
@given(data=st.data())
def test_damaged_checkpoint(checkpoint, digits, tmp_path, data):
    kw, blob = checkpoint
    (tmp_path / "checkpoint.safetensors").write_bytes(data.draw(corrupted(blob)))
    m = expect_ours(lambda: DM(**{**kw, "checkpoint_dir": str(tmp_path)}).fit(digits, resume=True))
    if m is not None:
        assert torch.isfinite(m.synthetic_.images).all()


@SETTINGS
@given(data=st.data(), field=st.sampled_from(["method", "params", "seed", "dataset", "iteration", "history",
                                               "optimizer", "device", "nothing"]))
def test_wrong_checkpoint_record(checkpoint, digits, tmp_path, data, field):
    """A well-formed checkpoint whose record or tensors are wrong: a field replaced, a tensor reshaped."""
    kw, blob = checkpoint
    flat = load(blob)
    record = json.loads(json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])["__metadata__"]["record"])
    if field != "nothing":
        record[field] = data.draw(values)
    name = data.draw(st.sampled_from(sorted(flat)))
    flat[name] = torch.from_numpy(data.draw(tensors))
    (tmp_path / "checkpoint.safetensors").write_bytes(save(flat, metadata={"record": json.dumps(record)}))
    expect_ours(lambda: DM(**{**kw, "checkpoint_dir": str(tmp_path)}).fit(digits, resume=True))


keys = st.sampled_from(["ipc", "iterations", "method", "model", "preset", "seed", "device", "eval_models",
                        "no_eval", "params", "checkpoint_every", "quiet", "bogus"])
params = st.dictionaries(st.sampled_from(["lr_img", "batch_real", "init", "iterations", "random_state", "nope"]),
                         values, max_size=3)


@SETTINGS
@given(text=st.one_of(st.text(max_size=60),
                      st.dictionaries(keys, values, max_size=4).map(json.dumps),  # JSON is YAML
                      st.dictionaries(st.just("params"), params, min_size=1).map(json.dumps)))
def test_damaged_config(tmp_path, text):
    """Any config text either resolves to DM parameters that pass validation, or is our error."""
    (tmp_path / "c.yaml").write_text(text)
    parser = build_parser()
    argv = ["distill", "--config", str(tmp_path / "c.yaml")]
    args = parser.parse_args(argv)
    args.argv = argv

    def resolve():
        resolved = apply_config(args._parser, args, set())
        DM(**method_params(DM, resolved, {"ipc": 1, "iterations": 1}))._validate_params()
        return resolved

    expect_ours(resolve)


def _idx(magic: int, arr: np.ndarray) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape) + arr.tobytes()


IDX = {"images": _idx(0x803, np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)),
       "labels": _idx(0x801, np.array([1, 7], dtype=np.uint8))}


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["images", "labels"]), gz=st.booleans())
def test_damaged_idx(tmp_path, data, which, gz):
    blob = gzip.compress(IDX[which], mtime=0) if gz else IDX[which]
    path = tmp_path / f"{which}.gz"
    path.write_bytes(data.draw(corrupted(blob)))
    expect_ours(lambda: (read_idx_images if which == "images" else read_idx_labels)(path))
