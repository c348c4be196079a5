import pytest
import torch

from distillset.methods import Herding, KCenter, RandomSubset


def test_selection_picks_distinct_real_images(digits):
    real = digits.normalize(digits.train.images)
    for cls in (RandomSubset, Herding, KCenter):
        s = cls(ipc=5, random_state=0, device="cpu", feature_epochs=1).fit(digits).synthetic_
        # every image is a real training image of its class, none twice
        d = torch.cdist(s.images.flatten(1), real.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
        idx = d.argmin(1)
        assert torch.allclose(d.min(1).values, torch.zeros(50), atol=1e-4)
        assert len(set(idx.tolist())) == 50
        assert torch.equal(digits.train.labels[idx], s.labels)


def test_herding_mean_closer_than_random(digits):
    real = digits.normalize(digits.train.images).flatten(1)
    mu = real[digits.train.labels == 0].mean(0)
    h = Herding(ipc=10, features="pixels", random_state=0, device="cpu").fit(digits).synthetic_
    r = RandomSubset(ipc=10, random_state=0, device="cpu").fit(digits).synthetic_
    err = lambda s: (s.images[s.labels == 0].flatten(1).mean(0) - mu).norm()  # noqa: E731
    assert err(h) < 0.5 * err(r)


def test_kcenter_covers_better_than_random(digits):
    real = digits.normalize(digits.train.images).flatten(1)
    x0 = real[digits.train.labels == 0]
    cover = lambda s: torch.cdist(x0, s.images[s.labels == 0].flatten(1)).min(1).values.max()  # noqa: E731
    k = KCenter(ipc=10, features="pixels", random_state=0, device="cpu").fit(digits).synthetic_
    r = RandomSubset(ipc=10, random_state=0, device="cpu").fit(digits).synthetic_
    assert cover(k) < cover(r)


def test_herding_on_network_features(digits):
    s = Herding(ipc=2, features="convnet", feature_epochs=0, random_state=0, device="cpu").fit(digits).synthetic_
    assert s.images.shape == (20, 1, 8, 8)


def test_default_features_are_a_trained_convnet(digits):
    """The papers' baseline: the trained network's embedding picks other images than pixels or an untrained net."""
    trained, pixels, untrained = (Herding(ipc=3, random_state=0, device="cpu", **f).fit(digits).synthetic_.images
                                  for f in ({}, {"features": "pixels"}, {"feature_epochs": 0}))
    assert not torch.equal(trained, pixels) and not torch.equal(trained, untrained)


def test_unknown_feature_model_is_refused_before_work(digits):
    from distillset.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'convnet'"):
        Herding(ipc=1, features="convnett").fit(digits)
