"""One table entry with some method parameters changed, scored on the validation split only (an ablation).

Distils the entry's root seed with ``key=value`` overrides of its ``params`` and scores the set with the
entry's own evaluation (same streams: ``run.stream_seeds``), so each network pairs with the network of the
same index in the entry's record or part for that seed, when that was made by the same code and settings
(the same part stamp, ``run.part_stamp``). Only validation accuracies are kept: the Evaluator computes a
test accuracy, which is neither printed nor stored, so an ablation can explain a row without the test set
taking part in any choice. The entry needs ``val_per_class``. Usage:

    python benchmarks/ablation.py mnist_ipc10_idm 0 ce_weight=0

Writes ``results/ablation_<entry>_seed<N>_<key>-<value>....json`` (the variant's and, where a record or
part of the seed under the same stamp exists, the entry's own validation accuracies; commit, command,
versions, hardware); an existing file is kept unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py)


def entry_val_accuracies(entry: dict, seed: int, stamp: dict | None, out: Path) -> list[float] | None:
    """The validation accuracies of the entry's own networks for ``seed``, made under ``stamp`` (its record
    made from parts, else its part), or None: no such run, or one made by other code or settings."""
    record = out / f"{entry['name']}.json"
    runs = []
    if record.exists():
        rec = json.loads(record.read_text())
        same = json.dumps((rec.get("parts") or {}).get("stamp"), sort_keys=True) == json.dumps(stamp, sort_keys=True)
        if stamp is not None and same:
            runs = rec["per_seed"]
    part = run.parts.load(out, entry["name"], seed, stamp, need_set=False, quiet=True)
    for r in runs + ([part] if part else []):
        if r["seed"] == seed:
            return next(iter(next(iter(r["results"].values())).values()))["extra"]["val_accuracies"]
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("entry", help="a table entry with val_per_class (configs/<profile>.yaml)")
    p.add_argument("seed", type=int, help="its root seed")
    p.add_argument("changes", nargs="*", help="method parameters as key=value")
    p.add_argument("--profile", default="tables")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result of the same ablation")
    p.add_argument("--out", default=str(run.RESULTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from distillset.cli.common import parse_param
    from distillset.errors import DistillsetError
    from distillset.methods.base import METHODS

    entries = {e["name"]: e for e in run.load_profile(args.profile)}
    if args.entry not in entries:
        raise SystemExit(f"unknown entry {args.entry!r} in {args.profile}.yaml; known: {', '.join(entries)}")
    entry, out = entries[args.entry], Path(args.out)
    if not entry.get("val_per_class"):
        raise SystemExit(f"{args.entry} holds out no validation split (val_per_class); an ablation needs one.")
    cls = METHODS.get(entry["method"])
    try:  # names checked (old ones renamed) before the data load, as the CLI's --param does
        changes = cls._checked_params(dict(parse_param(c) for c in args.changes))
    except DistillsetError as e:
        raise SystemExit(str(e))
    tag = "_".join(f"{k}-{v}" for k, v in changes.items())
    path = out / f"ablation_{args.entry}_seed{args.seed}_{tag}.json"
    if path.exists() and not args.overwrite:
        raise SystemExit(f"{path} exists: pass --overwrite to replace it, or remove it first.")
    import torch

    torch.set_num_threads(1)
    seeds = run.stream_seeds(args.seed, [])
    method = cls(**{"progress": False, **entry.get("params", {}), **changes, "ipc": entry["ipc"],
                    "random_state": seeds["distill"]})
    run.use_code_cache()
    data = run.entry_data(entry)
    t0 = time.perf_counter()
    try:  # fit validates the parameters' values before any work
        method.fit(data)
    except DistillsetError as e:
        raise SystemExit(str(e))
    distill_s = time.perf_counter() - t0
    res = run.make_evaluator(entry, seeds["evaluate"], None).score(method.synthetic_, data)["convnet"]
    record = {"name": path.stem, "ablation_of": args.entry, "seed": args.seed, "changes": changes,
              "val_per_class": entry["val_per_class"], "val_accuracies": res.extra["val_accuracies"],
              "entry_val_accuracies": entry_val_accuracies(entry, args.seed, run.part_stamp(entry, data), out),
              "distill_seconds": distill_s, "final_loss": {k: v[-1] for k, v in method.history_.items() if v},
              "command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "commit": run.git_commit(), "dirty": run.git_dirty(), "versions": run.versions(),
              "hardware": run.hardware(1), "date": time.strftime("%Y-%m-%d")}
    run.atomic_write(path, json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("name", "val_accuracies", "entry_val_accuracies", "distill_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
