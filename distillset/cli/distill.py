"""``distillset distill``: distill a data set, save the set + grid, evaluate against a baseline.

With no arguments: DM on scikit-learn's ``digits`` at IPC 10, evaluated against the random-subset
baseline with the same protocol, in a few minutes on a laptop CPU.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from .common import apply_config, format_own, format_table, given_dests, parse_param, result_rows

# "quick" fits a laptop CPU; "paper" is the reference protocol (REFERENCE section 1)
PRESETS = {
    "quick": {"iterations": 300, "eval_epochs": 300, "eval_runs": 3},
    "paper": {"iterations": None, "eval_epochs": 1000, "eval_runs": 5},  # None: the method's own default
}


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="distill a data set into a small synthetic set", allow_abbrev=False,
                       description=__doc__, formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(prog))
    p.add_argument("--dataset", default="digits", help="registered data set (distillset list datasets)")
    p.add_argument("--method", default="dm", help="registered method (distillset list methods)")
    p.add_argument("--ipc", type=int, default=None,
                   help="images per class (DD: per class per step); default: the method's own (10; DD 1)")
    p.add_argument("--model", default=None, help="architecture used while distilling (default: the method's own)")
    p.add_argument("--iterations", type=int, default=None, help="outer iterations (default: from --preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<method>-ipc<ipc>)")
    p.add_argument("--config", default=None, help="YAML file of these options (flags override it; key 'params' for method parameters)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter, repeatable (e.g. lr_img=1.0)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="iteration/evaluation budget (default quick)")
    p.add_argument("--data-root", default=None, help="data root (default $DISTILLSET_DATA or ~/.cache/distillset/data)")
    p.add_argument("--download", action="store_true", help="download missing data files")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--eval-models", nargs="+", default=["convnet"], help="architectures to evaluate on")
    p.add_argument("--eval-runs", type=int, default=None, help="networks per architecture")
    p.add_argument("--eval-epochs", type=int, default=None)
    p.add_argument("--eval-augment", default="auto", help="DSA strategy during evaluation, 'none' to disable")
    p.add_argument("--baseline", default="random", help="baseline method evaluated alongside ('none' to skip)")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    from ..data import load_dataset
    from ..methods import METHODS, get_method

    args.params_dict = {}
    args = apply_config(args._parser, args, given_dests(args._parser, args.argv))  # config "params" -> params_dict
    args.params_dict.update(dict(parse_param(t) for t in args.param))  # --param beats the config file
    preset = PRESETS[args.preset]
    iterations = args.iterations if args.iterations is not None else preset["iterations"]
    defaults = METHODS.get(args.method)()  # the method's own defaults fill what the command line leaves open
    ipc = args.ipc if args.ipc is not None else defaults.ipc
    out = Path(args.out or f"runs/{args.dataset}-{args.method}-ipc{ipc}")
    out.mkdir(parents=True, exist_ok=True)

    data = load_dataset(args.dataset, root=args.data_root, download=args.download)
    core = dict(ipc=ipc, random_state=args.seed, device=args.device,
                checkpoint_dir=str(out / "checkpoint"), checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    if args.model is not None:
        core["model"] = args.model
    if iterations is not None and defaults.iterations != 0:  # selection baselines have none
        core["iterations"] = iterations
    method = get_method(args.method, **{**args.params_dict, **core})
    # the resolved options, in a form --config accepts again
    options = {a.dest for a in args._parser._actions} - {"help", "config", "param", "func", "_parser"}
    resolved = {k: getattr(args, k) for k in sorted(options)}
    resolved["params"] = dict(args.params_dict)
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=True))

    print(f"distilling {data.name} ({data.source}) with {args.method}, ipc={ipc}, "
          f"{method.iterations} iterations -> {out}", flush=True)
    t0 = time.perf_counter()
    method.fit(data, resume=args.resume)
    seconds = time.perf_counter() - t0
    artefacts = _save_artefacts(method, data, out)
    report = {"dataset": data.name, "source": data.source, "method": args.method, "ipc": ipc,
              "images_per_class": method.synthetic_.ipc, "distill_seconds": seconds, "params": method._json_params(),
              "seed": method.seed_, "final_loss": (method.history_.get("loss") or [None])[-1], "results": {}}
    if not args.no_eval:
        _evaluate(args, preset, method, data, report)
    (out / "result.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out}/{', '.join(artefacts + ['result.json', 'config.yaml'])}")
    return 0


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


def _evaluate(args, preset, method, data, report) -> None:
    """The standard protocol on the set and on a baseline of as many images per class; the method's own too."""
    from ..evaluate import Evaluator
    from ..methods import get_method

    eval_runs = args.eval_runs if args.eval_runs is not None else preset["eval_runs"]
    eval_epochs = args.eval_epochs if args.eval_epochs is not None else preset["eval_epochs"]
    evaluator = Evaluator(args.eval_models, n_models=eval_runs, epochs=eval_epochs,
                          augment=None if args.eval_augment == "none" else args.eval_augment,
                          random_state=args.seed, device=args.device)
    syn = method.synthetic_
    sets = {args.method: syn}
    if args.baseline and args.baseline not in ("none", args.method):
        smallest = int(data.class_counts().min())
        if syn.ipc <= smallest:
            sets[args.baseline] = get_method(args.baseline, ipc=syn.ipc, random_state=args.seed,
                                             device=args.device).fit(data).synthetic_
        else:
            print(f"(no {args.baseline} baseline: the set has {syn.ipc} images per class, more than the smallest "
                  f"class of {data.name!r} ({smallest}))")
    rows = []
    for label, s in sets.items():
        res = evaluator.score(s, data)
        report["results"][label] = {k: v.to_dict() for k, v in res.items()}
        rows += result_rows(label, res)
    print(f"\n{data.name}, {syn.ipc} images per class, test accuracy (%) of nets trained on each set "
          f"({eval_epochs} epochs, augment={evaluator._strategy(data.name)}):")
    print(format_table(rows, ["set", "model", "accuracy", "nets", "epochs", "seconds"]))
    own = type(method).own_protocol(syn, data, n_models=eval_runs, random_state=args.seed, device=args.device)
    if own is not None:
        report["own_protocol"] = own
        print(format_own(args.method, own))
