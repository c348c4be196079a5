"""Entry point: registers each command module's parser and dispatches (accelerate's CLI shape)."""
from __future__ import annotations

import argparse
import sys

from ..errors import DistillsetError
from . import cache, distill, env, evaluate, listing, show

COMMANDS = (distill, evaluate, show, listing, env, cache)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillset", description="Dataset distillation: learn tiny synthetic training sets.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. A library error prints one line on stderr and exits 2."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # lets commands tell flags given explicitly from defaults (config files fill the rest)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (DistillsetError, ValueError, FileNotFoundError) as e:
        print(f"distillset {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
