"""MTT: the unrolled gradient three ways, memory, experts' cache, and a short run that helps."""
import pytest
import torch
import torch.nn.functional as F

from distillset.data import load_dataset
from distillset.errors import InvalidParameterError
from distillset.evaluate import Evaluator
from distillset.experts import train_experts
from distillset.methods import get_method
from distillset.models import get_model
from distillset.unroll import FlatNet, unrolled_grad


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _problem(steps=4, dtype=torch.float64, seed=0):
    """A small trajectory-matching problem: a ConvNet student, 20 images in batches of 10, soft labels."""
    g = torch.Generator().manual_seed(seed)
    net = get_model("convnet(width=8)", (1, 8, 8), 10, seed=seed).to(dtype)
    f = FlatNet(net)
    theta0 = f.flatten()
    target = theta0 + 0.05 * torch.randn(theta0.shape, generator=g, dtype=dtype)
    images = torch.randn(20, 1, 8, 8, generator=g, dtype=dtype, requires_grad=True)
    logits = torch.randn(20, 10, generator=g, dtype=dtype, requires_grad=True)
    lr = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    order = [torch.randperm(20, generator=g)[:10] for _ in range(steps)]

    def batch(t, leaves):
        return leaves[0][order[t]], F.softmax(leaves[2][order[t]], 1), leaves[1]

    def outer(theta):
        return ((theta - target) ** 2).sum() / ((theta0 - target) ** 2).sum()

    return f, theta0, batch, [images, lr, logits], outer


def test_constant_memory_gradient_equals_autograd_in_float64():
    f, theta0, batch, leaves, outer = _problem()
    loss_a, grads_a = unrolled_grad(f, theta0, 4, batch, leaves, outer, "autograd")
    loss_c, grads_c = unrolled_grad(f, theta0, 4, batch, leaves, outer, "constant")
    assert torch.equal(loss_a, loss_c)
    for a, c in zip(grads_a, grads_c):  # float64: agreement to rounding, 1e-10 relative
        assert a.abs().max() > 0
        torch.testing.assert_close(c, a, rtol=1e-10, atol=1e-12)


def test_tesla_drops_the_later_steps_terms():
    f, theta0, batch, leaves, outer = _problem()
    _, grads_a = unrolled_grad(f, theta0, 4, batch, leaves, outer, "autograd")
    _, grads_t = unrolled_grad(f, theta0, 4, batch, leaves, outer, "tesla")
    rel = (grads_t[0] - grads_a[0]).norm() / grads_a[0].norm()
    assert rel > 1e-3  # not the exact gradient: the later steps' Hessian terms are missing
    _, grads_1 = unrolled_grad(f, theta0, 1, batch, leaves, outer, "tesla")  # one step: nothing is dropped
    _, grads_1a = unrolled_grad(f, theta0, 1, batch, leaves, outer, "autograd")
    torch.testing.assert_close(grads_1[0], grads_1a[0], rtol=1e-10, atol=1e-12)


def test_autograd_gradient_matches_finite_differences():
    f, theta0, batch, leaves, outer = _problem(steps=3)
    _, grads = unrolled_grad(f, theta0, 3, batch, leaves, outer, "autograd")
    direction = torch.randn_like(leaves[0])
    eps = 1e-6

    def loss_at(x):
        return unrolled_grad(f, theta0, 3, batch, [x.detach().requires_grad_(True), *leaves[1:]], outer,
                             "constant")[0]

    numeric = (loss_at(leaves[0] + eps * direction) - loss_at(leaves[0] - eps * direction)) / (2 * eps)
    torch.testing.assert_close(numeric, (grads[0] * direction).sum(), rtol=1e-5, atol=1e-9)


def _graph_peak_bytes(backward: str, steps: int) -> int:
    """Peak bytes held by autograd graphs while computing the gradient (saved activations and gradients).

    A saved tensor is held detached: holding it with its grad_fn would tie it to its own node in a cycle
    that nothing frees (pack hooks and saved outputs), and every step would look like it leaks.
    """
    live, peak = [0], [0]

    class Held:
        def __init__(self, t):
            self.t, self.n = t.detach(), t.untyped_storage().nbytes()
            live[0] += self.n
            peak[0] = max(peak[0], live[0])

        def __del__(self):
            live[0] -= self.n

    f, theta0, batch, leaves, outer = _problem(steps=steps, dtype=torch.float32)
    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        unrolled_grad(f, theta0, steps, batch, leaves, outer, backward)
    return peak[0]


def test_constant_backward_memory_does_not_grow_with_steps():
    const = [_graph_peak_bytes("constant", n) for n in (10, 40)]
    auto = [_graph_peak_bytes("autograd", n) for n in (10, 40)]
    assert abs(const[1] - const[0]) <= 0.05 * const[0], const  # equal within 5 %
    assert auto[1] > 3 * auto[0], auto  # grows about linearly with the steps
    assert const[1] < auto[1] / 10, (const, auto)


def test_experts_are_reused_from_the_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    calls = []  # before_training runs once per call that must train an expert, and only then
    kw = dict(model="mlp", train_epochs=2, random_state=3, progress=False, before_training=lambda: calls.append(1))
    first = train_experts(digits, num_experts=2, **kw)
    assert first.trajectories.shape[:2] == (2, 3) and len(calls) == 1
    assert len(list((tmp_path / "prepared").glob("expert-*.safetensors"))) == 2
    more = train_experts(digits, num_experts=3, **kw)  # two from the cache, one new
    assert torch.equal(more.trajectories[:2], first.trajectories) and len(calls) == 2
    assert len(list((tmp_path / "prepared").glob("expert-*.safetensors"))) == 3
    monkeypatch.setattr("distillset.experts._train_one", lambda *a, **k: 1 / 0)  # a third call trains nothing
    assert torch.equal(train_experts(digits, num_experts=3, **kw).trajectories, more.trajectories)
    assert len(calls) == 2


MLP_RUN = dict(ipc=1, model="mlp", num_experts=4, train_epochs=10, batch_train=64, syn_steps=10, expert_epochs=2,
               max_start_epoch=4, lr_img=10.0, lr_lr=1e-5, random_state=0, device="cpu", progress=False)


def test_short_mtt_run_on_digits_lowers_the_loss_and_beats_its_initialisation(digits):
    # an MLP: ConvNet-3 on 8x8 digits ends in 1-2 px maps whose instance norm makes the unroll ill-conditioned
    init = get_method("mtt", iterations=0, **MLP_RUN)
    with pytest.warns(UserWarning, match="initialisation"):
        init.fit(digits)
    mtt = get_method("mtt", iterations=150, **MLP_RUN).fit(digits)
    loss = mtt.history_["loss"]
    assert sum(loss[-20:]) / 20 < 0.6 * sum(loss[:20]) / 20, (loss[:20], loss[-20:])
    ev = Evaluator("mlp", n_models=3, epochs=300, lr="learned", device="cpu")
    before, after = ev.score(init.synthetic_, digits)["mlp"], ev.score(mtt.synthetic_, digits)["mlp"]
    assert after.mean > before.mean + 5, (before, after)
    assert mtt.synthetic_.lrs.item() != pytest.approx(0.01)  # the step size was learned


def test_learned_lr_needs_a_set_that_learned_one(digits):
    syn = get_method("random", ipc=1, random_state=0).fit(digits).synthetic_
    with pytest.raises(InvalidParameterError, match="learned step size"):
        Evaluator(n_models=1, epochs=1, lr="learned", device="cpu").score(syn, digits)


def test_gsam_without_radius_or_gap_is_the_plain_gradient_and_otherwise_differs():
    from distillset.evaluate import gsam_gradient

    net = get_model("mlp", (1, 8, 8), 10, seed=0)
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10

    def loss():
        return F.cross_entropy(net(x), y)

    plain = torch.autograd.grad(loss(), list(net.parameters()))
    before = [p.detach().clone() for p in net.parameters()]
    gsam_gradient(net, loss, rho=1e-30, alpha=0.0)
    for p, g, w in zip(net.parameters(), plain, before):
        torch.testing.assert_close(p.grad, g)
        assert torch.equal(p, w)  # the ascent step is undone
    gsam_gradient(net, loss, rho=0.5, alpha=0.3)
    assert any(not torch.allclose(p.grad, g) for p, g in zip(net.parameters(), plain))


def test_flat_experts_are_separate_cache_entries(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    kw = dict(model="mlp", num_experts=1, train_epochs=1, progress=False)
    plain, flat = train_experts(digits, **kw), train_experts(digits, gsam_rho=0.01, **kw)
    assert not torch.equal(plain.trajectories, flat.trajectories)
    assert len(list((tmp_path / "prepared").glob("expert-*.safetensors"))) == 2


DATM_RUN = dict(ipc=1, model="mlp", num_experts=2, train_epochs=4, batch_train=64, syn_steps=3, expert_epochs=1,
                lr_img=10.0, random_state=0, device="cpu", progress=False)


def test_datm_window_grows_and_labels_are_soft(digits):
    datm = get_method("datm", iterations=8, max_start_epoch=3, initial_max_start_epoch=1, expansion_iterations=4,
                      loss_threshold=None, **DATM_RUN).fit(digits)
    starts = datm.history_["start_epoch"]
    assert starts[:2] == [0.0, 0.0]  # upper end 1 (exclusive) for the first iterations, 3 from iteration 4
    assert all(s <= 1 for s in starts[:4]) and max(starts) <= 2
    s = datm.synthetic_
    assert s.label_kind == "soft" and s.loss == "ce"
    torch.testing.assert_close(s.labels.sum(1), torch.ones(10))


def test_loss_threshold_skips_updates_and_ema_lags_the_images(digits):
    frozen = get_method("datm", iterations=3, max_start_epoch=2, loss_threshold=1e-9, **DATM_RUN)
    start = get_method("datm", iterations=0, max_start_epoch=2, **DATM_RUN)
    with pytest.warns(UserWarning, match="initialisation"):
        start.fit(digits)
    assert torch.equal(frozen.fit(digits).synthetic_.images, start.synthetic_.images)  # every update skipped
    init = get_method("mtt", iterations=0, max_start_epoch=2, **DATM_RUN)
    with pytest.warns(UserWarning, match="initialisation"):
        init.fit(digits)
    raw = get_method("mtt", iterations=1, max_start_epoch=2, **DATM_RUN).fit(digits).synthetic_.images
    ema = get_method("mtt", iterations=1, max_start_epoch=2, ema_decay=0.25, **DATM_RUN).fit(digits).synthetic_.images
    assert not torch.equal(raw, init.synthetic_.images)
    torch.testing.assert_close(ema, 0.25 * init.synthetic_.images + 0.75 * raw)  # the set is the average


def test_zca_run_whitens_with_its_experts_matrix(digits):
    from distillset.experts import fit_whitening
    from distillset.zca import apply_zca

    mtt = get_method("mtt", iterations=0, max_start_epoch=2, zca=True, **DATM_RUN)
    with pytest.warns(UserWarning, match="initialisation"):
        syn = mtt.fit(digits).synthetic_
    extra = fit_whitening(digits, 0.1, "cpu")
    assert torch.equal(syn.extra["zca"], extra["zca"]) and torch.equal(syn.extra["zca_mean"], extra["zca_mean"])
    whitened = apply_zca(digits.normalize(digits.train.images), extra["zca"], extra["zca_mean"]).flatten(1)
    nearest = torch.cdist(syn.images.flatten(1), whitened, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    # each image is a whitened real one (distinct images are several units apart)
    assert nearest.max() < 1e-4, nearest


def test_bf16_precision_runs_the_unroll_in_bf16_and_stays_close(digits):
    """The student's passes take the precision (a different set than float32's), the result stays near it."""
    sets = {p: get_method("mtt", iterations=3, **{**MLP_RUN, "precision": p}).fit(digits).synthetic_
            for p in ("fp32", "bf16")}
    a, b = sets["fp32"].images, sets["bf16"].images
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    init = get_method("mtt", iterations=0, **MLP_RUN)
    with pytest.warns(UserWarning, match="initialisation"):
        moved = (a - init.fit(digits).synthetic_.images).norm()
    assert (a - b).norm() < 0.2 * moved  # bf16's error is small next to what 3 iterations learn
    with pytest.raises(InvalidParameterError, match="precision"):
        get_method("mtt", precision="fp16").fit(digits)
