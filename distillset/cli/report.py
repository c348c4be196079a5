"""``distillset report``: one self-contained HTML page for one or many run folders.

Each RUN_DIR is the --out folder of a ``distillset distill`` run (finished, or still running: then its
settings and losses so far). With several, the page opens with a comparison table and accuracy-vs-IPC
and accuracy-vs-budget plots. The page inlines every image and needs no network or server.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import OutputError, check_named_once
from .common import check_new_file, path_arg


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML report of one or more runs", description=__doc__, allow_abbrev=False,
                       formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(prog))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", type=path_arg, help="run folders (the --out of distillset distill)")
    p.add_argument("-o", "--output", type=path_arg, default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--title", default=None, help="the page's title (default: the run's name, or 'distillset report')")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=run)


def _is_html_page(path: Path) -> bool:
    """``path`` starts as an HTML page does (as every report distillset writes)."""
    try:
        with path.open("rb") as f:
            head = f.read(64).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html"))


def run(args) -> int:
    from ..report import load_run, render_report

    out = Path(args.output)
    check_named_once([str(Path(folder).resolve()) for folder in args.runs], " among the RUN_DIRs")
    # even with --overwrite only a page is replaced: a run's result.json or a saved set's .json is the user's work
    if out.is_file() and not _is_html_page(out):
        raise OutputError(f"--output {out} exists and is no HTML page (--overwrite replaces only a page); write the "
                          f"page elsewhere, e.g. {out.with_suffix('.html')}.")
    check_new_file(out, "--output", args.overwrite)
    views = [load_run(folder) for folder in args.runs]  # every folder read before the page is written
    title = args.title or (f"distillset report: {views[0].name}" if len(views) == 1 else "distillset report")
    render_report(views, out, title=title)
    print(f"wrote {out} ({len(views)} run{'s' if len(views) > 1 else ''})")
    return 0
