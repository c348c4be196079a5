"""One tiny registry type shared by data sets, models and methods (timm's ``_registry`` habit)."""
from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

from .errors import InvalidParameterError, UnknownNameError

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


Builder = Callable[..., object]
