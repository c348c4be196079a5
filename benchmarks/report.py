"""RESULTS.md from ``benchmarks/results/*.json``: the comparison tables, the budget sweep, the other records.

A table cell is a (data set, IPC) pair of the ``tables`` profile. Each method's row joins its record with
the random-subset record under the same protocol and loss (IOR, ARS) and the data set's full-data record
(HLR, LRS); the scores are defined in ``distillset/scores.py`` and computed per root seed.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from distillset.scores import ars, hlr, ior, lrs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def read_record(path: Path) -> dict:
    """A results JSON as a dict, or one line naming the file when it is damaged (a hand edit, a bad merge)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path} is unreadable ({type(e).__name__}: {e}); restore it with git checkout -- {path} "
                         "or remove it") from None
    if not isinstance(record, dict):
        raise SystemExit(f"{path} holds a JSON {type(record).__name__}, not a record (an object); restore it with "
                         f"git checkout -- {path} or remove it")
    return record


def load_records() -> list[dict]:
    records = (read_record(p) for p in sorted(RESULTS.glob("*.json")) if not p.name.startswith("speed_"))
    return [r for r in records if "entry" in r]  # the runner's records (not e.g. mtt_memory.json's measurements)


def protocol(r: dict) -> tuple:
    """What makes two records comparable: data, IPC, the evaluator's settings (loss aside) and the seeds."""
    ev = {k: v for k, v in r["entry"].get("eval", {}).items() if k != "loss"}
    return r["dataset"], r["ipc"], json.dumps(ev, sort_keys=True), tuple(r["seeds"])


def trained_loss(r: dict) -> str:
    """The loss the record's networks were trained with (a random subset may be trained with MSE for LS)."""
    return next(iter(r["results"][r["method"]].values())).get("loss", "ce")


def seed_means(r: dict, label: str, key: str = "results") -> list[float]:
    """The method's mean accuracy per root seed (first architecture), in seed order."""
    return [next(iter(run[key][label].values()))["mean"] for run in r["per_seed"]]


def pm(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def accuracy(r: dict) -> str:
    """mean ± sample std over every (seed, network), and the std of the per-seed means."""
    res = next(iter(r["results"][r["method"]].values()))
    n = len(res["accuracies"])
    return f"{res['mean']:.2f} ± {res['std']:.2f} (seeds ± {res.get('seed_std', 0):.2f}; n={n})"


def scores_of(r: dict, rnd: dict | None, full: dict | None) -> dict[str, str]:
    """IOR, HLR, LRS, ARS of record ``r`` per seed, as 'mean ± std' strings ('-' where a part is missing)."""
    out = {"IOR": "-", "HLR": "-", "LRS": "-", "ARS": "-"}
    m = r["method"]
    own = seed_means(r, m)
    gains = [ior(a, b) for a, b in zip(own, seed_means(rnd, "random"))] if rnd else []
    if r.get("per_seed") and "hard_label" in r["per_seed"][0]:
        hard = seed_means(r, m, "hard_label")
    else:  # hard labels score themselves; learned or soft ones without their hard-label networks have no HLR
        hard = own if r.get("label_kind", "hard") == "hard" else []
    full_acc = next(iter(full["results"]["full"].values()))["mean"] if full else None
    losses = [hlr(full_acc, h) for h in hard] if full_acc is not None else []
    if gains:
        out["IOR"] = pm(gains)
    if losses:
        out["HLR"] = pm(losses)
    if gains and losses:
        out["LRS"] = pm([lrs(g, h) for g, h in zip(gains, losses)])
    if gains and "other_augment" in r["per_seed"][0] and rnd and "other_augment" in rnd["per_seed"][0]:
        other = [ior(a, b) for a, b in zip(seed_means(r, m, "other_augment"), seed_means(rnd, "random", "other_augment"))]
        with_aug, without = (gains, other) if r["other_augment"]["augment"] == "none" else (other, gains)
        out["ARS"] = pm([ars(a, b) for a, b in zip(with_aug, without)])
    return out


_UNITS = {"batch_real": " real/class", "syn_steps": " steps"}


def budget_ratio(r: dict) -> str:
    """(iterations x work per iteration) of the run over the paper's, and the evaluation epochs over 1000.

    The work per iteration is the real batch per class (DM, DC, DSA) or the student steps (MTT, DATM).
    """
    paper, params = r.get("paper_budget") or r["entry"].get("paper_budget"), r["entry"].get("params", {})
    epochs = r["entry"].get("eval", {}).get("epochs", 1000)
    if not paper or "iterations" not in params:
        return f"eval {epochs / 10:.0f} %" if r["method"] not in ("full",) else "-"
    unit = next((k for k in ("batch_real", "syn_steps") if k in paper), None)
    per_it, paper_per_it = (params.get(unit, paper[unit]), paper[unit]) if unit else (1, 1)
    percent = 100 * params["iterations"] * per_it / (paper["iterations"] * paper_per_it)
    shown = f"{percent:.1f}" if percent >= 0.1 else f"{percent:.1g}"  # IDM's 5000-image real batch: 0.03 %
    return f"{shown} % " \
           f"({params['iterations']} x {per_it}{_UNITS.get(unit, '')}); eval {epochs / 10:.0f} %"


COMPARABLE = ("", "(unverified)", "(CIFAR-10 PNG originals)")  # notes under which "ours - paper" is meaningful


def vs_paper(r: dict) -> str:
    """The published number and our difference to it, where the two measure the same kind of accuracy."""
    paper = r.get("paper") or r["entry"].get("paper")
    if not paper:
        return "-"
    number, _, note = str(paper).partition(" ")
    try:
        value = float(number)
    except ValueError:
        return str(paper)
    if note.strip() not in COMPARABLE:  # e.g. a kernel accuracy: quoted, never subtracted from a network's
        return str(paper)
    ours = next(iter(r["results"][r["method"]].values()))["mean"]
    return f"{paper}: {ours - value:+.1f}"


def references(records: list[dict]) -> tuple[list[dict], dict, dict]:
    """The tables' method records, the full-data record per data set, the random record per (protocol, loss)."""
    tables = [r for r in records if r.get("profile") == "tables" and r["method"] != "full"]
    fulls = {r["dataset"]: r for r in records if r.get("profile") == "tables" and r["method"] == "full"}
    randoms = {(protocol(r), trained_loss(r)): r for r in tables if r["method"] == "random"}
    return tables, fulls, randoms


def _other_settings(rows: list[dict]) -> str:
    """The cell's evaluation settings beyond the four every header names (loss, weight decay, lr grid...):
    those all its rows share, then the names of those that differ between rows."""
    evals = [r["entry"].get("eval", {}) for r in rows]
    keys = sorted({k for ev in evals for k in ev} - {"models", "n_models", "epochs", "augment"})
    shared = [k for k in keys if all(k in ev and ev[k] == evals[0][k] for ev in evals)]
    differ = [k for k in keys if k not in shared]
    return "".join(f", {k}={evals[0][k]}" for k in shared) + \
        (f", {' / '.join(differ)} per row (see the labels column)" if differ else "")


def cell_of(r: dict) -> tuple:
    """A table: data set, IPC and the four settings its header names; rows that differ in these (a kernel's
    finite network without augmentation, say) get a table of their own rather than a misleading header."""
    ev = r["entry"].get("eval", {})
    return (r["dataset"], r["ipc"], json.dumps(ev.get("models", "convnet")), str(ev.get("augment", "auto")),
            ev.get("epochs", 1000), ev.get("n_models", 5))


def table_lines(records: list[dict]) -> list[str]:
    tables, fulls, randoms = references(records)
    lines = []
    for cell in sorted({cell_of(r) for r in tables}):
        rows = [r for r in tables if cell_of(r) == cell]
        ev = rows[0]["entry"].get("eval", {})
        full = fulls.get(cell[0])
        standard = (ev.get("models", "convnet"), ev.get("augment", "auto")) == ("convnet", "auto")
        lines += ["", f"### {cell[0]}, IPC {cell[1]}" + ("" if standard else f" ({ev.get('models')}, augment="
                                                             f"{ev.get('augment', 'auto')})"), "",
                  f"{ev.get('models', 'convnet')}, {ev.get('n_models', 5)} networks x {ev.get('epochs', 1000)} epochs "
                  f"per set, augment={ev.get('augment', 'auto')}{_other_settings(rows)}, {len(rows[0]['seeds'])} root "
                  f"seeds; test accuracy %. "
                  f"Data: {rows[0]['source'] or cell[0]}."
                  + (f" Full data (HLR's reference, {full['entry']['eval']['n_models']} nets x "
                     f"{full['entry']['eval']['epochs']} epochs, no augmentation): {accuracy(full)}." if full else
                     " No full-data record yet: HLR and LRS are missing."),
                  "",
                  "| method | labels (loss) | accuracy | random, same loss | IOR | HLR | LRS | ARS | budget vs paper | "
                  "paper: ours - paper | distill s / seed | commit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["method"] != "random", trained_loss(r), r["method"])):
            rnd = randoms.get((protocol(r), trained_loss(r)))
            s = scores_of(r, rnd, full)
            rnd_acc = next(iter(rnd["results"]["random"].values()))["mean"] if rnd else None
            lines.append(
                f"| {r['entry'].get('label', r['method'])} | {r.get('label_kind', 'hard')} ({trained_loss(r)}) | {accuracy(r)} | "
                f"{'-' if rnd_acc is None else f'{rnd_acc:.2f}'} | {s['IOR']} | {s['HLR']} | {s['LRS']} | {s['ARS']} | "
                f"{budget_ratio(r)} | {vs_paper(r)} | {r['distill_seconds'] / len(r['seeds']):.0f} | "
                f"{r['commit']}{' (dirty)' if r.get('dirty') else ''} |")
    return lines


def budget_lines(records: list[dict]) -> list[str]:
    sweeps = [r for r in records if r.get("budget")]
    if not sweeps:
        return []
    lines = ["", "## Budget sweep", "",
             "Accuracy of the set after n iterations of one run per root seed (with a constant learning rate, the set "
             "an n-iteration run makes), same protocol as its table. mean ± sample std over (seed, network); the "
             "paper's number is at the paper's full budget.", "",
             "| entry | iterations | work / iteration | accuracy | seed std | paper |", "|---|---|---|---|---|---|"]
    for r in sweeps:
        for n, res in sorted(r["budget"].items(), key=lambda kv: int(kv[0])):
            v = next(iter(res[r["method"]].values()))
            lines.append(f"| {r['name']} | {n} | {_work(r)} | "
                         f"{v['mean']:.2f} ± {v['std']:.2f} | {v['seed_std']:.2f} | {r.get('paper') or '-'} |")
    for dataset_ipc, path in plot_budget(sweeps, records).items():
        lines += ["", f"![budget sweep, {dataset_ipc}](results/{path.name})"]
    return lines


def _work(r: dict) -> str:
    """What one iteration of a budget-sweep entry does: its real images per class, or its student steps."""
    params = r["entry"].get("params", {})
    return f"{params['batch_real']} real/class" if "batch_real" in params else \
        f"{params['syn_steps']} student steps" if "syn_steps" in params else "-"


def plot_budget(sweeps: list[dict], records: list[dict]) -> dict[str, Path]:
    """One figure per (data set, IPC): accuracy vs iterations (log axis), error bars = std over seed means."""
    from matplotlib.figure import Figure

    out = {}
    for cell in sorted({(r["dataset"], r["ipc"]) for r in sweeps}):
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        for r in (r for r in sweeps if (r["dataset"], r["ipc"]) == cell):
            pts = sorted((int(n), next(iter(res[r["method"]].values()))) for n, res in r["budget"].items())
            ax.errorbar([n for n, _ in pts], [v["mean"] for _, v in pts], yerr=[v["seed_std"] for _, v in pts],
                        marker="o", capsize=3, label=f"{r['method']} ({_work(r)})")
        rnd = [r for r in records if r["method"] == "random" and (r["dataset"], r["ipc"]) == cell
               and trained_loss(r) == "ce" and r.get("profile") == "tables"]
        if rnd:
            ax.axhline(next(iter(rnd[0]["results"]["random"].values()))["mean"], color="gray", ls="--",
                       label="random real subset")
        ax.set_xscale("log")
        ax.set_xlabel("distillation iterations")
        ax.set_ylabel("test accuracy (%)")
        first = next(r for r in sweeps if (r["dataset"], r["ipc"]) == cell)
        ax.set_title(f"{cell[0]}, IPC {cell[1]}: accuracy vs budget ({len(first['seeds'])} seeds x "
                     f"{first['entry']['eval'].get('n_models', 5)} nets, error bar: std of seed means)")
        ax.legend(fontsize=8)
        path = RESULTS / f"budget_{cell[0].replace('-', '')}_ipc{cell[1]}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        out[f"{cell[0]}, IPC {cell[1]}"] = path
    return out


def fmt(r: dict | None) -> str:
    """'mean ± std' of each evaluated architecture (the name is shown when it is not the ConvNet)."""
    if not r:
        return "-"
    return "; ".join(f"{'' if m == 'convnet' else m + ' '}{v['mean']:.2f} ± {v['std']:.2f}" for m, v in r.items())


def other_lines(records: list[dict]) -> list[str]:
    rows = [r for r in records if r.get("profile") != "tables"]
    if not rows:
        return []
    lines = ["", "## Other records", "",
             "Comparisons that are not table cells (a precision comparison, the CI check entry). Every row evaluates "
             "the set and its baselines with the same evaluator.", "",
             "| entry | profile | data | method | ipc | ours | random (same eval) | eval | seeds | commit | distill s | "
             "wall s | hardware |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = r["entry"].get("eval", {})
        hw = r["hardware"].get("gpu") or f"{r['hardware']['cpu_count']} CPU, {r['hardware'].get('torch_threads')} thr"
        lines.append(f"| {r['name']} | {r['profile']} | {r['dataset']} | {r['method']} | {r['ipc']} | "
                     f"{fmt(r['results'][r['method']])} | {fmt(r['results'].get('random'))} | "
                     f"{ev.get('models', 'convnet')}, {ev.get('n_models', 5)} nets x {ev.get('epochs', 1000)} ep | "
                     f"{len(r.get('seeds') or [0])} | {r.get('commit')} | {r['distill_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} | {hw} |")
    return lines


def report_lines() -> list[str]:
    records = load_records()
    head = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/run.py --report` from `benchmarks/results/*.json`; do not edit by hand.",
        "Each record names its commit (an ancestor of main), command, root seeds, torch threads, precision, hardware",
        "and the sha256 of the data it read; `python benchmarks/run.py --check NAME` re-runs one and compares.",
        "",
        "## Tables",
        "",
        "One protocol per cell, given above it; every method and baseline of a cell is trained the same way, with",
        "the loss its labels need. accuracy = mean ± sample std over every (root seed, network) pair; 'seeds ±' is",
        "the std of the per-seed means (what re-distilling changes). Scores (DD-Ranking; `distillset/scores.py`):",
        "IOR = acc(set) - acc(random subset, same protocol and loss), HLR = acc(full data, hard labels) -",
        "acc(set's images, hard labels), LRS = 100 (exp(IOR/2 - HLR/2) - 1/e) / (e - 1/e) and ARS = 100",
        "(exp(IOR_aug/2 + IOR_none/2) - 1/e) / (e - 1/e) with accuracies as fractions, all per root seed, mean ± std.",
        "'budget vs paper' = our (iterations x real images per class) over the paper's, and our evaluation epochs",
        "over the paper's 1000. Nothing was chosen on the test set: every setting is fixed in the profile.",
    ]
    return (head + table_lines(records) + budget_lines(records) + other_lines(records) + pending_lines()
            + application_lines())


def pending_lines() -> list[str]:
    """Rows being made seed by seed (``results/parts/``, see ``benchmarks/parts.py``): their seeds so far, kept
    out of the tables. Parts under different stamps (code, settings, hardware) are listed apart."""
    import parts

    groups: dict[tuple, dict] = {}
    for path, part in parts.kept(RESULTS):
        groups.setdefault((path.parent.name, parts.stamp_id(part["stamp"])), {})[part["run"]["seed"]] = part
    rows = []
    for (name, sid), by_seed in sorted(groups.items()):
        entry = next(iter(by_seed.values()))["stamp"]["entry"]
        done = "; ".join(f"{k}: {next(iter(p['run']['results'][entry['method']].values()))['mean']:.2f} "
                         f"({p['run'].get('commit')}, {p['run']['seed_seconds'] / 60:.0f} min)"
                         for k, p in sorted(by_seed.items()))
        rows.append(f"| {name} | {sid} | {done} |")
    if not rows:
        return []
    return ["", "## Rows in progress", "",
            "Seeds finished so far of rows longer than a session (`benchmarks/run.py --part`, `benchmarks/parts.py`): "
            "each seed's mean over its networks, commit and time. Not results yet: a row enters the tables when all "
            "its seeds are in under one stamp (the same code, settings and hardware).", "",
            "| entry | stamp | seeds done: mean (commit, time) |", "|---|---|---|", *rows, ""]


# ------------------------------------------------------------------------------------ applications


def application_lines() -> list[str]:
    """Continual learning, the NAS proxy and the membership audit (``results/app_*.json``)."""
    records = [read_record(p) for p in sorted(RESULTS.glob("app_*.json"))]
    if not records:
        return []
    lines = ["", "## Applications", "",
             "From `python benchmarks/applications.py` (entries in `benchmarks/configs/applications.yaml`); each record "
             "holds its settings, commit, command and hardware. CPU budgets, far below the papers': read them as such."]
    for r in records:
        lines += ["", f"### {r['name']} ({r['config']['dataset']}, commit {r['commit']}, {r['wall_seconds'] / 60:.0f} min)",
                  ""] + APPLICATION_LINES[r["application"]](r) + ["", f"![{r['name']}](results/app_{r['name']}.png)"]
    return lines


def _continual_lines(r: dict) -> list[str]:
    c, first = r["config"], r["runs"][0]
    steps = len(first["step_means"])
    lines = [f"Class-incremental: {steps} steps of {first['classes_seen'][0]} classes, {c['ipc']} images per class "
             f"condensed per step, {c['orders']} class orders x {c['eval']['n_models']} fresh ConvNets x "
             f"{c['eval']['epochs']} epochs (augment {c['eval']['augment']}) per step; test accuracy % on the classes "
             f"seen, mean ± std over orders x networks. Method budgets: {c.get('params') or '-'}.", "",
             "| method | " + " | ".join(f"{n} classes" for n in first["classes_seen"]) + " | final | average | "
             "condense s | evaluate s |", "|---|" + "---|" * (steps + 4)]
    for run in r["runs"]:
        cells = " | ".join(f"{m:.2f} ± {sd:.2f}" for m, sd in zip(run["step_means"], run["step_stds"]))
        lines.append(f"| {run['method']} | {cells} | {run['final']:.2f} | {run['average']:.2f} | "
                     f"{run['seconds']['condense']:.0f} | {run['seconds']['evaluate']:.0f} |")
    return lines


def _nas_lines(r: dict) -> list[str]:
    n = len(r["architectures"])
    real = "all of it" if r["full_per_class"] is None else f"{r['full_per_class']} per class"
    lines = [f"{n} architectures (grid '{r['grid']}'), each trained on every proxy ({r['epochs']} epochs) and on the "
             f"real training data ({real}, "
             f"{r['full_epochs']} epochs); rankings by validation accuracy ({r['val_per_class']} held-out images per "
             f"class), the pick's accuracy on the test set. Best architecture on real data: "
             f"`{r['best_real']['architecture']}`, {r['best_real']['test']:.2f} % test.", "",
             "| proxy | images | Spearman / Kendall, all | top 5 | top 10 | top 20 | pick's real test % | proxy s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in r["proxies"].items():
        cor = p["correlations"]
        cell = lambda k: f"{cor[k]['spearman']:.2f} / {cor[k]['kendall']:.2f}" if k in cor else "-"
        lines.append(f"| {name} | {p['images']} | {cell('all')} | {cell('top5')} | {cell('top10')} | {cell('top20')} | "
                     f"{p['pick_real_test']:.2f} | {p['seconds']:.0f} |")
    return lines


def _audit_lines(r: dict) -> list[str]:
    first = next(iter(r["pipelines"].values()))
    lines = [f"Membership inference: a pool of {first['pool_size']} training images, {first['n_models']} models each "
             f"trained on its pipeline's output from a random half of every class's pool images; each model the "
             f"target once, the others its shadows. {first['non_member_pairs']} non-member pairs, so 0.1 % FPR is "
             f"about {first['non_member_pairs'] / 1000:.0f} false positives.", "",
             "| pipeline | test acc % | LiRA TPR @ 0.1 % FPR | @ 1 % | AUC | loss TPR @ 0.1 % | @ 1 % | AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in r["pipelines"].items():
        lira, loss = a["lira"], a["loss"]
        lines.append(f"| {name} | {a['test_accuracy']:.2f} | {100 * lira['tpr_at_0.1%']:.2f} % | {100 * lira['tpr_at_1%']:.2f} % | "
                     f"{lira['auc']:.3f} | {100 * loss['tpr_at_0.1%']:.2f} % | {100 * loss['tpr_at_1%']:.2f} % | "
                     f"{loss['auc']:.3f} |")
    return lines


APPLICATION_LINES = {"continual": _continual_lines, "nas": _nas_lines, "audit": _audit_lines}


# ------------------------------------------------------------------------------------ the HTML report


def record_views(records: list[dict]) -> list:
    """Each record as a :class:`distillset.report.RunView`, with the scores of its table row."""
    from distillset.report import RunView, memory_labels

    _, fulls, randoms = references(records)
    views = []
    for r in records:
        entry = r["entry"]
        first = next(iter(r["results"][r["method"]].values()))
        grid = RESULTS / "sets" / f"{r['name']}.png"
        rnd = randoms.get((protocol(r), trained_loss(r))) if r["method"] not in ("full", "random") else None
        view = RunView(
            name=r["name"], dataset=r["dataset"], method=r["method"], ipc=r.get("ipc"),
            status=f"all seeds together; {len(r['seeds'])} root seed(s) x {len(first['accuracies']) // len(r['seeds'])} networks; "
                   f"commit {r.get('commit')}{' (dirty)' if r.get('dirty') else ''}; {r.get('date', '')}",
            settings={"command": r.get("command"), **{f"params.{k}": v for k, v in entry.get("params", {}).items()},
                      **{f"eval.{k}": v for k, v in entry.get("eval", {}).items()},
                      **{f"versions.{k}": v for k, v in r.get("versions", {}).items()},
                      **{f"hardware.{k}": v for k, v in r.get("hardware", {}).items()}},
            iterations=entry.get("params", {}).get("iterations"), grid_png=grid.read_bytes() if grid.is_file() else None,
            results={label: _cells(per_model) for label, per_model in r["results"].items()},
            scores={k: v for k, v in scores_of(r, rnd, fulls.get(r["dataset"])).items() if v != "-"}
            if r["method"] != "full" else {},
            measurements={"paper": r.get("paper") or "-", "ours - paper": vs_paper(r),
                          **{k: v for k, v in (r.get("extra") or {}).items() if not isinstance(v, (dict, list))}},
            timings={"distillation": r.get("distill_seconds"), "wall clock, evaluation included": r.get("wall_seconds")},
            memory=memory_labels({k: r.get(k) for k in ("peak_rss_mib", "peak_gpu_mib")}))
        if rnd is not None:  # the random subset under the same protocol, as the table's "random, same loss"
            view.results["random"], view.baseline = _cells(rnd["results"]["random"]), "random"
        view.budget = {int(n): (v["mean"], v["std"]) for n, res in (r.get("budget") or {}).items()
                       for v in [next(iter(res[r["method"]].values()))]}
        views.append(view)
    return views


def _cells(per_model: dict) -> dict:
    return {m: {"mean": c["mean"], "std": c["std"], "n": len(c["accuracies"]), "epochs": c.get("epochs")}
            for m, c in per_model.items()}


def write_html(path: Path) -> Path:
    """``benchmarks/report.html``: every record's page section and the comparison across them."""
    from distillset.report import render_report

    render_report(record_views(load_records()), path, title="distillset benchmarks")
    return path
