"""Tests of DSA: parsing, sampling, the pure ops, siamese sameness, gradients and identities."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from distillset.augment import (
    DEFAULT_STRATEGY,
    FAMILIES,
    AugParams,
    apply,
    augment,
    default_strategy,
    functional,
    identity_params,
    parse_strategy,
    sample_params,
    siamese,
)
from distillset.errors import InvalidParameterError

SHAPE = (3, 8, 8)


@pytest.fixture
def device(request):
    """CPU unless ``--device`` (when a root conftest defines it) or $DISTILLSET_TEST_DEVICE says otherwise."""
    try:
        dev = request.config.getoption("--device")
    except ValueError:
        dev = None
    return torch.device(dev or os.environ.get("DISTILLSET_TEST_DEVICE", "cpu"))


def gen(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b, shape=SHAPE, seed=0, device="cpu", dtype=torch.float32):
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


# --------------------------------------------------------------------------- strategies


def test_parse_strategy():
    assert parse_strategy(DEFAULT_STRATEGY) == FAMILIES
    assert parse_strategy("none") == parse_strategy("") == ()
    assert parse_strategy("rotate_color") == ("rotate", "color")


@pytest.mark.parametrize("bad, needle", [("color_colour", "'colour'"), ("crop_none", "'none'"), ("scale_", "''")])
def test_unknown_family_names_it_and_lists_valid(bad, needle):
    with pytest.raises(InvalidParameterError, match=needle) as info:
        parse_strategy(bad)
    assert all(f in str(info.value) for f in FAMILIES)
    with pytest.raises(InvalidParameterError):
        sample_params(bad, 2, SHAPE, generator=torch.Generator())


def test_strategy_errors():
    with pytest.raises(InvalidParameterError, match="more than once"):
        parse_strategy("flip_flip")
    with pytest.raises(InvalidParameterError, match="Did you mean 'color'"):
        parse_strategy("colour")
    with pytest.raises(InvalidParameterError):
        parse_strategy(None)


def test_default_strategy_drops_flip_for_digits_only():
    for name in ("mnist", "MNIST", "digits", "svhn", "kmnist", "usps"):
        assert default_strategy(name) == "color_crop_cutout_scale_rotate"
    for name in ("cifar10", "fashion-mnist", "tinyimagenet"):
        assert default_strategy(name) == DEFAULT_STRATEGY


# --------------------------------------------------------------------------- sampling


def test_same_seed_same_params_different_seed_different(device):
    a, b, c = (sample_params(DEFAULT_STRATEGY, 16, SHAPE, generator=gen(s, device), family_per="row")
               for s in (3, 3, 4))
    for name in AugParams._TAILS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.angle, c.angle) and not torch.equal(a.scale, c.scale)
    assert a.family.device.type == device.type


def test_global_rng_untouched(device):
    cpu_state = torch.get_rng_state()
    x = images(4, device=device)
    g = gen(0, device)
    p = sample_params(DEFAULT_STRATEGY, 4, SHAPE, generator=g, family_per="row")
    apply(x, p)
    augment(x, DEFAULT_STRATEGY, generator=g)
    siamese(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), "crop", 1, generator=g)
    assert torch.equal(cpu_state, torch.get_rng_state())


def test_number_of_draws_does_not_depend_on_family():
    states = []
    for strategy in ("color", "crop_flip", DEFAULT_STRATEGY):
        g = torch.Generator().manual_seed(0)
        sample_params(strategy, 5, SHAPE, generator=g)
        states.append(g.get_state())
    assert all(torch.equal(states[0], s) for s in states[1:])


def test_ranges_over_many_draws():
    n, h = 20000, 32
    p = sample_params(DEFAULT_STRATEGY, n, (3, h, h), generator=torch.Generator().manual_seed(0), family_per="row")
    assert p.angle.abs().max() <= 15 and p.angle.abs().max() > 14.9
    assert p.scale.min() >= 1 / 1.2 and p.scale.max() <= 1.2
    assert not torch.equal(p.scale[:, 0], p.scale[:, 1])  # sx, sy independent
    assert 0.47 < p.flip.float().mean() < 0.53
    assert p.brightness.min() >= -0.5 and p.brightness.max() <= 0.5
    assert p.saturation.min() >= 0 and p.saturation.max() < 2
    assert p.contrast.min() >= 0.5 and p.contrast.max() < 1.5
    assert p.crop_shift.abs().max() == 0.125 * h  # every shift in [-4, 4] is reachable
    assert set(p.crop_shift.flatten().tolist()) == set(range(-4, 5))
    assert (p.cutout_size == 16).all() and p.cutout_center.min() == 0 and p.cutout_center.max() == h
    assert set(p.family.tolist()) == set(range(len(FAMILIES)))
    assert p.crop_shift.dtype == p.cutout_center.dtype == p.family.dtype == torch.long


def test_family_per_call_is_one_family():
    for seed in range(5):
        p = sample_params(DEFAULT_STRATEGY, 7, SHAPE, generator=torch.Generator().manual_seed(seed))
        assert (p.family == p.family[0]).all()


def test_family_per_all_applies_every_family_in_order_with_the_draws_of_call():
    x = torch.rand(4, *SHAPE)
    call = sample_params("color_crop_cutout", 4, SHAPE, generator=torch.Generator().manual_seed(0))
    every = sample_params("color_crop_cutout", 4, SHAPE, generator=torch.Generator().manual_seed(0), family_per="all")
    assert every.composed and not call.composed and torch.equal(every.crop_shift, call.crop_shift)
    expected = x
    for family in ("color", "crop", "cutout"):  # the strategy's order, each family alone with the same rows
        alone = dataclasses.replace(every, strategy=family, family=torch.zeros(4, dtype=torch.long), composed=False)
        expected = apply(expected, alone)
    assert torch.equal(apply(x, every), expected) and not torch.equal(apply(x, call), expected)
    same = apply(x[:1].expand(2, *SHAPE), every, torch.tensor([3, 3]))  # siamese use: one row per class
    assert every.take(torch.tensor([3])).composed and torch.equal(same[0], same[1])


def test_take_and_validation():
    p = sample_params(DEFAULT_STRATEGY, 3, SHAPE, generator=torch.Generator().manual_seed(0), family_per="row")
    q = p.take(torch.tensor([2, 2, 0]))
    assert len(q) == 3 and torch.equal(q.angle, p.angle[[2, 2, 0]]) and torch.equal(q.crop_shift[0], p.crop_shift[2])
    with pytest.raises(ValueError, match="1-D integer"):
        p.take(torch.tensor([0.5]))
    with pytest.raises(InvalidParameterError, match="'n' parameter"):
        sample_params("crop", -1, SHAPE, generator=torch.Generator())
    with pytest.raises(InvalidParameterError, match="'family_per' parameter"):
        sample_params("crop", 2, SHAPE, generator=torch.Generator(), family_per="image")
    with pytest.raises(InvalidParameterError, match="torch.Generator"):
        sample_params("crop", 2, SHAPE, generator=0)
    with pytest.raises(InvalidParameterError, match="image_shape"):
        sample_params("crop", 2, (3, 8, 8, 8), generator=torch.Generator())
    with pytest.raises(ValueError, match="AugParams.angle"):
        dataclasses.replace(p, angle=torch.zeros(2))


# --------------------------------------------------------------------------- apply


@pytest.mark.parametrize("strategy", list(FAMILIES) + [DEFAULT_STRATEGY])
def test_identity_params_give_identity(strategy, device):
    x = images(4, device=device)
    y = apply(x, identity_params(strategy, 4, SHAPE))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_none_strategy_is_identity_and_draws_nothing():
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x = images(2)
    assert apply(x, sample_params("none", 2, SHAPE, generator=g)) is x
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_same_rows_same_transform(family, device):
    g = gen(1, device)
    real, syn = images(6, device=device), images(4, seed=1, device=device)
    y_real, y_syn = torch.tensor([0, 1, 2, 0, 1, 2], device=device), torch.tensor([2, 1, 0, 2], device=device)
    syn[0] = real[2]  # the same class-2 image on both sides
    p = sample_params(family, 3, SHAPE, generator=g)
    a, b = apply(real, p, y_real), apply(syn, p, y_syn)
    assert torch.equal(a, apply(real.clone(), p, y_real))  # pure: same inputs, same bits
    assert torch.equal(a[2], b[0])
    ra, rb = siamese(real, y_real, syn, y_syn, family, 3, generator=gen(1, device))
    assert torch.equal(ra, a) and torch.equal(rb, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_per_image_mode_varies(family, device):
    x = images(1, device=device).expand(8, *SHAPE).contiguous()
    y = augment(x, family, generator=gen(0, device))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not all(torch.equal(y[0], y[i]) for i in range(1, 8))


def test_augment_equals_sample_then_apply():
    x = images(5)
    p = sample_params(DEFAULT_STRATEGY, 5, SHAPE, generator=torch.Generator().manual_seed(7))
    assert torch.equal(augment(x, DEFAULT_STRATEGY, generator=torch.Generator().manual_seed(7)), apply(x, p))


def test_row_mode_mixed_families_match_one_family_at_a_time(device):
    n = 24
    x = images(n, device=device)
    p = sample_params(DEFAULT_STRATEGY, n, SHAPE, generator=gen(2, device), family_per="row")
    assert len(set(p.family.tolist())) > 3
    y = apply(x, p)
    for i in range(n):  # reference: each row alone, with its family as a one-family strategy
        fam = FAMILIES[int(p.family[i])]
        one = dataclasses.replace(p.take(torch.tensor([i])), strategy=fam, family=torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(y[i:i + 1], apply(x[i:i + 1], one), atol=1e-6, rtol=0)


def test_apply_errors():
    p = sample_params("crop", 3, SHAPE, generator=torch.Generator())
    with pytest.raises(ValueError, match="pass index="):
        apply(images(4), p)
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        apply(images(4), p, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="size"):
        apply(images(3, shape=(3, 6, 6)), p)
    with pytest.raises(ValueError, match="float images"):
        apply(images(3)[0], p)
    bad = dataclasses.replace(p, strategy="crop_flip", family=torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="2 families"):
        apply(images(3), bad)


def test_float64_and_dtype_kept():
    x = images(6, dtype=torch.float64)
    p = sample_params(DEFAULT_STRATEGY, 6, SHAPE, generator=torch.Generator().manual_seed(0), family_per="row")
    y = apply(x, p)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.float(), apply(x.float(), p), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the ops against simple equivalents


def test_ops_known_answers():
    x = images(2, shape=(2, 5, 5))
    torch.testing.assert_close(functional.rotate(x, torch.tensor([90.0, -90.0])),
                               torch.stack([torch.rot90(x[0], 1, (1, 2)), torch.rot90(x[1], -1, (1, 2))]), atol=1e-5,
                               rtol=0)
    assert torch.equal(functional.flip(x, torch.tensor([True, False])), torch.stack([x[0].flip(-1), x[1]]))
    shifted = functional.crop(x, torch.tensor([[1, -2], [0, 0]]))
    assert torch.equal(shifted[0, :, :3, 1:], x[0, :, 2:, :4]) and (shifted[0, :, 3:] == 0).all()
    assert (shifted[0, :, :, 0] == 0).all() and torch.equal(shifted[1], x[1])
    cut = functional.cutout(x, torch.tensor([[0, 4], [2, 2]]), torch.tensor([[2, 2], [3, 3]]))
    keep = torch.ones(2, 1, 5, 5)
    keep[0, :, 3:5, 0:1] = 0  # a 2-square centred at (0, 4) loses its left column
    keep[1, :, 1:4, 1:4] = 0
    assert torch.equal(cut, x * keep)
    torch.testing.assert_close(functional.scale(x, torch.tensor([[0.5, 1.0], [1.0, 1.0]]))[0, :, :, 2],
                               x[0, :, :, 2])  # the centre column stays put
    c = functional.color(x, torch.tensor([0.5, 0.0]), torch.ones(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(c[0], x[0] + 0.5)
    torch.testing.assert_close(c[1], x[1].mean().expand_as(x[1]))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("family", ["color", "scale", "rotate", "flip", "crop", "cutout"])
def test_gradcheck_float64(family):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    p = sample_params(family, 1, (2, 6, 6), generator=torch.Generator().manual_seed(1))
    if family == "flip":
        p = dataclasses.replace(p, flip=torch.tensor([True]))
    assert torch.autograd.gradcheck(lambda t: apply(t, p), (x,))


@pytest.mark.parametrize("family", ["crop", "cutout"])
def test_masked_gradient_is_the_mask(family, device):
    x = images(4, device=device).requires_grad_(True)
    p = sample_params(family, 4, SHAPE, generator=gen(0, device))
    apply(x, p).sum().backward()
    ones = torch.ones_like(x)
    if family == "crop":  # a pixel gets gradient 1 iff it is still in view: the reverse shift of ones
        mask = functional.crop(ones, -p.crop_shift)
    else:
        mask = apply(ones, p)
    assert torch.equal(x.grad, mask) and 0 < mask.mean() < 1


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_reaches_input_finite(family, device):
    x = images(4, device=device).requires_grad_(True)
    y = augment(x, family, generator=gen(0, device))
    (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
