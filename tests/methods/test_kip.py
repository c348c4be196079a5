"""KIP and LS on digits: the loss goes down, the labels solve the least-squares problem, options work."""
import pytest
import torch

from distillset.errors import InvalidParameterError, UnknownNameError
from distillset.kernels import FCKernel, centered_one_hot, kernel_accuracy, krr_predict
from distillset.methods import get_method



def kip(**kw):
    return get_method("kip", **{**dict(ipc=1, batch_target=300, random_state=0, device="cpu", progress=False), **kw})


def train_loss(syn, digits, kernel=FCKernel(1, "ntk")):
    """0.5 mean squared KRR error from the set to the whole (normalised) training set."""
    x = digits.normalize(digits.train.images)
    y_t = centered_one_hot(digits.train.labels, 10)
    y_s = syn.labels.double() if syn.labels.dim() == 2 else centered_one_hot(syn.labels, 10)
    pred = krr_predict(kernel(syn.images), kernel(x, syn.images), y_s)
    return float(0.5 * ((pred - y_t) ** 2).mean())


def test_kip_lowers_its_loss(digits):
    start = kip(iterations=0).fit(digits).synthetic_
    m = kip(iterations=40).fit(digits)
    h = m.history_["loss"]
    assert sum(h[-5:]) / 5 < 0.9 * sum(h[:5]) / 5
    assert train_loss(m.synthetic_, digits) < 0.9 * train_loss(start, digits)
    assert m.synthetic_.labels.dtype == torch.int64  # fixed labels stay hard labels
    x_test, y_test = digits.normalize(digits.test.images), digits.test.labels
    k = FCKernel(1, "ntk")
    assert kernel_accuracy(k, m.synthetic_.images, m.synthetic_.labels, x_test, y_test) > \
        kernel_accuracy(k, start.images, start.labels, x_test, y_test)


def test_kip_learned_labels_and_platt(digits):
    m = kip(iterations=5, learn_labels=True).fit(digits)
    y = m.synthetic_.labels
    assert y.shape == (10, 10) and y.dtype == torch.float32
    assert not torch.allclose(y, centered_one_hot(torch.arange(10), 10, torch.float32))
    p = kip(iterations=5, loss="platt").fit(digits)
    assert all(torch.isfinite(torch.tensor(p.history_["loss"])))


def test_kip_kernel_family_augment_and_random_features(digits):
    fam = dict(kernel=["fc_ntk(depth=1)", "fc_nngp(depth=2)", "rbf"], augment="auto", iterations=3)
    a, b = kip(**fam).fit(digits).synthetic_, kip(**fam).fit(digits).synthetic_
    assert torch.equal(a.images, b.images) and torch.isfinite(a.images).all()
    rf = kip(kernel="rf_nngp(n_models=2)", model="convnet_w32", iterations=2, batch_target=50).fit(digits)
    assert torch.isfinite(rf.synthetic_.images).all() and len(rf.history_["loss"]) == 2


def test_kip_errors(digits):
    with pytest.raises(UnknownNameError, match="Unknown kernel"):
        kip(kernel="ntk").fit(digits)
    with pytest.raises(InvalidParameterError, match="'loss' parameter of KIP"):
        kip(loss="ce").fit(digits)


@pytest.mark.parametrize("method, spec, message", [
    ("kip", "conv_ntk(depth=0)", "'depth' parameter of ConvKernel"),
    ("kip", "myrtle_ntk(depth=4)", "depth 5, 7 or 10"),
    ("kip", ["fc_ntk", "conv_ntk(foo=1)"], "kernel 'conv_ntk' has no option 'foo'"),
    ("ls", "rbf(gamma=-1)", "'gamma' parameter of rbf"),
    ("kip", "conv_ntk(readout=flat)", "strings quoted"),
    ("kip", "conv_ntk(depth=4)", "at least 16 pixels a side"),  # digits are 8 x 8
    ("ls", "conv_ntk(w_std='x')", "cannot be built with"),
    ("kip", "conv_ntk(kind='nngp')", "cannot be built with"),
    ("kip", [], r"a non-empty list of them. Got \[\]"),  # was a raw error in the first step
    ("kip", ["fc_ntk", 3], "kernel must be a kernel spec"),
])
def test_a_bad_kernel_spec_is_refused_before_any_work(digits, method, spec, message):
    """Every member of the family is built on the data's shape in fit's validation, before any preparation."""
    m = get_method(method, kernel=spec, ipc=1, random_state=0, device="cpu", progress=False,
                   **({"iterations": 1} if method == "kip" else {}))
    with pytest.raises(InvalidParameterError, match=message):
        m.fit(digits)
    assert not hasattr(m, "prepared_")


def test_ls_labels_are_the_least_squares_solution(digits):
    m = get_method("ls", ipc=2, reg=1e-4, ls_reg=0.0, chunk=500, random_state=0, device="cpu", progress=False).fit(digits)
    syn = m.synthetic_
    k = FCKernel(1, "ntk")
    x = digits.normalize(digits.train.images).double()
    y_t = centered_one_hot(digits.train.labels, 10)
    x_s = syn.images.double()
    k_ss, k_ts = k(x_s), k(x, x_s)
    z = torch.linalg.lstsq(k_ts, y_t).solution  # argmin ||K_ts z - y_t||, unstreamed, float64
    lam = 1e-4 * torch.trace(k_ss) / k_ss.shape[0]
    want = (k_ss + lam * torch.eye(20, dtype=torch.float64)) @ z
    assert torch.allclose(syn.labels.double(), want, rtol=1e-3, atol=1e-3 * want.abs().max())
    one_hot = syn.__class__(syn.images, torch.arange(10).repeat_interleave(2), dict(syn.meta))
    assert train_loss(syn, digits) < train_loss(one_hot, digits)


def test_ls_has_no_iterations(digits):
    with pytest.raises(InvalidParameterError, match="'iterations' parameter of LS"):
        get_method("ls", ipc=1, iterations=5, device="cpu").fit(digits)


def test_own_protocol_is_kernel_accuracy_of_the_set(digits):
    """KIP's and LS's own evaluation is KRR accuracy under their kernel, in the set's (whitened) space."""
    from distillset.kernels import kernel_accuracy, make_kernel
    from distillset.zca import apply_zca

    for name, kw in (("kip", dict(iterations=3, zca=True)), ("ls", {})):
        syn = get_method(name, ipc=1, random_state=0, device="cpu", progress=False, **kw).fit(digits).synthetic_
        own = type(get_method(name)).own_protocol(syn, digits, n_models=3)
        x_test = digits.normalize(digits.test.images)
        if "zca" in syn.extra:
            x_test = apply_zca(x_test, syn.extra["zca"], syn.extra.get("zca_mean"))
        expected = kernel_accuracy(make_kernel("fc_ntk"), syn.images, syn.labels, x_test, digits.test.labels)
        assert own["accuracies"] == [expected] and own["std"] == 0.0  # a closed-form kernel: one number
        assert "kernel accuracy" in own["protocol"]
    rf = get_method("kip", ipc=1, iterations=2, kernel="rf_nngp(n_models=2)", random_state=0, device="cpu",
                    progress=False).fit(digits).synthetic_
    assert len(get_method("kip").own_protocol(rf, digits, n_models=3)["accuracies"]) == 3  # one per kernel draw


def test_kip_with_the_exact_conv_kernel_lowers_its_loss(digits):
    """KIP learns through the exact ConvNet NTK (autograd through the pixel-pair recursion)."""
    m = kip(iterations=6, kernel="conv_ntk(depth=2)", batch_target=100, lr=0.01, log_every=1).fit(digits)
    loss = m.history_["loss"]
    assert all(map(torch.isfinite, map(torch.tensor, loss))) and loss[-1] < loss[0]
    own = get_method("kip").own_protocol(m.synthetic_, digits)
    assert own["protocol"].startswith("kernel accuracy, KRR under conv_ntk") and own["mean"] > 30
