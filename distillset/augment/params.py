"""DSA strategies and their random parameters: parse a strategy, sample an :class:`AugParams`.

A strategy names augmentation *families* joined by ``"_"``, e.g. ``"color_crop_cutout_flip_scale_rotate"``
(``"none"`` or ``""``: no augmentation). As in the DSA reference code each parameter row applies ONE family,
chosen uniformly among the strategy's families; ``family_per="all"`` instead applies every family in the
strategy's order (IDC's DiffAug in batch mode, which DANCE and NCFM match with: color, crop, cutout).

Sampling draws every tensor from an explicit ``torch.Generator``, one batched call per tensor (two for the
per-axis integer tensors), always in the same order and whichever family is picked, so the generator
stream depends only on ``(strategy is empty, n, family_per)``. Draws are float32 on the generator's device;
like kornia's, they are reproducible per device only.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import InvalidParameterError
from ..utils import Interval, Options, validate_params

__all__ = [
    "DEFAULT_STRATEGY", "FAMILIES", "AugParams", "default_strategy", "identity_params", "parse_strategy",
    "resolve_strategy",
    "sample_params",
]

# Ranges of the reference implementation (images are normalised float tensors).
SCALE = 1.2  # sx, sy ~ U[1/SCALE, SCALE], independently
ROTATE = 15.0  # angle ~ U[-ROTATE, ROTATE] degrees
FLIP_P = 0.5  # probability of a left-right mirror
BRIGHTNESS = 1.0  # shift ~ U[-BRIGHTNESS/2, BRIGHTNESS/2]
SATURATION = 2.0  # factor ~ U[0, SATURATION)
CONTRAST = 0.5  # factor ~ U[1 - CONTRAST, 1 + CONTRAST)
CROP = 0.125  # integer shift in [-round(CROP*H), round(CROP*H)] (W likewise)
CUTOUT = 0.5  # zeroed rectangle of round(CUTOUT*H) x round(CUTOUT*W) pixels

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")  # the valid family names
DEFAULT_STRATEGY = "_".join(FAMILIES)
_NO_FLIP_DATASETS = frozenset({"mnist", "kmnist", "emnist", "svhn", "usps", "digits"})  # mirrored digits mislead


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string into its families, checking each name.

    Parameters
    ----------
    strategy : str
        Families joined by ``"_"``; ``"none"`` or ``""`` for no augmentation.

    Returns
    -------
    families : tuple of str
        In the order given; a family's position is its index in :attr:`AugParams.family`.

    Examples
    --------
    >>> parse_strategy("crop_flip")
    ('crop', 'flip')
    >>> parse_strategy("none")
    ()
    """
    if not isinstance(strategy, str):
        raise InvalidParameterError(
            f"The 'strategy' parameter must be a str of families joined by '_'. Got {strategy!r} instead."
        )
    if strategy in ("", "none"):
        return ()
    families = tuple(strategy.split("_"))
    for fam in families:
        if fam not in FAMILIES:
            close = difflib.get_close_matches(fam, FAMILIES, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidParameterError(
                f"Unknown augmentation family {fam!r} in strategy {strategy!r}.{hint} Valid families: "
                f"{', '.join(FAMILIES)} (joined by '_'), or 'none'."
            )
        if families.count(fam) > 1:
            raise InvalidParameterError(f"The strategy {strategy!r} names the family {fam!r} more than once.")
    return families


def default_strategy(dataset_name: str) -> str:
    """The reference strategy for a data set: every family, without flip for digit data sets.

    Examples
    --------
    >>> default_strategy("cifar10")
    'color_crop_cutout_flip_scale_rotate'
    >>> default_strategy("mnist")
    'color_crop_cutout_scale_rotate'
    """
    if str(dataset_name).lower() in _NO_FLIP_DATASETS:
        return "_".join(f for f in FAMILIES if f != "flip")
    return DEFAULT_STRATEGY


def check_augment(augment: str | None) -> None:
    """Parse an ``augment`` option's strategy now, so an unknown family is an error before any work
    (None, ``"none"``, ``""`` and ``"auto"`` always pass)."""
    if isinstance(augment, str) and augment not in ("auto", "none", ""):
        parse_strategy(augment)


def resolve_strategy(augment: str | None, dataset_name: str) -> str | None:
    """The one reading of an ``augment`` option: None, ``"none"`` or ``""`` = off (None); ``"auto"`` = the data
    set's default strategy; any other string is the strategy itself.

    Examples
    --------
    >>> resolve_strategy("auto", "mnist"), resolve_strategy("none", "mnist"), resolve_strategy("crop", "mnist")
    ('color_crop_cutout_scale_rotate', None, 'crop')
    """
    if augment in (None, "none", ""):
        return None
    return default_strategy(dataset_name) if augment == "auto" else augment


@dataclass(frozen=True, eq=False)
class AugParams:
    """Sampled DSA parameters: one row per transform, as named tensors on one device.

    Row r applies the family ``families[family[r]]`` with that row's values; the other fields of the
    row are drawn anyway (so the random stream never depends on the family) and ignored.

    Attributes
    ----------
    strategy : str
        The strategy the rows were drawn for (``"none"`` when empty).
    image_size : (int, int)
        ``(H, W)`` of the images the rows fit (crop shifts and cutout sizes are in pixels).
    family : LongTensor (n,)
        Index into ``parse_strategy(strategy)``.
    scale : Tensor (n, 2)
        ``(sx, sy)``.
    angle : Tensor (n,)
        Rotation in degrees.
    flip : BoolTensor (n,)
        Mirror left-right.
    brightness, saturation, contrast : Tensor (n,)
        The "color" family: additive shift, then the two factors.
    crop_shift : LongTensor (n, 2)
        ``(dx, dy)`` translation in pixels.
    cutout_center, cutout_size : LongTensor (n, 2)
        ``(cx, cy)`` and ``(sx, sy)`` of the zeroed rectangle in pixels.
    composed : bool, default=False
        Every row applies every family, in the strategy's order (``family`` is then ignored).

    Examples
    --------
    >>> p = sample_params("crop_flip", 3, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    >>> len(p), p.crop_shift.shape, p.take(torch.tensor([0, 0, 2, 1])).angle.shape
    (3, torch.Size([3, 2]), torch.Size([4]))
    """

    strategy: str
    image_size: tuple[int, int]
    family: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    saturation: torch.Tensor
    contrast: torch.Tensor
    crop_shift: torch.Tensor
    cutout_center: torch.Tensor
    cutout_size: torch.Tensor
    composed: bool = False

    _TAILS = {"family": (), "scale": (2,), "angle": (), "flip": (), "brightness": (), "saturation": (),
              "contrast": (), "crop_shift": (2,), "cutout_center": (2,), "cutout_size": (2,)}

    def __post_init__(self):
        families = parse_strategy(self.strategy)
        if len(tuple(self.image_size)) != 2:
            raise InvalidParameterError(f"AugParams.image_size must be (H, W). Got {self.image_size!r}.")
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "strategy", "_".join(families) or "none")
        n = self.family.shape[0] if self.family.dim() >= 1 else -1
        for name, tail in self._TAILS.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n, *tail):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidParameterError(f"AugParams.{name} must have shape {(max(n, 0), *tail)}. Got {got}.")
        for name in ("family", "crop_shift", "cutout_center", "cutout_size"):
            if getattr(self, name).is_floating_point():
                raise InvalidParameterError(f"AugParams.{name} must be an integer tensor. Got {getattr(self, name).dtype}.")

    def __len__(self) -> int:
        return int(self.family.shape[0])

    @property
    def families(self) -> tuple[str, ...]:
        return parse_strategy(self.strategy)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> AugParams:
        return dataclasses.replace(self, **{name: fn(getattr(self, name)) for name in self._TAILS})

    def take(self, index: torch.Tensor) -> AugParams:
        """The rows ``index`` (a 1-D integer tensor), e.g. ``p.take(labels)`` gives each image its class's row."""
        if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.is_floating_point():
            got = f"{index.dtype} of shape {tuple(index.shape)}" if isinstance(index, torch.Tensor) else repr(index)
            raise InvalidParameterError(f"AugParams.take expects a 1-D integer tensor of row indices. Got {got}.")
        index = index.to(device=self.family.device, dtype=torch.long)
        return self._map(lambda t: t.index_select(0, index))

    def to(self, device: torch.device | str) -> AugParams:
        """The same rows on ``device`` (returns ``self``'s tensors when already there)."""
        return self._map(lambda t: t.to(device))


def _image_size(image_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise InvalidParameterError(
            f"The 'image_shape' parameter must be (C, H, W) or (H, W) of positive ints. Got {image_shape!r} instead."
        )
    return shape[-2], shape[-1]


def _pixels(ratio: float, size: int) -> int:
    return int(ratio * size + 0.5)  # round half up, as the reference does


def identity_params(strategy: str, n: int, image_shape: Sequence[int], *, device=None) -> AugParams:
    """Rows whose application is the identity for every family (family 0 everywhere).

    Examples
    --------
    >>> p = identity_params("flip", 2, (3, 4, 4))
    >>> p.flip.tolist(), p.cutout_size.tolist()
    ([False, False], [[0, 0], [0, 0]])
    """
    validate_params("identity_params", {"n": n}, {"n": [Interval(int, 0, None)]})
    h, w = _image_size(image_shape)
    kw = dict(device=device)
    return AugParams(
        strategy=strategy, image_size=(h, w),
        family=torch.zeros(n, dtype=torch.long, **kw), scale=torch.ones(n, 2, **kw), angle=torch.zeros(n, **kw),
        flip=torch.zeros(n, dtype=torch.bool, **kw), brightness=torch.zeros(n, **kw),
        saturation=torch.ones(n, **kw), contrast=torch.ones(n, **kw),
        crop_shift=torch.zeros(n, 2, dtype=torch.long, **kw),
        cutout_center=torch.zeros(n, 2, dtype=torch.long, **kw), cutout_size=torch.zeros(n, 2, dtype=torch.long, **kw),
    )


def sample_params(strategy: str, n: int, image_shape: Sequence[int], *, generator: torch.Generator,
                  device: torch.device | str | None = None, family_per: str = "call") -> AugParams:
    """Draw ``n`` rows of DSA parameters from ``generator`` (never the global RNG).

    Parameters
    ----------
    strategy : str
        Families joined by ``"_"`` (see :func:`parse_strategy`); ``"none"`` draws nothing and returns
        :func:`identity_params`.
    n : int
        Number of rows: the batch size for per-image parameters, the number of classes for siamese ones.
    image_shape : (C, H, W) or (H, W)
        Size of the images the rows will be applied to.
    generator : torch.Generator
        Source of every draw; draws happen on its device.
    device : torch.device or str, optional
        Where the returned tensors live; default the generator's device.
    family_per : {"call", "row", "all"}, default="call"
        "call": one family for all rows, as in the DSA reference; "row": a family per row; "all": every
        family on every row, in the strategy's order (the draws are those of "call").

    Returns
    -------
    AugParams

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> p = sample_params("scale_rotate", 4, (3, 8, 8), generator=g)
    >>> bool((p.angle.abs() <= 15).all()), p.family.unique().numel()
    (True, 1)
    """
    validate_params("sample_params", {"n": n, "family_per": family_per},
                    {"n": [Interval(int, 0, None)], "family_per": [Options(("call", "row", "all"))]})
    if not isinstance(generator, torch.Generator):
        raise InvalidParameterError(
            f"The 'generator' parameter of sample_params must be a torch.Generator. Got {generator!r} instead."
        )
    families = parse_strategy(strategy)
    h, w = _image_size(image_shape)
    out_device = torch.device(device) if device is not None else generator.device
    if not families:
        return identity_params(strategy, n, (h, w), device=out_device)

    kw = dict(generator=generator, device=generator.device)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, **kw)

    def randint_xy(lo: tuple[int, int], hi: tuple[int, int]) -> torch.Tensor:  # (n, 2), x then y, hi exclusive
        return torch.stack([torch.randint(lo[0], hi[0], (n,), **kw), torch.randint(lo[1], hi[1], (n,), **kw)], 1)

    # The draws, always all of them and in this order.
    k = len(families)
    family = torch.randint(0, k, (n if family_per == "row" else 1,), **kw).expand(n).clone()
    scale = uniform(1 / SCALE, SCALE, n, 2)
    angle = uniform(-ROTATE, ROTATE, n)
    flip = torch.rand(n, **kw) < FLIP_P
    brightness = uniform(-BRIGHTNESS / 2, BRIGHTNESS / 2, n)
    saturation = uniform(0.0, SATURATION, n)
    contrast = uniform(1 - CONTRAST, 1 + CONTRAST, n)
    sx, sy = _pixels(CROP, w), _pixels(CROP, h)
    crop_shift = randint_xy((-sx, -sy), (sx + 1, sy + 1))
    cw, ch = _pixels(CUTOUT, w), _pixels(CUTOUT, h)
    # Centres reach one past the border for even sides, so both edges can lose the same half-square.
    cutout_center = randint_xy((0, 0), (w + 1 - cw % 2, h + 1 - ch % 2))
    cutout_size = torch.tensor([cw, ch], device=generator.device).expand(n, 2).clone()

    p = AugParams(strategy=strategy, image_size=(h, w), family=family, scale=scale, angle=angle, flip=flip,
                  brightness=brightness, saturation=saturation, contrast=contrast, crop_shift=crop_shift,
                  cutout_center=cutout_center, cutout_size=cutout_size, composed=family_per == "all")
    return p.to(out_device)
