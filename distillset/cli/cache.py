"""``distillset cache {list,clear}``: the preparation cache (``distillset.cache``)."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list or clear cached preparation (e.g. DD's pretrained pools)")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--kind", default=None, help="only entries of this kind (the method name, e.g. dd)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cache import cache_root, clear_cache, list_cache

    kinds = sorted({e["kind"] for e in list_cache()})
    if args.kind is not None and args.kind not in kinds:  # a typo must not read as "cleared"
        print(f"no entries of kind {args.kind!r} in {cache_root()}; kinds there: {', '.join(kinds) or 'none'}")
        return 0
    if args.action == "clear":
        print(f"deleted {clear_cache(args.kind)} entries from {cache_root()}")
        return 0
    entries = [e for e in list_cache() if args.kind is None or e["kind"] == args.kind]
    for e in entries:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(e["settings"].items()) if k != "data")
        print(f"{e['kind']:6s} {e['mib']:8.2f} MiB  v{e['version']}  {settings}  {e['path']}")
    print(f"{len(entries)} entries in {cache_root()}")
    return 0
