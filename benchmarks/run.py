"""Benchmark runner: executes named configurations and records what they measured.

    python benchmarks/run.py --profile cpu              # every entry of benchmarks/configs/cpu.yaml
    python benchmarks/run.py --profile cpu --only dm_mnist_ipc1
    python benchmarks/run.py --report                   # only regenerate benchmarks/RESULTS.md

Each entry runs in its own process (so wall time and peak memory are its own) and writes
``benchmarks/results/<name>.json``: accuracies of the method and of the baselines under the same
evaluation, the command, versions, hardware, wall time and peak memory. An entry's ``seeds`` (or
``--seeds``) distil one set per seed, evaluate each with the entry's evaluator, and report mean ±
sample std over all (seed, network) pairs plus the spread of the per-seed means. RESULTS.md is rebuilt
from all result files (``speed_*.json``, written by ``benchmarks/speed.py``, get their own section).
Data: ``$DISTILLSET_DATA``, else ``../shared/data`` beside the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def data_root() -> str | None:
    if os.environ.get("DISTILLSET_DATA"):
        return os.environ["DISTILLSET_DATA"]
    shared = HERE.parent.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def load_profile(profile: str) -> list[dict]:
    entries = yaml.safe_load((HERE / "configs" / f"{profile}.yaml").read_text())["entries"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate entry names in {profile}.yaml"
    return entries


def hardware() -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    import numpy
    import torch

    import distillset

    return {"distillset": distillset.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_entry(entry: dict, profile: str, seeds: list[int] | None = None) -> dict:
    """Distill once per seed, then evaluate each set and its baselines with one Evaluator (same protocol)."""
    import torch

    from distillset import Evaluator, get_method, load_dataset

    t_start = time.perf_counter()
    data = load_dataset(entry["dataset"], root=data_root())
    device = entry.get("device")
    seeds = seeds or entry.get("seeds") or [entry.get("seed", 0)]
    per_seed, distill_s, method = [], 0.0, None
    for seed in seeds:
        t0 = time.perf_counter()  # distill time excludes data loading
        method = get_method(entry["method"], **{"progress": False, **entry.get("params", {}),
                                                "ipc": entry["ipc"], "random_state": seed, "device": device})
        method.fit(data)
        distill_s += time.perf_counter() - t0
        ev_cfg = dict(entry.get("eval", {}))
        evaluator = Evaluator(ev_cfg.pop("models", "convnet"), random_state=seed, device=device, **ev_cfg)
        sets = {entry["method"]: method.synthetic_}
        for b in entry.get("baselines", ["random"]):
            sets[b] = get_method(b, ipc=entry["ipc"], random_state=seed, device=device).fit(data).synthetic_
        results = {label: {k: v.to_dict() for k, v in evaluator.score(syn, data).items()} for label, syn in sets.items()}
        for label, r in results.items():
            print(f"[{entry['name']} seed {seed}] {label}: " + ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}"
                                                                       for k, v in r.items()), flush=True)
        per_seed.append({"seed": seed, "results": results, "final_loss": (method.history_.get("loss") or [None])[-1]})
    extra = {}
    if entry.get("extra"):  # "module:function", called as fn(method, data, entry) -> dict with a "summary" str
        import importlib

        mod, fn = entry["extra"].split(":")
        sys.path.insert(0, str(HERE))
        extra = getattr(importlib.import_module(mod), fn)(method, data, entry)
        print(f"[{entry['name']}] extra: {extra.get('summary', '')}", flush=True)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    out_dir = RESULTS / "sets"
    method.synthetic_.meta.update(commit=git_commit(), benchmark_entry=entry["name"])  # which code made it
    method.synthetic_.save(out_dir / entry["name"])  # the last seed's set
    method.synthetic_.save_grid(out_dir / f"{entry['name']}.png")
    seeds_arg = f" --seeds {' '.join(map(str, seeds))}" if len(seeds) > 1 and not entry.get("seeds") else ""
    return {
        "name": entry["name"], "profile": profile, "entry": entry, "seeds": seeds,
        "dataset": data.name, "source": data.source, "method": entry["method"], "ipc": entry["ipc"],
        "results": pool_seeds(per_seed), "per_seed": per_seed, "extra": extra,
        "final_loss": per_seed[-1]["final_loss"],
        "paper": entry.get("paper"), "paper_random": entry.get("paper_random"),
        "command": f"python benchmarks/run.py --profile {profile} --only {entry['name']}{seeds_arg}",
        "versions": versions(), "hardware": hardware(),
        "distill_seconds": distill_s, "wall_seconds": time.perf_counter() - t_start, "commit": git_commit(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mib": peak_gpu,
        "date": time.strftime("%Y-%m-%d"),
    }


def pool_seeds(per_seed: list[dict]) -> dict:
    """{label: {model: {accuracies, mean, std, seed_means, seed_std}}} over all (seed, network) pairs.

    ``std`` is the sample standard deviation (ddof 1) over every network of every seed; ``seed_std`` that of
    the per-seed means, the spread a reader gets from re-distilling.
    """
    pooled: dict = {}
    for run in per_seed:
        for label, by_model in run["results"].items():
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


def fmt(r: dict | None) -> str:
    """'mean ± std' of each evaluated architecture (the name is shown when it is not the ConvNet)."""
    if not r:
        return "-"
    return "; ".join(f"{'' if m == 'convnet' else m + ' '}{v['mean']:.2f} ± {v['std']:.2f}" for m, v in r.items())


def write_report() -> Path:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if not p.name.startswith("speed_")]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/run.py --report` from `benchmarks/results/*.json`; do not edit by hand.",
        "Every row evaluates the distilled set and the baselines with the same evaluator (architecture, epochs,",
        "augmentation, number of networks, seed), given in the columns. Accuracies are test % (mean ± std over nets).",
        "'paper' is the published number under the full protocol (REFERENCE.md section 3); budgets differ where",
        "the profile says so, so compare the method with its own random baseline first.",
        "",
        "| entry | profile | data | method | ipc | ours | random (same eval) | other baselines | paper | paper random | eval | seeds | extra | distill s | wall s | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ev = r["entry"].get("eval", {})
        others = "; ".join(f"{b} {fmt(v)}" for b, v in r["results"].items() if b not in (r["method"], "random")) or "-"
        hw = r["hardware"].get("gpu") or f"{r['hardware']['cpu_count']} CPU"
        lines.append(
            f"| {r['name']} | {r['profile']} | {r['dataset']} | {r['method']} | {r['ipc']} | {fmt(r['results'][r['method']])} "
            f"| {fmt(r['results'].get('random'))} | {others} | {r.get('paper') or '-'} | {r.get('paper_random') or '-'} "
            f"| {ev.get('n_models', 5)} nets x {ev.get('epochs', 1000)} ep | {len(r.get('seeds') or [0])} | {(r.get('extra') or {}).get('summary', '-')} | {r['distill_seconds']:.0f} | {r['wall_seconds']:.0f} | {hw} |"
        )
    lines += speed_section()
    notes = HERE / "NOTES.md"
    if notes.is_file():
        lines += ["", notes.read_text().strip()]
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def speed_section() -> list[str]:
    """The "Speed" tables, one per ``results/speed_*.json`` (see ``benchmarks/speed.py``)."""
    lines = []
    for path in sorted(RESULTS.glob("speed_*.json")):
        sys.path.insert(0, str(HERE))
        from speed import report_lines

        lines += ["", *report_lines(json.loads(path.read_text()))]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--only", nargs="+", default=None, help="entry names")
    p.add_argument("--report", action="store_true", help="only regenerate RESULTS.md")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="distillation seeds (default: the entry's)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.report:
        print(f"wrote {write_report()}")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    entries = [e for e in load_profile(args.profile) if args.only is None or e["name"] in args.only]
    if args.only and len(entries) != len(args.only):
        known = [e["name"] for e in load_profile(args.profile)]
        raise SystemExit(f"unknown entry in {args.only}; known: {', '.join(known)}")
    if args.in_process:
        for e in entries:
            res = run_entry(e, args.profile, args.seeds)
            (RESULTS / f"{e['name']}.json").write_text(json.dumps(res, indent=2, default=str))
            print(f"[{e['name']}] wrote results ({res['wall_seconds']:.0f} s)", flush=True)
        return 0
    failed = []
    for e in entries:  # one process per entry: its own wall time and peak memory
        seeds = ["--seeds", *map(str, args.seeds)] if args.seeds else []
        rc = subprocess.call([sys.executable, __file__, "--profile", args.profile, "--only", e["name"], *seeds,
                              "--in-process"])
        if rc:
            failed.append(e["name"])
    print(f"wrote {write_report()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
