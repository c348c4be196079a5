"""Entry point: registers each command module's parser and dispatches (accelerate's CLI shape).

The error boundary of the whole library: a :class:`DistillsetError` or ``OSError`` becomes one line
on stderr (the problem and the fix) and exit code 2, a diverged run exit code 1; ``--debug`` shows
the traceback instead. Command modules import torch lazily, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings

from ..errors import DistillsetError, DivergenceError, InvalidParameterError
from . import applications, cache, distill, env, evaluate, experts, listing, report, show

COMMANDS = (distill, evaluate, experts, show, report, applications, listing, env, cache)

# what Ctrl-C leaves behind differs; a command that got as far as its output sets args.after_interrupt, which
# reads what is on disk then (a checkpoint, the networks or results kept so far)
INTERRUPTED = {"distill": "interrupted before the run started; rerun the same command",
               "experts": "interrupted; the experts that finished are kept in the cache: rerun the same command to "
                          "train the rest",
               **dict.fromkeys(("continual", "nas", "audit-mia"),
                               "interrupted; nothing was kept: rerun the same command to start again")}


def interrupted(args) -> str:
    """The line a Ctrl-C (or SIGTERM) ends a command with: what it left, and how to go on."""
    after = getattr(args, "after_interrupt", None)
    return after() if after is not None else INTERRUPTED.get(args.command, "interrupted")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the full usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="distillset", description="Dataset distillation: learn tiny synthetic training sets.",
                    allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, 1 for a diverged run, 2 for an error, 130 if interrupted,
    143 if terminated)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return int(e.code or 0)
    args.argv = argv  # lets commands tell flags given explicitly from defaults (config files fill the rest)
    if args.command is None:
        parser.print_help()
        return 0
    where = ""
    try:
        with sigterm_as_interrupt(), processes(args) as where, warnings.catch_warnings(), one_line_warnings(args.command):
            # an old parameter name still works; say so (Python hides DeprecationWarning by default)
            warnings.filterwarnings("default", message=r"The '.*' parameter of .* is now called", category=DeprecationWarning)
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of our output stopped (`distillset list ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush is quiet too
        return 0
    except (DistillsetError, OSError) as e:
        if args.debug:
            raise
        print(f"distillset {args.command}: {where}error: {describe(e)}", file=sys.stderr)
        return 1 if isinstance(e, DivergenceError) else 2
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        print(interrupted(args), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except RuntimeError as e:  # a collective that failed: another process died or stopped answering
        if args.debug or not where or not _collective_failure(e):
            raise
        print(f"distillset {args.command}: {where}error: another process failed or stopped answering "
              f"({' '.join(str(e).split())[:200]}); {AFTER_FAILURE[args.command]}", file=sys.stderr)
        return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit, torchrun ending its processes)."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends a command as Ctrl-C does, so that its cleanup runs: the folder of a command that wrote
    nothing yet is removed (it was left empty), a run keeps its last checkpoint. Main thread only (Python
    installs signal handlers there alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once (cleanup can wait on a
        raise Terminated()                             # network being trained, or on a collective)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Each warning as one line, like the errors (Python's format adds the library's file, line and source)."""
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"distillset {command}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = original


# what a user does after a process of a torchrun run failed
AFTER_FAILURE = {"distill": "the last checkpoint is intact: rerun with --resume.",
                 "evaluate": "rerun the command (networks kept in a --resume-dir are not trained again)."}


def _collective_failure(e: RuntimeError) -> bool:
    """An error of torch.distributed itself (not e.g. CUDA out of memory inside one process)."""
    import torch.distributed as dist

    return isinstance(e, dist.DistError) or any(w in str(e) for w in ("gloo", "NCCL", "Connection closed", "timed out"))


@contextlib.contextmanager
def processes(args):
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group for the command, let rank 0 alone print,
    and yield the prefix of this process's error lines ("rank R: "); else yield ""."""
    from .. import distributed
    from ..utils import check_environment

    check_environment()
    if distributed.world_size_from_env() > 1 and args.command not in AFTER_FAILURE:
        raise InvalidParameterError(f"'distillset {args.command}' runs in one process; under torchrun only "
                                    f"{' and '.join(AFTER_FAILURE)} split their work. Run it without torchrun.")
    if not distributed.init_from_env(getattr(args, "device", None)):
        yield ""
        return
    import torch.distributed as dist

    quiet = None if dist.get_rank() == 0 else open(os.devnull, "w")
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext(), distributed.enabled():
            yield f"rank {distributed.rank()}: "
        dist.barrier()  # leave together: a rank that tears its group down while rank 0 still writes can abort
    finally:
        if quiet:
            quiet.close()
        dist.destroy_process_group()


def describe(e: BaseException) -> str:
    """One line: our messages already name the problem and the fix; an ``OSError`` gets a fix added."""
    if isinstance(e, OSError) and not isinstance(e, DistillsetError) and e.filename is not None:
        text = f"{e.strerror or e}: {e.filename}. Check that the path exists and that you may write there"
    else:
        text = str(e)
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
