"""Pure, batched, differentiable image ops behind DSA (Zhao & Bilen, ICML 2021).

Every op takes images ``x`` of shape ``(B, C, H, W)`` and one parameter row per image, draws nothing,
and returns a new tensor of the same shape, device and dtype. Gradients reach ``x`` through every op:
scale and rotate resample an affine grid (``F.affine_grid`` + ``F.grid_sample``, ``align_corners=True``
as in the reference code), crop gathers pixels and cutout masks them, never indexing ``x`` in place.

Coordinates come in ``(x, y)`` order (width first), like the scale factors ``(sx, sy)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

__all__ = ["affine", "brightness", "color", "contrast", "crop", "cutout", "flip", "rotate", "saturation", "scale"]


def _check(x: torch.Tensor, op: str, **params: tuple[torch.Tensor, tuple[int, ...]]) -> None:
    """Check ``x`` is (B, C, H, W) and each parameter tensor has shape ``(B, *tail)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(f"{op} expects images of shape (B, C, H, W). Got {got} instead.")
    for name, (t, tail) in params.items():
        want = (x.shape[0], *tail)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InvalidParameterError(f"The {name!r} argument of {op} must have shape {want} (one row per image). Got {got}.")


def _per_image(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) factor -> (B, 1, 1, 1) in x's dtype and device, ready to broadcast."""
    return t.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- geometric (resampled)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` through per-image affine maps in normalised coordinates, zero padding.

    ``theta[b]`` (2, 3) maps an output location to the input location it reads, as in
    ``F.affine_grid(..., align_corners=True)``; bilinear sampling keeps the op differentiable.

    Examples
    --------
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> torch.allclose(affine(x, eye), x)
    True
    """
    _check(x, "affine", theta=(theta, (2, 3)))
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def scale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale about the image centre: output (u, v) reads input (sx*u, sy*v), so a factor > 1 shrinks.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    factors : Tensor of shape (B, 2)
        ``(sx, sy)`` per image; ``(1, 1)`` is the identity.

    Examples
    --------
    >>> x = torch.rand(2, 3, 5, 5)
    >>> torch.allclose(scale(x, torch.ones(2, 2)), x, atol=1e-6)
    True
    """
    _check(x, "scale", factors=(factors, (2,)))
    f = factors.to(device=x.device, dtype=x.dtype)
    sx, sy = f[:, 0], f[:, 1]
    zero = torch.zeros_like(sx)
    theta = torch.stack([sx, zero, zero, zero, sy, zero], dim=1).view(-1, 2, 3)  # (B, 2, 3)
    return affine(x, theta)


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate about the image centre by ``angle`` degrees (positive: counter-clockwise, row 0 on top).

    The rotation is exact in pixel space, so a non-square image is not sheared; for square images the
    map is the reference's ``[[cos, -sin], [sin, cos]]``. +90 degrees equals ``torch.rot90(x, 1, (2, 3))``.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    angle : Tensor of shape (B,)
        Degrees; 0 is the identity.

    Examples
    --------
    >>> x = torch.rand(1, 1, 4, 4)
    >>> torch.allclose(rotate(x, torch.tensor([90.0])), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    True
    """
    _check(x, "rotate", angle=(angle, ()))
    rad = angle.to(device=x.device, dtype=x.dtype) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    h, w = x.shape[-2:]
    # Normalised coordinates stretch each axis by its own length: rescale so the rotation is rigid in pixels.
    r = (h - 1) / (w - 1) if h > 1 and w > 1 else 1.0
    zero = torch.zeros_like(c)
    theta = torch.stack([c, -s * r, zero, s / r, c, zero], dim=1).view(-1, 2, 3)  # (B, 2, 3)
    return affine(x, theta)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``mask`` entry is True.

    Examples
    --------
    >>> x = torch.arange(2.0).view(1, 1, 1, 2)
    >>> flip(x, torch.tensor([True])).flatten().tolist()
    [1.0, 0.0]
    """
    _check(x, "flip", mask=(mask, ()))
    m = mask.to(device=x.device, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(-1), x)


# --------------------------------------------------------------------------- color


def brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add ``shift[b]`` to every pixel of image b (0 is the identity)."""
    _check(x, "brightness", shift=(shift, ()))
    return x + _per_image(shift, x)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's distance from its channel mean by ``factor[b]`` (1 is the identity)."""
    _check(x, "saturation", factor=(factor, ()))
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return mean + _per_image(factor, x) * (x - mean)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's distance from its mean over (C, H, W) by ``factor[b]`` (1 is the identity)."""
    _check(x, "contrast", factor=(factor, ()))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return mean + _per_image(factor, x) * (x - mean)


def color(x: torch.Tensor, shift: torch.Tensor, sat: torch.Tensor, con: torch.Tensor) -> torch.Tensor:
    """DSA's "color" family: brightness, then saturation, then contrast, in the reference's order.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    shift, sat, con : Tensor of shape (B,)
        Brightness shift (identity 0), saturation factor (identity 1), contrast factor (identity 1).

    Examples
    --------
    >>> x = torch.rand(2, 3, 4, 4)
    >>> torch.allclose(color(x, torch.zeros(2), torch.ones(2), torch.ones(2)), x, atol=1e-6)
    True
    """
    return contrast(saturation(brightness(x, shift), sat), con)


# --------------------------------------------------------------------------- crop and cutout (masked)


def crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Translate each image by whole pixels, filling with zeros (DSA's "crop").

    ``out[b, :, i, j] = x[b, :, i - dy, j - dx]`` where that pixel exists, else 0: a positive ``dx``
    moves the content right, a positive ``dy`` down. Built from a gather and a mask, so the gradient
    w.r.t. ``x`` is 1 on the pixels that stay in view and 0 on those pushed out.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    shift : integer Tensor of shape (B, 2)
        ``(dx, dy)`` in pixels; ``(0, 0)`` is the identity.

    Examples
    --------
    >>> x = torch.arange(1.0, 4.0).view(1, 1, 1, 3)
    >>> crop(x, torch.tensor([[1, 0]])).flatten().tolist()
    [0.0, 1.0, 2.0]
    """
    _check(x, "crop", shift=(shift, (2,)))
    b, c, h, w = x.shape
    shift = shift.to(device=x.device, dtype=torch.long)
    rows = torch.arange(h, device=x.device).view(1, h) - shift[:, 1:2]  # (B, H) source row of each output row
    cols = torch.arange(w, device=x.device).view(1, w) - shift[:, 0:1]  # (B, W)
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    # Out-of-view outputs read some in-range pixel (clamped index) and are then masked to zero.
    src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (B, H, W) flat index
    out = x.reshape(b, c, h * w).gather(2, src.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return torch.where(valid.unsqueeze(1), out, out.new_zeros(()))


def cutout(x: torch.Tensor, center: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Zero a ``size`` rectangle centred at ``center`` in each image, clipped at the borders.

    The rectangle covers columns ``cx - sx // 2 .. cx - sx // 2 + sx - 1`` (rows likewise). The gradient
    w.r.t. ``x`` is the keep-mask.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    center : integer Tensor of shape (B, 2)
        ``(cx, cy)`` in pixels; may lie on or just past the border.
    size : integer Tensor of shape (B, 2)
        ``(sx, sy)`` in pixels; ``(0, 0)`` is the identity.

    Examples
    --------
    >>> x = torch.ones(1, 1, 1, 4)
    >>> cutout(x, torch.tensor([[1, 0]]), torch.tensor([[2, 1]])).flatten().tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    _check(x, "cutout", center=(center, (2,)), size=(size, (2,)))
    h, w = x.shape[-2:]
    center = center.to(device=x.device, dtype=torch.long)
    size = size.to(device=x.device, dtype=torch.long)
    start = center - size // 2  # (B, 2) first covered column / row
    stop = start + size  # (B, 2) one past the last
    cols = torch.arange(w, device=x.device).view(1, w)
    rows = torch.arange(h, device=x.device).view(1, h)
    in_c = (cols >= start[:, 0:1]) & (cols < stop[:, 0:1])  # (B, W)
    in_r = (rows >= start[:, 1:2]) & (rows < stop[:, 1:2])  # (B, H)
    keep = ~(in_r[:, :, None] & in_c[:, None, :])  # (B, H, W)
    return torch.where(keep.unsqueeze(1), x, x.new_zeros(()))
