"""Helpers shared by CLI commands: YAML config merging and result tables."""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ..errors import InvalidParameterError


def parse_param(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as YAML (so numbers, booleans and lists get their types)."""
    if "=" not in text:
        raise InvalidParameterError(f"Method parameter {text!r} must look like key=value (e.g. lr_img=1.0).")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise InvalidParameterError(f"Method parameter {text!r}: the value is not valid YAML ({e}).") from None


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv_given: set[str]) -> argparse.Namespace:
    """Fill options not given on the command line from ``args.config`` (YAML); unknown keys are errors."""
    if not getattr(args, "config", None):
        return args
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InvalidParameterError(f"Config {path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise InvalidParameterError(f"Config {path} must be a YAML mapping of option: value.")
    known = {a.dest for a in parser._actions}
    for key, value in cfg.items():
        dest = key.replace("-", "_")
        if dest == "params" and isinstance(value, dict):
            merged = dict(value)
            merged.update(getattr(args, "params_dict", {}))
            args.params_dict = merged
            continue
        if dest not in known or dest in ("config", "func", "help"):
            raise InvalidParameterError(f"Unknown key {key!r} in config {path}. Known keys: {', '.join(sorted(known - {'config', 'func', 'help'}))}, params.")
        if dest not in argv_given:
            setattr(args, dest, value)
    return args


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which option destinations appear explicitly in ``argv`` (so config files don't override them)."""
    out = set()
    for action in parser._actions:
        if any(a == s or a.startswith(s + "=") for a in argv for s in action.option_strings):
            out.add(action.dest)
    return out


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
