"""Kernels and KRR: closed forms against Monte-Carlo networks, ridge regression and least squares."""
import math

import pytest
import torch

from distillset.errors import InvalidParameterError, NumericalError, UnknownNameError
from distillset.kernels import (FCKernel, LinearKernel, RBFKernel, RandomFeatureKernel, centered_one_hot,
                                kernel_accuracy, krr_predict, label_solve, make_kernel, parse_kernel_spec, psd_solve)

W_STD, B_STD = math.sqrt(2.0), 0.1


def _points(n=6, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[1] *= 2.5  # different norms
    x[2] = -0.3 * x[0] + 0.1 * x[3]
    return x


def _random_fc(x, depth, width, g):
    """One random NTK-parameterised ReLU net (scalar output), returns (readout-conditional NNGP, empirical NTK)."""
    d = x.shape[1]
    ws, bs = [], []
    fan_in = d
    for _ in range(depth):
        ws.append(torch.randn(width, fan_in, generator=g, dtype=torch.float64).requires_grad_(True))
        bs.append(torch.randn(width, generator=g, dtype=torch.float64).requires_grad_(True))
        fan_in = width
    w_out = torch.randn(1, fan_in, generator=g, dtype=torch.float64).requires_grad_(True)
    b_out = torch.randn(1, generator=g, dtype=torch.float64).requires_grad_(True)
    a = x
    for w, b in zip(ws, bs):
        a = torch.relu(W_STD / math.sqrt(a.shape[1]) * a @ w.T + B_STD * b)
    # NNGP given the hidden layers: E over the readout of f(x) f(x')
    nngp = W_STD ** 2 / a.shape[1] * a @ a.T + B_STD ** 2
    f = (W_STD / math.sqrt(a.shape[1]) * a @ w_out.T + B_STD * b_out)[:, 0]  # (n,)
    params = [*ws, *bs, w_out, b_out]
    rows = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(f[i], params, retain_graph=True)
        rows.append(torch.cat([gr.flatten() for gr in grads]))
    jac = torch.stack(rows)  # (n, P)
    return nngp.detach(), (jac @ jac.T).detach()


@pytest.mark.parametrize("depth", [1, 2])
def test_fc_kernels_match_monte_carlo(depth):
    """Tolerance: |MC mean - closed form| <= 4 standard errors (over nets) + 2 % of |closed form| for the
    O(1/width) finite-width bias. Width 1024, 16 nets. The same check rejects b_std = 0.3 and depth + 1
    (the test has power: errors are then 35-1200 standard errors)."""
    x = _points()
    g = torch.Generator().manual_seed(depth)
    draws = [_random_fc(x, depth, 1024, g) for _ in range(16)]
    for j, kind in enumerate(("nngp", "ntk")):
        mc = torch.stack([d[j] for d in draws])  # (R, n, n)
        mean, se = mc.mean(0), mc.std(0) / math.sqrt(mc.shape[0])

        def agrees(k):
            return bool(((mean - k).abs() <= 4 * se + 0.02 * k.abs()).all())

        exact = FCKernel(depth=depth, kind=kind)(x)
        assert agrees(exact), (kind, ((mean - exact).abs() / se).max())
        assert not agrees(FCKernel(depth=depth, kind=kind, b_std=0.3)(x))
        assert not agrees(FCKernel(depth=depth + 1, kind=kind)(x))


def test_fc_depth0_is_affine_in_the_dot_product():
    x = _points()
    k = FCKernel(depth=0, kind="nngp")(x)
    assert torch.allclose(k, W_STD ** 2 * x @ x.T / x.shape[1] + B_STD ** 2)


KERNELS = [FCKernel(1, "ntk"), FCKernel(3, "ntk"), FCKernel(2, "nngp"), RBFKernel(), LinearKernel()]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{getattr(k, 'depth', '')}")
def test_symmetric_psd_and_diag(kernel):
    x = _points(8)
    x = torch.cat([x, x[:2]])  # duplicates included
    k = kernel(x)
    assert torch.equal(k, k.T) or torch.allclose(k, k.T, atol=1e-12)
    assert torch.linalg.eigvalsh(k).min() > -1e-10 * k.diagonal().mean()
    assert torch.allclose(kernel.diag(x), k.diagonal(), rtol=1e-10, atol=1e-12)
    assert torch.allclose(kernel(x, x[:3]), k[:, :3], rtol=1e-10, atol=1e-12)


def test_random_feature_kernel_psd_seeded_and_differentiable():
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    k1 = RandomFeatureKernel((1, 8, 8), 10, model="convnet_w32", n_models=2, seed=3)
    k2 = make_kernel("rf_nngp(n_models=2, seed=3, model='convnet_w32')", in_shape=(1, 8, 8))
    a = k1(x)
    assert torch.allclose(a, k2(x)) and torch.allclose(a, a.T, atol=1e-6)
    assert torch.linalg.eigvalsh(a.double()).min() > -1e-5 * a.diagonal().mean()
    assert torch.allclose(k1.diag(x), a.diagonal(), rtol=1e-5)
    k_ss, k_ts = k1.pair(x[:2], x)
    assert torch.allclose(k_ss, a[:2, :2], atol=1e-6) and torch.allclose(k_ts, a[:, :2], atol=1e-6)
    a.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for net in k1._nets for p in net.parameters())
    assert not torch.allclose(a, make_kernel("rf_nngp(n_models=2, model='convnet_w32')", in_shape=(1, 8, 8), seed=4)(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_finite_gradients_on_the_diagonal(dtype, kind):
    """K(x, x) and a KRR loss through it, with duplicated support points: no NaN/inf gradients."""
    x = _points(5).to(dtype)
    x = torch.cat([x, x[:2]]).requires_grad_(True)
    kernel = FCKernel(3, kind)
    kernel(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    x.grad = None
    kernel.diag(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    x.grad = None
    y = centered_one_hot(torch.tensor([0, 1, 2, 0, 1, 0, 1]), 3)
    k_ss, k_ts = kernel.pair(x, x[:4].detach() + 0.1)
    (krr_predict(k_ss, k_ts, y, reg=1e-6) ** 2).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_krr_with_linear_kernel_is_ridge_regression():
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(30, 8, generator=g, dtype=torch.float64), torch.randn(7, 8, generator=g, dtype=torch.float64)
    y_s = torch.randn(30, 3, generator=g, dtype=torch.float64)
    k = LinearKernel(normalize=False)
    reg = 0.05
    lam = reg * torch.trace(k(x_s)) / 30  # the trace-normalised ridge
    pred = krr_predict(k(x_s), k(x_t, x_s), y_s, reg=reg)
    w = torch.linalg.solve(x_s.T @ x_s + lam * torch.eye(8, dtype=torch.float64), x_s.T @ y_s)  # primal ridge
    assert torch.allclose(pred, x_t @ w, atol=1e-10)
    sklearn = pytest.importorskip("sklearn.linear_model")
    ridge = sklearn.Ridge(alpha=float(lam), fit_intercept=False).fit(x_s.numpy(), y_s.numpy())
    assert torch.allclose(pred, torch.from_numpy(ridge.predict(x_t.numpy())), atol=1e-8)


def test_label_solve_is_least_squares_and_streams():
    g = torch.Generator().manual_seed(1)
    x_s, x_t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(50, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (50,), generator=g)
    y_t = centered_one_hot(labels, 3)
    kernel = FCKernel(2, "ntk")
    reg = 1e-3
    y_s = label_solve(kernel, x_s, x_t, y_t, reg=reg, ls_reg=0.0, chunk=7)
    # the same problem, unstreamed: z = argmin ||K_ts z - y_t||, y_s = (K_ss + lam I) z
    k_ss, k_ts = kernel(x_s), kernel(x_t, x_s)
    z = torch.linalg.lstsq(k_ts, y_t).solution
    lam = reg * torch.trace(k_ss) / 6
    assert torch.allclose(y_s, (k_ss + lam * torch.eye(6, dtype=torch.float64)) @ z, atol=1e-7)
    assert torch.allclose(label_solve(kernel, x_s, x_t, y_t, reg=reg, ls_reg=0.0, chunk=1000), y_s, atol=1e-9)
    # they minimise the KRR loss on the target set: the gradient w.r.t. the labels vanishes
    y = y_s.clone().requires_grad_(True)
    loss = ((krr_predict(k_ss, k_ts, y, reg=reg) - y_t) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, y)
    assert grad.abs().max() < 1e-6
    assert loss < ((krr_predict(k_ss, k_ts, centered_one_hot(labels[:6], 3), reg=reg) - y_t) ** 2).sum()


def test_psd_solve_retries_with_jitter():
    a = torch.ones(4, 4, dtype=torch.float64)  # rank 1: plain Cholesky fails
    x = psd_solve(a, torch.ones(4, 1, dtype=torch.float64))
    assert torch.isfinite(x).all() and torch.allclose(a @ x, torch.ones(4, 1, dtype=torch.float64), atol=1e-4)
    with pytest.raises(NumericalError, match="raise the ridge"):
        psd_solve(-torch.eye(3, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64))


def test_kernel_accuracy_on_separable_data():
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 10, generator=g)
    labels = torch.arange(3).repeat(40)
    x = centers[labels] + 0.1 * torch.randn(120, 10, generator=g)
    assert kernel_accuracy(FCKernel(1), x[:3], labels[:3], x, labels, num_classes=3) == 100.0


def test_specs():
    assert parse_kernel_spec("fc_ntk") == ("fc_ntk", {})
    assert parse_kernel_spec("rbf(gamma=0.5)") == ("rbf", {"gamma": 0.5})
    assert isinstance(make_kernel("fc_nngp(depth=2)"), FCKernel) and make_kernel("fc_nngp(depth=2)").kind == "nngp"
    with pytest.raises(UnknownNameError, match="Did you mean 'fc_ntk'"):
        make_kernel("fc_ntkk")
    with pytest.raises(InvalidParameterError, match="key=literal"):
        parse_kernel_spec("rbf(0.5)")
    with pytest.raises(InvalidParameterError, match="'depth' parameter of FCKernel"):
        FCKernel(depth=-1)
