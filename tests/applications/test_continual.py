"""Class-incremental learning: each class condensed exactly once, the memory growing by ipc x classes."""
import json

import numpy as np
import pytest

from distillset.applications import ClassIncremental
from distillset.errors import InvalidParameterError


class Recording(ClassIncremental):
    """Records which classes each condensation saw and the labels it returned."""

    def _condense(self, data, new, seed):
        x, y = super()._condense(data, new, seed)
        self.calls_.append((list(new), sorted(set(y.tolist()))))
        return x, y


def test_each_class_condensed_once_and_memory_grows(digits):
    cl = Recording("random", steps=np.int64(5), ipc=np.int64(3), orders=2, n_models=1, epochs=1, augment=None)
    cl.calls_ = []
    cl.fit(digits)
    for o, order in enumerate(cl.orders_):
        calls = cl.calls_[o * 5:(o + 1) * 5]
        seen = [c for new, _ in calls for c in new]
        assert sorted(seen) == list(range(10)) and seen == order  # every class once, in the order's sequence
        assert all(labels == sorted(new) for new, labels in calls)  # the memory keeps the original class ids
    assert cl.orders_[0] == list(range(10)) and sorted(cl.orders_[1]) == list(range(10)) and cl.orders_[1] != cl.orders_[0]
    assert cl.memory_sizes_ == [6, 12, 18, 24, 30]  # ipc x 2 new classes per step
    assert len(cl.per_step_) == 2 and all(len(step) == 1 for order in cl.per_step_ for step in order)
    record = cl.to_dict()  # NumPy ints (a grid's) were refused; the record holds Python ones
    assert json.loads(json.dumps(record))["steps"] == 5 and type(record["ipc"]) is int
    assert record["classes_seen"] == [2, 4, 6, 8, 10] and record["final"] == cl.step_means_[-1]


def test_a_condensed_memory_beats_chance_at_every_step(digits):
    cl = ClassIncremental("dm", steps=2, ipc=2, orders=1, n_models=2, epochs=30, augment=None,
                          params={"iterations": 20, "batch_real": 16}).fit(digits)
    chance = [100 / 5, 100 / 10]
    assert all(m > 2 * c for m, c in zip(cl.step_means_, chance)), cl.step_means_


@pytest.mark.parametrize("bad", [dict(steps=3), dict(ipc=0), dict(orders=0), dict(method="nope"),
                                 dict(augment="wiggle"), dict(model="convnet(widht=3)"), dict(ipc=500),
                                 dict(params=[1]), dict(augment=3), dict(device="gpu"), dict(epochs=-1),
                                 dict(params={"checkpoint_dir": "ck"})])
def test_bad_settings_are_refused_before_work(digits, bad, monkeypatch):
    from distillset.methods import METHODS

    monkeypatch.setattr(METHODS.get("random"), "fit", lambda *a, **k: pytest.fail("condensed before refusing"))
    with pytest.raises(InvalidParameterError if "method" not in bad else Exception,
                       match=r"steps|ipc|orders|nope|wiggle|widht|params|augment|device|epochs|checkpoint_dir out of params"):
        ClassIncremental(**{"method": "random", **bad}).fit(digits)


@pytest.mark.parametrize("method, params, made", [("datm", None, "soft labels"), ("ls", None, "learned labels"),
                                                  ("kip", {"zca": True}, "ZCA-whitened")])
def test_a_method_that_makes_no_raw_hard_label_memory_is_refused_before_work(digits, method, params, made, monkeypatch):
    """Soft/learned labels or whitened images cannot join a memory of raw hard-label images: refused before any
    condensation (which would fail here)."""
    from distillset.methods import METHODS

    monkeypatch.setattr(METHODS.get(method), "fit", lambda *a, **k: pytest.fail("condensed before refusing"))
    with pytest.raises(InvalidParameterError, match=made):
        ClassIncremental(method, params=params, steps=2, ipc=1, orders=1, epochs=1).fit(digits)


def test_random_state_none_draws_one_root_for_orders_and_steps(digits):
    cl = ClassIncremental("random", steps=2, ipc=1, orders=2, n_models=1, epochs=1, random_state=None).fit(digits)
    assert cl.orders_ == cl.class_orders(10, cl.seed_) and cl.to_dict()["seed"] == cl.seed_


def test_a_method_whose_set_carries_other_extras_joins_the_memory(digits):
    """DD stores its fixed initialisation (extra["theta0"]) with the set: harmless for a memory of images."""
    cl = ClassIncremental("dd", params={"iterations": 1, "steps": 1, "epochs": 1, "batch_real": 4}, steps=5, ipc=1,
                          orders=1, n_models=1, epochs=1).fit(digits)
    assert cl.memory_sizes_ == [2, 4, 6, 8, 10]
