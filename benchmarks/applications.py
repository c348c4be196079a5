"""Runs the application entries of ``benchmarks/configs/applications.yaml``: continual learning, the
architecture-search proxy and the membership audit, each into ``results/app_<name>.json`` (+ a PNG).

    python benchmarks/applications.py --only audit_digits --threads 1
    python benchmarks/applications.py --profile paper --only continual_cifar100_paper   # on a GPU

Records carry the settings, seeds, commit, command, versions, hardware and data checksums, as the
runner's records do; ``benchmarks/run.py --report`` puts them into RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import data_checksums, data_root, git_commit, git_dirty, hardware, versions  # noqa: E402

RESULTS = HERE / "results"


def continual(e: dict, data) -> tuple[dict, callable]:
    from distillset.applications import ClassIncremental
    from distillset.applications.continual import plot_curves

    ev = e["eval"]
    # an entry that adds a method to an earlier record plots the earlier runs beside its own: read and
    # checked before any work (same protocol, or the curves are not comparable)
    earlier = []
    for name in e.get("compare_with", []):
        path = RESULTS / f"app_{name}.json"
        if not path.is_file():
            raise SystemExit(f"{e['name']}: compare_with needs {path.name}; run --only {name} first.")
        other = json.loads(path.read_text())
        differ = [k for k in ("dataset", "steps", "ipc", "orders", "eval") if other["config"][k] != e[k]]
        if differ:
            raise SystemExit(f"{e['name']}: compare_with {name} differs in {differ}; compare like with like.")
        earlier += other["runs"]
    runs = [ClassIncremental(m, steps=e["steps"], ipc=e["ipc"], orders=e["orders"], params=e["params"].get(m),
                             n_models=ev["n_models"], epochs=ev["epochs"], augment=ev["augment"], random_state=0)
            for m in e["methods"]]
    records = []
    for r in runs:
        records.append(r.fit(data).to_dict())
        print(f"[{e['name']}] {r.method}: final {r.final_:.2f}, average {r.average_:.2f}", flush=True)
    return {"runs": records}, lambda path: plot_curves(earlier + records, path,
                                                       f"{data.name}: class-incremental, IPC {e['ipc']}")


def nas(e: dict, data) -> tuple[dict, callable]:
    from distillset import get_method
    from distillset.applications import ArchitectureSearch

    data = data.holdout(e["val_per_class"])
    proxies, seconds = {}, {}
    for name, params in e["proxies"].items():
        t0 = time.perf_counter()
        proxies[name] = get_method(name, random_state=0, progress=False, **params).fit(data).synthetic_
        seconds[name] = time.perf_counter() - t0
    search = ArchitectureSearch(e["grid"], epochs=e["epochs"], full_epochs=e["full_epochs"],
                                full_per_class=e["full_per_class"], val_per_class=e["val_per_class"]).fit(data, proxies)
    from distillset.applications.nas import plot_ranking

    return {**search.to_dict(), "distill_seconds": seconds}, lambda path: plot_ranking(search, path, data.name)


def audit(e: dict, data) -> tuple[dict, callable]:
    from distillset.applications import MembershipAudit
    from distillset.applications.privacy import plot_roc

    audits = {p: MembershipAudit(p, pool_size=e["pool_size"], n_models=e["models"], ipc=e["ipc"],
                                 params=e["params"].get(p), epochs=e["eval"]["epochs"], augment=e["eval"]["augment"],
                                 random_state=0) for p in e["pipelines"]}
    for name, a in audits.items():
        a.fit(data)
        print(f"[{e['name']}] {name}: LiRA TPR@1% {100 * a.results_['lira']['tpr_at_1%']:.2f} %", flush=True)
    return ({"pipelines": {n: a.to_dict() for n, a in audits.items()}},
            lambda path: plot_roc(audits, path, f"{data.name}: membership inference, {e['models']} models"))


KINDS = {"continual": continual, "nas": nas, "audit": audit}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", required=True)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from distillset import load_dataset
    from distillset._io import atomic_write

    torch.set_num_threads(args.threads)
    entries = {e["name"]: e for e in yaml.safe_load((HERE / "configs" / "applications.yaml").read_text())["entries"]}
    unknown = [n for n in args.only if n not in entries]
    if unknown:
        raise SystemExit(f"unknown entries {unknown}; known: {', '.join(entries)}")
    for name in args.only:
        e = entries[name]
        if e.get("profile", "cpu") != args.profile:
            raise SystemExit(f"{name} belongs to the {e.get('profile', 'cpu')} profile; pass --profile.")
        t0 = time.perf_counter()
        data = load_dataset(e["dataset"], root=data_root())
        body, plot = KINDS[e["kind"]](e, data)
        from distillset.utils import peak_memory

        record = {"application": e["kind"], "name": name, "config": e, **body,
                  "command": f"python benchmarks/applications.py --only {name} --threads {args.threads}"
                             + (f" --profile {args.profile}" if args.profile != "cpu" else ""),
                  "commit": git_commit(), "dirty": git_dirty(), "versions": versions(), "hardware": hardware(args.threads),
                  "data_sha256": data_checksums(data), "wall_seconds": time.perf_counter() - t0, **peak_memory(),
                  "date": time.strftime("%Y-%m-%d")}
        atomic_write(RESULTS / f"app_{name}.json", json.dumps(record, indent=2, default=str))
        plot(RESULTS / f"app_{name}.png")
        print(f"[{name}] wrote results/app_{name}.json ({record['wall_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
