"""The method framework: validation, resume refusals, divergence, sampling, the update seam.

The checks every registered method passes (smoke, same seed -> same bits, interrupt + resume) are in
tests/test_common.py.
"""
import pytest
import torch

from distillset.errors import CheckpointMismatchError, InvalidParameterError, OutputError, UnknownNameError
from distillset.methods import get_method


def fast(name, **kw):
    return get_method(name, **{**dict(ipc=2, random_state=0, device="cpu", progress=False), **kw})


def test_global_rng_untouched(digits):
    before = torch.get_rng_state()
    fast("dm", iterations=2).fit(digits)
    assert torch.equal(before, torch.get_rng_state())


def test_resume_refuses_changed_ipc(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(CheckpointMismatchError, match="ipc"):
        fast("dm", ipc=3, iterations=4, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)


def test_errors(digits):
    with pytest.raises(UnknownNameError, match="Did you mean 'dm'"):
        get_method("dmm")
    with pytest.raises(UnknownNameError, match="Unknown DM parameter 'lr_imgs'. Did you mean 'lr_img'"):
        get_method("dm", lr_imgs=1.0)
    with pytest.raises(InvalidParameterError, match="The 'ipc' parameter of DM must be an int >= 1. Got 0 instead."):
        fast("dm", ipc=0).fit(digits)
    with pytest.raises(InvalidParameterError, match="larger than the smallest class"):
        fast("dm", ipc=500).fit(digits)
    with pytest.raises(InvalidParameterError, match="'image_init' parameter of DM must be one of"):
        fast("dm", image_init="zeros").fit(digits)
    with pytest.raises(InvalidParameterError, match="Invalid parameter 'lr'"):
        fast("dm").set_params(lr=1)


def test_a_name_or_none_where_a_loaded_object_belongs_is_one_line_with_the_fix(digits):
    from distillset.applications import ArchitectureSearch, ClassIncremental, MembershipAudit
    from distillset.errors import ArgumentTypeError
    from distillset.evaluate import Evaluator

    with pytest.raises(ArgumentTypeError, match=r"DM.fit's data must be of type ImageDataset, not str. Load one"):
        fast("dm", iterations=1).fit("digits")
    for app in (ClassIncremental(), MembershipAudit()):
        with pytest.raises(ArgumentTypeError, match=f"{type(app).__name__}.fit's data must be of type ImageDataset"):
            app.fit("digits")
    with pytest.raises(ArgumentTypeError, match="ArchitectureSearch.fit's data"):
        ArchitectureSearch().fit("digits", {"dm": None})
    with pytest.raises(ArgumentTypeError, match="Proxy 'dm' must be of type SyntheticSet, not str. Read"):
        ArchitectureSearch().fit(digits, {"dm": "runs/dm/synthetic.json"})
    with pytest.raises(ArgumentTypeError, match="synthetic set must be of type SyntheticSet, not NoneType. Read"):
        Evaluator("convnet", n_models=1, epochs=1).score(None, digits)
    with pytest.raises(TypeError, match="Evaluator.score's data"):  # still a TypeError for callers catching that
        Evaluator("convnet", n_models=1, epochs=1).score(fast("random").fit(digits).synthetic_, "digits")


def test_resume_refuses_other_training_images_of_the_same_data_set(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(CheckpointMismatchError, match="other training images of 'digits' .another holdout"):
        fast("dm", iterations=4, checkpoint_dir=str(tmp_path)).fit(digits.holdout(5), resume=True)


def test_a_fresh_fit_never_replaces_a_checkpoint(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with pytest.raises(OutputError, match="holds a checkpoint; pass fit.*resume=True"):
        fast("dm", iterations=2, random_state=5, checkpoint_dir=str(tmp_path)).fit(digits)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize("where", ["afile", "afile/ck"])
def test_an_unusable_checkpoint_dir_is_refused_before_any_iteration(digits, tmp_path, where):
    (tmp_path / "afile").write_text("mine")
    steps = []
    with pytest.raises(OutputError, match=f"checkpoint_dir {tmp_path / where} .*choose another checkpoint_dir"):
        fast("dm", iterations=3, checkpoint_dir=str(tmp_path / where)).fit(digits, callback=lambda *a: steps.append(1))
    assert not steps and (tmp_path / "afile").read_text() == "mine"


def test_numpy_numbers_are_recorded_as_python_ones_so_a_resume_matches(digits, tmp_path):
    import numpy as np

    first = fast("dm", ipc=np.int64(1), lr_img=np.float32(1.0), iterations=1, checkpoint_dir=str(tmp_path)).fit(digits)
    assert type(first.synthetic_.meta["params"]["ipc"]) is int
    fast("dm", ipc=1, lr_img=1.0, iterations=2, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)


def test_resume_refuses_any_changed_hyper_parameter(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(CheckpointMismatchError, match="lr_img"):
        fast("dm", iterations=4, lr_img=5.0, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)
    # iterations may grow: that is what resuming is for
    assert fast("dm", iterations=3, checkpoint_dir=str(tmp_path)).fit(digits, resume=True).history_["loss"]


def test_fit_seconds_count_the_time_before_a_resume(digits, tmp_path):
    import json

    from safetensors import safe_open

    first = fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with safe_open(tmp_path / "checkpoint.safetensors", framework="pt") as f:
        counted = json.loads(f.metadata()["record"])["fit_seconds"]
    resumed = fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)  # nothing left to do
    assert 0 < counted <= first.fit_seconds_ and resumed.fit_seconds_ >= counted


def test_resume_without_checkpoint_dir_is_an_error(digits):
    with pytest.raises(InvalidParameterError, match="checkpoint_dir"):
        fast("dm", iterations=1).fit(digits, resume=True)


def test_class_balanced_sampling(digits):
    from distillset.methods import RealData

    real = RealData(digits, torch.device("cpu"))
    k, n = digits.num_classes, 7
    idx = real.sample_indices(n, torch.Generator().manual_seed(0))
    assert torch.equal(real.labels[idx].view(k, n), torch.arange(k)[:, None].expand(k, n))  # class-major
    assert idx.unique().numel() == k * n  # distinct images
    other = real.sample_indices(n, torch.Generator().manual_seed(1))
    assert not torch.equal(idx, other)
    # every image of a class can be drawn: over many draws the picks cover the class
    g = torch.Generator().manual_seed(2)
    seen = torch.cat([real.sample_indices(n, g)[:n] for _ in range(200)]).unique()
    assert seen.numel() == int((real.labels == 0).sum())


def test_divergence_is_a_clear_error_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    from distillset.errors import DivergenceError

    with pytest.raises(DivergenceError, match="diverged: images hold NaN or infinite values by iteration 2"):
        fast("dm", iterations=4, lr_img=1e30, log_every=2).fit(digits)  # absurd but finite (inf is refused up front)
    good = fast("dm", iterations=8, checkpoint_dir=str(tmp_path), checkpoint_every=2, log_every=100)

    class BreaksAtIteration3(type(good)):  # a finite loss, then an update that leaves NaN images
        def _step(self, state, it):
            losses = super()._step(state, it)
            if it == 3:
                state.tensors["images"].data.fill_(float("nan"))
            return losses

    with pytest.raises(DivergenceError, match="images hold NaN or infinite values by iteration 4"):
        BreaksAtIteration3(**good.get_params()).fit(digits)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert torch.isfinite(saved["tensor.images"]).all()  # iteration 2's checkpoint, not the broken state


def test_renamed_parameters_still_work_with_a_deprecation_warning():
    from distillset.methods.dd import DD

    with pytest.warns(DeprecationWarning, match="'init' parameter of DM is now called 'image_init'"):
        assert get_method("dm", init="noise").image_init == "noise"
    with pytest.warns(DeprecationWarning, match="'init' parameter of DSA is now called 'image_init'"):
        assert get_method("dsa", init="noise").get_params()["image_init"] == "noise"
    with pytest.warns(DeprecationWarning):
        old = DD(init="random", net_init="default")  # net_init once named the weight distribution
    assert (old.net_init, old.weight_init) == ("random", "default")
    with pytest.warns(DeprecationWarning):
        assert get_method("kip").set_params(init="noise").image_init == "noise"
    with pytest.raises(InvalidParameterError, match="both 'init' and its new name 'image_init'"):
        get_method("dm", init="noise", image_init="real")


def test_a_model_spec_is_a_valid_model(digits):
    spec = {"name": "convnet", "width": 8, "depth": 2}
    m = fast("dm", iterations=1, batch_real=4, model=spec).fit(digits)
    assert m.synthetic_.meta["params"]["model"] == spec


class TwoOptimizers(type(fast("dm"))):
    """DM whose images and a learned scale have their own optimizers, the scale on a schedule."""

    def _init_state(self, data, real, generator):
        return {**super()._init_state(data, real, generator), "scale": torch.ones((), requires_grad=True)}

    def _make_optimizer(self, tensors):
        return {"images": super()._make_optimizer(tensors), "scale": torch.optim.Adam([tensors["scale"]], lr=0.1)}

    def _make_schedule(self, optimizers):
        return {"scale": torch.optim.lr_scheduler.StepLR(optimizers["scale"], step_size=2, gamma=0.5)}

    def _step(self, state, it):
        losses = super()._step(state, it)
        return {"loss": losses["loss"] * state.tensors["scale"] ** 2}


def test_the_loop_resumes_every_optimizer_and_schedule(digits, tmp_path):
    kw = dict(ipc=1, iterations=5, batch_real=4, random_state=0, device="cpu", progress=False)
    straight = TwoOptimizers(**kw).fit(digits)
    with pytest.raises(RuntimeError, match="stop"):
        def stop(method, it, losses):
            if it == 2:
                raise RuntimeError("stop")
        TwoOptimizers(**kw, checkpoint_dir=str(tmp_path), checkpoint_every=2).fit(digits, callback=stop)
    resumed = TwoOptimizers(**kw, checkpoint_dir=str(tmp_path), checkpoint_every=2).fit(digits, resume=True)
    assert straight.history_["loss"] == resumed.history_["loss"]
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)


@pytest.mark.parametrize("name", ["dm", "dc"])
def test_a_snapshot_is_the_set_a_shorter_run_makes(digits, name):
    """The budget sweep's premise: with a constant lr, the set after n iterations of a long run is an n-iteration run's."""
    params = dict(ipc=1, random_state=3, device="cpu", progress=False, batch_real=8)
    long = get_method(name, iterations=4, **params).fit(digits, snapshots=[2, 4])
    short = get_method(name, iterations=2, **params).fit(digits)
    assert sorted(long.snapshots_) == [2, 4]
    assert torch.equal(long.snapshots_[2].images, short.synthetic_.images)
    assert torch.equal(long.snapshots_[4].images, long.synthetic_.images)
    assert not torch.equal(long.snapshots_[2].images, long.synthetic_.images)  # a copy, not a view of the run's tensor


def test_a_snapshot_outside_the_run_is_refused_before_work(digits):
    with pytest.raises(InvalidParameterError, match=r"snapshots must be iteration counts in \[1, 3\]"):
        get_method("dm", ipc=1, iterations=3, progress=False).fit(digits, snapshots=[2, 5])


def test_a_checkpoint_older_than_a_parameter_resumes_only_at_its_default(digits, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    fast("dm", iterations=1, checkpoint_dir=str(tmp_path)).fit(digits)
    path = tmp_path / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    record = json.loads(meta["record"])
    del record["params"]["precision"]  # as a checkpoint written before `precision` existed
    meta.pop("sha256")  # nor was it sealed: an old checkpoint resumes on its record's checks alone
    del record["sealed"]
    save_file(load_file(path), path, metadata={**meta, "record": json.dumps(record)})
    with pytest.raises(CheckpointMismatchError, match="precision"):
        fast("dm", iterations=2, precision="fp32", checkpoint_dir=str(tmp_path)).fit(digits, resume=True)
    assert fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits, resume=True).history_["loss"]


def test_sklearn_clone_copies_a_method_unfitted():
    """The README calls the methods scikit-learn-style: clone (which passes get_params(deep=False)) works."""
    from sklearn.base import clone

    dm = get_method("dm", ipc=2, iterations=3, random_state=7)
    copy = clone(dm)
    assert copy is not dm and copy.get_params() == dm.get_params() and not hasattr(copy, "synthetic_")


def test_fit_refuses_a_bad_snapshots_or_logger_before_any_work(digits):
    from distillset.errors import ArgumentTypeError

    dm = get_method("dm", ipc=1, iterations=2, progress=False)
    with pytest.raises(ArgumentTypeError, match="fit's snapshots must be of type"):
        dm.fit(digits, snapshots=2)
    with pytest.raises(ArgumentTypeError, match="fit's logger must be a distillset.tensorboard.TensorBoardLogger"):
        dm.fit(digits, logger=3)
    assert not hasattr(dm, "synthetic_")
