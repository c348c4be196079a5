"""``distillset distill``: distill a data set, save the set + grid, evaluate against a baseline.

With no arguments: DM on scikit-learn's ``digits`` at 1 image per class (the quick preset), evaluated
against the random-subset baseline with the same protocol, in about a minute on 2 CPU cores.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import yaml

from .. import distributed
from .._io import atomic_write, check_writable
from ..errors import InvalidParameterError, OutputError
from .common import (PRESETS, RUN_CONFIG_HEADER, add_data_options, apply_config, check_evaluator, check_run_folder,
                     format_own, format_table, given_dests, path_arg, result_rows, run_folder,
                     shows_run)

# method parameters with a flag of their own: --param may set one only when its flag is not given
FLAGGED = {"ipc": "ipc", "iterations": "iterations", "model": "model", "random_state": "seed", "device": "device",
           "checkpoint_every": "checkpoint_every"}
MANAGED = {"checkpoint_dir": "--out", "progress": "--quiet"}  # set by the CLI only
EVAL_OPTIONS = {"eval_models": "--eval-models", "eval_runs": "--eval-runs", "eval_epochs": "--eval-epochs",
                "eval_augment": "--eval-augment", "baseline": "--baseline"}  # what --no-eval skips
CLI_DEFAULTS = {"random_state": 0, "checkpoint_every": 100}
# what a run writes into --out (--overwrite deletes exactly these), and the files that show a run is there
CHECKPOINT_FILE = "checkpoint/checkpoint.safetensors"  # methods.base.CHECKPOINT (not imported: --help needs no torch)
RUN_FILES = ("synthetic.safetensors", "synthetic.json", "grid.png", "loss.png", "step_sizes.png", "result.json",
             "config.yaml", "report.html", CHECKPOINT_FILE)
RUN_MARKS = ("result.json", "synthetic.safetensors", CHECKPOINT_FILE, "config.yaml")


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="distill a data set into a small synthetic set", allow_abbrev=False,
                       description=__doc__, formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(prog))
    p.add_argument("--dataset", default="digits", help="registered data set (distillset list datasets)")
    p.add_argument("--method", default="dm", help="registered method (distillset list methods)")
    p.add_argument("--ipc", type=int, default=None,
                   help="images per class (DD: per class per step); default: 1 with --preset quick, else the "
                        "method's own (10; DD, MTT and DATM 1)")
    p.add_argument("--model", default=None, help="architecture used while distilling (default: the method's own)")
    p.add_argument("--iterations", type=int, default=None, help="outer iterations (default: from --preset)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--out", type=path_arg, default=None, help="output folder (default runs/<dataset>-<method>-ipc<ipc>)")
    p.add_argument("--config", type=path_arg, default=None, help="YAML file of these options (flags override it; key 'params' for method parameters)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter, repeatable (e.g. lr_img=1.0)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="iteration/evaluation budget (default quick)")
    add_data_options(p)
    p.add_argument("--val-per-class", type=int, default=None,
                   help="hold this many training images per class out of distillation as a validation split "
                        "(recorded in the set; what e.g. distillset nas ranks architectures on)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints (default 100)")
    p.add_argument("--eval-models", nargs="+", default=["convnet"], help="architectures to evaluate on")
    p.add_argument("--eval-runs", type=int, default=None, help="networks per architecture")
    p.add_argument("--eval-epochs", type=int, default=None)
    p.add_argument("--eval-augment", default="auto", help="DSA strategy during evaluation, 'none' to disable")
    p.add_argument("--baseline", default="random", help="baseline method evaluated alongside ('none' to skip)")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", type=path_arg, default=None, metavar="DIR",
                   help="also log losses, image grids, evaluation and settings for TensorBoard into DIR "
                        "(needs pip install 'distillset[tensorboard]')")
    p.add_argument("--image-every", type=int, default=100, help="iterations between TensorBoard image grids (default 100)")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    from ..report import load_run, render_report
    from ..utils import peak_memory

    method, evaluator, out, data, resume = _prepare(args)
    args.after_interrupt = lambda: _after_interrupt(out)
    main = distributed.is_main()  # under torchrun every process computes; rank 0 alone writes and prints
    distributed.barrier()  # every process has checked everything before rank 0 writes a file
    with _logger(args) as logger, distributed.on_main(
            lambda: run_folder(out, previous=RUN_FILES if args.overwrite else (), resume=args.resume)):
        if main:
            atomic_write(out / "config.yaml", RUN_CONFIG_HEADER + yaml.safe_dump(_resolved(args, out), sort_keys=True))
        print(f"distilling {data.name} ({data.source}) with {args.method}, ipc={method.ipc}, "
              f"{method.iterations} iterations{_processes()} -> {out}", flush=True)
        t0 = time.perf_counter()
        method.fit(data, resume=resume, logger=logger)
        seconds = time.perf_counter() - t0
        artefacts = _save_artefacts(method, data, out) if main else []
        report = {"dataset": data.name, "source": data.source, "method": args.method, "ipc": method.ipc,
                  "images_per_class": method.synthetic_.ipc, "distill_seconds": seconds, "params": method._json_params(),
                  "seed": method.seed_, "final_loss": (method.history_.get("loss") or [None])[-1], "results": {},
                  "history": method.history_, "processes": distributed.world_size()}
        if evaluator is not None:
            _evaluate(args, evaluator, method, data, report)
            if logger is not None:
                logger.evaluation(report["results"], method.iterations)
        report["memory"] = peak_memory()
        if main:
            atomic_write(out / "result.json", json.dumps(report, indent=2, default=str))
            render_report([load_run(out)], out / "report.html", title=f"distillset: {out.name}")
    print(f"\nwrote {out}/{', '.join(artefacts + ['result.json', 'config.yaml', 'report.html'])}")
    if args.tensorboard:
        print(f"TensorBoard logs in {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
    return 0


def _after_interrupt(out: Path) -> str:
    if (out / CHECKPOINT_FILE).is_file():
        return "interrupted; rerun the same command with --resume to continue from the last checkpoint"
    if out.is_dir():  # it was there before (run_folder removes only what it made): it holds this run's config.yaml
        return "interrupted before the first checkpoint: rerun the same command with --resume to start again"
    return "interrupted before the first checkpoint, so nothing was kept: rerun the same command to start again"


def _logger(args):
    """A TensorBoard logger for --tensorboard (on rank 0), else a context that yields None."""
    from ..tensorboard import TensorBoardLogger

    wanted = args.tensorboard and distributed.is_main()
    return TensorBoardLogger(args.tensorboard, args.image_every) if wanted else contextlib.nullcontext()


def _processes() -> str:
    n = distributed.world_size()
    return f", split across {n} processes" if n > 1 else ""


def _prepare(args):
    """Everything checked before a folder is made; returns (method, evaluator, out, data, resume)."""
    from ..data import DATASETS, load_dataset
    from ..methods import METHODS
    from ..methods.base import CHECKPOINT

    # 1. the options alone: names, parameters, device, evaluation, the output folder
    typed = given_dests(args._parser, args.argv)
    args = apply_config(args._parser, args, typed)
    ignored = [flag for d, flag in EVAL_OPTIONS.items() if d in typed and getattr(args, d) != "none"]
    if args.no_eval and ignored:  # typed, not from a config file: a shared config may well set them
        off = "--no-eval" if "no_eval" in typed else f"no_eval: true from {args.config}"
        raise InvalidParameterError(f"--no-eval skips the evaluation that {', '.join(ignored)} set up; drop "
                                    f"{'it' if len(ignored) == 1 else 'them'} or {off}.")
    preset = PRESETS[args.preset]
    cls = METHODS.get(args.method)
    DATASETS.get(args.dataset)
    params = method_params(cls, args, preset)
    out = Path(args.out or f"runs/{args.dataset}-{args.method}-ipc{params.get('ipc', cls().ipc)}")
    method = cls(**params, checkpoint_dir=str(out / "checkpoint"))
    method._validate_params(flags={k: "--" + d.replace("_", "-") for k, d in FLAGGED.items()
                                   if getattr(args, d) is not None})  # a bad value names the flag it came from
    if method.iterations == 0 and cls().iterations != 0:
        raise InvalidParameterError(f"iterations=0 would save {args.method}'s initialisation as a distilled set; "
                                    "give --iterations >= 1.")
    evaluator = None if args.no_eval else _evaluator(args, preset, params)
    if evaluator is not None and args.baseline not in (None, "none", args.method):  # else it is never made
        _check_baseline(METHODS, args.baseline)
    check_run_folder(out, args.resume, args.overwrite, RUN_MARKS)
    if args.resume and not (Path(method.checkpoint_dir) / CHECKPOINT).is_file() and _holds_more_than_a_start(out):
        fix = "pass --overwrite to replace that run" if any(shows_run(out / m) for m in RUN_MARKS) else \
            "they are not a run's"  # a resume must not write over a folder it did not make
        raise OutputError(f"--out {out} holds files but no checkpoint to resume ({fix}); choose another --out.")
    if args.tensorboard:
        _check_tensorboard(args)
    # 2. the data, and what depends on it: ipc vs class sizes, the model on these images, the checkpoint
    data = load_dataset(args.dataset, root=args.data_root, download=args.download)
    if args.val_per_class is not None:
        data = data.holdout(args.val_per_class)
    method._validate(data)
    resume = args.resume and method._resume_record(data) is not None  # a refused resume stops here
    if args.resume and not resume:
        print(f"(no checkpoint in {out / 'checkpoint'} yet: starting from the beginning)", flush=True)
    return method, evaluator, out, data, resume


def _holds_more_than_a_start(out: Path) -> bool:
    """``out`` holds files other than what a run killed before its first checkpoint leaves (its stamped
    config.yaml, an empty checkpoint folder): --resume starts such a run from the beginning, as its
    interruption message says."""
    def started(p: Path) -> bool:
        return (p.name == "config.yaml" and shows_run(p)) or (p.name == "checkpoint" and p.is_dir() and not any(p.iterdir()))
    return out.is_dir() and not all(started(p) for p in out.iterdir())


def _check_baseline(methods, name: str) -> None:
    """A baseline is a set made without iterations (a selection such as random): a distillation method
    there would run its own default budget, unasked, after the user's run."""
    baseline = methods.get(name)()
    if baseline.iterations != 0:
        quick = sorted(n for n in methods if methods.get(n)().iterations == 0)
        raise InvalidParameterError(f"--baseline {name} distils (its default {baseline.iterations} iterations would run "
                                    f"after yours); a baseline is one of {', '.join(quick)} or 'none'. Distil {name} in "
                                    "a run of its own and compare the two sets with distillset evaluate.")
    distributed.check_supported(baseline)  # e.g. under torchrun, before the run


def _check_tensorboard(args) -> None:
    from ..tensorboard import require_tensorboard

    require_tensorboard()
    check_writable(Path(args.tensorboard), "--tensorboard", folder=True)
    if args.image_every < 1:
        raise InvalidParameterError(f"--image-every must be >= 1 iterations; got {args.image_every}.")


def method_params(cls, args, preset: dict) -> dict:
    """The method's parameters from --param/config ``params``, the flags and the preset, each set once.

    Precedence is flag or --param (both for one key is an error), then the preset, then the CLI's own
    defaults (seed 0, a checkpoint every 100 iterations), then the method's.
    """
    names = cls._get_param_names()
    params = cls._checked_params(dict(args.params_dict))  # a renamed parameter's old name still works
    for key in params:
        if key in MANAGED:
            raise InvalidParameterError(f"Set {key!r} with {MANAGED[key]}, not as a method parameter.")
        if key in FLAGGED and getattr(args, FLAGGED[key]) is not None:
            flag = "--" + FLAGGED[key].replace("_", "-")
            raise InvalidParameterError(f"{key!r} is given twice, as {flag} and as a method parameter "
                                        f"(--param or the config's params); give it once.")
    params.update({k: getattr(args, d) for k, d in FLAGGED.items() if k in names and getattr(args, d) is not None})
    defaults = {**CLI_DEFAULTS, "ipc": preset["ipc"], **preset.get("params", {}).get(cls.name, {})}
    if cls().iterations != 0:  # selection baselines have none
        budget = preset["iterations"]
        defaults["iterations"] = budget.get(cls.name, budget["*"]) if isinstance(budget, dict) else budget
    params.update({k: v for k, v in defaults.items() if k in names and k not in params and v is not None})
    params["progress"] = not args.quiet and distributed.is_main()  # one progress bar under torchrun
    return params


def _resolved(args, out: Path) -> dict:
    """The resolved options, in a form --config accepts again, from any folder: its paths are absolute."""
    options = {a.dest for a in args._parser._actions} - {"help", "config", "param", "func", "_parser", "resume",
                                                         "overwrite"}
    resolved = {k: getattr(args, k) for k in sorted(options)}
    resolved["out"] = str(out.absolute())
    for key in ("data_root", "tensorboard"):
        if resolved[key] is not None:
            resolved[key] = str(Path(resolved[key]).absolute())
    resolved["params"] = dict(args.params_dict)
    return resolved


def _evaluator(args, preset, params):
    """The Evaluator for the set and the baseline, validated now (models, runs, epochs) so a typo costs no run."""
    from ..evaluate import Evaluator

    ev = Evaluator(args.eval_models, n_models=args.eval_runs if args.eval_runs is not None else preset["eval_runs"],
                   epochs=args.eval_epochs if args.eval_epochs is not None else preset["eval_epochs"],
                   augment=None if args.eval_augment == "none" else args.eval_augment,
                   random_state=params.get("random_state", 0), device=params.get("device"),
                   progress=not args.quiet and distributed.is_main())
    check_evaluator(ev)
    return ev


def _save_artefacts(method, data, out: Path) -> list[str]:
    """The set, its image grid, the loss curve and (DD) the learned step sizes; returns the file names."""
    from ..plots import plot_history, plot_step_sizes

    syn = method.synthetic_
    syn.save(out / "synthetic")
    syn.save_grid(out / "grid.png")
    written = ["synthetic.safetensors", "synthetic.json", "grid.png"]
    if any(method.history_.values()):
        plot_history(method.history_, out / "loss.png", title=f"{method.name} on {data.name}")
        written.append("loss.png")
    if syn.lrs is not None and method.name == "dd":
        plot_step_sizes(syn.lrs, method.steps, out / "step_sizes.png", title=f"{method.name}: learned step sizes")
        written.append("step_sizes.png")
    return written


def _evaluate(args, evaluator, method, data, report) -> None:
    """The standard protocol on the set and on a baseline of as many images per class; the method's own too."""
    from ..methods import get_method
    from ..utils import derive_seed

    seed, device = evaluator.random_state, evaluator.device
    syn = method.synthetic_
    sets = {args.method: syn}
    if args.baseline and args.baseline not in ("none", args.method):
        smallest = int(data.class_counts().min())
        if syn.ipc <= smallest:
            # its own stream: a random subset drawn with the method's seed could repeat the method's initial images
            sets[args.baseline] = get_method(args.baseline, ipc=syn.ipc, random_state=derive_seed(seed, f"baseline/{args.baseline}"),
                                             device=device).fit(data).synthetic_
        else:
            print(f"(no {args.baseline} baseline: the set has {syn.ipc} images per class, more than the smallest "
                  f"class of {data.name!r} ({smallest}))")
    rows = []
    for label, s in sets.items():
        print(f"evaluating the {label} set: {evaluator.n_models} x {', '.join(evaluator.models)} trained "
              f"{evaluator.epochs} epochs each", flush=True)  # the longest phase: say what it is doing
        res = evaluator.score(s, data)
        report["results"][label] = {k: v.to_dict() for k, v in res.items()}
        rows += result_rows(label, res)
    print(f"\n{data.name}, {syn.ipc} images per class, test accuracy (%) of nets trained on each set "
          f"({evaluator.epochs} epochs, augment={evaluator._strategy(data.name)}):")
    print(format_table(rows, ["set", "model", "accuracy", "nets", "epochs", "seconds"]))
    _say_if_not_ahead(args, report["results"])
    own = type(method).own_protocol(syn, data, n_models=evaluator.n_models, random_state=seed, device=device)
    if own is not None:
        report["own_protocol"] = own
        print(format_own(args.method, own))


def _say_if_not_ahead(args, results: dict) -> None:
    """A result within the baseline's spread is no win; say so rather than let the table suggest one."""
    if args.baseline not in results:
        return
    for model, r in results[args.method].items():
        b = results[args.baseline][model]
        if r["mean"] - r["std"] <= b["mean"] + b["std"]:
            print(f"note: on {model}, {args.method} is not ahead of the {args.baseline} baseline beyond the spread "
                  f"({r['mean']:.2f} ± {r['std']:.2f} vs {b['mean']:.2f} ± {b['std']:.2f}); distill longer "
                  "(--iterations) or use --preset paper.")
