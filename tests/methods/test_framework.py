"""Checks every registered method gets: smoke, same seed -> same bits, interrupt + resume == straight run."""
import pytest
import torch

from distillset.errors import CheckpointMismatchError, InvalidParameterError, UnknownNameError
from distillset.methods import get_method, list_methods

# small, fast settings per method (digits, CPU); new methods add a line here
FAST = {
    "dm": dict(batch_real=16),
    "random": {}, "herding": {}, "kcenter": {},
    "dc": dict(batch_real=16),
    "dsa": dict(batch_real=16),
    "dd": dict(steps=1, epochs=2, batch_real=64),
    "kip": {},
    "ls": {},
}


def fast(name, **kw):
    return get_method(name, **{**dict(ipc=2, random_state=0, device="cpu", progress=False), **FAST.get(name, {}), **kw})


def iterative():
    return [m for m in list_methods() if m not in SELECTION]


SELECTION = ("random", "herding", "kcenter", "ls")  # no iterations
DETERMINISTIC = ("herding", "kcenter", "ls")  # on pixel features the seed plays no part


def test_every_method_has_fast_settings():
    assert set(list_methods()) <= set(FAST), f"add fast test settings for {set(list_methods()) - set(FAST)}"


@pytest.mark.parametrize("name", list_methods())
def test_smoke(name, digits):
    m = fast(name, iterations=0 if name in SELECTION else 2).fit(digits)
    s = m.synthetic_
    assert s.images.shape == (20, 1, 8, 8) and torch.isfinite(s.images).all()
    if s.labels.dim() == 1:
        assert torch.equal(torch.bincount(s.labels, minlength=10), torch.full((10,), 2))
    else:  # learned soft labels (LS): their argmax need not be the class an image was drawn from
        assert s.labels.shape == (20, 10) and torch.isfinite(s.labels).all()
    assert s.meta["method"] == name and s.meta["seed"] == 0 and s.meta["dataset"] == "digits"


@pytest.mark.parametrize("name", list_methods())
def test_same_seed_same_bits(name, digits):
    a = fast(name, iterations=3 if name in iterative() else 0).fit(digits).synthetic_
    b = fast(name, iterations=3 if name in iterative() else 0).fit(digits).synthetic_
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    if name not in DETERMINISTIC:
        c = fast(name, iterations=3 if name in iterative() else 0, random_state=1).fit(digits).synthetic_
        assert not torch.equal(a.images, c.images)


def test_global_rng_untouched(digits):
    before = torch.get_rng_state()
    fast("dm", iterations=2).fit(digits)
    assert torch.equal(before, torch.get_rng_state())


class Interrupt(Exception):
    pass


def stop_at(k):
    def cb(method, it, losses):
        if it == k:
            raise Interrupt
    return cb


@pytest.mark.parametrize("name", iterative())
def test_interrupt_then_resume_is_identical(name, digits, tmp_path):
    straight = fast(name, iterations=6).fit(digits)
    m = fast(name, iterations=6, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    with pytest.raises(Interrupt):
        m.fit(digits, callback=stop_at(4))  # dies during iteration 5, last checkpoint after iteration 4
    resumed = fast(name, iterations=6, checkpoint_dir=str(tmp_path), checkpoint_every=2).fit(digits, resume=True)
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)
    assert straight.history_["loss"] == resumed.history_["loss"]


def test_resume_refuses_changed_ipc(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(CheckpointMismatchError, match="ipc"):
        fast("dm", ipc=3, iterations=4, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)


def test_errors(digits):
    with pytest.raises(UnknownNameError, match="Did you mean 'dm'"):
        get_method("dmm")
    with pytest.raises(InvalidParameterError, match="The 'ipc' parameter of DM must be an int >= 1. Got 0 instead."):
        fast("dm", ipc=0).fit(digits)
    with pytest.raises(InvalidParameterError, match="larger than the smallest class"):
        fast("dm", ipc=500).fit(digits)
    with pytest.raises(InvalidParameterError, match="'init' parameter of DM must be one of"):
        fast("dm", init="zeros").fit(digits)
    with pytest.raises(InvalidParameterError, match="Invalid parameter 'lr'"):
        fast("dm").set_params(lr=1)


def test_resume_refuses_any_changed_hyper_parameter(digits, tmp_path):
    fast("dm", iterations=2, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(CheckpointMismatchError, match="lr_img"):
        fast("dm", iterations=4, lr_img=5.0, checkpoint_dir=str(tmp_path)).fit(digits, resume=True)
    # iterations may grow: that is what resuming is for
    assert fast("dm", iterations=3, checkpoint_dir=str(tmp_path)).fit(digits, resume=True).history_["loss"]


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
        fast("dm", iterations=4, lr_img=float("inf"), log_every=2).fit(digits)
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
