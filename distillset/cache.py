"""A content-addressed cache for costly, deterministic preparation (DD's pretrained pools, expert
trajectories, the model pools of IDM / DANCE / NCFM, NAS's real-data networks).

An entry is a dict of tensors stored as ``<cache root>/prepared/<kind>-<key>.safetensors``, where the key
hashes everything the result depends on: the settings, a fingerprint of the data set and the library
version. A run whose settings hash to an existing key loads it instead of recomputing; any changed setting
gives another key (a miss). Entries are never updated in place, so concurrent runs at worst compute the
same entry twice. The root is ``$DISTILLSET_CACHE``, else ``~/.cache/distillset``; it is the one cache
root of the library: image folders' decoded arrays live in its ``decoded/`` folder
(:func:`distillset.data.readers.cache_dir`), and :func:`list_cache` / :func:`clear_cache` cover both.

Examples
--------
>>> import tempfile, os
>>> os.environ["DISTILLSET_CACHE"] = tempfile.mkdtemp()
>>> build = lambda: {"w": torch.arange(3.0)}
>>> cached("demo", {"size": 3}, build)["w"]
tensor([0., 1., 2.])
>>> cached("demo", {"size": 3}, lambda: 1 / 0)["w"]  # a hit: build is not called
tensor([0., 1., 2.])
>>> [e["kind"] for e in list_cache()], clear_cache()
(['demo'], 1)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from . import __version__
from .errors import InvalidParameterError


def cache_root() -> Path:
    """``$DISTILLSET_CACHE``, else ``$XDG_CACHE_HOME/distillset`` (``~/.cache/distillset``)."""
    if os.environ.get("DISTILLSET_CACHE"):
        return Path(os.environ["DISTILLSET_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distillset"


def prepared_folder() -> Path:
    """Where the prepared entries (experts, model pools, ...) are kept."""
    return cache_root() / "prepared"


def fingerprint(data) -> str:
    """A hash of a data set: its description and the bytes of its training split."""
    h = hashlib.sha256(json.dumps(data.meta(), sort_keys=True).encode())
    for t in (data.train.images, data.train.labels):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def cache_key(kind: str, settings: dict) -> str:
    """The entry's name: ``kind`` and a hash of the JSON of ``settings`` and the library version."""
    blob = json.dumps({"kind": kind, "version": __version__, **settings}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"


def _entry_path(kind: str, settings: dict) -> Path:
    return prepared_folder() / f"{cache_key(kind, settings)}.safetensors"


def is_cached(kind: str, settings: dict) -> bool:
    """Whether the cache holds a readable entry for (``kind``, ``settings``): only its header is read, so a
    damaged one (which :func:`cached` would build again) is not counted."""
    path = _entry_path(kind, settings)
    try:
        with safe_open(str(path), framework="pt"):
            return True
    except (SafetensorError, OSError):
        return False


def cached(kind: str, settings: dict, build: Callable[[], dict[str, torch.Tensor]], device=None
           ) -> dict[str, torch.Tensor]:
    """``build()``'s tensors, loaded from the cache when an entry for (``kind``, ``settings``) exists.

    ``settings`` must name everything the result depends on (JSON-able values); a miss stores the result.
    """
    path = _entry_path(kind, settings)
    if path.is_file():
        try:
            return load_file(str(path), device=str(device or "cpu"))
        except (SafetensorError, OSError) as e:  # a damaged entry is a miss: built again, then replaced
            warnings.warn(f"Ignoring the unreadable cache entry {path} ({e}); preparing it again.", stacklevel=2)
    out = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # written whole, then renamed: never half an entry
    meta = {"kind": kind, "version": __version__, "settings": json.dumps(settings, sort_keys=True, default=str)}
    blob = save({k: v.detach().cpu().contiguous() for k, v in out.items()}, metadata=meta)
    try:  # Python's I/O, so that every failure is an OSError (safetensors' own writer raises its own error)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        tmp.replace(path)
    except OSError as e:  # the work is done: a cache that cannot keep it must not lose it
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        warnings.warn(f"Could not keep the prepared {kind!r} in the cache ({e}); continuing without it. Set "
                      "$DISTILLSET_CACHE to a folder you may write to reuse it next time.", stacklevel=2)
    return out


# the kinds of entry besides a method's name (whose preparation it holds): decoded image folders (also the
# sub-folder of the root they live in), trained experts, the architecture search's real-data trainings
DECODED, EXPERT, NAS_REAL = "decoded", "expert", "nas-real"
OTHER_KINDS = (DECODED, EXPERT, NAS_REAL)


def known_kinds() -> list[str]:
    """Every kind an entry can have: the registered methods' names and :data:`OTHER_KINDS`."""
    from .methods import METHODS

    return sorted({*METHODS.names(), *OTHER_KINDS})


def list_cache() -> list[dict]:
    """The stored entries: ``path``, ``kind``, ``version``, ``settings`` and ``mib`` each.

    Prepared entries first, then the decoded image folders (kind ``"decoded"``, settings: the folder)."""
    if cache_root().exists() and not cache_root().is_dir():  # else "0 entries": as if the cache were empty
        raise InvalidParameterError(f"The cache folder {cache_root()} is a file ($DISTILLSET_CACHE names it); point "
                                    "$DISTILLSET_CACHE at a folder.")
    out = []
    for path in sorted(prepared_folder().glob("*.safetensors")):
        named = re.fullmatch(r"(.+)-[0-9a-f]{32}", path.stem)  # cache_key's form
        if not named:  # not ours: never listed, never cleared
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            settings = json.loads(meta.get("settings", "{}"))
            if not isinstance(settings, dict):
                raise ValueError("settings not an object")
        except (SafetensorError, OSError, ValueError):  # damaged: still listed, and cleared, by the kind in its name
            meta, settings = {"kind": named[1]}, {"damaged": True}
        if meta.get("kind") != named[1]:  # a readable file that `cached` did not write: not ours either
            continue
        out.append({"path": str(path), "kind": named[1], "version": meta.get("version", "?"),
                    "settings": settings, "mib": path.stat().st_size / 2**20})
    return out + _decoded_entries()


def _decoded_entries() -> list[dict]:
    from .data.readers import CACHE_VERSION, cache_dir

    out = []
    for path in sorted(cache_dir().glob("*.npz")):
        if not re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{24}\.npz", path.name):  # not ours: never listed, never cleared
            continue
        try:
            with np.load(path, allow_pickle=False) as z:  # reads only the member asked for
                folder = str(z["folder"])
        except Exception:  # a damaged copy is still an entry to list and clear
            folder = "?"
        out.append({"path": str(path), "kind": DECODED, "version": CACHE_VERSION, "settings": {"folder": folder},
                    "mib": path.stat().st_size / 2**20})
    return out


def clear_cache(kind: str | None = None) -> int:
    """Delete the entries (of one ``kind``, or all); returns how many were deleted."""
    paths = [Path(e["path"]) for e in list_cache() if kind is None or e["kind"] == kind]
    for p in paths:
        p.unlink(missing_ok=True)
    return len(paths)
