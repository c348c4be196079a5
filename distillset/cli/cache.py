"""``distillset cache {list,clear}``: the cache (``distillset.cache``): prepared entries and decoded images."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the cache: prepared pools and experts, decoded image folders")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--kind", default=None,
                   help="only entries of this kind: a method's name (e.g. dd, ncfm), expert, nas-real or decoded")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cache import cache_root, clear_cache, known_kinds, list_cache
    from ..errors import UnknownNameError

    kinds = {*known_kinds(), *(e["kind"] for e in list_cache())}  # a kind of one's own counts too
    if args.kind is not None and args.kind not in kinds:  # a typo must not read as "cleared"
        raise UnknownNameError("cache kind", args.kind, kinds)
    if args.action == "clear":
        print(f"deleted {clear_cache(args.kind)} entries from {cache_root()}")
        return 0
    entries = [e for e in list_cache() if args.kind is None or e["kind"] == args.kind]
    for e in entries:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(e["settings"].items()) if k != "data")
        print(f"{e['kind']:8s} {e['mib']:8.2f} MiB  v{e['version']}  {settings}  {e['path']}")
    print(f"{len(entries)} entries in {cache_root()}")
    return 0
