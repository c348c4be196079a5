"""Multi-formation (IDC: Kim et al., ICML 2022): one stored image holds ``factor x factor`` smaller images.

A set of ``ipc`` stored images per class at factor f trains networks on ``ipc * f**2`` images per class at
the same storage: :func:`decode` cuts each stored image into an f x f grid of tiles and upsamples every
tile back to full size (bilinear, differentiable, so a method learns the stored pixels through it).
:func:`encode` is the initialisation's inverse: f**2 real images downsampled (area averaging) and tiled.
Tiles are ordered row-major within their image and decoded images stay next to each other, so a
class-major stored set decodes to a class-major set and labels repeat with :func:`decode_labels`.

>>> x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
>>> decode(x, 2).shape, decode_labels(torch.tensor([0, 1]), 2).tolist()
(torch.Size([8, 1, 4, 4]), [0, 0, 0, 0, 1, 1, 1, 1])
>>> torch.equal(decode(encode(torch.ones(4, 1, 4, 4), 2), 2), torch.ones(4, 1, 4, 4))
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InvalidParameterError


def check_factor(factor: int, image_shape) -> None:
    """Raise unless ``factor`` divides the image height and width into tiles of at least 2 x 2 pixels."""
    h, w = image_shape[-2:]
    if h % factor or w % factor or min(h, w) // factor < 2:
        ok = [f for f in range(1, min(h, w) + 1) if h % f == 0 and w % f == 0 and min(h, w) // f >= 2]
        raise InvalidParameterError(f"factor={factor} does not divide the {h}x{w} images into equal tiles of "
                                    f"2 x 2 pixels or more; use one of {ok}.")


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) stored images -> (N * f**2, C, H, W): each image's f x f tiles, upsampled to (H, W)."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)  # (N, f, f, C, th, tw)
    tiles = tiles.reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Labels of :func:`decode`'s images: each stored image's label f**2 times, in place."""
    return labels if factor == 1 else labels.repeat_interleave(factor * factor, dim=0)


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(N * f**2, C, H, W) -> (N, C, H, W): each run of f**2 consecutive images, downsampled and tiled row-major."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    n, th, tw = m // (factor * factor), h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="area")  # (N*f*f, C, th, tw)
    grid = small.reshape(n, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5)  # (N, C, f, th, f, tw)
    return grid.reshape(n, c, h, w)
