"""Plots a user can look at after a run: the loss curve of any method and DD's learned step sizes.

Drawn on a bare matplotlib ``Figure`` (file output only, works on headless machines, no global state).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ._io import atomic_save
from .errors import InvalidParameterError


def _figure():
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend and open figures alone

    fig = Figure(figsize=(6, 3.5), dpi=100)
    return fig, fig.add_subplot()


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    return atomic_save(path, lambda buf: fig.savefig(buf, format=path.suffix.lstrip(".") or "png"))


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
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
    return _save(fig, path)


def plot_step_sizes(lrs: torch.Tensor, steps: int, path: str | Path, title: str = "") -> Path:
    """DD's learned step sizes eta_t (T,) against the inner step t, with the epoch boundaries (every ``steps``)."""
    fig, ax = _figure()
    values = lrs.detach().float().cpu().tolist()
    ax.plot(range(len(values)), values, marker="o", markersize=3, linewidth=1)
    for boundary in range(steps, len(values), steps):
        ax.axvline(boundary - 0.5, color="grey", linewidth=0.5, linestyle="--")
    ax.set(xlabel=f"inner step t ({steps} synthetic batches per epoch)", ylabel="learned step size", title=title)
    return _save(fig, path)
