"""Plots a user can look at after a run: loss curves, DD's learned step sizes, accuracy across runs.

Drawn on a bare matplotlib ``Figure`` (file output only, works on headless machines, no global state).
Each ``*_figure`` function builds a figure; :func:`png_bytes` renders one for the HTML report and the
``plot_*`` functions write one to a file.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from ._io import atomic_save
from .errors import InvalidParameterError


def _figure(size=(6, 3.5)):
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend and open figures alone

    fig = Figure(figsize=size, dpi=100)
    return fig, fig.add_subplot()


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    return atomic_save(path, lambda buf: fig.savefig(buf, format=path.suffix.lstrip(".") or "png"))


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (for inlining into a page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # "tight" keeps a legend placed outside the axes
    return buf.getvalue()


def history_figure(history: dict[str, list[float]], title: str = ""):
    """Each logged quantity (e.g. ``method.history_["loss"]``) against the iteration, log-scaled when positive."""
    if not any(history.values()):
        raise InvalidParameterError("plot_history needs at least one logged value; this run logged none (0 iterations?).")
    fig, ax = _figure()
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, label=name, linewidth=1)
    if all(v > 0 for values in history.values() for v in values):
        ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="value", title=title)
    ax.legend()
    return fig


def step_sizes_figure(lrs: torch.Tensor, steps: int, title: str = ""):
    """DD's learned step sizes eta_t (T,) against the inner step t, with the epoch boundaries (every ``steps``)."""
    fig, ax = _figure()
    values = lrs.detach().float().cpu().flatten().tolist()
    ax.plot(range(len(values)), values, marker="o", markersize=3, linewidth=1)
    for boundary in range(steps, len(values), steps):
        ax.axvline(boundary - 0.5, color="grey", linewidth=0.5, linestyle="--")
    ax.set(xlabel=f"inner step t ({steps} synthetic batches per epoch)", ylabel="learned step size", title=title)
    return fig


def accuracy_figure(lines: dict[str, list[tuple[float, float, float]]], xlabel: str, title: str = "", logx=False):
    """Accuracy (mean ± std) against a budget or IPC: ``lines`` maps a label to its (x, mean, std) points."""
    fig, ax = _figure((6.5, 3.8))
    for label, points in lines.items():
        x, mean, std = zip(*sorted(points))
        ax.errorbar(x, mean, yerr=std, label=label, marker="o", markersize=4, linewidth=1, capsize=3)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Write :func:`history_figure` to ``path``."""
    return _save(history_figure(history, title), path)


def plot_step_sizes(lrs: torch.Tensor, steps: int, path: str | Path, title: str = "") -> Path:
    """Write :func:`step_sizes_figure` to ``path``."""
    return _save(step_sizes_figure(lrs, steps, title), path)
