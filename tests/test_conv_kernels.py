"""The exact conv NNGP/NTK: a closed form through the FC kernel on patches, symmetry and PSD, Monte-Carlo
agreement with wide random conv networks, and tiling that does not change the result."""
import pytest
import torch
import torch.nn.functional as F

from distillset.conv_kernels import ConvKernel
from distillset.errors import InvalidParameterError
from distillset.kernels import FCKernel, make_kernel

W2, B2 = 2.0, 0.01  # the kernels' defaults: W_std = sqrt(2), b_std = 0.1


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_one_conv_layer_with_gap_is_the_fc_kernel_on_patches(kind):
    """conv3x3 -> ReLU -> global average pool -> dense = the mean over pixel pairs of a one-hidden-layer FC
    kernel on the two pixels' (zero-padded) 3x3 patches."""
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64), torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    conv = ConvKernel(["conv", "relu"], kind=kind, readout="gap")(x1, x2)
    p1 = F.unfold(x1, 3, padding=1).transpose(1, 2).reshape(-1, 18)  # (n1 * 25, C * 9) patches
    p2 = F.unfold(x2, 3, padding=1).transpose(1, 2).reshape(-1, 18)
    fc = FCKernel(depth=1, kind=kind)(p1, p2).reshape(3, 25, 2, 25).mean(dim=(1, 3))
    torch.testing.assert_close(conv, fc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["conv_ntk(depth=2)", "conv_nngp(depth=3)", "myrtle_ntk", "myrtle_nngp(depth=7)"])
def test_registered_kernels_are_symmetric_psd_with_their_diagonal(spec):
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = make_kernel(spec)
    gram = k(x)
    torch.testing.assert_close(gram, gram.T, rtol=1e-12, atol=1e-12)
    assert torch.linalg.eigvalsh(gram).min() > 0
    torch.testing.assert_close(gram.diagonal(), k.diag(x), rtol=1e-12, atol=1e-12)


def test_tiles_do_not_change_the_kernel():
    x1 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x2 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    whole = ConvKernel("convnet", depth=2, max_pair_mib=1e6)(x1, x2)
    one_pair = ConvKernel("convnet", depth=2, max_pair_mib=1e-6)  # one image pair per tile
    assert one_pair._tile(x1) == 1
    torch.testing.assert_close(one_pair(x1, x2), whole, rtol=1e-13, atol=1e-13)
    k_ss, k_ts = one_pair.pair(x2, x1)  # what KIP calls: the support's variances computed once
    torch.testing.assert_close(k_ts, whole, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(k_ss, one_pair(x2), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("arch, depth, kind, shape, b_std", [
    ("convnet", 1, "ntk", (2, 5, 5), 0.1), ("convnet", 2, "nngp", (1, 9, 7), 0.1), ("convnet", 3, "ntk", (3, 12, 12), 0.1),
    ("convnet", 2, "ntk", (1, 8, 8), 0.0), ("myrtle", 7, "ntk", (1, 8, 8), 0.1)])
def test_banded_pairs_equal_all_pairs_with_their_gradient(arch, depth, kind, shape, b_std):
    """A flatten readout computes only the pixel pairs it reads (offsets within the radius of ``_first_radius``):
    the kernel and its gradient in the images equal the all-pairs recursion's in float64 (odd and non-square
    maps; without biases, on images with zero patches, where off-grid pairs must not pass the ReLU; Myrtle-7,
    whose two convs in a row before a pool would carry off-grid NTK terms into the band if not cleared)."""
    g = torch.Generator().manual_seed(9)
    x1, x2 = torch.randn(3, *shape, generator=g, dtype=torch.float64), torch.randn(2, *shape, generator=g, dtype=torch.float64)
    x1[0, :, :3] = 0.0
    results = []
    for banded in (True, False):
        k = ConvKernel(arch, depth=depth, kind=kind, b_std=b_std, readout="flatten")
        k._banded = banded
        a = x1.clone().requires_grad_(True)
        gram = k(a, x2)
        (grad,) = torch.autograd.grad((gram * torch.linspace(0.5, 1.5, gram.numel(), dtype=gram.dtype).view_as(gram)).sum(), a)
        results.append((gram, grad, k.diag(x1)))
    for banded, full in zip(*results):
        assert torch.isfinite(banded).all()
        torch.testing.assert_close(banded, full, rtol=1e-12, atol=1e-13)


def test_a_band_wider_than_the_image_uses_all_pairs():
    k = ConvKernel("convnet", depth=4)  # radius 15: 961 offsets per pixel against 784 pixels on 28 x 28
    assert type(k._geometry(28, 28)).__name__ == "_Dense" and type(k._geometry(64, 64)).__name__ == "_Banded"


def test_images_too_small_for_the_pools_are_refused():
    ConvKernel("convnet", depth=3).check((1, 8, 8))
    with pytest.raises(InvalidParameterError, match="at least 16 pixels a side"):
        ConvKernel("convnet", depth=4).check((1, 8, 8))


def test_nngp_matches_wide_random_networks():
    """The readout's covariance given the last hidden layer of ``ntk_convnet`` (the finite network of the same
    architecture and parameterisation), averaged over 4 networks of width 1024: within 5 % of the largest
    entry (measured: 1.4 %; a depth-3 kernel instead is off by 66 %)."""
    from distillset.models import get_model

    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = ConvKernel("convnet", depth=2, kind="nngp")(x)
    estimates = []
    for seed in range(4):
        with torch.no_grad():
            h = get_model("ntk_convnet(width=1024, depth=2)", (2, 8, 8), 1, seed=seed).double().embed(x)
        estimates.append(W2 * h @ h.T / h.shape[1] + B2)
    mc = torch.stack(estimates).mean(0)
    assert ((mc - exact).abs() / exact.abs().max()).max() < 0.05


def test_ntk_matches_wide_random_networks():
    """The empirical NTK (Jacobian inner products) of ``ntk_convnet`` networks of width 512, averaged over 4:
    within 10 % of the largest entry (measured: 3.8 %; 1.5 % at width 2048; the fluctuation shrinks as
    1/sqrt(width))."""
    from torch.func import functional_call, jacrev

    from distillset.models import get_model

    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = ConvKernel("convnet", depth=2, kind="ntk")(x)
    estimates = []
    for seed in range(4):
        net = get_model("ntk_convnet(width=512, depth=2)", (1, 8, 8), 1, seed=seed).double()
        params = dict(net.named_parameters())
        jac = jacrev(lambda p: functional_call(net, p, (x,)).squeeze(1))(params)
        flat = torch.cat([j.reshape(3, -1) for j in jac.values()], 1)
        estimates.append(flat @ flat.T)
    mc = torch.stack(estimates).mean(0)
    assert ((mc - exact).abs() / exact.abs().max()).max() < 0.10


def test_the_finite_fc_network_matches_fc_ntk():
    """``ntk_fc`` is the finite ``fc_ntk``: its empirical NNGP at width 4096 (4 draws) within 5 % (measured 2.7 %)."""
    from distillset.models import get_model

    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = FCKernel(depth=2, kind="nngp")(x)
    estimates = []
    for seed in range(4):
        with torch.no_grad():
            h = get_model("ntk_fc(width=4096, depth=2)", (1, 4, 4), 1, seed=seed).double().embed(x)
        estimates.append(W2 * h @ h.T / h.shape[1] + B2)
    assert ((torch.stack(estimates).mean(0) - exact).abs() / exact.abs().max()).max() < 0.05


def test_a_centred_network_starts_at_zero_and_keeps_its_initial_copy():
    """``centred=True``: the zero function at initialisation, the same weights as the plain network of the same
    seed, and a frozen copy that SGD with momentum and weight decay does not touch."""
    from distillset.models import get_model

    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    plain = get_model("ntk_convnet(width=8, depth=1)", (1, 6, 6), 3, seed=3)
    net = get_model("ntk_convnet(width=8, depth=1, centred=True)", (1, 6, 6), 3, seed=3)
    assert torch.equal(net(x), torch.zeros(4, 3))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), net.net.parameters()))
    frozen = [p.clone() for p in net.initial.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x), torch.ones(4, 3)).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, net.initial.parameters()))
    assert torch.allclose(net(x), net.net(x) - net.initial(x))
    assert F.mse_loss(net(x), torch.ones(4, 3)) < 1.0  # it trained


def test_a_wide_centred_network_follows_the_kernel_mean_prediction():
    """Width 8192, full-batch GD with MSE for 100 steps, float64: the centred network's test outputs equal the
    kernel's mean prediction after the same steps, K_ts K_ss^-1 (I - (I - eta K_ss)^100) y, within 10 % of
    their scale (measured: 3.8 %), where the plain network of the same seed is off by its random initial
    function (measured: 620 %)."""
    from distillset.models import get_model

    g = torch.Generator().manual_seed(8)
    x, x_test, y = torch.randn(6, 1, 4, 4, generator=g).double(), torch.randn(3, 1, 4, 4, generator=g).double(), \
        torch.randn(6, 1, generator=g).double()
    kernel = FCKernel(depth=1, kind="ntk")
    k_ss, k_ts = kernel(x), kernel(x_test, x)
    eta, steps = 1.0 / float(torch.linalg.eigvalsh(k_ss).max()), 100
    propagator = torch.linalg.matrix_power(torch.eye(6, dtype=torch.float64) - eta * k_ss, steps)
    expected = k_ts @ torch.linalg.solve(k_ss, (torch.eye(6, dtype=torch.float64) - propagator) @ y)
    errors = {}
    for centred in (True, False):
        net = get_model(f"ntk_fc(width=8192, centred={centred})", (1, 4, 4), 1, seed=0).double()
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=eta)
        for _ in range(steps):  # loss 1/2 sum (f - y)^2: gradient flow df = -eta K (f - y) per step
            opt.zero_grad()
            (0.5 * (net(x) - y).pow(2).sum()).backward()
            opt.step()
        with torch.no_grad():
            errors[centred] = float((net(x_test) - expected).abs().max() / expected.abs().max())
    assert errors[True] < 0.10 and errors[False] > 2 * errors[True], errors
