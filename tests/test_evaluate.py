import pytest
import torch

from distillset import Evaluator, SyntheticSet
from distillset.errors import InvalidParameterError
from distillset.methods import RandomSubset


def test_training_on_more_data_is_better(digits):
    ev = Evaluator(["convnet", "mlp"], n_models=2, epochs=60, augment=None, random_state=0, device="cpu")
    one = ev.score(RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_, digits)
    thirty = ev.score(RandomSubset(ipc=30, random_state=0).fit(digits).synthetic_, digits)
    for name in ("convnet", "mlp"):
        r1, r30 = one[name], thirty[name]
        assert len(r1.accuracies) == 2 and r1.seconds > 0 and r1.std >= 0
        assert 10 < r1.mean < r30.mean, (name, r1.mean, r30.mean)
    assert thirty["convnet"].mean > 85


def test_deterministic_and_augmented(digits):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    ev = Evaluator(n_models=1, epochs=5, augment="auto", random_state=0, device="cpu")
    a, b = ev.score(syn, digits)["convnet"], ev.score(syn, digits)["convnet"]
    assert a.accuracies == b.accuracies and a.augment and "flip" not in a.augment  # digits: no flip


def test_one_hot_soft_labels_train_like_hard_labels(digits):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    soft = SyntheticSet(syn.images, torch.nn.functional.one_hot(syn.labels, 10).float(),
                        {**syn.meta, "label_kind": "soft", "loss": "ce"})
    ev = Evaluator(n_models=2, epochs=3, augment=None, device="cpu")
    assert ev.score(soft, digits)["convnet"].accuracies == ev.score(syn, digits)["convnet"].accuracies


def test_errors(digits):
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    with pytest.raises(InvalidParameterError, match="'n_models' parameter of Evaluator"):
        Evaluator(n_models=0).score(syn, digits)
    bad = SyntheticSet(torch.zeros(10, 1, 28, 28), syn.labels, syn.meta)
    with pytest.raises(ValueError, match="distilled from"):
        Evaluator(n_models=1, epochs=1).score(bad, digits)


def test_mse_turns_hard_labels_into_centred_one_hot_targets(digits):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    centred = SyntheticSet(syn.images, torch.nn.functional.one_hot(syn.labels, 10).float() - 0.1,
                           {**syn.meta, "label_kind": "learned", "loss": "mse"})
    ev = Evaluator(n_models=2, epochs=3, augment=None, loss="mse", device="cpu")
    with pytest.warns(UserWarning, match="hard labels are meant for loss='ce'"):
        hard = ev.score(syn, digits)["convnet"].accuracies
    assert hard == ev.score(centred, digits)["convnet"].accuracies


def test_models_may_be_specs_keyed_by_their_canonical_string(digits):
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    ev = Evaluator([{"name": "convnet", "width": 8, "depth": 2}, "mlp(width=16)"], n_models=1, epochs=1, augment=None,
                   device="cpu")
    assert list(ev.score(syn, digits)) == ["convnet(depth=2, width=8)", "mlp(width=16)"]
