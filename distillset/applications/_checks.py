"""What every application checks before any work: the networks it trains (the :class:`~distillset.Evaluator`
options it passes on), the method's parameters, the seed and the device."""
from __future__ import annotations

from ..augment import check_augment
from ..errors import InvalidParameterError
from ..evaluate import Evaluator
from ..models import check_model
from ..utils import RANDOM_STATE, Instance, resolve_device, validate_params

# an application's own name for each option, under the constraint of the Evaluator or method that takes it
CONSTRAINTS = {"model": [Instance((str, dict))], "epochs": Evaluator._parameter_constraints["epochs"],
               "augment": Evaluator._parameter_constraints["augment"], "params": [None, Instance((dict,))],
               "random_state": RANDOM_STATE}


def check_training(app, data) -> None:
    """``app``'s model, epochs, augment, params, random_state and device, against ``data``'s images: a typo is
    one line before the first condensation, not an error after it."""
    owner = type(app).__name__
    validate_params(owner, vars(app), CONSTRAINTS)
    check_model(app.model, data.image_shape, data.num_classes, owner)
    check_augment(app.augment)
    resolve_device(app.device)
    managed = sorted({"checkpoint_dir", "checkpoint_every"} & set(app.params or {}))
    if managed:  # each step or model is a fit of its own: one folder would hold the first one's checkpoint
        raise InvalidParameterError(f"{owner} runs its method many times and keeps no checkpoints; leave "
                                    f"{', '.join(managed)} out of params.")
