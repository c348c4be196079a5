import pytest
import torch
import torch.nn.functional as F

from distillset import Evaluator
from distillset.errors import InvalidParameterError
from distillset.methods import get_method
from distillset.methods.dd import DD
from distillset.methods.dd_linear import linear_distillation
from distillset.methods.dd_protocol import evaluate_dd
from distillset.models import get_model
from distillset.unroll import FlatNet, meta_grad

# The fixed-init tests use an MLP: on 8x8 digits DD with LeNet (the 4x4 / 2x2 conv maps of our small-input
# padding) learns slowly, about 50-60 % after 3000 iterations, while the MLP passes 90 % in 300.
FIXED = dict(model="mlp", steps=1, epochs=3, iterations=300, lr=0.05, lr_decay_every=200, batch_real=25, device="cpu",
             progress=False)


@pytest.fixture(scope="module")
def clean(digits):
    return DD(random_state=0, **FIXED).fit(digits).synthetic_


def _problem(digits, steps=2, epochs=2):
    """A float64 meta-gradient problem on digits: smooth LeNet (swish), S x E steps, 1 image per class per step."""
    net = get_model("lenet", digits.image_shape, 10, seed=1, act="swish").double()  # smooth, for finite differences
    f = FlatNet(net)
    theta0 = f.flatten()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(steps * 10, 1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(10).repeat(steps)
    lrs_raw = torch.randn(steps * epochs, generator=g, dtype=torch.float64).requires_grad_(True)
    x_real = digits.normalize(digits.train.images[:64]).double()
    y_real = digits.train.labels[:64]

    def outer(theta):
        return F.cross_entropy(f(theta, x_real), y_real)

    return f, theta0, images, labels, lrs_raw, outer


def test_meta_gradient_full_checkpoint_and_finite_differences_agree(digits):
    steps = 2
    f, theta0, images, labels, lrs_raw, outer = _problem(digits, steps=steps)
    loss_f, gi_f, gr_f = meta_grad(f, theta0, images, labels, lrs_raw, steps, outer, "autograd")
    loss_c, gi_c, gr_c = meta_grad(f, theta0, images, labels, lrs_raw, steps, outer, "constant")
    assert torch.allclose(loss_f, loss_c, rtol=1e-12, atol=0)
    assert torch.allclose(gi_f, gi_c, rtol=1e-9, atol=1e-13) and torch.allclose(gr_f, gr_c, rtol=1e-9, atol=1e-13)
    assert gi_f.abs().sum() > 0 and (gr_f != 0).all()

    def loss_at(img, raw):
        return float(meta_grad(f, theta0, img.detach().requires_grad_(True), labels, raw.detach().requires_grad_(True),
                               steps, outer, "constant")[0])

    eps = 1e-6
    for t in range(lrs_raw.shape[0]):  # every step size
        e = torch.zeros_like(lrs_raw)
        e[t] = eps
        fd = (loss_at(images, lrs_raw + e) - loss_at(images, lrs_raw - e)) / (2 * eps)
        assert abs(fd - float(gr_f[t])) <= 1e-6 * max(1.0, abs(fd)) + 1e-9, (t, fd, float(gr_f[t]))
    g = torch.Generator().manual_seed(1)
    for i in torch.randint(0, images.numel(), (4,), generator=g).tolist():  # random pixels
        e = torch.zeros_like(images).view(-1)
        e[i] = eps
        e = e.view_as(images)
        fd = (loss_at(images + e, lrs_raw) - loss_at(images - e, lrs_raw)) / (2 * eps)
        assert abs(fd - float(gi_f.view(-1)[i])) <= 1e-6 * max(1.0, abs(fd)) + 1e-9, (i, fd, float(gi_f.view(-1)[i]))


def test_checkpointed_backward_gives_the_same_run(digits):
    kw = dict(steps=2, epochs=2, iterations=4, batch_real=6, random_state=0, device="cpu", progress=False)
    a = DD(backward="autograd", **kw).fit(digits)
    b = DD(backward="constant", **kw).fit(digits)
    assert torch.allclose(a.synthetic_.images, b.synthetic_.images, atol=1e-5)
    assert torch.allclose(a.synthetic_.lrs, b.synthetic_.lrs, atol=1e-6)
    assert a.history_["loss"] == pytest.approx(b.history_["loss"], rel=1e-5)


@pytest.mark.parametrize("d,m", [(5, 5), (5, 3)])
def test_linear_case(d, m):
    """One GD step on M learned points reaches theta* from every init iff M >= D (error >= D - M otherwise)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    res = linear_distillation(x, y, m)
    if m >= d:
        assert res["error"] < 1e-6
        # check it directly: one step from two unrelated inits lands on theta*
        for theta0 in (torch.zeros(d, dtype=torch.float64), 10 * torch.randn(d, generator=g, dtype=torch.float64)):
            grad = res["x"].T @ (res["x"] @ theta0 - res["y"]) / m
            assert torch.allclose(theta0 - res["eta"] * grad, res["theta_star"], atol=1e-3)
    else:
        assert res["error"] >= res["lower_bound"] - 1e-9 and res["lower_bound"] == d - m
        assert res["error"] < res["lower_bound"] + 0.1  # the optimiser reaches the bound


def test_fixed_init_beats_random_images_with_the_same_schedule(digits, clean):
    ours = evaluate_dd(clean, digits)
    real = get_method("random", ipc=1, random_state=0).fit(digits).synthetic_
    baseline = evaluate_dd(clean, digits, images=real.images)
    assert ours["net_init"] == "fixed" and len(ours["accuracies"]) == 1
    assert ours["mean"] > 80 and ours["before_mean"] < 20, ours
    assert ours["mean"] > baseline["mean"] + 40, (ours["mean"], baseline["mean"])
    # also evaluable with the standard protocol
    res = Evaluator("mlp", n_models=2, epochs=5, augment=None, device="cpu").score(clean, digits)["mlp"]
    assert len(res.accuracies) == 2


def test_attack_moves_the_attack_class_to_the_target(digits, clean):
    poisoned = DD(random_state=0, attack_class=3, target_class=8, **FIXED).fit(digits).synthetic_
    hit = evaluate_dd(poisoned, digits)["attack_to_target"]
    hit_clean = evaluate_dd(clean, digits, attack_class=3, target_class=8)["attack_to_target"]
    assert hit > hit_clean + 30, (hit, hit_clean)


def test_random_and_pretrained_inits(digits):
    kw = dict(steps=1, epochs=2, iterations=2, batch_real=6, random_state=0, device="cpu", progress=False)
    r = DD(net_init="random", n_nets=2, **kw).fit(digits).synthetic_
    assert "theta0" not in r.extra
    res = evaluate_dd(r, digits, n_models=3)
    assert res["net_init"] == "random" and len(res["accuracies"]) == 3 and res["std"] >= 0
    with pytest.warns(UserWarning, match="fine-tuning, not adaptation"):  # the pool's source is the target
        p = DD(net_init="pretrained", n_nets=2, pool_size=2, pool_epochs=30, **kw).fit(digits).synthetic_
    assert p.extra["pool"].shape[0] == 2
    res = evaluate_dd(p, digits, n_models=2)
    assert res["before_mean"] > 30  # the pool's source here is digits itself: pretrained nets already work


def test_errors(digits):
    with pytest.raises(InvalidParameterError, match="must be set together"):
        DD(attack_class=1, iterations=1, progress=False).fit(digits)
    with pytest.raises(InvalidParameterError, match="'backward' parameter of DD must be one of"):
        DD(backward="magic", iterations=1, progress=False).fit(digits)
    with pytest.raises(InvalidParameterError, match="'target_class' parameter of DD must be a class"):
        DD(attack_class=1, target_class=10, iterations=1, progress=False).fit(digits)


def _interrupt_at_2(kw, digits, tmp_path):
    """A checkpointed run (every 2 iterations) that dies during iteration 3."""
    def stop(method, it, losses):
        if it == 2:
            raise RuntimeError

    with pytest.raises(RuntimeError):
        DD(checkpoint_dir=str(tmp_path), checkpoint_every=2, **kw).fit(digits, callback=stop)


def test_random_init_resume_is_identical(digits, tmp_path):
    kw = dict(net_init="random", n_nets=2, steps=1, epochs=2, iterations=4, batch_real=3, random_state=0, device="cpu",
              progress=False, backward="constant")
    straight = DD(**kw).fit(digits)
    _interrupt_at_2(kw, digits, tmp_path)
    resumed = DD(checkpoint_dir=str(tmp_path), checkpoint_every=2, **kw).fit(digits, resume=True)
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)
    assert torch.equal(straight.synthetic_.lrs, resumed.synthetic_.lrs)


def test_xavier_init_sampler(digits):
    from distillset.methods.dd_nets import InitSampler

    p0 = InitSampler("convnet", digits, "cpu")  # instance norm: its weights must start at 1, not 0
    thetas = p0.sample(2, torch.Generator().manual_seed(0))
    assert thetas.shape == (2, FlatNet(p0.template).size) and not torch.equal(thetas[0], thetas[1])
    net = p0.build(0)
    x = digits.normalize(digits.train.images[:8])
    assert net(x).std(0).mean() > 1e-3  # the output depends on the input
    norm_w = [m.weight for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]  # instance norm = GroupNorm(C, C)
    assert norm_w and all(torch.equal(w, torch.ones_like(w)) for w in norm_w)
    assert all(torch.count_nonzero(p) == 0 for n, p in net.named_parameters() if n.endswith("bias"))
    conv = next(p for p in net.parameters() if p.dim() == 4)
    fan_in, fan_out = conv.shape[1] * conv[0, 0].numel(), conv.shape[0] * conv[0, 0].numel()
    assert abs(conv.std().item() / (2.0 / (fan_in + fan_out)) ** 0.5 - 1) < 0.1


def test_bad_inputs_get_clear_errors(digits, clean):
    with pytest.raises(InvalidParameterError, match="without BatchNorm"):
        DD(model="convnet_bn", iterations=1, progress=False).fit(digits)
    with pytest.raises(InvalidParameterError, match="must differ"):
        DD(attack_class=3, target_class=3, iterations=1, progress=False).fit(digits)
    dm = get_method("dm", ipc=1, iterations=1, device="cpu", progress=False).fit(digits).synthetic_
    with pytest.raises(InvalidParameterError, match="needs a set made by DD"):
        evaluate_dd(dm, digits)
    with pytest.raises(InvalidParameterError, match="normalised float images shaped like"):
        evaluate_dd(clean, digits, images=digits.train.images[:10])
    with pytest.raises(InvalidParameterError, match="has 10 classes but the data set 'digits' has 3; evaluate on the data"):
        evaluate_dd(clean, digits.select_classes([0, 1, 2]))  # was "has N weights ...; evaluate it with model='mlp'"
    r = DD(net_init="random", steps=1, epochs=1, iterations=1, batch_real=2, random_state=0, device="cpu",
           progress=False).fit(digits).synthetic_
    with pytest.raises(InvalidParameterError, match="holds no fixed init"):
        evaluate_dd(r, digits, net_init="fixed")
    with pytest.raises(InvalidParameterError, match="needs net_init in"):
        evaluate_dd(r, digits, net_init="Random")
    with pytest.raises(InvalidParameterError, match="n_models >= 1"):
        evaluate_dd(r, digits, n_models=0)


@pytest.mark.parametrize("edit", [dict(steps=3), dict(epochs=4), dict(epochs=0), dict(steps=True),
                                  dict(lrs=torch.ones(0))])
def test_an_edited_schedule_is_refused_not_scored(digits, clean, edit):
    """Steps, epochs and step sizes that do not fit (was: the unroll cycled wrong batches, or with no step
    sizes scored the untrained networks as the set's accuracy)."""
    import dataclasses

    params = {**clean.meta["params"], **{k: v for k, v in edit.items() if k != "lrs"}}
    edited = dataclasses.replace(clean, meta={**clean.meta, "params": params}, lrs=edit.get("lrs", clean.lrs))
    with pytest.raises(InvalidParameterError, match="schedule does not fit its images"):
        evaluate_dd(edited, digits)


def test_resume_cannot_stretch_the_default_lr_schedule(digits, tmp_path):
    from distillset.errors import CheckpointMismatchError

    kw = dict(steps=1, epochs=1, batch_real=2, random_state=0, device="cpu", progress=False,
              checkpoint_dir=str(tmp_path), checkpoint_every=2)
    DD(iterations=20, **kw).fit(digits)  # lr halved every 2 iterations
    with pytest.raises(CheckpointMismatchError, match="Pass lr_decay_every=2 to keep the schedule"):
        DD(iterations=40, **kw).fit(digits, resume=True)  # a tenth of 40 would halve every 4
    longer = DD(iterations=40, lr_decay_every=2, **kw).fit(digits, resume=True)
    straight = DD(iterations=40, lr_decay_every=2, **{**kw, "checkpoint_dir": None}).fit(digits)
    assert torch.equal(longer.synthetic_.images, straight.synthetic_.images)


@pytest.mark.filterwarnings("ignore:DD's pool is pretrained")
def test_pretrained_resume_is_identical_and_does_not_retrain_the_pool(digits, tmp_path, monkeypatch):
    import distillset.methods.dd as dd_module

    kw = dict(net_init="pretrained", pool_size=2, pool_epochs=2, steps=1, epochs=2, iterations=4, batch_real=3,
              random_state=0, device="cpu", progress=False)
    straight = DD(**kw).fit(digits)
    _interrupt_at_2(kw, digits, tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("the pool was trained again on resume")

    monkeypatch.setattr(dd_module, "pretrain_pool", no_training)
    resumed = DD(checkpoint_dir=str(tmp_path), checkpoint_every=2, **kw).fit(digits, resume=True)
    assert torch.equal(straight.synthetic_.extra["pool"], resumed.synthetic_.extra["pool"])
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)


@pytest.mark.filterwarnings("ignore:DD's pool is pretrained")
def test_the_pool_is_cached_across_runs_and_a_changed_setting_misses(digits, tmp_path, monkeypatch):
    import distillset.methods.dd as dd_module

    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    kw = dict(net_init="pretrained", pool_size=2, pool_epochs=1, steps=1, epochs=1, iterations=1, batch_real=2,
              random_state=0, device="cpu", progress=False)
    first = DD(**kw).fit(digits)

    def no_training(*args, **kwargs):
        raise AssertionError("the pool was trained again")

    with monkeypatch.context() as m:
        m.setattr(dd_module, "pretrain_pool", no_training)
        second = DD(**kw).fit(digits)  # same settings: the cache answers
        with pytest.raises(AssertionError, match="trained again"):
            DD(**{**kw, "pool_epochs": 2}).fit(digits)  # a changed setting misses
    assert torch.equal(first.synthetic_.images, second.synthetic_.images)
    assert torch.equal(first.synthetic_.extra["pool"], second.synthetic_.extra["pool"])


def test_an_init_that_overflows_is_dropped_not_spread(digits):
    """One random init whose unrolled steps overflow must not turn the images NaN (counted in history_)."""
    kw = dict(net_init="random", n_nets=2, steps=1, epochs=1, iterations=3, batch_real=2, random_state=0,
              device="cpu", progress=False, log_every=1)

    class OneBadInit(DD):
        def _thetas(self, state):
            thetas = super()._thetas(state)
            return [thetas[0], torch.full_like(thetas[1], float("inf"))] if state.iteration == 1 else thetas

    m = OneBadInit(**kw).fit(digits)
    assert m.history_["dropped_inits"] == [0.0, 1.0, 0.0]
    assert all(torch.isfinite(torch.tensor(m.history_["loss"]))) and torch.isfinite(m.synthetic_.images).all()


def test_old_backward_names_still_work_with_a_warning():
    for old, new in (("full", "autograd"), ("checkpoint", "constant")):
        with pytest.warns(DeprecationWarning, match=new):
            assert DD(backward=old).backward == new


def test_dd_own_protocol_names_a_missing_set(digits):
    from distillset.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="evaluate_dd's synthetic set must be of type SyntheticSet"):
        DD.own_protocol(None, digits)
