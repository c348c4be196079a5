"""Apply sampled DSA parameters to images: :func:`apply` (pure), :func:`augment` and :func:`siamese`.

Siamese use (DSA, DM): draw one row per class and give every image its class's row, on both sides::

    p = sample_params(strategy, num_classes, x_real.shape[1:], generator=g, device=x_real.device)
    x_real, x_syn = apply(x_real, p, y_real), apply(x_syn, p, y_syn)   # same transform per class

Evaluation draws per image instead: ``augment(x, strategy, generator=g)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import InvalidParameterError
from . import functional as Fa
from .params import AugParams, sample_params

__all__ = ["apply", "augment", "siamese"]

# family name -> the pure op reading its fields of AugParams
_OPS: dict[str, Callable[[torch.Tensor, AugParams], torch.Tensor]] = {
    "color": lambda x, p: Fa.color(x, p.brightness, p.saturation, p.contrast),
    "crop": lambda x, p: Fa.crop(x, p.crop_shift),
    "cutout": lambda x, p: Fa.cutout(x, p.cutout_center, p.cutout_size),
    "flip": lambda x, p: Fa.flip(x, p.flip),
    "scale": lambda x, p: Fa.scale(x, p.scale),
    "rotate": lambda x, p: Fa.rotate(x, p.angle),
}


def apply(x: torch.Tensor, params: AugParams, index: torch.Tensor | None = None) -> torch.Tensor:
    """Transform images with given parameters; draws nothing, differentiable w.r.t. ``x``.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
        Normalised float images; the result has the same device and dtype.
    params : AugParams
        Rows drawn by :func:`sample_params` for images of size ``(H, W)``.
    index : integer Tensor of shape (B,), optional
        Image i uses row ``index[i]`` (e.g. class labels for siamese rows). Default: row i, which
        needs ``len(params) == B``.

    Returns
    -------
    Tensor of shape (B, C, H, W)

    Notes
    -----
    Reads which families are present (k integers) back to the host once per call, the counterpart of
    the reference picking its family on the host; composed rows (``family_per="all"``) read nothing. Mixed families are sorted into contiguous groups, each
    group gets its op, and the rows are put back in order (no loop over images).

    Examples
    --------
    >>> from distillset.augment import identity_params, sample_params
    >>> x = torch.rand(2, 3, 8, 8)
    >>> torch.allclose(apply(x, identity_params("crop_cutout", 2, (3, 8, 8))), x)
    True
    >>> p = sample_params("rotate", 1, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    >>> y = apply(torch.cat([x[:1], x[:1]]), p, torch.zeros(2, dtype=torch.long))
    >>> torch.equal(y[0], y[1])
    True
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(f"apply expects float images of shape (B, C, H, W). Got {got}.")
    if not isinstance(params, AugParams):
        raise InvalidParameterError(f"apply expects AugParams from sample_params. Got {type(params).__name__}.")
    if tuple(x.shape[-2:]) != params.image_size:
        raise InvalidParameterError(f"The params were drawn for images of size {params.image_size}, "
                         f"but x has size {tuple(x.shape[-2:])}; sample with image_shape=x.shape[1:].")
    b = x.shape[0]
    p = params.to(x.device)
    if index is not None:
        if not isinstance(index, torch.Tensor) or tuple(index.shape) != (b,):
            got = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
            raise InvalidParameterError(f"index must be an integer tensor of shape ({b},), one row per image. Got {got}.")
        p = p.take(index)
    elif len(p) != b:
        raise InvalidParameterError(f"apply got {b} images but {len(p)} parameter rows; pass index= (e.g. the labels) "
                         f"to pick a row per image, or sample {b} rows.")

    families = p.families
    if not families or b == 0:
        return x
    if p.composed:
        for family in families:
            x = _OPS[family](x, p)
        return x
    if len(families) == 1:
        return _OPS[families[0]](x, p)

    fam_ids = torch.arange(len(families), device=x.device)
    counts = (p.family[None, :] == fam_ids[:, None]).sum(1).tolist()  # (k,) the one host sync
    if sum(counts) != b:
        raise InvalidParameterError(f"AugParams.family must index the strategy's {len(families)} families {families}.")
    present = [f for f, c in enumerate(counts) if c]
    if len(present) == 1:  # one family for the whole call (the reference's mode)
        return _OPS[families[present[0]]](x, p)

    order = torch.argsort(p.family, stable=True)  # (B,) rows grouped by family
    xs, ps = x.index_select(0, order), p.take(order)
    pieces, start = [], 0
    for f in present:
        rows = slice(start, start + counts[f])
        pieces.append(_OPS[families[f]](xs[rows], ps._map(lambda t: t[rows])))
        start += counts[f]
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=x.device))  # order^-1
    return torch.cat(pieces).index_select(0, inverse)


def augment(x: torch.Tensor, strategy: str, *, generator: torch.Generator, family_per: str = "call") -> torch.Tensor:
    """Per-image DSA augmentation (evaluation mode): sample one row per image, then :func:`apply`.

    Examples
    --------
    >>> x = torch.rand(4, 3, 8, 8)
    >>> augment(x, "color_crop", generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 3, 8, 8])
    """
    p = sample_params(strategy, x.shape[0], tuple(x.shape[1:]), generator=generator, device=x.device,
                      family_per=family_per)
    return apply(x, p)


def siamese(x_a: torch.Tensor, idx_a: torch.Tensor, x_b: torch.Tensor, idx_b: torch.Tensor, strategy: str, n: int,
            *, generator: torch.Generator, family_per: str = "call") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` rows once and apply them to two batches: image i of ``x_a`` uses row ``idx_a[i]``, etc.

    Images with the same index (e.g. a real and a synthetic image of one class) get the same transform.

    Examples
    --------
    >>> x = torch.rand(1, 3, 8, 8)
    >>> i = torch.zeros(1, dtype=torch.long)
    >>> a, b = siamese(x, i, x.clone(), i, "rotate", 1, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(a, b)
    True
    """
    if tuple(x_a.shape[1:]) != tuple(x_b.shape[1:]):
        raise InvalidParameterError(f"siamese needs two batches of the same image shape. Got {tuple(x_a.shape[1:])} "
                         f"and {tuple(x_b.shape[1:])}.")
    p = sample_params(strategy, n, tuple(x_a.shape[1:]), generator=generator, device=x_a.device,
                      family_per=family_per)
    return apply(x_a, p, idx_a), apply(x_b, p, idx_b)
