"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), in kornia's shape.

Sample the parameters (:func:`sample_params` -> :class:`AugParams`, from an explicit generator), then
apply a pure, differentiable function (:func:`apply`). Siamese use passes the same ``AugParams`` to the
real and the synthetic images (``apply(x, p, labels)``); evaluation draws per image (:func:`augment`).
The ops themselves live in :mod:`distillset.augment.functional`.
"""
from . import functional
from .dsa import apply, augment, siamese
from .params import (
    DEFAULT_STRATEGY,
    FAMILIES,
    AugParams,
    check_augment,
    default_strategy,
    identity_params,
    parse_strategy,
    resolve_strategy,
    sample_params,
)

__all__ = [
    "DEFAULT_STRATEGY", "FAMILIES", "AugParams", "apply", "augment", "check_augment", "default_strategy", "functional",
    "identity_params", "parse_strategy", "resolve_strategy", "sample_params", "siamese",
]
