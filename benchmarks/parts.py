"""Parts: each finished seed of a benchmark entry, kept so that a row can finish seed by seed.

Why: this project's machine starts every session from a fresh clone, so ``run.py``'s ``.progress/`` (and
the preparation cache) are gone by the next one, and some rows take longer than a session. A part is small
(the seed's accuracies, timings and peak memory; the entry's last seed also keeps its set) and is committed.

Trust: a part is named by the hash of its *stamp*, everything its numbers depend on: the git tree of
``distillset/``, the source of the runner's functions that make a seed's numbers, the entry's settings,
the data's checksums, device type (and GPU, CUDA, cuDNN), torch threads, versions and CPU. A run loads
only parts whose stamp equals its own, so a record never mixes seeds made by different code, settings or
hardware; a part made elsewhere is never overwritten (its file name differs). A part whose checksum fails
(edited, or a merge conflict) is reported in one line and its seed is run again.

Layout: ``results/parts/<entry>/seed<N>-<stamp id>.json`` and, for the last seed,
``seed<N>-<stamp id>-set.{json,safetensors}``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distillset._io import atomic_write

# Entry keys that describe a row without changing its numbers: editing them keeps its parts valid.
DESCRIPTIVE = ("paper", "paper_random", "paper_budget", "seeds")


def stamp(entry: dict, *, code: str | None, runner: str, data_hash: str, environment: dict) -> dict | None:
    """What a seed's numbers depend on; None (no parts) without a clean code tree or for an ``extra`` hook,
    which needs the last seed's method object in the same run."""
    if code is None or entry.get("extra"):
        return None
    settings = {k: v for k, v in entry.items() if k not in DESCRIPTIVE}
    return {"code": code, "runner": runner, "entry": settings, "data": data_hash, **environment}


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stamp_id(stamp: dict) -> str:
    return _sha256(stamp)[:16]


def part_path(out: Path, name: str, root: int, stamp: dict) -> Path:
    return out / "parts" / name / f"seed{root}-{stamp_id(stamp)}.json"


def set_stem(path: Path) -> Path:
    """The stem of a part's set, beside the part."""
    return path.with_name(path.stem + "-set")


def _files_sha256(stem: Path) -> str | None:
    """One hash over a saved set's two files, or None if either is missing."""
    files = [Path(f"{stem}.json"), Path(f"{stem}.safetensors")]
    if not all(f.is_file() for f in files):
        return None
    return hashlib.sha256(b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)).hexdigest()


def read(path: Path) -> dict | None:
    """A part's JSON if it is intact (its checksum holds), else None."""
    try:
        part = json.loads(path.read_text())
        body = {k: part[k] for k in ("stamp", "run", "set_sha256")}
        return part if part["sha256"] == _sha256(body) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(out: Path, name: str, root: int, stamp: dict | None, need_set: bool, quiet: bool = False) -> dict | None:
    """Seed ``root``'s part made under ``stamp``, or None: no stamp, no such part, a failed checksum, another
    stamp or seed inside (a renamed file), or (with ``need_set``) a missing or changed set; the seed then
    runs again."""
    if stamp is None:
        return None
    path = part_path(out, name, root, stamp)
    if not path.is_file():
        return None
    part = read(path)
    problem = None
    if part is None:
        problem = "is damaged or was edited (its checksum fails)"
    elif _sha256(part["stamp"]) != _sha256(stamp) or part["run"].get("seed") != root:
        problem = "holds another stamp or seed than its name says"
    elif need_set and (part["set_sha256"] is None or _files_sha256(set_stem(path)) != part["set_sha256"]):
        problem = f"lacks its set ({set_stem(path).name}.*), or the set changed"
    if problem:
        if not quiet:
            print(f"note: {path} {problem}: seed {root} runs again", flush=True)
        return None
    return {**part["run"], "from_part": True}


def save(out: Path, name: str, run: dict, stamp: dict, set_=None) -> Path:
    """Keep a finished seed's ``run`` (JSON-able) and, if given, its set; the part file is written last."""
    path = part_path(out, name, run["seed"], stamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    if set_ is not None:  # the set says which code made it, as a record's set does
        set_.meta.update(commit=run.get("commit"), benchmark_entry=name)
        set_.save(set_stem(path))
    body = {"stamp": stamp, "run": json.loads(json.dumps(run, default=str)),  # as it will read back
            "set_sha256": _files_sha256(set_stem(path)) if set_ is not None else None}
    atomic_write(path, json.dumps({**body, "sha256": _sha256(body)}, indent=1))
    return path


def discard(out: Path, name: str, roots: list[int], stamp: dict) -> None:
    """Delete the parts a record now holds (those made under other stamps stay)."""
    for root in roots:
        path = part_path(out, name, root, stamp)
        for f in (path, Path(f"{set_stem(path)}.json"), Path(f"{set_stem(path)}.safetensors")):
            f.unlink(missing_ok=True)
    folder = out / "parts" / name
    for d in (folder, folder.parent):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def kept(out: Path) -> list[tuple[Path, dict]]:
    """Every intact part under ``out`` as (path, its JSON); sets and damaged files are left out."""
    found = [(path, read(path)) for path in sorted((out / "parts").glob("*/seed*.json")) if not path.stem.endswith("-set")]
    return [(path, part) for path, part in found if part is not None]
