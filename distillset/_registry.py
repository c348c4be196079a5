"""One tiny registry type shared by data sets, models and methods (timm's ``_registry`` habit)."""
from __future__ import annotations

import ast
import fnmatch
import re
from typing import Generic, TypeVar

from .errors import DistillsetError, InvalidParameterError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object dict that refuses duplicates and explains unknown names.

    Examples
    --------
    >>> r = Registry("widget")
    >>> @r.register
    ... def small(): return 1
    >>> r.get("small")()
    1
    >>> r.names()
    ['small']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, obj: T | None = None, *, name: str | None = None):
        """Register ``obj`` under ``name`` (default: its ``name`` attribute or ``__name__``)."""

        def add(o: T) -> T:
            key = name or getattr(o, "name", None) or o.__name__  # type: ignore[attr-defined]
            if not isinstance(key, str):
                key = o.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise InvalidParameterError(f"Duplicate {self.kind} name {key!r}: already registered.")
            self._items[key] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self, pattern: str = "*") -> list[str]:
        if not isinstance(pattern, str):  # fnmatch's own error named os.PathLike
            raise InvalidParameterError(f"A pattern of {self.kind} names must be a string such as 'conv*'. Got "
                                        f"{pattern!r} instead.")
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def drop_none(kwargs: dict) -> dict:
    """Drop ``None`` values so unset CLI options leave constructor defaults alone (timm)."""
    return {k: v for k, v in kwargs.items() if v is not None}


_SPEC = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$")


def build_spec(builder, kind: str, name: str, /, *args, **options):
    """``builder(*args, **options)`` for the spec ``name(**options)``; an option the builder does not take, or a
    value of the wrong type, is one clear error (not a TypeError from deep inside)."""
    try:
        return builder(*args, **options)
    except DistillsetError:
        raise
    except (TypeError, ValueError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "unexpected keyword argument" in text:
            bad = text.rsplit("unexpected keyword argument ", 1)[-1]
            raise InvalidParameterError(f"The {kind} {name!r} has no option {bad}; remove it or fix its spelling.") from None
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise InvalidParameterError(f"The {kind} {name!r} cannot be built with ({given}): {text}. Check the options' "
                                    "names and types.") from None


def parse_spec(spec: str | dict, kind: str = "spec") -> tuple[str, dict]:
    """A spec, ``"name"``, ``"name(key=literal, ...)"`` or ``{"name": ..., **options}``, as ``(name, options)``.

    One syntax for every registry (models, kernels), so a search space can be written down.

    Examples
    --------
    >>> parse_spec("convnet(width=64, depth=4, norm='batchnorm')")
    ('convnet', {'width': 64, 'depth': 4, 'norm': 'batchnorm'})
    >>> parse_spec({"name": "convnet", "width": 64})
    ('convnet', {'width': 64})
    """
    if isinstance(spec, dict):
        if not isinstance(spec.get("name"), str):
            raise InvalidParameterError(f"A {kind} spec dict needs a 'name' string. Got {spec!r} instead.")
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    if not isinstance(spec, str):  # str(None) would be looked up as the name 'None'
        raise InvalidParameterError(f"A {kind} spec must be a name such as 'convnet', 'name(key=value, ...)' or a "
                                    f"dict with a 'name'. Got {spec!r} instead.")
    m = _SPEC.match(spec)
    if not m:
        raise InvalidParameterError(f"Cannot parse {kind} spec {spec!r}. Use 'name' or 'name(key=value, ...)'.")
    name, body = m.group(1), m.group(2)
    if not body or not body.strip():
        return name, {}
    try:
        call = ast.parse(f"f({body})", mode="eval").body
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        if call.args or any(k is None for k in kwargs):
            raise ValueError
    except (SyntaxError, ValueError):
        raise InvalidParameterError(
            f"Cannot parse the arguments of {kind} spec {spec!r}; use key=literal pairs, strings quoted "
            f"(e.g. {name}(depth=2, readout='gap')).") from None
    if len(kwargs) < len(call.keywords):  # Python's parser lets f(a=1, a=2) through; the last would win
        twice = next(kw.arg for i, kw in enumerate(call.keywords) if kw.arg in [k.arg for k in call.keywords[:i]])
        raise InvalidParameterError(f"The {kind} spec {spec!r} gives {twice!r} twice; give each option once.")
    return name, kwargs
