"""``distillset list {datasets,methods,models,kernels}``."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered data sets, methods, models or kernels")
    p.add_argument("what", choices=["datasets", "methods", "models", "kernels"])
    p.set_defaults(func=run)


def run(args) -> int:
    if args.what == "datasets":
        from ..data import DATASETS

        for name in DATASETS.names():
            spec = DATASETS.get(name)
            print(f"{name:16s} {spec.source or spec.description}")
    elif args.what == "methods":
        from ..methods import METHODS

        for name in METHODS.names():
            doc = ((METHODS.get(name).__doc__ or "").strip().splitlines() or [""])[0]
            print(f"{name:10s} {doc}")
    elif args.what == "kernels":
        from ..kernels import KERNELS

        for name in KERNELS.names():
            doc = " ".join((KERNELS.get(name).__doc__ or "").split())
            print(f"{name:12s} {doc}")
    else:
        from ..models import list_models

        print("\n".join(list_models()))
    return 0
