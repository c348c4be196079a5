import dataclasses

import numpy as np
import pytest
import torch

from distillset import Evaluator, SyntheticSet
from distillset.errors import InvalidParameterError, OutputError, UnknownNameError
from distillset.evaluate import evaluate
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


def test_errors(digits, monkeypatch, tmp_path):
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    with pytest.raises(InvalidParameterError, match="'n_models' parameter of Evaluator"):
        Evaluator(n_models=0).score(syn, digits)
    bad = SyntheticSet(torch.zeros(10, 1, 28, 28), syn.labels, syn.meta)
    with pytest.raises(ValueError, match="distilled from"):
        Evaluator(n_models=1, epochs=1).score(bad, digits)
    three = SyntheticSet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, 2]), {**syn.meta, "num_classes": 3})
    with pytest.raises(InvalidParameterError, match="has 3 classes but the data set 'digits' has 10"):
        Evaluator(n_models=1, epochs=1).score(three, digits)
    trained = []  # a bad last model or augmentation: refused before the first network trains
    monkeypatch.setattr("distillset.evaluate.train_network", lambda *a, **k: trained.append(1))
    with pytest.raises(InvalidParameterError, match="has no option 'widht'"):
        Evaluator(["mlp", "convnet(widht=3)"], n_models=1, epochs=1).score(syn, digits)
    with pytest.raises(InvalidParameterError, match="names no model"):
        Evaluator([], n_models=1, epochs=1).score(syn, digits)
    with pytest.raises(InvalidParameterError, match="Unknown augmentation family 'wiggle'"):
        Evaluator(n_models=1, epochs=1, augment="wiggle").score(syn, digits)
    soft5 = SyntheticSet(syn.images, torch.softmax(torch.randn(10, 5), 1))  # a bare set: its label columns count
    with pytest.raises(InvalidParameterError, match="has 5 classes but the data set 'digits' has 10"):
        Evaluator("mlp", n_models=1, epochs=1).score(soft5, digits)
    with pytest.raises(InvalidParameterError, match="'lr' parameter of Evaluator must be .* list or tuple. Got array"):
        Evaluator("mlp", n_models=1, epochs=1, lr=np.logspace(-3, -1, 3), val_per_class=5).score(syn, digits)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputError, match="resume_dir .*afile exists and is not a folder"):
        Evaluator("mlp", n_models=1, epochs=1, resume_dir=tmp_path / "afile").score(syn, digits)
    with pytest.raises(UnknownNameError, match="Evaluator parameter 'epoch'. Did you mean 'epochs'"):
        evaluate(syn, digits, epoch=1)  # was a bare TypeError
    assert trained == []


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


def test_choices_are_made_on_the_validation_split_never_the_test_set(digits):
    """The lr and checkpoint picked are the same whatever the test set holds; only the kept networks are tested."""
    data = digits.holdout(10)
    syn = RandomSubset(ipc=2, random_state=0).fit(data).synthetic_
    assert syn.meta["val_per_class"] == 10
    ev = Evaluator(n_models=2, epochs=6, lr=[0.001, 0.05], checkpoint="best_val", augment=None, device="cpu")
    scrambled = dataclasses.replace(data, test=type(data.test)(data.test.images, data.test.labels.roll(1)))
    a, b = ev.score(syn, data)["convnet"], ev.score(syn, scrambled)["convnet"]
    assert a.extra == b.extra and a.extra["lr"] in (0.001, 0.05) and a.extra["val_per_class"] == 10
    assert set(a.extra["val_mean_by_lr"]) == {"0.001", "0.05"} and len(a.extra["epochs_kept"]) == 2
    assert a.accuracies != b.accuracies  # the test set is read, for the final number only


def test_a_choice_without_a_validation_split_is_refused(digits):
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    for kw in ({"lr": [0.01, 0.1]}, {"checkpoint": "best_val"}):
        with pytest.raises(InvalidParameterError, match="needs a validation split: set val_per_class"):
            Evaluator(n_models=1, epochs=1, **kw).score(syn, digits)
    with pytest.warns(UserWarning, match="distilled without holding out") as caught:
        Evaluator(n_models=1, epochs=1, val_per_class=5, checkpoint="best_val").score(syn, digits)
    assert sum("distilled without holding out" in str(w.message) for w in caught) == 1  # once, not per check


def test_holdout_is_class_balanced_disjoint_and_fixed(digits):
    a, b = digits.holdout(7), digits.holdout(7)
    assert torch.equal(a.val.images, b.val.images) and a.class_counts("val").tolist() == [7] * 10
    assert len(a.train) + len(a.val) == len(digits.train)
    assert not torch.equal(digits.holdout(7, seed=1).val.images, a.val.images)
    with pytest.raises(InvalidParameterError, match="val_per_class must be an int"):
        digits.holdout(0)
    numpy_int = digits.holdout(np.int64(7))  # as from a NumPy grid: the same split, recorded as a Python int
    assert torch.equal(numpy_int.val.images, a.val.images) and type(numpy_int.extra["val_per_class"]) is int


def test_learned_labels_train_with_mse_by_default(digits):
    """An LS set is trained with its recorded loss, MSE; forcing cross-entropy warns and scores lower on digits."""
    from distillset.methods import get_method

    syn = get_method("ls", ipc=1, random_state=0, device="cpu", progress=False).fit(digits).synthetic_
    assert (syn.label_kind, syn.loss) == ("learned", "mse")
    ev = Evaluator(n_models=2, epochs=100, augment=None, device="cpu")
    own = ev.score(syn, digits)["convnet"]
    assert own.loss == "mse"
    with pytest.warns(UserWarning, match="learned labels are meant for loss='mse'"):
        forced = Evaluator(n_models=2, epochs=100, augment=None, device="cpu", loss="ce").score(syn, digits)["convnet"]
    assert own.mean > forced.mean + 10


def test_a_bad_lr_in_a_list_is_one_clear_error(digits):
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    for lr in (["0.1", 0.01], [0.01, -1.0], []):
        with pytest.raises(InvalidParameterError, match="'lr' parameter of Evaluator must be a float > 0"):
            Evaluator(n_models=1, epochs=1, lr=lr, val_per_class=5).score(syn, digits)


def test_the_long_protocol_trains_with_adamw_cutmix_and_fifths_and_records_its_recipe(digits):
    from distillset.evaluate import PROTOCOLS

    syn = RandomSubset(ipc=5, random_state=0).fit(digits).synthetic_
    long = Evaluator("mlp", **{**PROTOCOLS["long"], "epochs": 30}, n_models=2, augment=None, device="cpu")
    res = long.score(syn, digits)["mlp"]
    assert res.training["optimizer"] == "adamw" and res.training["cutmix_prob"] == 0.5 and res.training["lr"] == 0.001
    assert res.training["schedule"] == "fifths" and res.training["momentum"] is None and res.mean > 30
    assert Evaluator(**PROTOCOLS["long"])._strategy("mnist") == "color_crop_scale_rotate"  # CutMix replaces cutout


def test_cutmix_is_applied_to_about_its_share_of_batches(monkeypatch):
    import distillset.evaluate as E

    calls = []
    monkeypatch.setattr(E, "cutmix", lambda x, g, box: calls.append(box) or (x, torch.arange(len(x)), 1.0))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    E.train_network(net, x, y, epochs=50, batch_size=20, generator=torch.Generator().manual_seed(0), cutmix_prob=0.3)
    assert 15 <= len(calls) <= 45 and all(0 <= v <= 1 for box in calls for v in box)  # 100 batches, p = 0.3
    calls.clear()
    E.train_network(net, x, y, epochs=5, batch_size=20, generator=torch.Generator().manual_seed(0))
    assert calls == []


def test_cutmix_pastes_a_box_from_each_images_partner():
    from distillset.evaluate import cutmix

    # a pasted box: each image keeps `kept` of its own pixels, the rest comes from its partner
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16)
    xm, perm, kept = cutmix(x, torch.Generator().manual_seed(3))
    own = (xm == x).float().mean((1, 2, 3))
    moved = perm != torch.arange(4)
    assert torch.allclose(own[moved], torch.full((int(moved.sum()),), kept)) and torch.all(own[~moved] == 1)


def test_the_standard_protocol_records_its_recipe(digits):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    res = Evaluator("mlp", n_models=1, epochs=2, augment=None, device="cpu").score(syn, digits)["mlp"]
    assert res.training == {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256,
                            "schedule": "half", "cutmix_prob": 0.0, "checkpoint": "last"}


def test_resume_dir_keeps_each_network_and_a_rerun_loads_it_with_the_same_accuracies(digits, tmp_path):
    digits = digits.holdout(5)
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    ev = Evaluator(["convnet", "mlp"], n_models=2, epochs=3, augment="auto", val_per_class=5, device="cpu",
                   resume_dir=tmp_path / "nets")
    first = ev.score(syn, digits)
    assert len(list((tmp_path / "nets").glob("net-*.safetensors"))) == 4
    (tmp_path / "nets" / sorted(p.name for p in (tmp_path / "nets").iterdir())[0]).unlink()  # as if killed before it
    again = ev.score(syn, digits)
    for name in ("convnet", "mlp"):
        assert again[name].accuracies == first[name].accuracies
        assert again[name].extra["val_accuracies"] == first[name].extra["val_accuracies"]
        assert first[name].extra["resumed_networks"] == 0
    assert again["convnet"].extra["resumed_networks"] + again["mlp"].extra["resumed_networks"] == 3
    # another recipe or another set never picks up these networks
    assert Evaluator("mlp", n_models=2, epochs=4, augment="auto", val_per_class=5, device="cpu", resume_dir=tmp_path / "nets"
                     ).score(syn, digits)["mlp"].extra["resumed_networks"] == 0
    other = RandomSubset(ipc=2, random_state=1).fit(digits).synthetic_
    assert Evaluator("mlp", n_models=2, epochs=3, augment="auto", val_per_class=5, device="cpu", resume_dir=tmp_path / "nets"
                     ).score(other, digits)["mlp"].extra["resumed_networks"] == 0


def test_a_kept_network_that_does_not_fit_is_never_half_loaded(digits, tmp_path):
    from distillset.evaluate import _NetworkJournal

    journal = _NetworkJournal(tmp_path, {})
    small, big = torch.nn.Sequential(torch.nn.Linear(4, 3)), torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    journal.keep(tmp_path / "n.safetensors", small, val_acc=None, epochs=1, seconds=0.0)
    before = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.warns(UserWarning, match="do not fit this network"):
        assert journal.load(tmp_path / "n.safetensors", big) is None
    assert all(torch.equal(before[k], v) for k, v in big.state_dict().items())


def test_a_damaged_kept_network_is_trained_again(digits, tmp_path):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    ev = Evaluator("mlp", n_models=1, epochs=3, augment=None, device="cpu", resume_dir=tmp_path)
    first = ev.score(syn, digits)["mlp"]
    kept, = tmp_path.glob("net-*.safetensors")
    kept.write_bytes(kept.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable kept network"):
        again = ev.score(syn, digits)["mlp"]
    assert again.accuracies == first.accuracies and again.extra["resumed_networks"] == 0


def test_the_exported_evaluate_stays_callable_after_other_exports():
    """Touching get_method (which imports the module distillset.evaluate) first made the package's
    `evaluate` the module: "TypeError: 'module' object is not callable"."""
    import subprocess
    import sys

    code = ("import distillset; distillset.get_method; d = distillset.load_dataset('digits'); "
            "s = distillset.get_method('random', ipc=1, random_state=0, device='cpu', progress=False).fit(d).synthetic_; "
            "r = distillset.evaluate(s, d, models='mlp', n_models=1, epochs=1, device='cpu'); "
            "import distillset.evaluate as E, pickle; assert pickle.loads(pickle.dumps(distillset.evaluate)) is E; "
            "print(list(r), E.Evaluator.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["['mlp']", "Evaluator"], out.stderr[-500:]


def test_training_stops_when_asked_before_changing_a_weight():
    from distillset.evaluate import train_network

    net = torch.nn.Linear(4, 2)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(KeyboardInterrupt):
        train_network(net, torch.randn(8, 4), torch.randint(0, 2, (8,)), epochs=5,
                      generator=torch.Generator().manual_seed(0), should_stop=lambda: True)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_an_interrupt_in_one_thread_stops_the_networks_of_the_others():
    """A Ctrl-C waited for every network being trained in the other threads (24-27 s in the audit)."""
    import threading
    import time

    stop, saw_stop = threading.Event(), []

    def job(kind):
        if kind == "interrupted":
            time.sleep(0.2)
            raise KeyboardInterrupt
        saw_stop.append(stop.wait(timeout=60))  # a network that heeds the flag, as train_network does

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        Evaluator(workers=2)._map_here(job, ["training", "interrupted"], torch.device("cpu"), stop)
    assert saw_stop == [True] and time.perf_counter() - t0 < 30


def test_a_failing_network_stops_the_one_training_beside_it(digits, monkeypatch):
    """score() hands its networks the stop flag: one that fails ends the evaluation at once."""
    import time

    import distillset.evaluate

    def train(net, *a, should_stop=None, **k):
        if not hasattr(train, "failed"):
            train.failed = True
            time.sleep(0.2)
            raise ValueError("diverged")
        deadline = time.time() + 60
        while not should_stop() and time.time() < deadline:
            time.sleep(0.01)
        train.stopped = should_stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(distillset.evaluate, "train_network", train)
    syn = RandomSubset(ipc=1, random_state=0).fit(digits).synthetic_
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="diverged"):
        Evaluator("convnet", n_models=2, epochs=1, workers=2, device="cpu").score(syn, digits)
    assert train.stopped and time.perf_counter() - t0 < 30
