"""IDM, DANCE, NCFM (the distribution-matching family) and their shared parts: pools, multi-formation, CF distance."""
import math

import pytest
import torch

from distillset import Evaluator
from distillset.errors import InvalidParameterError
from distillset.experts import train_experts
from distillset.methods import DM, get_method
from distillset.methods.idm import IDM
from distillset.methods.ncfm import cf_distance


# ---------------------------------------------------------------- the characteristic-function distance
def cf_reference(real, syn, freqs):
    """The same distance through complex numbers, weights 0.5/0.5: mean_t |phi_r(t) - phi_s(t)| / sqrt(2)."""
    phi = lambda f: torch.exp(1j * (f.double() @ freqs.double().T)).mean(0)  # noqa: E731
    return float((phi(real) - phi(syn)).abs().mean() / math.sqrt(2))


def test_cf_distance_is_zero_for_identical_sets_and_symmetric():
    g = torch.Generator().manual_seed(0)
    x, y, t = torch.randn(20, 6, generator=g), torch.randn(7, 6, generator=g), torch.randn(50, 6, generator=g)
    assert float(cf_distance(x, x, t)) == 0.0
    assert float(cf_distance(x, x[torch.randperm(20, generator=g)], t)) == pytest.approx(0.0, abs=1e-5)  # a set
    assert float(cf_distance(x, y, t)) == pytest.approx(float(cf_distance(y, x, t)), rel=1e-6)
    assert float(cf_distance(x, y, t)) > 0.05


def test_cf_distance_matches_the_complex_form():
    g = torch.Generator().manual_seed(1)
    x, y, t = torch.randn(30, 4, generator=g), torch.randn(9, 4, generator=g), torch.randn(40, 4, generator=g)
    assert float(cf_distance(x, y, t)) == pytest.approx(cf_reference(x, y, t), rel=1e-4, abs=1e-6)
    # the phase term alone sees a shift that leaves the amplitude unchanged
    shifted = x + 0.3
    assert float(cf_distance(x, shifted, t, 1.0, 0.0)) < 1e-5 < float(cf_distance(x, shifted, t, 0.0, 1.0))


def test_cf_distance_gradient_is_finite_at_identical_inputs():
    x = torch.randn(5, 3, dtype=torch.float64)
    y = x.clone().requires_grad_(True)
    cf_distance(x, y, torch.randn(16, 3, dtype=torch.float64)).backward()
    assert torch.isfinite(y.grad).all()


def test_cf_distance_batches_over_classes():
    x, y, t = torch.randn(3, 10, 4), torch.randn(3, 2, 4), torch.randn(8, 4)
    d = cf_distance(x, y, t)
    assert d.shape == (3,) and torch.allclose(d[1], cf_distance(x[1], y[1], t))


# ---------------------------------------------------------------- pools
def test_keeping_only_the_ends_keeps_the_same_weights_as_the_full_trajectory(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    kw = dict(model="mlp", num_experts=2, train_epochs=3, momentum=0.9, device="cpu", progress=False)
    full, ends = train_experts(digits, **kw), train_experts(digits, keep="ends", **kw)
    assert ends.trajectories.shape == (2, 2, full.trajectories.shape[-1])
    assert torch.equal(ends.trajectories, full.trajectories[:, [0, -1]])


def test_idm_queue_grows_then_replaces_its_oldest_member():
    idm = IDM(net_num=5, net_generate_interval=2)
    assert [idm._queue_size(it)[0] for it in (0, 1, 2, 3, 4, 10)] == [4, 4, 5, 5, 5, 5]
    assert idm._queue_size(10)[1] == 3 + 5 + 1  # pushes so far: push p sits in slot p % 5


def test_idm_queue_writes_new_networks_over_the_oldest(digits, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import distillset.methods.idm as idm_module

    pushed = []
    real_fresh = idm_module.fresh_network

    def marked(method, state):  # each new network's weights all equal its push number
        net = real_fresh(method, state)
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(len(pushed)))
        pushed.append(len(pushed))
        return net

    monkeypatch.setattr(idm_module, "fresh_network", marked)
    IDM(ipc=1, iterations=4, batch_real=8, net_num=5, net_generate_interval=1, model_train_steps=0, model="mlp",
        random_state=0, device="cpu", progress=False, checkpoint_dir=tmp_path).fit(digits)
    assert pushed == list(range(7))  # 3 at the start, then one at each of the 4 iterations
    ring = load_file(tmp_path / "checkpoint.safetensors")["tensor.pool.weights"]  # (5, P)
    assert ring[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]  # pushes 5 and 6 replaced the oldest: 0 and 1


def test_dance_blends_a_pool_member_with_its_initial_weights(digits):
    from distillset.data.real import RealData
    from distillset.experts import Experts
    from distillset.methods.base import State
    from distillset.methods.dance import DANCE
    from distillset.models import get_model

    dance = DANCE(ipc=1, model="mlp", num_experts=1, device="cpu")
    p = sum(q.numel() for q in get_model("mlp", digits.image_shape, digits.num_classes, seed=0).parameters())
    dance.experts_ = Experts(torch.stack([torch.zeros(p), torch.ones(p)])[None], [0.0], {})
    g = torch.Generator().manual_seed(0)
    state = State({}, {}, g, RealData(digits, torch.device("cpu")), digits, torch.device("cpu"))
    middle, trained = dance._encoders(state)
    replay = torch.Generator().manual_seed(0)
    torch.randint(1, (1,), generator=replay)
    lam = float(torch.rand((), generator=replay))
    # lambda * init (0) + (1 - lambda) * trained (1)
    assert all(torch.allclose(q, torch.full_like(q, 1 - lam)) for q in middle.parameters())
    assert all(torch.equal(q, torch.ones_like(q)) for q in trained.parameters())


def test_idm_trains_its_queue_and_the_accuracy_weight_follows(digits):
    idm = IDM(ipc=1, iterations=6, batch_real=16, net_num=3, net_generate_interval=100, fetch_net_num=3,
              model_train_steps=5, batch_train=64, lr_net=0.05, model="mlp", random_state=0, device="cpu",
              progress=False).fit(digits)
    assert torch.isfinite(torch.tensor(idm.history_["loss"])).all()
    # with every member trained every iteration, the CE term is on after the first one
    ce_on = [loss - match for loss, match in zip(idm.history_["loss"], idm.history_["match"])]
    assert ce_on[0] == 0 and all(v > 0 for v in ce_on[1:])


# ---------------------------------------------------------------- the methods
FAMILY = {
    "dm": dict(),
    "idm": dict(net_num=10, net_generate_interval=10, model_train_steps=2, batch_train=64, ce_weight=0.005),
    "dance": dict(num_experts=2, train_epochs=3),
    "ncfm": dict(num_experts=2, train_epochs=3, num_freqs=256, lr_img=0.01),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_each_method_lowers_its_loss_and_beats_its_initialisation(name, digits, tmp_path, monkeypatch):
    """Same seed => the run starts from the random subset's images; factor 1 (digits' 8x8 tiles would be 4x4)."""
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    kw = dict(ipc=1, factor=1, batch_real=64, random_state=3, device="cpu", progress=False, **FAMILY[name])
    init = get_method(name, iterations=0, **kw).fit(digits).synthetic_
    m = get_method(name, iterations=150, **kw).fit(digits)
    loss = torch.tensor(m.history_["loss"])
    assert torch.isfinite(loss).all()
    if name != "idm":  # IDM's networks train as it goes, so their embeddings (and its loss) grow: not comparable
        assert loss[-20:].mean() < loss[:20].mean(), name
    ev = Evaluator("convnet", n_models=3, epochs=150, augment=None, random_state=0, device="cpu")
    before, after = ev.score(init, digits)["convnet"].mean, ev.score(m.synthetic_, digits)["convnet"].mean
    assert after > before + 3, (name, before, after)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_multi_formation_stores_ipc_images_and_trains_on_four_times_as_many(name, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    m = get_method(name, ipc=2, factor=2, iterations=2, batch_real=8, model="mlp", random_state=0, device="cpu",
                   progress=False, **FAMILY[name]).fit(digits)
    s = m.synthetic_
    assert s.images.shape == (20, 1, 8, 8) and s.factor == 2 and s.meta["factor"] == 2
    assert len(s.decoded()) == 80 and torch.equal(torch.bincount(s.decoded().labels), torch.full((10,), 8))


def test_the_real_start_tiles_distinct_real_images(digits):
    s = DM(ipc=1, factor=2, iterations=0, random_state=0, device="cpu", progress=False).fit(digits).synthetic_
    tiles = s.decoded().images.view(10, 4, -1)
    assert all(len({tuple(t.tolist()) for t in c}) == 4 for c in tiles)  # four different images per stored one


def test_a_factor_too_large_for_the_smallest_class_is_refused_before_any_work(digits, monkeypatch):
    import distillset.methods.dance as dance_module

    monkeypatch.setattr(dance_module, "train_experts", lambda *a, **k: pytest.fail("the pool was trained first"))
    with pytest.raises(InvalidParameterError, match="factor=3 does not divide the 8x8"):
        dance_module.DANCE(ipc=1, factor=3, iterations=1, device="cpu", progress=False).fit(digits)
    with pytest.raises(InvalidParameterError, match=r"ipc=10 at factor=4 .* image_init='noise'"):
        DM(ipc=10, factor=4, iterations=1, device="cpu", progress=False).fit(digits)
    with pytest.raises(InvalidParameterError, match="factor=3 does not divide the 8x8"):
        DM(ipc=1, factor=3, iterations=1, device="cpu", progress=False).fit(digits)


# ---------------------------------------------------------------- NCFM's sampling network
SAMPLER = dict(ipc=1, batch_real=8, num_freqs=32, num_experts=1, train_epochs=1, model="mlp", sampling_net=True,
               random_state=0, device="cpu", progress=False)


def test_the_sampling_network_ascends_what_the_images_descend(digits):
    """The frequencies' means pass through a gradient reversal: the sampler's gradient is minus the plain one."""
    from distillset.data.real import RealData
    from distillset.methods.base import State
    from distillset.methods.ncfm import NCFM

    ncfm = NCFM(**SAMPLER)
    real = RealData(digits, torch.device("cpu"))
    tensors = ncfm._init_state(digits, real, torch.Generator().manual_seed(0))
    state = State(tensors, {}, torch.Generator().manual_seed(1), real, digits, torch.device("cpu"))
    dim = 128  # the MLP's embedding width
    freqs = ncfm._frequencies(state, dim, torch.device("cpu"))
    weights = torch.randn_like(freqs)
    (freqs * weights).sum().backward()
    reversed_grad = tensors["sampler"].grad.clone()
    tensors["sampler"].grad = None
    noise = torch.randn(2, dim, generator=torch.Generator().manual_seed(1))  # replay the draw the means came from
    means = state.cache["sampler"](tensors["sampler"], noise)
    (means.repeat_interleave(16, 0) * weights).sum().backward()
    assert freqs.shape == (32, dim) and torch.allclose(reversed_grad, -tensors["sampler"].grad)


def test_ncfm_with_its_sampler_resumes_bit_identically(digits, tmp_path):
    from distillset.methods.ncfm import NCFM

    class Stop(Exception):
        pass

    def stop_at_3(method, it, losses):
        if it == 3:
            raise Stop

    straight = NCFM(iterations=5, **SAMPLER).fit(digits)
    with pytest.raises(Stop):
        NCFM(iterations=5, checkpoint_dir=str(tmp_path), checkpoint_every=2, **SAMPLER).fit(digits, callback=stop_at_3)
    resumed = NCFM(iterations=5, checkpoint_dir=str(tmp_path), checkpoint_every=2, **SAMPLER).fit(digits, resume=True)
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)
    assert straight.history_["loss"] == resumed.history_["loss"]


@pytest.mark.parametrize("name", ["dance", "ncfm"])
def test_dance_and_ncfm_match_under_the_references_augmentation_by_default(name, digits):
    """Their code's DiffAug: color, crop and cutout on every draw; an explicit strategy is DSA's one-of."""
    assert get_method(name)._matching_augmentation(digits) == ("color_crop_cutout", "all")
    assert get_method(name, augment="crop_scale")._matching_augmentation(digits) == ("crop_scale", "call")
    assert get_method(name, augment=None)._matching_augmentation(digits)[0] is None


def test_ncfm_weight_decay_shrinks_the_images_as_much_per_step_as_the_reference():
    images = torch.zeros(3, requires_grad=True)
    for lr in (0.004, 0.002):
        group = get_method("ncfm", lr_img=lr)._make_optimizer({"images": images}).param_groups[0]
        assert group["lr"] * group["weight_decay"] == pytest.approx(1e-3 * 5e-4)  # its lr x weight decay
    assert get_method("ncfm", weight_decay_img=0.0)._make_optimizer({"images": images}).param_groups[0][
        "weight_decay"] == 0.0
