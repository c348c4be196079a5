"""Plots a user can look at after a run: the loss curve of any method and DD's learned step sizes.

matplotlib with the file-only Agg backend, so they work on headless machines.
"""
from __future__ import annotations

from pathlib import Path

import torch


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 3.5), dpi=100)


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Each logged quantity (e.g. ``method.history_["loss"]``) against the iteration, log-scaled when positive."""
    plt, fig, ax = _figure()
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, label=name, linewidth=1)
    if all(v > 0 for values in history.values() for v in values):
        ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="value", title=title)
    ax.legend()
    return _save(plt, fig, path)


def plot_step_sizes(lrs: torch.Tensor, steps: int, path: str | Path, title: str = "") -> Path:
    """DD's learned step sizes eta_t (T,) against the inner step t, with the epoch boundaries (every ``steps``)."""
    plt, fig, ax = _figure()
    values = lrs.detach().float().cpu().tolist()
    ax.plot(range(len(values)), values, marker="o", markersize=3, linewidth=1)
    for boundary in range(steps, len(values), steps):
        ax.axvline(boundary - 0.5, color="grey", linewidth=0.5, linestyle="--")
    ax.set(xlabel=f"inner step t ({steps} synthetic batches per epoch)", ylabel="learned step size", title=title)
    return _save(plt, fig, path)
