"""ZCA whitening: what it promises (round trip, whitened moments, the evaluation contract, saving)."""
import pytest
import torch

from distillset.errors import InvalidParameterError
from distillset.evaluate import Evaluator, real_inputs
from distillset.methods import get_method
from distillset.synthetic import SyntheticSet
from distillset.zca import ZCA


def _images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(12, 12, generator=g)
    return (torch.randn(n, 12, generator=g) @ mix + 0.5).view(n, 3, 2, 2)  # correlated pixels, nonzero mean


@pytest.mark.parametrize("center", [False, True])
def test_round_trip(center):
    x = _images()
    z = ZCA(0.1, center=center).fit(x)
    assert torch.allclose(z.inverse_transform(z.transform(x)), x, atol=1e-4)
    assert torch.allclose(z.matrix_, z.matrix_.T, atol=1e-6)  # ZCA: the symmetric whitening matrix


@pytest.mark.parametrize("center", [False, True])
def test_whitens_the_training_set(center):
    x = _images()
    flat = ZCA(0.0, center=center).fit(x).transform(x).flatten(1).double()
    if center:
        assert torch.allclose(flat.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-4)
        flat = flat - flat.mean(0)
    assert torch.allclose(flat.T @ flat / flat.shape[0], torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_regularised_eigenvalues():
    x = _images()
    z = ZCA(0.1).fit(x)
    flat = z.transform(x).flatten(1).double()
    got = torch.linalg.eigvalsh(flat.T @ flat / flat.shape[0])
    lam = z.eigenvalues_
    want = lam / (lam + 0.1 * lam.sum() / 12)  # lambda / (lambda + eps), eps = 0.1 tr / D
    assert torch.allclose(got, want.sort().values, atol=1e-4)


def test_evaluator_applies_the_stored_transform(digits):
    """Evaluation whitens test images exactly as the method whitened the training images."""
    kip = get_method("kip", ipc=1, iterations=0, zca=True, random_state=0, device="cpu", progress=False).fit(digits)
    syn = kip.synthetic_
    z = ZCA(0.1).fit(digits.normalize(digits.train.images))
    assert torch.allclose(syn.extra["zca"], z.matrix_)
    x_test = real_inputs(syn, digits, digits.test.images, torch.device("cpu"))
    assert torch.allclose(x_test, z.transform(digits.normalize(digits.test.images)), atol=1e-5)
    # the set's images are whitened real images: undoing the transform gives training images back
    real = z.inverse_transform(syn.images).flatten(1)
    train = digits.normalize(digits.train.images).flatten(1)
    assert torch.cdist(real, train, compute_mode="donot_use_mm_for_euclid_dist").min(1).values.max() < 1e-3


def test_saved_with_the_set(tmp_path):
    z = ZCA(0.1, center=True).fit(_images())
    s = SyntheticSet(torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]), {"num_classes": 2}, extra=z.extra())
    back = SyntheticSet.load(s.save(tmp_path / "s"))
    assert torch.equal(back.extra["zca"], z.matrix_) and torch.equal(back.extra["zca_mean"], z.mean_)


def test_errors():
    with pytest.raises(InvalidParameterError, match="not fitted"):
        ZCA().transform(torch.zeros(1, 1, 2, 2))
    with pytest.raises(InvalidParameterError, match="'strength' parameter of ZCA"):
        ZCA(-1.0).fit(torch.zeros(3, 1, 2, 2))
    with pytest.raises(InvalidParameterError, match="full-rank"):
        ZCA(0.0).fit(torch.zeros(3, 1, 2, 2))
