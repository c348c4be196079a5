"""Get a data set onto a lent GPU machine, whose calls carry at most 64 MiB (repository included).

The CIFAR-10 JPEG copy is 58 MiB of image files and the repository ~15 MiB, so it cannot travel in one
call. ``pack`` stores it uncompressed (JPEG does not compress further) in parts that each fit beside the
repository: part ``a`` the README, the test split and the first half of the training classes, part ``b``
the rest. Each part goes in its own call (``carry``); the machine keeps ignored paths between calls while
it stays warm (30 s idle), so the second call follows the first at once and unpacks both::

    python benchmarks/gpu_data.py pack cifar10-jpeg              # here: .gpu/cifar10-jpeg-{a,b}.zip
    # device call 1, carry [".gpu/cifar10-jpeg-a.zip"]:
    python3 benchmarks/gpu_data.py unpack .gpu/cifar10-jpeg-a.zip
    # device call 2, carry [".gpu/cifar10-jpeg-b.zip"], then the run:
    python3 benchmarks/gpu_data.py unpack .gpu/cifar10-jpeg-b.zip && export DISTILLSET_DATA=$PWD/.gpu/data && ...

The files come out byte for byte (records hash the data they read, so a GPU record shows it).
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPU = HERE.parent / ".gpu"  # ignored by git: carried by name, kept on the machine between calls


def pack(name: str, data_root: Path, out: Path = GPU) -> list[Path]:
    """``data_root/name`` as two stored zips: (README, test, first half of the train classes), (the rest)."""
    root = data_root / name
    if not (root / "train").is_dir():
        raise SystemExit(f"{root} has no train/ folder; give a data set in image-folder form, e.g. cifar10-jpeg")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    half = len(classes) // 2
    parts = {"a": [p for p in root.iterdir() if p.is_file()] + [root / "test"]
             + [root / "train" / c for c in classes[:half]],
             "b": [root / "train" / c for c in classes[half:]]}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for part, paths in parts.items():
        target = out / f"{name}-{part}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
            for path in paths:
                for f in sorted([path] if path.is_file() else path.rglob("*")):
                    if f.is_file():
                        z.write(f, f.relative_to(data_root))
        written.append(target)
    return written


def unpack(archive: Path, out: Path = GPU / "data") -> Path:
    if not archive.is_file():
        raise SystemExit(f"no part {archive}: carry it in this call (carry: [\"{archive}\"]) or run pack first")
    with zipfile.ZipFile(archive) as z:
        z.extractall(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    a = sub.add_parser("pack", help="here: split a data set into parts that each travel in one call")
    a.add_argument("name", help="a folder under the data root, e.g. cifar10-jpeg")
    a.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    b = sub.add_parser("unpack", help="on the machine: extract one part into .gpu/data")
    b.add_argument("archive")
    args = p.parse_args(argv)
    if args.verb == "pack":
        for path in pack(args.name, Path(args.data_root)):
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    else:
        print(f"unpacked into {unpack(Path(args.archive))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
