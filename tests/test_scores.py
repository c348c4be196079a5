"""The fair-comparison scores take and return points: known answers, an EvalResult as an accuracy, and every
value out of range or of the wrong kind refused with the unit named."""
import math

import numpy as np
import pytest

from distillset.errors import InvalidParameterError
from distillset.evaluate import EvalResult
from distillset.scores import ars, hlr, ior, lrs


def test_known_answers_in_points():
    assert ior(72.5, 60.0) == 12.5 and hlr(99.0, 80.0) == 19.0
    assert lrs(ior=-100.0, hlr=100.0) == pytest.approx(0.0, abs=1e-12)  # the worst set
    assert lrs(ior=100.0, hlr=-100.0) == pytest.approx(100.0)  # the best
    assert ars(gain_aug=0.0, gain_none=0.0) == pytest.approx(100 * (1 - math.exp(-1)) / (math.e - math.exp(-1)))
    assert lrs(np.float32(20.0), np.int64(10)) == pytest.approx(lrs(20.0, 10.0))  # NumPy scalars are numbers


def test_an_eval_result_counts_as_its_mean_accuracy():
    syn = EvalResult("mlp", [80.0, 90.0], 1, None, 0.0)
    rnd = EvalResult("mlp", [60.0, 70.0], 1, None, 0.0)
    assert ior(syn, rnd) == 20.0 and hlr(99.0, syn) == 14.0


BAD = [
    (lambda: lrs(ior=250.0, hlr=-300.0), "'ior' parameter of lrs must be a float in the range [-100, 100]"),
    (lambda: lrs(ior=float("nan"), hlr=1.0), "lrs takes gains in points, -100 to 100 (20.0 for 20 %)"),
    (lambda: lrs(ior="20", hlr=10.0), "Got '20' instead"),
    (lambda: lrs(ior=20.0, hlr=10.0, weight=2.0), "'weight' parameter of lrs must be a float in the range [0, 1]"),
    (lambda: ars(gain_aug=20.0, gain_none=float("inf")), "'gain_none' parameter of ars"),
    (lambda: ars(10.0, 10.0, weight=-0.5), "'weight' parameter of ars"),
    (lambda: ior(101.0, 50.0), "ior takes accuracies in points, 0 to 100 (20.0 for 20 %)"),
    (lambda: ior(50.0, -1.0), "'random_acc' parameter of ior must be a float in the range [0, 100]"),
    (lambda: hlr([90, 91], [80, 81]), "'full_hard' parameter of hlr"),
    (lambda: hlr(True, 80.0), "'full_hard' parameter of hlr"),
    (lambda: ior(np.array([90.0, 91.0]), 80.0), "'set_acc' parameter of ior"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_out_of_range_or_not_a_number_is_one_line_naming_the_unit(call, message):
    with pytest.raises(InvalidParameterError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)
