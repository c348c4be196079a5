"""Benchmark runner: executes named configurations and records what they measured.

    python benchmarks/run.py --profile tables --only mnist_ipc1_dm --threads 1
    python benchmarks/run.py --check check_mnist_ipc1_ls   # re-run a committed record, compare per network
    python benchmarks/run.py --report                       # only regenerate benchmarks/RESULTS.md
    python benchmarks/run.py --progress                     # what unfinished runs kept for resuming
    python benchmarks/run.py --profile tables --only mnist_ipc10_mtt --part --seeds 1 --threads 1  # one seed of a row

Each entry runs in its own process (so wall time and peak memory are its own) and writes
``benchmarks/results/<name>.json``. An entry's ``seeds`` (or ``--seeds``) are root seeds: each gives
separate derived seeds to the distillation, each baseline and the evaluation (``stream_seeds``). Per
root seed the runner distils once (keeping ``snapshots``), evaluates the set and its baselines under
the entry's protocol (baselines with the set's loss), and with ``scores: true`` also under the other
augmentation setting and, for learned / soft labels, with hard labels (the inputs of ARS and HLR,
``benchmarks/report.py``). A record holds mean ± sample std over all (seed, network) pairs, the per-seed
means, the commit and dirty flag, the exact command, torch threads, precision, versions, hardware and
the sha256 of the data read. An entry with ``val_per_class`` holds that many training images per class
out before distilling (``ImageDataset.holdout``), for choices made on them. RESULTS.md is rebuilt from
all result files (``speed_*.json``, written by ``benchmarks/speed.py``, get their own section).
From a clean tree a run keeps its distillation checkpoints and every trained network under
``results/.progress/<commit>/<entry>/<device>-t<threads>-data<hash>/`` as it goes (``--progress`` lists
them); the same command started again after a kill resumes there with the same numbers. Each finished
seed is also kept as a *part* (``benchmarks/parts.py``: small, committed, named by a stamp of the code,
settings, data and hardware that made it), so a row longer than a session, or a machine's share of it,
finishes later or elsewhere: a run of the entry's seeds loads the parts made under its own stamp and runs
the rest; ``--part --seeds N`` runs only those seeds and writes the record once every seed has a part.
The parts a record holds are then deleted. Entries with an ``extra`` hook keep no parts.
Data: ``$DISTILLSET_DATA``, else ``../shared/data`` beside the repository.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

from distillset._io import atomic_write
from distillset.errors import DistillsetError, check_named_once, close_matches

sys.path.insert(0, str(Path(__file__).resolve().parent))
import parts  # noqa: E402  (benchmarks/parts.py)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def data_root() -> str | None:
    if os.environ.get("DISTILLSET_DATA"):
        return os.environ["DISTILLSET_DATA"]
    shared = HERE.parent.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def load_profile(profile: str) -> list[dict]:
    path = HERE / "configs" / f"{profile}.yaml"
    if not path.is_file():  # one line, not a traceback
        known = sorted(f.stem for f in path.parent.glob("*.yaml"))
        raise SystemExit(f"unknown profile {profile!r}; known: {', '.join(known)} (benchmarks/configs/)")
    entries = yaml.safe_load(path.read_text())["entries"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate entry names in {profile}.yaml"
    return entries


def hardware(threads: int | None = None) -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(), "isa": isa(),
            "cpu_count": os.cpu_count(),
            "torch_threads": threads or torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpuinfo(key: str) -> str | None:
    """The first ``key`` line of /proc/cpuinfo (None where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), None)


def cpu_model() -> str | None:
    return _cpuinfo("model name") or platform.processor() or None


def isa() -> list[str]:
    """The vector extensions that decide which kernels torch runs (and so the exact bits of a result)."""
    flags = (_cpuinfo("flags") or "").split()
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"))


def versions() -> dict:
    import numpy
    import torch

    import distillset

    return {"distillset": distillset.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def git(*args: str) -> str | None:
    try:
        return subprocess.check_output(["git", *args], cwd=HERE, text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str | None:
    return git("rev-parse", "--short", "HEAD")


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (the runner's own outputs, results/, RESULTS.md and
    report.html, excepted: an earlier entry of the same run rewrites them)."""
    out = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)benchmarks/results",
              ":(top,exclude)benchmarks/RESULTS.md", ":(top,exclude)benchmarks/report.html")
    return None if out is None else bool(out)


def data_checksums(data) -> dict:
    """sha256 of each split's decoded pixels and labels: which data a record saw, whatever its file format."""
    out = {}
    for split in ("train", "test"):
        s = getattr(data, split)
        h = hashlib.sha256(s.images.numpy().tobytes())
        h.update(s.labels.numpy().tobytes())
        out[split] = {"n": len(s), "sha256": h.hexdigest()}
    return out


def stream_seeds(root: int, baselines: list[str]) -> dict[str, int]:
    """Independent seeds derived from one root seed: distillation, each baseline, evaluation.

    No two stages share draws (the evaluator derives one stream per network from its own seed), so an
    evaluation network is never built from the numbers that initialised the set it scores, and the
    random baseline is not the images a method started from.
    """
    from distillset.utils import derive_seed

    return {"distill": derive_seed(root, "distill"), "evaluate": derive_seed(root, "evaluate"),
            **{f"baseline/{b}": derive_seed(root, f"baseline/{b}") for b in baselines}}


def data_hash(data) -> str:
    return hashlib.sha256(json.dumps(data_checksums(data), sort_keys=True).encode()).hexdigest()


def part_stamp(entry: dict, data) -> dict | None:
    """What a seed's numbers depend on (``parts.stamp``), or None outside a clean tree: no part is used or kept."""
    import torch

    from distillset.utils import resolve_device

    device = resolve_device(entry.get("device"))
    environment = {"device": device.type, "threads": torch.get_num_threads(), "versions": versions(),
                   "cpu_model": cpu_model(), "isa": isa()}
    if device.type == "cuda":
        environment.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                           cudnn=torch.backends.cudnn.version())
    return parts.stamp(entry, code=code_tree(), runner=runner_source_hash(), data_hash=data_hash(data),
                       environment=environment)


def use_code_cache() -> None:
    """Experts, pools and decoded images made by the code that uses them: a cache root per git tree of
    ``distillset/``."""
    from distillset.cache import cache_root

    tree = code_tree()
    if tree and not os.environ.get("DISTILLSET_CACHE"):
        os.environ["DISTILLSET_CACHE"] = str(cache_root() / f"code-{tree[:12]}")


def code_tree() -> str | None:
    """The git tree of ``distillset/`` that this process runs: None with uncommitted changes, or when the
    imported package is not this checkout's (an editable install of another worktree, say)."""
    import distillset

    if git_dirty() is not False or Path(distillset.__file__).resolve().parent != HERE.parent / "distillset":
        return None
    return git("rev-parse", "HEAD:distillset")


def runner_source_hash() -> str:
    """The source of this runner's functions that make a seed's numbers: a change to them retires old parts."""
    made_by = (entry_data, stream_seeds, run_seed, resumable_fit, make_evaluator, scored, full_data_set)
    return hashlib.sha256("".join(inspect.getsource(f) for f in made_by).encode()).hexdigest()


def progress_dir(entry: dict, out: Path, data) -> Path | None:
    """Where a run keeps its distillation checkpoints and trained networks as it goes, so that a run that is
    killed (or cut off by the end of a session) resumes where it stopped when started again with the same
    command. Only from a clean tree, and per commit, device type, torch threads and data: kept work must
    come from the code, machine settings and files the record names."""
    import torch

    from distillset.utils import resolve_device

    commit = git_commit()
    if commit is None or code_tree() is None:
        return None
    where = f"{resolve_device(entry.get('device')).type}-t{torch.get_num_threads()}-data{data_hash(data)[:8]}"
    others = sorted(p.name for p in (out / ".progress").glob("*") if p.name != commit[:12])
    if others:  # never deleted here: they resume if that commit is checked out again
        print(f"note: {out / '.progress'} also keeps unfinished runs of commit(s) {', '.join(others)}; delete "
              "them if you will not run those commits again", flush=True)
    return out / ".progress" / commit[:12] / entry["name"] / where


def resumable_fit(method, data, kept: Path | None, snapshots) -> None:
    """``method.fit``, checkpointed about every 5 % of its iterations into ``kept`` and resumed from there.

    Not for runs that keep snapshots (those a resumed fit passed before the resume would be missing)."""
    from distillset.methods.base import CHECKPOINT

    if kept is None or snapshots or not method.iterations:
        method.fit(data, snapshots=snapshots)
        return
    method.set_params(checkpoint_dir=str(kept / "distill"), checkpoint_every=max(1, method.iterations // 20))
    method.fit(data, resume=(kept / "distill" / CHECKPOINT).is_file())
    # the set reads as an uninterrupted run's (it is one, bit for bit): where the runner kept its checkpoints
    # is not a setting of the set
    method.synthetic_.meta.get("params", {}).update(checkpoint_dir=None, checkpoint_every=None)


def progress_lines(out: Path = RESULTS) -> list[str]:
    """One line per kept unfinished run (``--progress``): its commit, entry, seed, distillation and networks."""
    from distillset.errors import CorruptFileError
    from distillset.methods.base import checkpoint_record

    lines = []
    for seed_dir in sorted((out / ".progress").glob("*/*/*/seed*")):
        commit, entry, where = seed_dir.parts[-4:-1]
        ckpt = seed_dir / "distill" / "checkpoint.safetensors"
        distilled = "no checkpoint"
        if ckpt.is_file():
            try:
                record = checkpoint_record(ckpt)
                distilled = f"distilled {record['iteration']}/{record['params'].get('iterations')} iterations"
            except (CorruptFileError, KeyError, TypeError, AttributeError):  # listed, not a traceback: resuming
                distilled = "a damaged checkpoint (a resume would refuse it; delete it to start that seed afresh)"
        nets = len(list((seed_dir / "networks").glob("net-*.safetensors")))
        lines.append(f"{commit} {entry} ({where}) {seed_dir.name}: {distilled}, {nets} network(s) kept")
    for path, part in parts.kept(out):
        run = part.get("run", {})
        lines.append(f"part {path.parent.name} {path.stem}: made at {run.get('commit')} in {run.get('seed_seconds', 0):.0f} s")
    return lines or [f"no unfinished runs kept under {out / '.progress'} or {out / 'parts'}"]


def make_evaluator(entry: dict, seed: int, device, **override):
    from distillset import Evaluator

    cfg = {**entry.get("eval", {}), **override}
    return Evaluator(cfg.pop("models", "convnet"), random_state=seed, device=device, **cfg)


def scored(evaluator, syn, data) -> dict:
    with warnings.catch_warnings():  # a baseline scored under a method's loss is this runner's choice
        warnings.simplefilter("ignore")
        return {k: v.to_dict() for k, v in evaluator.score(syn, data).items()}


def full_data_set(data):
    """The whole training split as a set (hard labels): the reference "full data" accuracy is trained on it."""
    from distillset import SyntheticSet

    return SyntheticSet(data.normalize(data.train.images), data.train.labels, data.meta())


def run_seed(entry: dict, data, root: int, device, progress: Path | None = None) -> dict:
    """One distillation seed: the set (and its snapshots), the baselines, and every evaluation the report needs.

    With ``progress`` (:func:`progress_dir`) the distillation checkpoints and every trained network are kept
    there, and a re-run picks them up: the same numbers, without redoing the work."""
    from distillset import get_method

    baselines = entry.get("baselines", ["random"])
    seeds = stream_seeds(root, baselines)
    kept = None if progress is None else progress / f"seed{root}"

    def evaluator_with(**override):
        return make_evaluator(entry, seeds["evaluate"], device, resume_dir=kept and kept / "networks", **override)

    if entry["method"] == "full":  # the reference: networks trained on all training images
        return {"seed": root, "streams": seeds, "results": {"full": scored(evaluator_with(), full_data_set(data), data)}}
    method = get_method(entry["method"], **{"progress": False, **entry.get("params", {}), "ipc": entry["ipc"],
                                            "random_state": seeds["distill"], "device": device})
    resumable_fit(method, data, kept, entry.get("snapshots", ()))
    distill_s = method.fit_seconds_  # a resumed fit's count includes the run it continues
    syn = method.synthetic_
    evaluator = evaluator_with()
    # baselines are trained with the method's loss: an LS set's random baseline regresses onto one-hot targets
    base_eval = evaluator_with(loss=syn.loss)
    sets = {entry["method"]: syn}
    for b in baselines:
        params = {**entry.get("baseline_params", {}).get(b, {}), "ipc": entry["ipc"]}
        sets[b] = get_method(b, random_state=seeds[f"baseline/{b}"], device=device, **params).fit(data).synthetic_
    results = {label: scored(evaluator if label == entry["method"] else base_eval, s, data) for label, s in sets.items()}
    out = {"seed": root, "streams": seeds, "results": results, "distill_seconds": distill_s,
           "label_kind": syn.label_kind, "loss": syn.loss,
           "final_loss": (method.history_.get("loss") or [None])[-1], "method_obj": method}
    if entry.get("snapshots"):
        out["budget"] = {str(n): {entry["method"]: results[entry["method"]] if n == method.iterations  # the set itself
                                  else scored(evaluator, s, data)} for n, s in method.snapshots_.items()}
    if entry.get("scores") and syn.label_kind != "hard":  # HLR: the same images with hard labels
        hard = type(syn)(syn.images, syn.hard_labels, {**syn.meta, "label_kind": "hard", "loss": "ce"})
        out["hard_label"] = {entry["method"]: scored(evaluator_with(loss="ce"), hard, data)}
    if entry.get("scores"):  # ARS: the set and random under the other augmentation setting
        flip = "none" if evaluator._strategy(data.name) else "auto"
        out["other_augment"] = {"augment": flip, **{
            label: scored(evaluator_with(augment=flip, **({} if label == entry["method"] else {"loss": syn.loss})),
                          sets[label], data)
            for label in (entry["method"], "random") if label in sets}}
    print_seed(entry["name"], root, results)
    return out


def seed_result(entry: dict, data, root: int, device, progress: Path | None, out: Path, stamp: dict | None) -> dict:
    """:func:`run_seed`, or the seed's part when one made under ``stamp`` exists. A new result gets its commit,
    wall seconds and peak memory, and under a stamp is kept as a part (the entry's last seed with its set)."""
    from distillset.utils import peak_memory

    last = keeps_set(entry, root)
    part = parts.load(out, entry["name"], root, stamp, need_set=last)
    if part is not None:
        print(f"[{entry['name']} seed {root}] from its part (commit {part.get('commit')})", flush=True)
        return part
    t0 = time.perf_counter()
    result = run_seed(entry, data, root, device, progress)
    result.update(commit=git_commit(), seed_seconds=time.perf_counter() - t0, **peak_memory())
    if stamp is not None:
        method = result.pop("method_obj", None)
        parts.save(out, entry["name"], result, stamp, method.synthetic_ if last else None)
        result["method_obj"] = method
        if progress is not None:  # the part holds this seed now
            shutil.rmtree(progress / f"seed{root}", ignore_errors=True)
    return result


def print_seed(name: str, seed: int, results: dict) -> None:
    for label, r in results.items():
        print(f"[{name} seed {seed}] {label}: " + ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}"
                                                         for k, v in r.items()), flush=True)


def entry_seeds(entry: dict) -> list[int]:
    return entry.get("seeds") or [entry.get("seed", 0)]


def keeps_set(entry: dict, root: int) -> bool:
    """Whether seed ``root``'s part keeps its set: the record shows the entry's last seed's (full data has none)."""
    return root == entry_seeds(entry)[-1] and entry["method"] != "full"


def entry_data(entry: dict):
    """The entry's data set, less its validation hold-out (held out before distillation: choices on it never
    saw the test set)."""
    from distillset import load_dataset

    data = load_dataset(entry["dataset"], root=data_root())
    return data.holdout(entry["val_per_class"]) if entry.get("val_per_class") else data


def run_entry(entry: dict, profile: str, seeds: list[int] | None = None, threads: int | None = None,
              command: str | None = None, out: Path = RESULTS) -> dict:
    """Distill once per root seed, evaluate each set and its baselines under one protocol, pool the seeds."""
    import torch

    from distillset.utils import peak_memory

    t_start = time.perf_counter()
    data = entry_data(entry)
    device = entry.get("device")
    seeds = seeds or entry_seeds(entry)
    dirty = git_dirty()
    progress = progress_dir(entry, out, data)
    kept_before = len(list(progress.rglob("*.safetensors"))) if progress and progress.is_dir() else 0
    stamp = part_stamp(entry, data) if seeds == entry_seeds(entry) else None  # a subset's record uses no parts
    per_seed = [seed_result(entry, data, root, device, progress, out, stamp) for root in seeds]
    parts_seconds = sum(r["seed_seconds"] for r in per_seed if r.get("from_part"))
    extra = {}
    if entry.get("extra"):  # "module:function", called as fn(method, data, entry) -> dict with a "summary" str
        import importlib

        mod, fn = entry["extra"].split(":")
        sys.path.insert(0, str(HERE))
        extra = getattr(importlib.import_module(mod), fn)(per_seed[-1]["method_obj"], data, entry)
        print(f"[{entry['name']}] extra: {extra.get('summary', '')}", flush=True)
    last = [run.pop("method_obj", None) for run in per_seed][-1]
    last_set = last.synthetic_ if last is not None else None
    if last is None and per_seed[-1].get("from_part") and entry["method"] != "full":  # its part kept the set
        from distillset import SyntheticSet

        last_set = SyntheticSet.load(parts.set_stem(parts.part_path(out, entry["name"], seeds[-1], stamp)))
    if last_set is not None:
        last_set.meta.update(commit=per_seed[-1].get("commit") or git_commit(), benchmark_entry=entry["name"])  # its code
        last_set.save(out / "sets" / entry["name"])  # the last seed's set
        last_set.save_grid(out / "sets" / f"{entry['name']}.png")
    ev_cfg = entry.get("eval", {})
    return {
        "name": entry["name"], "profile": profile, "entry": entry, "seeds": seeds,
        "dataset": data.name, "source": data.source, "method": entry["method"], "ipc": entry.get("ipc"),
        "label_kind": per_seed[0].get("label_kind", "hard"),  # of the set; "loss": what its networks minimised
        "loss": next(iter(next(iter(per_seed[0]["results"].values())).values()))["loss"],
        "results": pool_seeds(per_seed, "results"),
        "budget": {n: pool_seeds([{"r": r["budget"][n]} for r in per_seed], "r") for n in per_seed[0].get("budget", {})},
        "hard_label": pool_seeds(per_seed, "hard_label") if "hard_label" in per_seed[0] else None,
        "other_augment": ({"augment": per_seed[0]["other_augment"]["augment"],
                           **pool_seeds([{"r": {k: v for k, v in r["other_augment"].items() if k != "augment"}}
                                         for r in per_seed], "r")} if "other_augment" in per_seed[0] else None),
        "per_seed": per_seed, "extra": extra, "final_loss": per_seed[-1].get("final_loss"),
        "paper": entry.get("paper"), "paper_random": entry.get("paper_random"), "paper_budget": entry.get("paper_budget"),
        "command": command or f"python benchmarks/run.py --profile {profile} --only {entry['name']}",
        "versions": versions(), "hardware": hardware(threads), "device": str(device or "auto"),
        "precision": {"distill": entry.get("params", {}).get("precision", default_precision(entry["method"])),
                      "evaluate": ev_cfg.get("precision", "auto"), "resolved_on": "cpu" if not torch.cuda.is_available() else "cuda"},
        "data_sha256": data_checksums(data), "data_root": data_root(),
        "distill_seconds": sum(r.get("distill_seconds", 0.0) for r in per_seed),
        # seeds kept as parts (from_part in per_seed, each with its commit) add the seconds they took then
        "wall_seconds": time.perf_counter() - t_start + parts_seconds, "commit": git_commit(), "dirty": dirty,
        # a resumed run: wall_seconds is this invocation's, distill_seconds counts every invocation, and each
        # result's extra gives the networks loaded from progress and the training seconds they took then
        "progress": progress and {"dir": str(progress), "files_kept_before_start": kept_before},
        "parts": stamp and {"stamp": stamp, "loaded": [r["seed"] for r in per_seed if r.get("from_part")]},
        **{k: max((v for v in (now, *(r.get(k) for r in per_seed)) if v is not None), default=None)
           for k, now in peak_memory().items()},  # this process's and each part's
        "date": time.strftime("%Y-%m-%d"),
    }


def default_precision(method: str) -> str | None:
    """The method's own default ``precision`` (MTT's is fp32, most are auto; None if it has none)."""
    from distillset.methods.base import METHODS

    cls = METHODS.get(method) if method in METHODS else None  # "full" is no method
    param = inspect.signature(cls.__init__).parameters.get("precision") if cls else None
    return param.default if param else None


def pool_seeds(per_seed: list[dict], key: str = "results") -> dict:
    """{label: {model: {accuracies, mean, std, seed_means, seed_std}}} over all (seed, network) pairs.

    ``std`` is the sample standard deviation (ddof 1) over every network of every seed; ``seed_std`` that of
    the per-seed means, the spread a reader gets from re-distilling.
    """
    pooled: dict = {}
    for run in per_seed:
        for label, by_model in run[key].items():
            for model, r in by_model.items():
                p = pooled.setdefault(label, {}).setdefault(model, {**r, "accuracies": [], "seed_means": []})
                p["accuracies"] += r["accuracies"]
                p["seed_means"].append(r["mean"])
    for by_model in pooled.values():
        for p in by_model.values():
            accs, means = p["accuracies"], p["seed_means"]
            p["mean"] = statistics.fmean(accs)
            p["std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
            p["seed_std"] = statistics.stdev(means) if len(means) > 1 else 0.0
    return pooled


def write_report() -> Path:
    """``RESULTS.md`` (and ``report.html``, the same records as one HTML page) from every record."""
    sys.path.insert(0, str(HERE))
    from report import write_html

    print(f"wrote {write_html(HERE / 'report.html')}")
    out = HERE / "RESULTS.md"
    out.write_text(results_text())
    return out


def results_text() -> str:
    """What ``RESULTS.md`` holds: the tables of every record, the speed tables, then ``NOTES.md``."""
    sys.path.insert(0, str(HERE))
    from report import report_lines

    lines = report_lines() + speed_section()
    notes = HERE / "NOTES.md"
    if notes.is_file():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def speed_section() -> list[str]:
    """The "Speed" tables, one per ``results/speed_*.json`` (see ``benchmarks/speed.py``)."""
    lines = []
    for path in sorted(RESULTS.glob("speed_*.json")):
        sys.path.insert(0, str(HERE))
        from report import read_record
        from speed import report_lines

        lines += ["", *report_lines(read_record(path))]
    return lines


def command_line(profile: str, name: str, seeds: list[int] | None, threads: int) -> str:
    seeds_arg = f" --seeds {' '.join(map(str, seeds))}" if seeds else ""
    return f"python benchmarks/run.py --profile {profile} --only {name}{seeds_arg} --threads {threads}"


def check(name: str, tolerance: float | None) -> int:
    """Re-run the committed record ``name`` at HEAD and compare every network's accuracy with it."""
    import tempfile

    import torch

    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"no committed record {path}; --check takes a name from benchmarks/results/")
    sys.path.insert(0, str(HERE))
    from report import read_record

    old = read_record(path)
    if not {"profile", "entry", "seeds", "hardware", "versions", "results"} <= set(old):
        raise SystemExit(f"{path} is not a record of this runner's entries (no profile, entry and seeds: it was "
                         "written by another script of benchmarks/); --check re-runs the records of run.py's profiles")
    if not all(isinstance(old[k], dict) for k in ("hardware", "versions", "results")):
        raise SystemExit(f"{path} is damaged (hardware, versions or results not as the runner writes them); restore "
                         f"it with git checkout -- {path}")
    threads = old["hardware"].get("torch_threads") or 1
    same_env = (old["versions"]["torch"] == torch.__version__ and old["hardware"].get("cpu_model") == cpu_model()
                and old["hardware"].get("isa") == isa()
                and old["hardware"].get("gpu") == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None))
    if tolerance is None:  # bit-identical is what the code promises on the same software, threads and hardware
        tolerance = 0.0 if same_env else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        rc = subprocess.call([sys.executable, __file__, "--profile", old["profile"], "--only", name, "--seeds",
                              *map(str, old["seeds"]), "--threads", str(threads), "--in-process", "--out", tmp])
        if rc:
            return rc
        new = json.loads((Path(tmp) / f"{name}.json").read_text())
    worst = 0.0
    print(f"check {name}: committed at {old.get('commit')}, re-run at {new.get('commit')}; tolerance {tolerance} "
          f"points per network ({'same' if same_env else 'different'} torch/hardware, {threads} thread(s))")
    for label, by_model in old["results"].items():
        for model, r in by_model.items():
            now = new["results"].get(label, {}).get(model)
            if now is None or len(now["accuracies"]) != len(r["accuracies"]):
                print(f"  {label} {model}: missing or a different number of networks in the re-run")
                return 1
            diff = max(abs(a - b) for a, b in zip(r["accuracies"], now["accuracies"]))
            worst = max(worst, diff)
            print(f"  {label} {model}: committed {r['mean']:.2f} ± {r['std']:.2f}, now {now['mean']:.2f} ± "
                  f"{now['std']:.2f}; largest per-network difference {diff:.2f}")
    ok = worst <= tolerance
    print(f"check {name}: {'reproduced' if ok else 'NOT reproduced'} (largest difference {worst:.2f} vs {tolerance})")
    return 0 if ok else 1


def refuse_part(entries: list[dict], seeds: list[int] | None) -> None:
    """``--part``'s mistakes, in one line each, before any work."""
    if not seeds:
        raise SystemExit("--part runs some seeds of an entry: name them with --seeds (e.g. --part --seeds 1)")
    if code_tree() is None:
        raise SystemExit("--part keeps results stamped with the code's git tree: run it from a git checkout whose "
                         "distillset/ is committed and is the one imported (set PYTHONPATH to the checkout)")
    for e in entries:
        if e.get("extra"):
            raise SystemExit(f"{e['name']} has an extra hook, which needs its last seed in the same run: run it whole")
        unknown = sorted(set(seeds) - set(entry_seeds(e)))
        if unknown:
            raise SystemExit(f"--part: seed(s) {unknown} are not among {e['name']}'s seeds {e.get('seeds')}; "
                             "a part must belong to the record")


def run_parts(entry: dict, seeds: list[int], out: Path) -> list[int]:
    """Run the seeds of ``entry`` that have no valid part and keep each; returns the entry's seeds still missing."""
    data = entry_data(entry)
    stamp = part_stamp(entry, data)
    progress = progress_dir(entry, out, data)
    for root in seeds:
        seed_result(entry, data, root, entry.get("device"), progress, out, stamp)
    return [r for r in entry_seeds(entry)
            if parts.load(out, entry["name"], r, stamp, need_set=keeps_set(entry, r), quiet=True) is None]


def refuse_arguments(args) -> None:
    """One line, before any work, for what the flags' types let through (a traceback or a run followed)."""
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be >= 1 (torch threads, recorded with the results); got {args.threads}")
    if args.seeds and min(args.seeds) < 0:
        raise SystemExit(f"--seeds must be root seeds >= 0; got {' '.join(map(str, args.seeds))}")
    for flag, values in (("--seeds", args.seeds), ("--only", args.only)):
        try:  # a seed run twice would count as two independent seeds in the mean and the spread
            check_named_once([str(v) for v in values or ()], f" in {flag}")
        except DistillsetError as e:
            raise SystemExit(str(e)) from None
    modes = [flag for flag, on in (("--report", args.report), ("--check", args.check), ("--progress", args.progress))
             if on]
    runs = [flag for flag, on in (("--profile", args.profile), ("--only", args.only), ("--seeds", args.seeds),
                                  ("--part", args.part), ("--threads", args.threads is not None)) if on]
    if len(modes) > 1 or (modes and runs):
        raise SystemExit(f"{' and '.join(modes + runs)} contradict: {modes[0]} runs on its own (it ignores the "
                         "others); give one of them")
    if args.tolerance is not None and (not args.check or not args.tolerance >= 0):  # not >=: NaN too
        raise SystemExit(f"--tolerance is --check's allowed difference in points, a number >= 0, with --check; got "
                         f"{args.tolerance}{'' if args.check else ' without --check'}")


def refuse_unknown_entries(profile: str, only: list[str]) -> None:
    """Each --only name in ``profile``, or one line with the near misses and the profiles that hold it."""
    known = [e["name"] for e in load_profile(profile)]
    for name in only:
        if name in known:
            continue
        elsewhere = [f.stem for f in sorted((HERE / "configs").glob("*.yaml"))
                     if name in {e.get("name") for e in (yaml.safe_load(f.read_text()) or {}).get("entries") or []}]
        hint = (f"it is in --profile {' / '.join(elsewhere)}" if elsewhere else
                f"did you mean {' or '.join(close_matches(name, known)) or 'one of ' + ', '.join(known[:8]) + ' ...'}?")
        raise SystemExit(f"no entry {name!r} in --profile {profile}; {hint}")


def refuse_replacing_a_record(entries: list[dict], seeds: list[int] | None, out: Path) -> None:
    """A run (no --part) would replace an entry's record with one that lacks some of its seeds."""
    from report import read_record

    for e in entries:
        path = out / f"{e['name']}.json"
        kept = read_record(path).get("seeds") or [] if path.is_file() else []
        lost = sorted(set(kept) - set(seeds or entry_seeds(e)), key=str)
        if lost:
            raise SystemExit(f"this run would replace {path} (the record of seeds {' '.join(map(str, kept))}) with "
                             f"one without seed(s) {' '.join(map(str, lost))}: add --part to keep the run's seeds as "
                             "parts of that record, or move the record away first")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=None, help="the configs/ file of the entries (default: cpu)")
    p.add_argument("--only", nargs="+", default=None, help="entry names")
    p.add_argument("--report", action="store_true", help="only regenerate RESULTS.md and report.html from the records")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="distillation seeds (default: the entry's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1; recorded, results depend on it)")
    p.add_argument("--check", metavar="NAME", help="re-run a committed record and compare with it")
    p.add_argument("--progress", action="store_true", help="list the unfinished runs kept for resuming, and stop")
    p.add_argument("--part", action="store_true",
                   help="with --seeds: run only these of the entry's seeds, keep them as parts (results/parts/), and "
                        "write the record once every seed of the entry has one")
    p.add_argument("--tolerance", type=float, default=None,
                   help="--check: allowed per-network difference in points (default 0 on the record's software "
                        "and hardware, else 1)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    refuse_arguments(args)
    if args.report:
        print(f"wrote {write_report()}")
        return 0
    if args.check:
        return check(args.check, args.tolerance)
    if args.progress:
        print("\n".join(progress_lines(Path(args.out))))
        return 0
    args.profile, args.threads = args.profile or "cpu", args.threads or 1
    refuse_unknown_entries(args.profile, args.only or [])
    entries = [e for e in load_profile(args.profile) if args.only is None or e["name"] in args.only]
    if args.part:
        refuse_part(entries, args.seeds)
    elif not args.in_process:  # --check's re-run writes to its own folder
        refuse_replacing_a_record(entries, args.seeds, Path(args.out))
    if args.in_process:
        import torch

        torch.set_num_threads(args.threads)
        use_code_cache()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for e in entries:
            seeds = args.seeds
            if args.part:
                missing = run_parts(e, args.seeds, out)
                if missing:
                    print(f"[{e['name']}] kept seed(s) {' '.join(map(str, args.seeds))} as parts; the record waits "
                          f"for seed(s) {' '.join(map(str, missing))}", flush=True)
                    continue
                seeds = None  # every seed has its part: the record is the whole entry's
            cmd = command_line(args.profile, e["name"], seeds, args.threads)
            res = run_entry(e, args.profile, seeds, args.threads, cmd, out)
            atomic_write(out / f"{e['name']}.json", json.dumps(res, indent=2, default=str))
            print(f"[{e['name']}] wrote results ({res['wall_seconds']:.0f} s)", flush=True)
            if res["parts"]:  # the record holds them now
                parts.discard(out, e["name"], res["seeds"], res["parts"]["stamp"])
            if res["progress"]:  # the record holds it all now: drop this run's seeds (a parallel run may hold others)
                done = Path(res["progress"]["dir"])
                for root in res["seeds"]:
                    shutil.rmtree(done / f"seed{root}", ignore_errors=True)
                for folder in (done, done.parent, done.parent.parent):
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
        return 0
    failed = []
    for e in entries:  # one process per entry: its own wall time and peak memory
        seeds = ["--seeds", *map(str, args.seeds)] if args.seeds else []
        rc = subprocess.call([sys.executable, __file__, "--profile", args.profile, "--only", e["name"], *seeds,
                              *(["--part"] if args.part else []), "--threads", str(args.threads), "--in-process"])
        if rc:
            failed.append(e["name"])
    print(f"wrote {write_report()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
