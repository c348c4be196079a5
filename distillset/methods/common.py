"""Pieces several methods share: synthetic-set initialisation, class labels, the per-iteration network."""
from __future__ import annotations

import torch

from ..data.real import RealData
from ..formation import encode
from ..models import Redraw, get_model
from ..precision import resolve_precision


def fresh_network(method, state) -> torch.nn.Module:
    """The run's network with weights freshly drawn from ``state.generator`` (DM, DC/DSA: one per iteration).

    The module is built once per run and kept in ``state.cache`` with its re-draw plan and the run's
    autocast dtype (``state.cache["dtype"]``); each call re-draws every weight in place (PyTorch's
    default initialisation, on the device, no host round trip).
    """
    if "redraw" not in state.cache:
        net = get_model(method.model, state.data.image_shape, state.data.num_classes, seed=0, device=state.device)
        state.cache["redraw"] = Redraw(net)
        state.cache["dtype"] = resolve_precision(method.precision, state.device)
    return state.cache["redraw"](state.generator)


def frozen_template(method, state, key: str = "template") -> torch.nn.Module:
    """A frozen network of the run's model, built once per run (``state.cache[key]``), whose weights a method
    overwrites (pool members: IDM, DANCE, NCFM); also sets the run's autocast dtype (``state.cache["dtype"]``)."""
    if key not in state.cache:
        data = state.data
        state.cache[key] = get_model(method.model, data.image_shape, data.num_classes, seed=0,
                                     device=state.device).requires_grad_(False)
        state.cache["dtype"] = resolve_precision(method.precision, state.device)
    return state.cache[key]


def class_labels(num_classes: int, ipc: int, device) -> torch.Tensor:
    """Class-major hard labels ``[0]*ipc + [1]*ipc + ...`` (K * ipc,)."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_images(real: RealData, ipc: int, init: str, generator: torch.Generator, factor: int = 1) -> torch.Tensor:
    """Synthetic images (K * ipc, C, H, W), class-major: distinct random real images (``"real"``) or N(0, 1) noise.

    With a multi-formation ``factor`` f each stored real-initialised image tiles f**2 distinct real images of
    its class, downsampled (:func:`distillset.formation.encode`, IDC's initialisation).
    """
    if init == "real":
        images = encode(real.take(real.sample_indices(ipc * factor * factor, generator)), factor).clone()
    else:
        shape = (real.num_classes * ipc, *real.raw.shape[1:])
        images = torch.randn(shape, generator=generator, device=generator.device).to(real.raw.device)
    return images.requires_grad_(True)

