"""Fair-comparison scores (DD-Ranking, Li et al. 2025): accuracy gains that labels and augmentation cannot fake.

Every function takes and returns points: test accuracies in % (0-100, each measured under one stated
protocol; ``hlr`` and ``ior`` also take an :class:`~distillset.EvalResult`, whose ``mean`` they use) and
gains in points (-100 to 100); LRS and ARS are on a 0-100 scale. The formulas below write IOR and HLR as
fractions (points / 100), which the functions do inside. A value out of range is an error, not a score.

* **HLR**, hard-label recovery: ``acc(full real data, hard labels) - acc(set, hard labels)``. How much of
  the full data set's accuracy the set's *images* recover; lower is better. A set with learned or soft
  labels is re-trained on its images with their hard labels (the labels' argmax) for this.
* **IOR**, improvement over random: ``acc(set) - acc(random real subset)``, both under the set's own
  protocol (same networks, epochs, augmentation, and the set's loss: an LS set is compared with a random
  subset trained with MSE too). Higher is better.
* **LRS**, label-robust score: ``100 (exp(w IOR - (1 - w) HLR) - exp(-1)) / (e - exp(-1))`` with IOR and
  HLR as fractions and ``w = 0.5``. 0 for ``IOR = -1, HLR = 1`` (worst), 100 for ``IOR = 1, HLR = -1``.
* **ARS**, augmentation-robust score: ``100 (exp(w G_aug + (1 - w) G_none) - exp(-1)) / (e - exp(-1))``
  where ``G_aug`` and ``G_none`` are the IOR measured with and without the evaluation's augmentation
  (fractions), ``w = 0.5``. A set whose gain over random exists only under augmentation scores lower.

Scores are computed per distillation seed (each seed's set against the random subset of the same
root seed) and reported as mean ± std over seeds.

Examples
--------
>>> round(lrs(ior=20.0, hlr=10.0), 2), round(ars(gain_aug=20.0, gain_none=10.0), 2)
(29.08, 33.78)
"""
from __future__ import annotations

import math
import numbers

from .errors import InvalidParameterError

_LOW, _HIGH = math.exp(-1.0), math.exp(1.0)


def _squash(x: float) -> float:
    """exp(x) for x in [-1, 1] mapped onto [0, 100]."""
    return 100.0 * (math.exp(x) - _LOW) / (_HIGH - _LOW)


def _check(owner: str, low: float, weight: float | None = None, **points) -> None:
    """Each of ``points`` a finite number in [low, 100], ``weight`` (if given) one in [0, 1]; the message names
    the unit, since a fraction where points are meant is the likely mistake."""
    from .utils import Interval, validate_params  # here: importing this module stays free of torch

    if weight is not None:
        validate_params(owner, {"weight": weight}, {"weight": [Interval(float, 0, 1)]})
    try:
        validate_params(owner, points, dict.fromkeys(points, [Interval(float, low, 100)]))
    except InvalidParameterError as e:
        what = "accuracies" if low == 0 else "gains"
        raise InvalidParameterError(f"{e} {owner} takes {what} in points, {low:g} to 100 (20.0 for 20 %).") from None


def _accuracy(value):
    """An EvalResult's mean accuracy; anything else as given (the caller checks it)."""
    if isinstance(value, numbers.Real):
        return value
    from .evaluate import EvalResult

    return value.mean if isinstance(value, EvalResult) else value


def hlr(full_hard: float, set_hard: float) -> float:
    """Hard-label recovery in points: full-data accuracy minus the set's, both with hard labels (each in points,
    or an EvalResult)."""
    full_hard, set_hard = _accuracy(full_hard), _accuracy(set_hard)
    _check("hlr", 0, full_hard=full_hard, set_hard=set_hard)
    return full_hard - set_hard


def ior(set_acc: float, random_acc: float) -> float:
    """Improvement over random in points, both under the same protocol (each in points, or an EvalResult)."""
    set_acc, random_acc = _accuracy(set_acc), _accuracy(random_acc)
    _check("ior", 0, set_acc=set_acc, random_acc=random_acc)
    return set_acc - random_acc


def lrs(ior: float, hlr: float, weight: float = 0.5) -> float:
    """Label-robust score (0-100) from IOR and HLR in points (-100 to 100); ``weight`` in [0, 1]."""
    _check("lrs", -100, weight, ior=ior, hlr=hlr)
    return _squash(weight * ior / 100.0 - (1.0 - weight) * hlr / 100.0)


def ars(gain_aug: float, gain_none: float, weight: float = 0.5) -> float:
    """Augmentation-robust score (0-100) from the IOR with and without evaluation augmentation, in points
    (-100 to 100); ``weight`` in [0, 1]."""
    _check("ars", -100, weight, gain_aug=gain_aug, gain_none=gain_none)
    return _squash(weight * gain_aug / 100.0 + (1.0 - weight) * gain_none / 100.0)
