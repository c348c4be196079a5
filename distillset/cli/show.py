"""``distillset show SET``: metadata and an image grid of a saved synthetic set."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import OutputError
from .._io import check_writable
from .common import path_arg, refuse_the_sets_own_file


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="print a saved set's metadata and write its image grid")
    p.add_argument("path", help="a saved set (its .json, .safetensors or common stem)")
    p.add_argument("--grid", type=path_arg, default=None, help="PNG to write (default: <stem>_grid.png, redrawn if show drew it; "
                   "any other file there is kept unless --overwrite)")
    p.add_argument("--pngs", type=path_arg, default=None, help="also write one PNG per image into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --grid file or PNGs in --pngs")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..synthetic import SyntheticSet, drawn_by_save_grid, set_stem

    grid = Path(args.grid) if args.grid else Path(str(set_stem(args.path)) + "_grid.png")
    refuse_the_sets_own_file(grid, args.path, "--grid", "shown")
    check_writable(grid, "--grid", folder=False)
    if grid.exists() and not args.overwrite and (args.grid or not drawn_by_save_grid(grid)):
        where = f"--grid {grid}" if args.grid else f"the default grid path {grid}"  # redrawn only if show drew it
        raise OutputError(f"{where} exists{'' if args.grid else ' and is not a grid distillset drew'}; pass "
                          "--overwrite to replace it, or choose another --grid.")
    if args.pngs:
        check_writable(Path(args.pngs), "--pngs", folder=True)
    s = SyntheticSet.load(args.path)  # validated: every image has a label in range, so none is dropped
    clash = [p for p in s.png_paths(args.pngs) if p.exists()] if args.pngs and not args.overwrite else []
    if clash:
        raise OutputError(f"--pngs {args.pngs} already holds {clash[0].name} (and {len(clash) - 1} more of this set's "
                          "PNGs); pass --overwrite to replace them, or choose another --pngs.")
    print(json.dumps(s.meta, indent=2, sort_keys=True))
    factor = s.meta.get("factor", 1)
    print(f"images: {tuple(s.images.shape)}  labels: {tuple(s.labels.shape)} ({s.label_kind}, trained with {s.loss})"
          f"  ipc: {s.ipc}" + (f" (each image holds {factor}x{factor})" if factor > 1 else "")
          + (f"  learned steps: {len(s.lrs)}" if s.lrs is not None else ""))
    if s.lrs is not None:
        print("learned step sizes: " + " ".join(f"{v:.4g}" for v in s.lrs.tolist()))
    s.save_grid(grid)
    print(f"grid: {grid}")
    if args.pngs:
        print(f"pngs: {len(s.save_pngs(args.pngs))} files in {args.pngs}")
    return 0
