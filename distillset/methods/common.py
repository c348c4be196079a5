"""Pieces several methods share: synthetic-set initialisation and class labels."""
from __future__ import annotations

import torch

from ..data.real import RealData


def class_labels(num_classes: int, ipc: int, device) -> torch.Tensor:
    """Class-major hard labels ``[0]*ipc + [1]*ipc + ...`` (K * ipc,)."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_images(real: RealData, ipc: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """Synthetic images (K * ipc, C, H, W), class-major: distinct random real images (``"real"``) or N(0, 1) noise."""
    if init == "real":
        images = real.take(real.sample_indices(ipc, generator)).clone()
    else:
        shape = (real.num_classes * ipc, *real.raw.shape[1:])
        images = torch.randn(shape, generator=generator, device=generator.device).to(real.raw.device)
    return images.requires_grad_(True)
