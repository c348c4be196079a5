"""``distillset continual | nas | audit-mia``: what distilled sets are for (``distillset.applications``).

Each writes a JSON record (settings, seeds, versions, the command) and a PNG plot into ``--out`` (continual
after each method, so ``--resume`` runs only the methods an interrupted run had not finished); every
setting and method parameter is checked before any work.

    distillset continual --dataset mnist --methods dm random herding --steps 5 --ipc 10 --out runs/cl
    distillset nas --dataset mnist --sets runs/dm/synthetic.json --random --grid cpu --out runs/nas
    distillset audit-mia --dataset digits --pipelines dm random full --models 17 --out runs/audit
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

from .._io import atomic_write
from ..errors import InvalidParameterError, UnknownNameError, check_named_once
from .common import add_data_options, check_run_folder, format_table, parse_params, path_arg, run_folder

FILES = {"continual": ("continual.json", "continual.png"), "nas": ("nas.json", "nas.png"),
         "audit-mia": ("audit.json", "roc.png")}
RESUMABLE = ("continual",)  # the commands with --resume (audit-mia's ROC plot needs models its record lacks)


def add_parser(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("continual", help="class-incremental learning with a condensed memory", description=__doc__,
                       formatter_class=fmt, allow_abbrev=False)
    p.add_argument("--methods", nargs="+", default=["dm", "random", "herding"], help="methods or baselines to compare")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--orders", type=int, default=5, help="seeded class orders")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: the methods its continual.json holds are kept, not run again")
    _common(p, runs=3, epochs=300)
    p.set_defaults(func=run_continual)

    p = sub.add_parser("nas", help="distilled sets as an architecture-search proxy", description=__doc__,
                       formatter_class=fmt, allow_abbrev=False)
    p.add_argument("--sets", nargs="*", default=[],
                   help="saved sets, distilled with the same --val-per-class held out (distillset distill --val-per-class)")
    p.add_argument("--random", action="store_true", help="add a random real subset as large as the first set")
    p.add_argument("--grid", default="cpu", help="'cpu' (24 ConvNets) or 'paper' (720)")
    p.add_argument("--full-epochs", type=int, default=10, help="epochs of the real-data trainings")
    p.add_argument("--full-per-class", type=int, default=None, help="real images per class for them (default all)")
    p.add_argument("--val-per-class", type=int, default=100, help="validation images per class (the rankings use them)")
    _common(p, runs=1, epochs=300, networks=False)  # one recipe for every proxy: no model/augment/method flags
    p.set_defaults(func=run_nas)

    p = sub.add_parser("audit-mia", help="membership inference against networks trained on sets", description=__doc__,
                       formatter_class=fmt, allow_abbrev=False)
    p.add_argument("--pipelines", nargs="+", default=["dm", "random", "full"],
                   help="'full' (the members themselves), 'random' or a method")
    p.add_argument("--pool-size", type=int, default=500)
    p.add_argument("--models", type=int, default=17, help="models, each the target once (>= 3; >= 16 advised)")
    p.add_argument("--ipc", type=int, default=10)
    _common(p, runs=None, epochs=300)
    p.set_defaults(func=run_audit)


def _common(p, runs: int | None, epochs: int, networks: bool = True) -> None:
    p.add_argument("--dataset", default="digits")
    if networks:
        p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                       help="a method's parameter, repeatable (e.g. dm.iterations=1000)")
    if runs is not None:
        p.add_argument("--eval-runs", type=int, default=runs, help=f"networks per evaluation (default {runs})")
    p.add_argument("--eval-epochs", type=int, default=epochs, help=f"training epochs of each network (default {epochs})")
    if networks:
        p.add_argument("--eval-model", default="convnet", help="the evaluated architecture")
        p.add_argument("--eval-augment", default="auto", help="DSA strategy while training networks, 'none' to disable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=path_arg, required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace this command's files in --out")
    add_data_options(p)
    p.add_argument("--device", default=None)


def _params(args, methods: list[str]) -> dict[str, dict]:
    """``--param method.key=value`` -> {method: {key: value}}, for named methods only."""
    from ..methods import METHODS

    classes = {m: METHODS.get(m) for m in methods}  # an unknown method: its close names, before any --param
    out = {m: {} for m in methods}
    for text, (key, value) in zip(args.param, parse_params(args.param)):
        method, _, name = key.partition(".")
        if not methods:
            raise InvalidParameterError(f"--param {text!r}: this run distils with no method; drop --param.")
        if not name or method not in out:
            raise InvalidParameterError(f"--param {text!r} must name one of the methods ({', '.join(methods)}) as "
                                        "METHOD.KEY=VALUE, e.g. dm.iterations=1000.")
        if name in OWN_FLAGS:
            raise InvalidParameterError(f"--param {text!r}: set {name} with {OWN_FLAGS[name]}, for every method.")
        out[method][name] = value
    # old names renamed, unknown ones refused with the close matches
    return {m: classes[m]._checked_params(params) for m, params in out.items()}


OWN_FLAGS = {"ipc": "--ipc", "random_state": "--seed", "device": "--device", "progress": "(always off here)"}


def _check_evaluation(args) -> None:
    """The networks' settings and --seed, before any work (a typo in --eval-model costs nothing)."""
    from ..evaluate import Evaluator
    from .common import EVAL_FLAGS, check_evaluator

    check_evaluator(Evaluator(getattr(args, "eval_model", "convnet"), n_models=getattr(args, "eval_runs", 1),
                              epochs=args.eval_epochs, augment=_augment(args), random_state=args.seed,
                              device=args.device), {**EVAL_FLAGS, "random_state": "--seed"})


def _write(out: Path, name: str, record: dict) -> None:
    """``record`` as strict JSON: an undefined number (NaN, e.g. a rank correlation of a constant list) is null."""
    atomic_write(out / name, json.dumps(_nan_as_null(record), indent=2, allow_nan=False))


def _nan_as_null(value):
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_null(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _setup(args, command: str):
    """The data and the output folder, checked before any work; returns (data, out)."""
    from ..data import load_dataset

    out = Path(args.out)
    check_run_folder(out, resume=getattr(args, "resume", False), overwrite=args.overwrite, marks=FILES[command][:1],
                     resumable=command in RESUMABLE)
    return load_dataset(args.dataset, root=args.data_root, download=args.download), out


@contextlib.contextmanager
def _held_folder(args, out: Path, command: str):
    """``run_folder`` for this command's files; inside it (an old run's files gone with --overwrite) a Ctrl-C
    says what this run kept."""
    record = FILES[command][0]
    with run_folder(out, previous=FILES[command] if args.overwrite else (), keep=record,
                    resume=getattr(args, "resume", False)):
        args.after_interrupt = lambda: _after_interrupt(out / record, command in RESUMABLE)
        yield


def _after_interrupt(record: Path, resumable: bool) -> str:
    if record.is_file():  # continual and audit-mia write it after each method: those results are kept
        if resumable:
            return f"interrupted; {record} keeps the methods that finished: rerun with --resume to run only the rest"
        return (f"interrupted; {record} keeps the results that finished (this command has no checkpoints): rerun "
                "with --overwrite to start again, or with another --out")
    return "interrupted; nothing was kept: rerun the same command to start again"


def _record(args, body: dict) -> dict:
    from .env import environment

    return {"command": "distillset " + " ".join(args.argv), "dataset": args.dataset, "seed": args.seed,
            "date": time.strftime("%Y-%m-%d"), "environment": environment(), **body}


def _augment(args):
    augment = getattr(args, "eval_augment", "none")
    return None if augment == "none" else augment


def run_continual(args) -> int:
    from ..applications import ClassIncremental
    from ..applications.continual import plot_curves
    from ..cache import fingerprint

    check_named_once(args.methods)
    params = _params(args, args.methods)  # names before the data is read (or downloaded)
    _check_evaluation(args)
    data, out = _setup(args, "continual")
    runs = [ClassIncremental(m, steps=args.steps, ipc=args.ipc, orders=args.orders, params=params[m] or None,
                             n_models=args.eval_runs, epochs=args.eval_epochs, model=args.eval_model,
                             augment=_augment(args), random_state=args.seed, device=args.device) for m in args.methods]
    for r in runs:
        r._validate(data)  # every method's settings before the first one works
    data_hash = fingerprint(data)
    with _held_folder(args, out, "continual"):
        kept = _kept_methods(out, data_hash, runs) if args.resume else {}  # read under the folder's lock
        records = []
        for r in runs:
            if r.method in kept:
                print(f"{r.method}: kept from {out / 'continual.json'}, not run again", flush=True)
                records.append(kept[r.method])
                continue
            print(f"{r.method}: {args.orders} orders x {args.steps} steps of {data.num_classes // args.steps} classes",
                  flush=True)
            records.append(r.fit(data).to_dict())
            _write(out, "continual.json", _record(args, {"data_fingerprint": data_hash, "runs": records}))
        plot_curves(records, out / "continual.png", f"{data.name}: class-incremental, {args.ipc} images per class")
    rows = [{"method": r["method"], **{f"step {s + 1}": f"{m:.1f} ± {sd:.1f}" for s, (m, sd)
                                        in enumerate(zip(r["step_means"], r["step_stds"]))},
             "average": f"{r['average']:.2f}"} for r in records]
    print(format_table(rows, list(rows[0])))
    print(f"wrote {out}/continual.json, continual.png")
    return 0


# what a kept method's record must hold to be shown again (a hand-edited one is refused, not a traceback)
KEPT_KEYS = {"method": str, "orders": list, "classes_seen": list, "step_means": list, "step_stds": list,
             "average": (int, float)}


def _kept_methods(out: Path, data_hash: str, runs: list) -> dict[str, dict]:
    """--resume: the records of the methods ``out``'s continual.json holds, each checked to have been made by
    this command's settings on the same training images (a method this command leaves out, or other settings,
    is refused: never lost)."""
    from ..errors import CheckpointMismatchError, CorruptFileError, OutputError

    path, fix = out / "continual.json", "pass --overwrite to start again, or choose another --out"
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise OutputError(f"--out {out} holds files but no continual.json to resume; choose another --out.")
        print(f"(no continual.json in {out} yet: starting from the beginning)", flush=True)
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is damaged ({type(e).__name__}); {fix}.") from None
    done = record.get("runs") if isinstance(record, dict) else None
    if not (isinstance(done, list) and all(isinstance(r, dict) and all(isinstance(r.get(k), t) for k, t in
                                                                       KEPT_KEYS.items()) for r in done)):
        raise CorruptFileError(f"{path} is not a continual record as distillset writes it; {fix}.")
    if record.get("data_fingerprint") != data_hash:
        raise CheckpointMismatchError(f"Cannot resume: {path} holds results on other training images (of "
                                      f"{record.get('dataset')!r}; or another --data-root, or a record without their "
                                      f"fingerprint); use the same data, or {fix}.")
    ours = {r.method: json.loads(json.dumps(r.settings())) for r in runs}  # as read back from the record
    for r in done:
        if r["method"] not in ours:
            raise CheckpointMismatchError(f"Cannot resume: {path} holds results of {r['method']!r}, which --methods "
                                          f"leaves out; add it to --methods, or {fix}.")
        theirs = {**r, "orders": len(r["orders"])}  # the record lists the orders; the flag counts them
        for key, value in ours[r["method"]].items():
            if theirs.get(key) != value:
                raise CheckpointMismatchError(
                    f"Cannot resume: {path} has {r['method']} with {key}={theirs.get(key)!r} but this command has "
                    f"{key}={value!r}; use the same settings, or {fix}.")
    return {r["method"]: r for r in done}


def _proxy_name(path: str) -> str:
    """A proxy set's name: its distill run's folder (``runs/dm``, ``runs/dm/synthetic.json``), else its stem."""
    from ..synthetic import set_stem

    stem = set_stem(path)
    return stem.parent.name if stem.name == "synthetic" and stem.parent.name else stem.name


def run_nas(args) -> int:
    from ..applications import ArchitectureSearch
    from ..applications.nas import check_proxies, plot_ranking
    from ..methods import get_method
    from ..synthetic import SyntheticSet

    if not args.sets and not args.random:
        raise InvalidParameterError("Give proxy sets (--sets PATH ...) and/or --random.")
    names = [_proxy_name(p) for p in args.sets] + (["random"] if args.random else [])
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"The proxies need distinct names (a run's folder, else the file's stem): {names}; "
                                    "rename a folder or file.")
    sets = {name: SyntheticSet.load(p) for name, p in zip(names, args.sets)}
    nas = ArchitectureSearch(args.grid, epochs=args.eval_epochs, full_epochs=args.full_epochs,
                             full_per_class=args.full_per_class, val_per_class=args.val_per_class,
                             n_models=args.eval_runs, random_state=args.seed, device=args.device)
    _check_evaluation(args)  # --eval-runs / --eval-epochs named as typed, before the search's own checks
    nas._validate()  # every setting before any work or file
    data, out = _setup(args, "nas")
    data = data.holdout(args.val_per_class)
    check_proxies(sets, data)  # before any training
    if args.random:
        ipc = next(iter(sets.values())).ipc if sets else 10
        sets["random"] = get_method("random", ipc=ipc, random_state=args.seed).fit(data).synthetic_
    with _held_folder(args, out, "nas"):
        record = nas.fit(data, sets).to_dict()
        _write(out, "nas.json", _record(args, record))
        plot_ranking(nas, out / "nas.png", data.name)
    rows = [{"proxy": name, "images": p["images"], **{f"{k} rho/tau": f"{v['spearman']:.2f}/{v['kendall']:.2f}"
                                                        for k, v in p["correlations"].items()},
             "pick's real test acc": f"{p['pick_real_test']:.2f}", "seconds": f"{p['seconds']:.0f}"}
            for name, p in record["proxies"].items()]
    print(format_table(rows, list(rows[0])))
    print(f"best architecture on the real data: {nas.best_real_['architecture']} ({nas.best_real_['test']:.2f} test)")
    print(f"wrote {out}/nas.json, nas.png")
    return 0


def run_audit(args) -> int:
    from ..applications import MembershipAudit
    from ..applications.privacy import plot_roc

    check_named_once(args.pipelines)
    from ..methods import METHODS

    for name in args.pipelines:  # "full" is no method: an unknown name's close matches include it
        if name != "full" and name not in METHODS:
            raise UnknownNameError("pipeline", name, [*METHODS.names(), "full"])
    params = _params(args, [p for p in args.pipelines if p != "full"])  # names before the data is read
    _check_evaluation(args)
    data, out = _setup(args, "audit-mia")
    audits = {p: MembershipAudit(p, pool_size=args.pool_size, n_models=args.models, ipc=args.ipc,
                                 params=params.get(p) or None, model=args.eval_model, epochs=args.eval_epochs,
                                 augment=_augment(args), random_state=args.seed, device=args.device)
              for p in args.pipelines}
    for a in audits.values():
        a._validate(data)
    with _held_folder(args, out, "audit-mia"):
        done = {}
        for name, a in audits.items():
            print(f"{name}: {args.models} models on random halves of a {args.pool_size}-image pool", flush=True)
            done[name] = a.fit(data).to_dict()
            _write(out, "audit.json", _record(args, {"pipelines": done}))  # kept if a later one fails
        plot_roc(audits, out / "roc.png", f"{data.name}: membership inference, {args.models} models")
    rows = [{"pipeline": n, "test acc": f"{a.results_['test_accuracy']:.1f}",
             **{f"{k} {m}": f"{100 * a.results_[k][m]:.2f} %" if m != "auc" else f"{a.results_[k][m]:.3f}"
                for k in ("lira", "loss") for m in ("tpr_at_0.1%", "tpr_at_1%", "auc")}} for n, a in audits.items()]
    print(format_table(rows, list(rows[0])))
    print(f"wrote {out}/audit.json, roc.png")
    return 0
