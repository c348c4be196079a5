"""``distillset evaluate SET``: train fresh networks on a saved set and test them on the real test set."""
from __future__ import annotations

import json
from pathlib import Path

from .common import format_own, format_table, result_rows


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved synthetic set (the standard protocol, or the method's own)",
                       allow_abbrev=False)
    p.add_argument("path", help="a saved set (its .json, .safetensors or common stem)")
    p.add_argument("--models", nargs="+", default=["convnet"], help="architectures (cross-architecture table)")
    p.add_argument("--runs", type=int, default=5, help="networks per architecture")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--augment", default="auto", help="DSA strategy during training ('auto', 'none', or a strategy)")
    p.add_argument("--loss", choices=["ce", "mse"], default="ce")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--protocol", choices=["standard", "own"], default="standard",
                   help="'own': the method's own evaluation where it has one (DD: its learned steps and step sizes; "
                        "uses --runs, --seed and --device only)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_dataset
    from ..evaluate import Evaluator
    from ..synthetic import SyntheticSet

    syn = SyntheticSet.load(args.path)
    if "dataset" not in syn.meta:
        raise ValueError(f"{args.path} has no 'dataset' in its metadata; cannot tell which test set to use.")
    data = load_dataset(syn.meta["dataset"], root=args.data_root)
    if args.protocol == "own":
        return run_own(args, syn, data)
    ev = Evaluator(args.models, n_models=args.runs, epochs=args.epochs,
                   augment=None if args.augment == "none" else args.augment, loss=args.loss,
                   random_state=args.seed, device=args.device)
    results = ev.score(syn, data)
    label = f"{syn.meta.get('method', '?')} ipc {syn.ipc}"
    print(f"{data.name} ({data.source}): test accuracy (%), {args.epochs} epochs, augment={ev._strategy(data.name)}")
    print(format_table(result_rows(label, results), ["set", "model", "accuracy", "nets", "epochs", "seconds"]))
    if args.json:
        Path(args.json).write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))
    return 0


def run_own(args, syn, data) -> int:
    from ..methods import METHODS

    method = syn.meta.get("method")
    if method is None:
        raise ValueError(f"{args.path} records no method in its metadata, so it has no own protocol; "
                         "use --protocol standard.")
    own = METHODS.get(method).own_protocol(syn, data, n_models=args.runs, random_state=args.seed, device=args.device)
    if own is None:
        raise ValueError(f"Method {method!r} has no own evaluation protocol; use --protocol standard.")
    print(format_own(method, own))
    if args.json:
        Path(args.json).write_text(json.dumps(own, indent=2))
    return 0
