"""``distillset experts``: train (or find in the cache) the expert trajectories trajectory matching needs.

A later ``distillset distill --method mtt`` with the same recipe reads them from the cache; an
interrupted run keeps the experts it finished and resumes at the next one when run again.
"""
from __future__ import annotations

from .._io import check_writable
from .common import add_data_options


def add_parser(sub) -> None:
    p = sub.add_parser("experts", help="train expert trajectories for MTT / DATM (cached, resumable)")
    p.add_argument("--dataset", default="digits", help="registered data set (distillset list datasets)")
    p.add_argument("--model", default="convnet", help="architecture (without BatchNorm)")
    p.add_argument("--num-experts", type=int, default=10)
    p.add_argument("--train-epochs", type=int, default=50, help="epochs per expert")
    p.add_argument("--lr-teacher", type=float, default=0.01)
    p.add_argument("--batch-train", type=int, default=256)
    p.add_argument("--augment", default="auto", help="DSA strategy while training ('auto', 'none', or a strategy)")
    p.add_argument("--zca", action="store_true", help="train on ZCA-whitened images (as MTT on CIFAR)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--seed", type=int, default=0, help="the experts' seed (MTT's expert_seed)")
    add_data_options(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import statistics

    from ..cache import prepared_folder
    from ..data import load_dataset
    from ..experts import EXPERT_CONSTRAINTS, train_experts
    from ..utils import resolve_device, validate_params

    kw = dict(model=args.model, num_experts=args.num_experts, train_epochs=args.train_epochs,
              lr_teacher=args.lr_teacher, batch_train=args.batch_train,
              augment=None if args.augment == "none" else args.augment, zca=args.zca, precision=args.precision,
              random_state=args.seed)
    validate_params("distillset experts", {k: v for k, v in kw.items() if k in EXPERT_CONSTRAINTS}, EXPERT_CONSTRAINTS,
                    flags={k: "--seed" if k == "random_state" else "--" + k.replace("_", "-") for k in kw})
    device = resolve_device(args.device)  # every check before the data is read or a network trained
    data = load_dataset(args.dataset, root=args.data_root, download=args.download)

    def cache_writable():  # keeping the experts is this command's purpose: refused before the first one trains
        check_writable(prepared_folder(), "$DISTILLSET_CACHE", folder=True)  # (a full read-only cache still serves)

    experts = train_experts(data, device=device, progress=not args.quiet, before_training=cache_writable, **kw)
    acc = experts.test_accuracy
    spread = statistics.pstdev(acc) if len(acc) > 1 else 0.0
    print(f"{len(acc)} experts on {data.name}: {experts.trajectories.shape[1]} weight vectors of {experts.num_params} "
          f"each; test accuracy {statistics.fmean(acc):.2f} ± {spread:.2f} % (reported only, never used for a choice)")
    return 0
