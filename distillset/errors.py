"""Exceptions raised by distillset.

Every error names the problem and the fix, and derives from :class:`DistillsetError`, so one
``except DistillsetError`` is the whole boundary (the CLI's: one stderr line, exit 2; 1 for a diverged
run). Each also keeps the builtin type it stands for (``ValueError``, ``OSError``, ``FloatingPointError``
...), so callers who already catch the builtin types keep working. Third-party exceptions (safetensors,
json, yaml, PIL, torch.linalg, CUDA) are translated into these where they enter the library.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class DistillsetError(Exception):
    """Base class of every error distillset raises on purpose."""


def close_matches(name, choices: Iterable[str]) -> list[str]:
    """The (up to 3) names among ``choices`` a mistyped ``name`` most likely meant.

    >>> close_matches("dmm", ["dm", "dc", "mtt"])
    ['dm']
    """
    return difflib.get_close_matches(str(name), sorted(choices), n=3, cutoff=0.5)


class UnknownNameError(DistillsetError, KeyError, ValueError):
    """A registry lookup with a name that is not registered.

    The message lists the known names and the close matches.
    """

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        choices = sorted(choices)
        close = close_matches(name, choices)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.kind, self.name, self.choices = kind, name, choices
        self.message = f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(choices)}."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class InvalidParameterError(DistillsetError, ValueError):
    """A constructor or ``fit`` argument outside its allowed range (sklearn wording)."""


class DataError(DistillsetError, OSError):
    """A data set file is missing, truncated, corrupt or fails its checksum."""


class MissingDataError(DataError, FileNotFoundError):
    """Data set files were not found where we looked."""


class ChecksumError(DataError):
    """A file's md5 differs from the published one."""


class CorruptFileError(DataError):
    """A file exists but cannot be parsed (truncated, wrong format)."""


class OutputError(DistillsetError, OSError):
    """An output path cannot be used: a file where a folder should be, not writable, or a run already there."""


class CheckpointMismatchError(DistillsetError, ValueError):
    """``resume`` was asked for with settings that differ from the checkpoint's."""


class DivergenceError(DistillsetError, FloatingPointError):
    """A run's loss or learnable tensors became NaN or infinite (the optimisation diverged)."""


class NumericalError(DistillsetError, ArithmeticError):
    """A linear-algebra step failed (e.g. a kernel matrix that is not positive definite)."""


class MissingDependencyError(DistillsetError, ImportError):
    """An optional package a feature needs is not installed (the message names the pip command)."""


class ArgumentTypeError(DistillsetError, TypeError):
    """An argument of the wrong kind (e.g. a data set's name where a loaded data set is needed)."""


def require_type(value, cls: type | tuple[type, ...], what: str, how: str) -> None:
    """Raise :class:`ArgumentTypeError` naming ``what`` and ``how`` to make one unless ``value`` is a ``cls``.

    >>> require_type("digits", int, "fit's data", "Load it with load_dataset(name).")
    Traceback (most recent call last):
    ...
    distillset.errors.ArgumentTypeError: fit's data must be of type int, not str. Load it with load_dataset(name).
    """
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise ArgumentTypeError(f"{what} must be of type {names}, not {type(value).__name__}. {how}")


def check_named_once(names: list[str], where: str = "") -> None:
    """Refuse a name given twice (``where`` says in what): results keyed by name would keep only one of them.

    >>> check_named_once(["dm", "random"])
    >>> check_named_once(["dm", "dm"], " in --methods")
    Traceback (most recent call last):
    ...
    distillset.errors.InvalidParameterError: 'dm' given twice in --methods; name each once.
    """
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidParameterError(f"{', '.join(map(repr, twice))} given twice{where}; name each once.")
