"""DD's own evaluation protocol (Wang et al. 2018; REFERENCE section 2 "DD").

A DD set is images *and* a learned step schedule for one kind of initialisation; the standard protocol
(fresh networks, plain SGD) ignores the schedule. :func:`evaluate_dd` applies the T learned steps with the
learned step sizes from the init regime the set was made for and tests on the real test set.
"""
from __future__ import annotations

import statistics
import warnings

import torch

from ..data import require_dataset
from ..errors import InvalidParameterError, require_type
from ..evaluate import check_set_fits
from ..synthetic import SyntheticSet
from ..unroll import FlatNet, unroll
from ..utils import make_generator, resolve_device
from .dd_nets import InitSampler, pretrain_pool


def _dd_params(synthetic) -> dict:
    """The DD parameters a set was made with; a clear error for sets from other methods."""
    params = synthetic.meta.get("params", {})
    if synthetic.meta.get("method") != "dd" or synthetic.lrs is None or "steps" not in params:
        raise InvalidParameterError(f"evaluate_dd needs a set made by DD (images + learned step sizes). Got one "
                                    f"from method {synthetic.meta.get('method')!r}; use the standard protocol "
                                    "(distillset.Evaluator) for it.")
    if "weight_init" not in params:  # a set made before 0.2: 'init' named the regime, 'net_init' the weights
        params = {**params, "weight_init": params.get("net_init", "xavier"), "net_init": params["init"]}
    _check_schedule(synthetic, params["steps"], params.get("epochs"))
    return params


def _check_schedule(synthetic, steps, epochs) -> None:
    """The images split into ``steps`` step batches and one step size per unrolled step: else (an edited set's
    metadata) the unroll would cycle wrong batches or apply no step at all, and score untrained networks."""
    n, lrs = len(synthetic.images), synthetic.lrs
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    fits = (whole(steps) and (epochs is None or whole(epochs)) and n % steps == 0 and lrs.ndim == 1
            and lrs.numel() >= 1 and (epochs is None or lrs.numel() == steps * epochs))
    if not fits:
        raise InvalidParameterError(
            f"This DD set's schedule does not fit its images: {n} images and {lrs.numel()} step size(s), but its "
            f"metadata says steps={steps!r}, epochs={epochs!r} (that many step batches and steps x epochs step "
            "sizes). Its metadata or tensors were edited: distil it again, or score it with the standard protocol.")


def _check_images(images: torch.Tensor, synthetic) -> torch.Tensor:
    if not torch.is_tensor(images) or not images.is_floating_point() or images.shape != synthetic.images.shape:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InvalidParameterError(
            f"The 'images' of evaluate_dd must be normalised float images shaped like the set's "
            f"{tuple(synthetic.images.shape)} (step-major, class-major within a step). Got {shape}"
            f"{'' if not torch.is_tensor(images) else ' ' + str(images.dtype)} instead.")
    return images


_INIT_WORDS = {"fixed": "the fixed init", "random": "fresh random inits",
               "pretrained": "freshly pretrained nets (not the pool's)"}


def evaluate_dd(synthetic, data, *, model=None, n_models=10, net_init=None, images=None, random_state=0, device=None,
                pool_epochs=None, attack_class=None, target_class=None, init=None) -> dict:
    """DD's own protocol: apply the T learned steps with the learned step sizes, test on ``data.test``.

    Parameters
    ----------
    synthetic : SyntheticSet from :class:`DD` (its meta gives model, steps, net_init and the attack).
    net_init : {"fixed", "random", "pretrained"} or None
        None = the regime it was distilled for. "fixed" uses ``extra["theta0"]``; "random" draws
        ``n_models`` fresh nets; "pretrained" trains ``n_models`` new nets on the pool's source data
        (held-out seeds: not the pool's nets).
    images : Tensor, optional
        Replace the learned images (e.g. random real images) but keep the learned schedule and labels:
        normalised float images of the set's shape and layout (step-major, class-major within a step).
    init : deprecated, the old name of ``net_init``.

    Returns
    -------
    dict with ``accuracies`` (after the T steps), ``mean``, ``std``, ``before_mean`` (the inits
    untrained), and in poisoning mode ``attack_to_target`` (% of the attack class predicted as target).
    """
    if init is not None:
        warnings.warn("evaluate_dd's 'init' is now called 'net_init'; the old name stops working in the next release.",
                      DeprecationWarning, stacklevel=2)
        net_init = net_init or init
    require_type(synthetic, SyntheticSet, "evaluate_dd's synthetic set", "Read one with SyntheticSet.load(path).")
    require_dataset(data, "evaluate_dd's data")
    params = _dd_params(synthetic)
    check_set_fits(synthetic, data)  # other data would surface as a weight count that names the model
    model = model or params["model"]
    regime = net_init or params["net_init"]
    if regime not in _INIT_WORDS or int(n_models) < 1:
        raise InvalidParameterError(f"evaluate_dd needs net_init in {sorted(_INIT_WORDS)} and n_models >= 1. "
                                    f"Got net_init={regime!r}, n_models={n_models!r} instead.")
    attack_class = params.get("attack_class") if attack_class is None else attack_class
    target_class = params.get("target_class") if target_class is None else target_class
    if (attack_class is None) != (target_class is None):
        raise InvalidParameterError("evaluate_dd needs 'attack_class' and 'target_class' together.")
    device = resolve_device(device)
    g = make_generator(random_state, device)
    p0 = InitSampler(model, data, device, params["weight_init"])
    f = FlatNet(p0.template)
    if regime == "fixed":
        if "theta0" not in synthetic.extra:
            raise InvalidParameterError(
                f"This DD set was distilled with net_init={params['net_init']!r} and holds no fixed init "
                "(extra['theta0']); evaluate it with net_init='random' or 'pretrained'.")
        thetas = [synthetic.extra["theta0"].to(device)]
        if thetas[0].numel() != f.size:
            raise InvalidParameterError(f"The set's fixed init has {thetas[0].numel()} weights but {model!r} has "
                                        f"{f.size}; evaluate it with model={params['model']!r}.")
    elif regime == "random":
        thetas = list(p0.sample(n_models, g).unbind(0))
    else:
        thetas = list(pretrain_pool(p0, params["pool_source"], n_models, pool_epochs or params["pool_epochs"],
                                    g).unbind(0))
    x = synthetic.images if images is None else _check_images(images, synthetic)
    xs = x.to(device).float().reshape(params["steps"], -1, *x.shape[1:])  # (S, K*ipc, C, H, W), step-major
    ys = synthetic.labels.to(device).reshape(params["steps"], -1)
    etas = synthetic.lrs.to(device).float()
    x_test, y_test = data.normalize(data.test.images.to(device)), data.test.labels.to(device)

    def scores(theta):
        with torch.no_grad():
            pred = torch.cat([f(theta, x_test[i:i + 2048]).argmax(1) for i in range(0, len(y_test), 2048)])
        acc = 100.0 * (pred == y_test).float().mean().item()
        hit = None
        if attack_class is not None:
            hit = 100.0 * (pred[y_test == attack_class] == target_class).float().mean().item()
        return acc, hit

    before, after, hits = [], [], []
    for theta0 in thetas:
        before.append(scores(theta0)[0])
        acc, hit = scores(unroll(f, theta0, xs, ys, etas, create_graph=False).detach())
        after.append(acc)
        hits.append(hit)
    steps = f"the {len(etas)} learned steps with the learned step sizes"
    out = {"protocol": f"{steps} from {_INIT_WORDS[regime]}, {len(after)} net(s)", "net_init": regime, "model": model,
           "accuracies": after, "mean": statistics.fmean(after),
           "std": statistics.pstdev(after), "before": before, "before_mean": statistics.fmean(before),
           "before_std": statistics.pstdev(before)}
    if attack_class is not None:
        out.update(attack_to_target=statistics.fmean(hits), attack_class=attack_class, target_class=target_class)
    return out
