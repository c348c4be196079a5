"""One table entry with some method parameters changed, scored on the validation split only (an ablation).

Distils the entry's root seed with ``key=value`` overrides of its ``params`` and scores the set with the
entry's own evaluation (same streams: ``run.stream_seeds``), so each network pairs with the network of the
same index in the entry's record or part for that seed. Only validation accuracies are kept: the Evaluator
computes a test accuracy, which is neither printed nor stored, so an ablation can explain a row without
the test set taking part in any choice. The entry needs ``val_per_class``. Usage:

    python benchmarks/ablation.py mnist_ipc10_idm 0 ce_weight=0

Writes ``results/ablation_<entry>_seed<N>_<key>-<value>....json`` (the variant's and, where a record or
part of the seed exists, the entry's own validation accuracies; commit, command, versions, hardware).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def table_val_accuracies(name: str, seed: int) -> list[float] | None:
    """The validation accuracies of the entry's own networks for ``seed``, from its record or a part."""
    record = HERE / "results" / f"{name}.json"
    runs = json.loads(record.read_text())["per_seed"] if record.exists() else [
        json.loads(p.read_text())["run"] for p in sorted((HERE / "results" / "parts" / name).glob(f"seed{seed}-*[0-9a-f].json"))]
    for run in runs:
        if run["seed"] == seed:
            res = next(iter(next(iter(run["results"].values())).values()))
            return res["extra"]["val_accuracies"]
    return None


def main(name: str, seed: int, overrides: list[str]) -> None:
    from run import entry_data, git_commit, git_dirty, hardware, make_evaluator, stream_seeds, versions

    from distillset import get_method
    from distillset.cli.common import parse_param

    entry = next(e for e in yaml.safe_load((HERE / "configs" / "tables.yaml").read_text())["entries"]
                 if e["name"] == name)
    if not entry.get("val_per_class"):
        sys.exit(f"{name} holds out no validation split (val_per_class); an ablation needs one.")
    changes = dict(parse_param(o) for o in overrides)
    torch.set_num_threads(1)
    data = entry_data(entry)
    seeds = stream_seeds(seed, [])
    t0 = time.perf_counter()
    method = get_method(entry["method"], **{"progress": False, **entry.get("params", {}), **changes,
                                            "ipc": entry["ipc"], "random_state": seeds["distill"]})
    syn = method.fit(data).synthetic_
    distill_s = time.perf_counter() - t0
    res = make_evaluator(entry, seeds["evaluate"], None).score(syn, data)["convnet"]
    tag = "_".join(f"{k}-{v}" for k, v in changes.items())
    record = {"name": f"ablation_{name}_seed{seed}_{tag}", "ablation_of": name, "seed": seed, "changes": changes,
              "val_per_class": entry["val_per_class"], "val_accuracies": res.extra["val_accuracies"],
              "entry_val_accuracies": table_val_accuracies(name, seed), "distill_seconds": distill_s,
              "final_loss": {k: v[-1] for k, v in method.history_.items() if v},
              "command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]), "commit": git_commit(),
              "dirty": git_dirty(), "versions": versions(), "hardware": hardware(1), "date": time.strftime("%Y-%m-%d")}
    (HERE / "results" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("name", "val_accuracies", "entry_val_accuracies", "distill_seconds")}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
