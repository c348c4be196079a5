"""Helpers shared by CLI commands: presets, YAML config merging, output checks and result tables.

Everything here runs before any real work, so a bad option ends the command with one line and
without a file written. Imports stay light (no torch): ``distillset --help`` must be instant.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
from pathlib import Path

import yaml

from .._io import check_writable
from ..errors import InvalidParameterError, OutputError, check_named_once

# "quick" fits a laptop CPU in about a minute (the README's numbers); "paper" is the reference protocol
# quick: about a minute on 2 cores for DM (1000 iterations on digits; 300 left it within the spread of the
# random subset on one seed of three), a few minutes for the costlier methods at 300
PRESETS = {
    # quick: minutes on 2 CPU cores, so the methods that train networks first (experts, pools) train few and short
    "quick": {"ipc": 1, "iterations": {"dm": 1000, "*": 300}, "eval_epochs": 300, "eval_runs": 3,
              "params": {"mtt": {"num_experts": 2, "train_epochs": 3, "max_start_epoch": 2, "syn_steps": 10},
                         "datm": {"num_experts": 2, "train_epochs": 3, "max_start_epoch": 2, "syn_steps": 10},
                         "dance": {"num_experts": 2, "train_epochs": 2},
                         "ncfm": {"num_experts": 2, "train_epochs": 2}}},
    "paper": {"ipc": None, "iterations": None, "eval_epochs": 1000, "eval_runs": 5},  # None: the method's own
}


def path_arg(text: str) -> str:
    """argparse type of every path option: an empty path (an unset shell variable, say) is a usage error,
    not the current folder or the option's default; a leading ``~`` is the home folder (``--out=~/x`` and
    config files, where no shell expands it), not a folder named ``~``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty (an unset shell variable?); give a path")
    return os.path.expanduser(text)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data-root and --download, the same in every command that reads a data set."""
    p.add_argument("--data-root", type=path_arg, default=None,
                   help="data root (default $DISTILLSET_DATA or ~/.cache/distillset/data)")
    p.add_argument("--download", action="store_true", help="download missing data files")


def parse_param(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as YAML (so numbers, booleans and lists get their types)."""
    if "=" not in text:
        raise InvalidParameterError(f"Method parameter {text!r} must look like key=value (e.g. lr_img=1.0).")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), _yaml_number(yaml.safe_load(value))
    except yaml.YAMLError as e:
        raise InvalidParameterError(f"Method parameter {text!r}: the value is not valid YAML "
                                    f"({_first_line(e)}); quote it.") from None


def parse_params(texts: list[str]) -> list[tuple[str, object]]:
    """Every ``--param key=value`` as (key, value), in order; each key once (a key given twice kept its last
    value silently)."""
    pairs = [parse_param(t) for t in texts]
    check_named_once([key for key, _ in pairs], " in --param")
    return pairs


# YAML 1.1 (PyYAML) reads 1e-3 as a string; every user means the number
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_number(value):
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value) else value


class _GivenTwice(ValueError):
    pass


class _OnceLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}  # key -> its text where first given
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then a key of base's: an override
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # a list as a key: PyYAML's own error says so below
                continue
            if key in seen:  # (1, 1.0 and true are one key to the dict YAML builds)
                first = "" if seen[key] == key_node.value else f", as {seen[key]!r} before"
                raise _GivenTwice(f"{key_node.value!r} is given twice (line {key_node.start_mark.line + 1}{first}); "
                                  "give it once")
            seen[key] = key_node.value
        return super().construct_mapping(node, deep)


def load_config(path: str | Path) -> dict:
    """A YAML mapping from ``path``; any other content is an error naming the file."""
    path = Path(path)
    if path.is_dir():
        raise InvalidParameterError(f"Config {path} is a folder; --config takes a YAML file.")
    if not path.is_file():
        raise InvalidParameterError(f"Config file not found: {path}. Check the --config path.")
    try:
        cfg = yaml.load(path.read_text(), Loader=_OnceLoader)
    except _GivenTwice as e:
        raise InvalidParameterError(f"Config {path}: {e}.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidParameterError(f"Config {path} is not valid YAML ({_first_line(e)}).") from None
    if not isinstance(cfg, (dict, type(None))):
        raise InvalidParameterError(f"Config {path} must be a YAML mapping of option: value. "
                                    f"Got a {type(cfg).__name__}.")
    return cfg or {}


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv_given: set[str]) -> argparse.Namespace:
    """Fill options not given on the command line from ``args.config`` (YAML), checked like flags.

    Unknown keys, wrong types and values outside an option's choices are errors; the key ``params``
    (a mapping) holds method parameters, which ``--param`` flags override key by key.
    """
    args.params_dict = {}
    if getattr(args, "config", None):
        path = args.config
        actions = {a.dest: a for a in parser._actions if a.dest not in ("config", "help", "param")}
        for key, value in load_config(path).items():
            dest = str(key).replace("-", "_")
            if dest == "params":
                if not isinstance(value, dict):
                    raise InvalidParameterError(f"Config {path}: 'params' must be a mapping of method parameter: value.")
                args.params_dict = {str(k).replace("-", "_"): _yaml_number(v) for k, v in value.items()}
            elif dest not in actions:
                raise InvalidParameterError(f"Unknown key {key!r} in config {path}. Known keys: "
                                            f"{', '.join(sorted(actions))}, params.")
            elif dest not in argv_given:
                setattr(args, dest, _config_value(actions[dest], key, value, path))
    args.params_dict.update(dict(parse_params(args.param)))  # --param beats the config file
    return args


def _config_value(action: argparse.Action, key: str, value, path):
    """``value`` checked as argparse would check the flag (type, choices, list-ness)."""
    if isinstance(action, argparse._StoreTrueAction):
        ok = isinstance(value, bool)
    elif value is None:
        ok = True
    elif action.nargs == "+":
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    elif action.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if ok and action.type is path_arg and value is not None:  # "" would fall back to the default folder
        try:
            value = path_arg(value)
        except argparse.ArgumentTypeError as e:
            raise InvalidParameterError(f"Config {path}: {key}: {e}.") from None
    if ok and action.choices is not None and value not in action.choices:
        raise InvalidParameterError(f"Config {path}: {key}: {value!r} is not one of {', '.join(action.choices)}.")
    if not ok:
        kind = ("true or false" if isinstance(action, argparse._StoreTrueAction) else
                "a list of names" if action.nargs == "+" else "an int" if action.type is int else "a string")
        raise InvalidParameterError(f"Config {path}: {key} must be {kind}. Got {value!r}.")
    return value


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which option destinations appear explicitly in ``argv`` (so config files don't override them)."""
    out = set()
    for action in parser._actions:
        if any(a == s or a.startswith(s + "=") for a in argv for s in action.option_strings):
            out.add(action.dest)
    return out


EVAL_FLAGS = {"n_models": "--eval-runs", "epochs": "--eval-epochs"}  # distill's and the applications' names


def check_evaluator(ev, flags: dict[str, str] = EVAL_FLAGS) -> None:
    """Validate an ``Evaluator``'s options now (parameters, model names, augmentation, device), not after a run.

    ``flags`` maps an Evaluator parameter to the command's flag for it, so a bad value names what was typed."""
    from ..augment import check_augment
    from .._registry import parse_spec
    from ..models import MODELS, canonical_model_name
    from ..utils import resolve_device, validate_params

    validate_params("Evaluator", vars(ev), ev._parameter_constraints, flags)
    if ev.epochs == 0:  # the API allows it (speed.py times a set-up); a command's table would score untrained nets
        raise InvalidParameterError(f"{flags.get('epochs', '--epochs')} 0 would score untrained networks; give >= 1.")
    if ((isinstance(ev.lr, (list, tuple)) and len(ev.lr) > 1) or ev.checkpoint == "best_val") and ev.val_per_class is None:
        raise InvalidParameterError("Several --lr values or --checkpoint best_val need a validation split: add "
                                    "--val-per-class N (the test set is never used for a choice).")
    for name in [ev.models] if isinstance(ev.models, str) else ev.models:
        MODELS.get(canonical_model_name(parse_spec(name, "model")[0]))  # a spec: "convnet(width=64)"
    check_augment(ev.augment)
    resolve_device(ev.device)


# ---------------------------------------------------------------------------------- output paths


def refuse_the_sets_own_file(out: Path, set_path: str, flag: str, what: str) -> None:
    """``out`` may not be a file of the set at ``set_path``, even with --overwrite (it would replace the set)."""
    from ..synthetic import set_stem

    stem = set_stem(set_path)
    for suffix in (".json", ".safetensors"):
        mine = Path(f"{stem}{suffix}")
        same = os.path.samefile(out, mine) if out.exists() and mine.exists() else out.resolve() == mine.resolve()
        if same:  # samefile: also a case-insensitive file system's other spelling
            raise OutputError(f"{flag} {out} is a file of the set being {what}; write it elsewhere.")


def check_new_file(path: Path, flag: str, overwrite: bool) -> None:
    """:func:`check_writable` for a file, and an existing one is kept unless the user passed --overwrite."""
    check_writable(path, flag, folder=False)
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another {flag}.")


def check_run_folder(out: Path, resume: bool, overwrite: bool, marks: tuple[str, ...], resumable: bool = True) -> None:
    """A run folder must be new or empty, unless the user asked to continue (--resume) or replace the run
    in it (--overwrite: only where one of ``marks``, the files a run of this command leaves, shows one).
    ``resumable=False``: the command has no --resume, and the advice does not name one."""
    if resume and overwrite:
        raise InvalidParameterError("--resume and --overwrite contradict each other; pass one of them.")
    check_writable(out, "--out", folder=True)
    try:
        str(out).encode("utf-8")  # the run's records and report name their folder
    except UnicodeEncodeError:
        raise OutputError(f"--out {str(out)!r} is not valid UTF-8 (its records and report could not name it); "
                          "choose another --out.") from None
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not (resume or overwrite):
        continuing = "--resume to continue that run, " if resumable else ""
        raise OutputError(f"--out {out} already holds files; pass {continuing}--overwrite to replace it, or choose "
                          "another --out.")
    if overwrite and not any(shows_run(out / m) for m in marks):  # the user's own files, not a run's
        raise OutputError(f"--out {out} holds files but no run to replace (no {', '.join(marks)} written by "
                          "distillset): --overwrite replaces a run's own files only; choose another --out.")


# the first line of the config.yaml a run writes first: a run killed before its first checkpoint is still a run
RUN_CONFIG_HEADER = "# the options of this distillset run (distillset distill --config takes this file)\n"


def shows_run(path: Path) -> bool:
    """``path`` is a file a run wrote: any such file, but a YAML file only with :data:`RUN_CONFIG_HEADER`
    (a config.yaml of the user's own is theirs)."""
    if path.suffix != ".yaml":
        return path.is_file()
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline() == RUN_CONFIG_HEADER
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def run_folder(out: Path, previous: tuple[str, ...] = (), keep: str = "checkpoint/checkpoint*", resume: bool = False):
    """Create ``out`` and hold it for this command; ``previous`` names the old run's files to delete
    (``--overwrite``); ``resume``: --resume continues the run in it. Otherwise it must still be empty.

    If the command then fails before it has written a file matching ``keep`` (a checkpoint; an
    application's record), the folders it created are removed again: a failed command leaves nothing
    behind, a failed *run* keeps what it made (the checkpoint for --resume, the results so far).
    """
    missing = [f for f in (out, *out.parents) if not f.exists()]  # the folders this command makes, deepest first
    out.mkdir(parents=True, exist_ok=True)
    with _held(out):
        if not (previous or resume) and any(out.iterdir()):  # another command wrote here since check_run_folder looked
            raise OutputError(f"--out {out} received files from another command while this one started; "
                              "choose another --out.")
        for name in previous:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        try:
            yield out
        except BaseException:
            if missing and not any(out.glob(keep)):
                _remove_made(missing)
            raise


def _remove_made(folders: list[Path]) -> None:
    """Remove ``out`` (``folders[0]``, made by this command) and then each parent it made while empty: a
    parent can by now hold another run's folder (``runs/exp/seed1`` beside a failed ``runs/exp/seed0``)."""
    shutil.rmtree(folders[0], ignore_errors=True)
    for parent in folders[1:]:
        try:
            parent.rmdir()
        except OSError:  # not empty: someone else's now
            return


@contextlib.contextmanager
def _held(folder: Path):
    """An exclusive lock on ``folder`` itself (no lock file is left in it) while inside: two commands given
    the same --out at once both passed the emptiness check and wrote over each other. Advisory, where the
    system has flock (not on Windows, not always on network file systems)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"Another distillset command is writing to --out {folder} now; wait for it to end "
                              "or choose another --out.") from None
        except OSError:  # a file system without locks: run as before
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------------------------- printing


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    sep = "  ".join("-" * widths[c] for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, sep, *body])


def result_rows(label: str, results: dict) -> list[dict]:
    return [{"set": label, "model": name, "accuracy": f"{r.mean:.2f} ± {r.std:.2f}", "nets": len(r.accuracies),
             "epochs": r.epochs, "seconds": f"{r.seconds:.1f}"} for name, r in results.items()]


def format_own(method: str, own: dict) -> str:
    """One line for a method's own protocol (``DistillMethod.own_protocol``)."""
    line = f"{method}'s own protocol ({own['protocol']}): {own['mean']:.2f} ± {own['std']:.2f}"
    if "before_mean" in own:
        line += f" (inits untrained: {own['before_mean']:.2f})"
    if "attack_to_target" in own:
        line += (f"; {own['attack_to_target']:.1f} % of class {own['attack_class']} predicted as "
                 f"{own['target_class']}")
    return line
