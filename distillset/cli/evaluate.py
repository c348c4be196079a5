"""``distillset evaluate SET``: train fresh networks on a saved set and test them on the real test set.

Defaults to the quick preset, like ``distill`` (3 nets x 300 epochs); ``--preset paper`` is the
reference protocol (5 nets x 1000 epochs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import distributed
from .._io import atomic_write, check_writable
from ..errors import InvalidParameterError
from .common import (PRESETS, add_data_options, check_evaluator, check_new_file, format_own,
                     format_table, path_arg, refuse_the_sets_own_file, result_rows)


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved synthetic set (the standard protocol, or the method's own)",
                       allow_abbrev=False, description=__doc__)
    p.add_argument("path", help="a saved set (its .json, .safetensors or common stem)")
    p.add_argument("--models", nargs="+", default=["convnet"], help="architectures (cross-architecture table)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="budget: quick (3 nets x 300 epochs, default) or paper (5 x 1000)")
    p.add_argument("--runs", type=int, default=None, help="networks per architecture (default: from --preset)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: from --preset)")
    p.add_argument("--augment", default="auto", help="DSA strategy during training ('auto', 'none', or a strategy)")
    p.add_argument("--loss", choices=["ce", "mse"], default=None,
                   help="training loss (default: the one the set's labels need, as recorded in the set; "
                        "a different value warns)")
    p.add_argument("--lr", type=_lr, nargs="+", default=None,
                   help="learning rate (default 0.01; --protocol long: 0.001), or 'learned' (the step size an MTT/DATM "
                        "set carries); several = keep the best on the validation split (needs --val-per-class)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="hold out this many training images per class as a validation split for the choices")
    p.add_argument("--checkpoint", choices=["last", "best_val"], default="last",
                   help="test the last weights, or those best on the validation split (needs --val-per-class)")
    p.add_argument("--seed", type=int, default=0)
    add_data_options(p)
    p.add_argument("--device", default=None)
    p.add_argument("--protocol", choices=["standard", "long", "own"], default="standard",
                   help="'long': NCFM's training recipe (AdamW 1e-3, wd 0.01, batch 128, lr x0.5 at each fifth, CutMix "
                        "0.5; 2000 epochs unless --epochs); 'own': the method's own evaluation where it has one (DD: its "
                        "learned steps and step sizes; uses --runs, --seed and --device only)")
    p.add_argument("--resume-dir", type=path_arg, default=None,
                   help="keep each trained network in this folder; the same command again after an interruption "
                        "loads the networks kept there instead of training them again")
    p.add_argument("--json", type=path_arg, default=None, help="write the results to this JSON file (a new one unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_dataset
    from ..evaluate import PROTOCOLS, Evaluator
    from ..synthetic import SyntheticSet

    args.after_interrupt = lambda: _after_interrupt(args)
    preset = PRESETS[args.preset]
    runs = args.runs if args.runs is not None else preset["eval_runs"]
    recipe = dict(PROTOCOLS["long"]) if args.protocol == "long" else {"epochs": preset["eval_epochs"]}
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    if args.lr is not None:
        recipe["lr"] = args.lr[0] if len(args.lr) == 1 else args.lr
    epochs = recipe["epochs"]
    ev = Evaluator(args.models, n_models=runs, augment=None if args.augment == "none" else args.augment,
                   loss=args.loss, val_per_class=args.val_per_class, checkpoint=args.checkpoint,
                   random_state=args.seed, device=args.device, resume_dir=args.resume_dir, progress=not args.quiet and distributed.is_main(), **recipe)
    # before any reading: a typo costs nothing
    check_evaluator(ev, {"n_models": "--runs", "epochs": "--epochs", "lr": "--lr", "random_state": "--seed"})
    if args.json:
        check_new_file(Path(args.json), "--json", args.overwrite)
        refuse_the_sets_own_file(Path(args.json), args.path, "--json", "evaluated")
    if args.resume_dir and args.protocol == "own":
        raise InvalidParameterError("--resume-dir keeps networks of the standard and long protocols; a method's own "
                                    "protocol keeps none. Drop --resume-dir or use --protocol standard.")
    if args.resume_dir:
        check_writable(Path(args.resume_dir), "--resume-dir", folder=True)
    syn = SyntheticSet.load(args.path)
    if "dataset" not in syn.meta:
        raise InvalidParameterError(f"{args.path} has no 'dataset' in its metadata, so the test set is unknown; "
                                    "add it to the .json (e.g. \"dataset\": \"mnist\").")
    if args.protocol != "own":
        ev._lrs(syn)  # --lr learned on a set without a learned step size: before the data is read
    data = load_dataset(syn.meta["dataset"], root=args.data_root, download=args.download)
    if args.protocol == "own":
        return run_own(args, syn, data, runs)
    ev._check(syn, data)  # what depends on the data (e.g. --val-per-class beyond a class), before the work line
    print(f"evaluating {args.path}: {runs} x {', '.join(args.models)} trained {epochs} epochs each", flush=True)
    results = ev.score(syn, data)
    label = f"{syn.meta.get('method', '?')} ipc {syn.ipc}"
    loss = next(iter(results.values())).loss
    print(f"{data.name} ({data.source}): test accuracy (%), {epochs} epochs, augment={ev._strategy(data.name)}, "
          f"loss={loss} ({syn.label_kind} labels)")
    print(format_table(result_rows(label, results), ["set", "model", "accuracy", "nets", "epochs", "seconds"]))
    for name, r in results.items():
        if r.extra.get("val_per_class"):  # what the validation split chose: the test set played no part in it
            print(f"{name}: chose lr {r.extra['lr']} and the {r.extra['checkpoint']} checkpoint (epochs "
                  f"{r.extra['epochs_kept']}) on {r.extra['val_per_class']} validation images per class")
        if r.extra.get("resumed_networks"):
            print(f"{name}: {r.extra['resumed_networks']} network(s) loaded from {args.resume_dir}, not trained again")
    if args.json and distributed.is_main():  # under torchrun the networks are spread, the file written once
        atomic_write(args.json, json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))
    return 0


def _after_interrupt(args) -> str:
    if args.protocol == "own":  # keeps no networks, and takes no --resume-dir
        return "interrupted; rerun the command"
    if args.resume_dir:
        return (f"interrupted; any network that finished is kept in {args.resume_dir}: rerun the same command to "
                "train only the rest")
    return "interrupted; no network was kept (--resume-dir DIR keeps each as it finishes): rerun the command"


def run_own(args, syn, data, runs: int) -> int:
    from ..methods import METHODS

    method = syn.meta.get("method")
    if method is None:
        raise InvalidParameterError(f"{args.path} records no method in its metadata, so it has no own protocol; "
                                    "use --protocol standard.")
    own = METHODS.get(method).own_protocol(syn, data, n_models=runs, random_state=args.seed, device=args.device)
    if own is None:
        raise InvalidParameterError(f"Method {method!r} has no own evaluation protocol; use --protocol standard.")
    print(format_own(method, own))
    if args.json and distributed.is_main():
        atomic_write(args.json, json.dumps(own, indent=2))
    return 0


def _lr(text: str) -> float | str:
    """``--lr`` values: a number or the word ``learned``."""
    if text == "learned":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'learned', got {text!r}") from None
