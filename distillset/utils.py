"""Shared helpers: devices, seeded generators, parameter validation."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .errors import InvalidParameterError

# --------------------------------------------------------------------------- devices and seeds


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda", "mps"):  # torch knows others (meta, xpu, ...) that distillset never tried
            raise RuntimeError
    except (RuntimeError, TypeError):
        raise InvalidParameterError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'. "
                                    f"Got {device!r} instead.") from None
    # checked here, before any work, instead of failing deep inside the first tensor transfer
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"The 'device' parameter is {device!r} but this torch ({torch.__version__}) sees "
                                    "no CUDA device. Use 'cpu' or 'auto'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidParameterError(f"The 'device' parameter is {device!r} but only {torch.cuda.device_count()} "
                                    "CUDA device(s) are visible. Use 'cuda:0' ... or 'auto'.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(f"The 'device' parameter is {device!r} but MPS is not available. Use 'cpu'.")
    return dev


def resolve_seed(random_state: int | torch.Generator | None) -> int:
    """Turn ``random_state`` into the integer seed a run records (``seed_``)."""
    if random_state is None:
        return secrets.randbits(31)  # fresh entropy (not the global torch RNG), recorded for replay
    if isinstance(random_state, torch.Generator):
        return int(torch.randint(0, 2**31 - 1, (1,), generator=random_state).item())
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise InvalidParameterError(
        f"The 'random_state' parameter must be an int, a torch.Generator or None. Got {random_state!r} (a "
        f"{type_name(type(random_state))}) instead."
    )


def content_hash(*tensors: torch.Tensor, text: str = "") -> str:
    """SHA-256 of ``text`` and the tensors' dtypes, shapes and bytes: names what a result depends on, or
    seals a file's content (a checkpoint) so that an edit or damage is found before it is used.

    >>> content_hash(torch.zeros(2)) == content_hash(torch.zeros(2)) != content_hash(torch.zeros(3))
    True
    """
    h = hashlib.sha256(text.encode())
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # its buffer: no copy
    return h.hexdigest()


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def derive_seed(seed: int, label: str) -> int:
    """A seed for a separate stream named ``label``, fixed by ``seed`` (e.g. a method's preparation stage).

    >>> derive_seed(0, "prepare") == derive_seed(0, "prepare") != derive_seed(1, "prepare")
    True
    """
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{label}".encode()).digest()[:7], "big")


def draw_seed(generator: torch.Generator) -> int:
    """An int seed drawn from ``generator`` (to seed a sub-process such as a network's init)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Run a block with the CPU global RNG seeded, and restore it afterwards.

    ``torch.nn`` initialisers read the global RNG; this lets us build networks from an explicit seed
    without leaving a trace on the caller's RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that also reseeds every CUDA device
        yield


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``type`` is int or float; bounds are inclusive unless ``closed`` says otherwise."""

    type: type
    left: float | None = None
    right: float | None = None
    closed: str = "both"  # "both" | "left" | "right" | "neither"

    def accepts(self, v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if self.type is int and not isinstance(v, numbers.Integral):
            return False
        if self.type is float and not (isinstance(v, numbers.Integral) or isinstance(v, numbers.Real) and math.isfinite(v)):
            return False  # inf passed "> 0" and the run ended hours later as "diverged"
        lo_ok = self.left is None or (v >= self.left if self.closed in ("both", "left") else v > self.left)
        hi_ok = self.right is None or (v <= self.right if self.closed in ("both", "right") else v < self.right)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        kind = "an int" if self.type is int else "a float"
        if self.left is not None and self.right is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"{kind} {op} {self.left}"
        if self.right is not None and self.left is None:
            op = "<=" if self.closed in ("both", "right") else "<"
            return f"{kind} {op} {self.right}"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        return f"{kind} in the range {lb}{self.left}, {self.right}{rb}"


# the environment variables distillset reads as numbers: name -> (default, what it must be)
ENV_NUMBERS = {"WORLD_SIZE": (1, Interval(int, 1)),  # set by torchrun, as LOCAL_RANK
               "LOCAL_RANK": (0, Interval(int, 0)),
               "DISTILLSET_TIMEOUT_S": (1800.0, Interval(float, 0, 1e9, closed="right")),  # timedelta's range
               "DISTILLSET_KEEP_FREED_MEMORY": (1, Interval(int, 0, 1))}


def env_number(name: str):
    """The environment variable ``name`` of :data:`ENV_NUMBERS` as its number (its default when unset or
    empty); any other value is one line naming the variable, not a traceback in the middle of a run."""
    default, interval = ENV_NUMBERS[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = interval.type(text)
    except ValueError:
        value = None
    if value is None or not interval.accepts(value):
        raise InvalidParameterError(f"The environment variable {name}={text!r} must be {interval}; "
                                    f"set it to such a number or unset it (default {default}).")
    return value


def check_environment() -> None:
    """Read every variable of :data:`ENV_NUMBERS` once, so that a bad one stops a command before any work."""
    for name in ENV_NUMBERS:
        env_number(name)


# a seed: what torch.Generator.manual_seed takes (a larger one was a traceback after the data was loaded)
SEED_RANGE = Interval(int, 0, 2**64 - 1)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, usually)."""

    values: tuple

    def accepts(self, v: Any) -> bool:
        try:
            return bool(v in self.values)
        except (TypeError, ValueError):  # e.g. a NumPy array, whose == is elementwise: not one of them
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Exactly:
    """The one value a parameter may take, and why (it said "in the range [0, 0]")."""

    value: Any
    why: str

    def accepts(self, v: Any) -> bool:
        kind = numbers.Integral if isinstance(self.value, int) else type(self.value)
        return isinstance(v, kind) and not isinstance(v, bool) and v == self.value

    def __str__(self) -> str:
        return f"{self.value!r} ({self.why})"


# the iterations of a method that solves or selects in one step
NO_ITERATIONS = Exactly(0, "it has no iterations; leave the option out")


@dataclass(frozen=True)
class Instance:
    types: tuple

    def accepts(self, v: Any) -> bool:
        return isinstance(v, self.types) and not (isinstance(v, bool) and bool not in self.types)

    def __str__(self) -> str:
        return "an instance of " + " or ".join(type_name(t) for t in self.types)


def type_name(kind: type) -> str:
    """``int``, ``torch.Generator``, ``numpy.Generator``: a type as a user would write it (its package's name
    tells torch's Generator from NumPy's, whose reprs both read "Generator")."""
    package = kind.__module__.split(".")[0]
    return kind.__qualname__ if package == "builtins" else f"{package}.{kind.__qualname__}"


# what every random_state takes: a seed, a generator, or None (fresh entropy, recorded as ``seed_``)
RANDOM_STATE = (None, SEED_RANGE, Instance((torch.Generator,)))


def validate_params(owner: str, params: dict[str, Any], constraints: dict[str, Iterable[Any]],
                    flags: dict[str, str] | None = None) -> None:
    """Check ``params`` against a declarative ``constraints`` dict (sklearn's ``_parameter_constraints``).

    Each constraint list may hold ``Interval``, ``Options``, ``Instance``, ``None`` or ``callable``.
    Raises ``InvalidParameterError`` with the message form
    "The 'ipc' parameter of DM must be an int >= 1. Got 0 instead."; a parameter in ``flags`` is named
    by the command-line flag that set it instead ("--runs must be an int >= 1. Got 0 instead.").
    """
    for key, allowed in constraints.items():
        if key not in params:
            continue
        v = params[key]
        ok = False
        for c in allowed:
            if c is None:
                ok = v is None
            elif c is callable:
                ok = callable(v)
            else:
                ok = c.accepts(v)
            if ok:
                break
        if not ok:
            flag = (flags or {}).get(key)
            # a flag's message lists only what can be typed after it (not None, a callable or a Generator)
            shown = [c for c in allowed if not flag or _typeable(c)] or allowed
            desc = " or ".join("None" if c is None else "a callable" if c is callable else str(c) for c in shown)
            name = flag or f"The {key!r} parameter of {owner}"
            kind = "" if type(v).__module__ == "builtins" else f" (a {type_name(type(v))})"
            raise InvalidParameterError(f"{name} must be {desc}. Got {v!r}{kind} instead.")


def _typeable(constraint) -> bool:
    """Whether a value typed on the command line can meet ``constraint``."""
    if constraint is None or constraint is callable:
        return False
    return not isinstance(constraint, Instance) or bool(set(constraint.types) & {str, int, float})


# M_TRIM_THRESHOLD -1 (never trim: glibc's documented "off"), M_TOP_PAD 64 MiB, M_MMAP_THRESHOLD 32 MiB, then
# M_MMAP_MAX 0 (no block of its own). A 1 GiB trim threshold (the earlier setting) let a step that frees more than
# 1 GiB hand it back at once: DM factor 2 at CIFAR-10 IPC 10 in fp32 (400 decoded images through ConvNet-3)
# faulted 82-246 k pages an iteration, never trimming 17-20 k (benchmarks/NOTES.md, "Notes on speed")
_MALLOPT = ((-1, -1), (-2, 2**26), (-3, 2**25), (-4, 0))
_libc = None  # glibc, once keep_freed_memory has applied its settings


def keep_freed_memory(device: torch.device | str | None = None) -> bool:
    """Have glibc's malloc keep freed memory for reuse, as PyTorch's caching allocator does on GPU.

    Why: a CPU training step frees and re-allocates the same activation buffers every step. By default
    glibc gives each large block its own mapping (unmapped when freed) and returns the top of its heap to
    the kernel, so the next step page-faults and zero-fills the memory again: 2.4 M faults in 10 ConvNet-3
    steps on 250 MNIST images. Served from a heap that keeps what it frees, the step takes 0.90 s instead of
    1.44 (bf16) and 1.75 instead of 2.61 (fp32); on 100 images 0.39 instead of 0.43 (bf16) and 0.57 instead
    of 0.90 (fp32) (one thread, torch 2.13; ``tests/test_precision.py`` checks the faults). Every value is
    bit for bit the same; a step that frees more than a GiB keeps it too (DM factor 2 at CIFAR-10 IPC 10 in fp32:
    17-20 k page faults an iteration instead of 82-246 k; 1-2 % faster in paired runs). The cost: a freed block's place can
    only be reused, not handed back, until :func:`release_freed_memory` (called at the end of each ``fit``,
    evaluation and expert training), so a run whose blocks grow in size can peak higher than before.

    Process-wide and idempotent; ``fit``, the evaluator and the expert trainer call it with their ``device``
    (a no-op unless it is the CPU). ``DISTILLSET_KEEP_FREED_MEMORY=0`` in the environment turns it off.
    Returns whether it is in effect (False off glibc, or where glibc refused a setting).
    """
    global _libc
    if device is not None and torch.device(device).type != "cpu":
        return False
    if _libc is None:
        _libc = _glibc_with_settings() or False
    return bool(_libc)


def _glibc_with_settings():
    """glibc, after applying :data:`_MALLOPT` in order (stopping at a refusal); None where it cannot."""
    import ctypes
    import ctypes.util
    import sys

    if env_number("DISTILLSET_KEEP_FREED_MEMORY") == 0 or not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # musl has neither
        return None
    for option, value in _MALLOPT:  # M_MMAP_MAX last: never without the thresholds before it
        if libc.mallopt(option, value) != 1:
            return None
    return libc


def release_freed_memory() -> None:
    """Hand the free pages :func:`keep_freed_memory` kept back to the kernel (glibc's ``malloc_trim``)."""
    if _libc:
        _libc.malloc_trim(0)


def peak_memory() -> dict[str, float | None]:
    """The process's peak memory so far in MiB: resident set (all of it: data, models, Python; None where the
    platform has no ``resource`` module) and GPU allocated."""
    import sys

    try:
        import resource  # POSIX only
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    except ImportError:  # Windows
        rss = None
    return {"peak_rss_mib": rss,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
