"""HTML reports: one self-contained page (images inlined, no network, no server) for one or many runs.

Per run: its settings, the image grid (click to zoom), the loss curves, method-specific plots and
measurements (DD's learned step sizes, MTT's learned step size, KIP's kernel accuracy), the evaluation
table with the baseline and the improvement over it, timings and peak memory. Across runs: a
comparison table and accuracy-vs-IPC and accuracy-vs-budget plots.

A run is read into a :class:`RunView` (``load_run`` reads a ``distillset distill`` folder, also one
still running: its settings and its losses so far); ``render_report`` turns views into the page.
The benchmark runner builds views from its records the same way.

Examples
--------
>>> view = RunView(name="demo", dataset="digits", method="dm", ipc=1,
...                results={"dm": {"convnet": {"mean": 80.0, "std": 1.0, "n": 5, "epochs": 300}}})
>>> page = render_report([view])
>>> "<table" in page and "80.00 ± 1.00" in page
True
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write
from .errors import CorruptFileError, MissingDataError


@dataclass
class RunView:
    """What the report shows of one run; every field but the first four may stay empty."""

    name: str
    dataset: str
    method: str
    ipc: int | None
    status: str = "finished"
    settings: dict[str, Any] = field(default_factory=dict)
    iterations: int | None = None
    grid_png: bytes | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    step_sizes: list[float] | None = None  # DD: one per unrolled step
    steps_per_epoch: int | None = None
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # set label -> model -> mean, std, n, epochs
    baseline: str | None = None
    scores: dict[str, str] = field(default_factory=dict)  # fair-comparison scores, formatted
    measurements: dict[str, Any] = field(default_factory=dict)  # method-specific numbers (kernel accuracy...)
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    memory: dict[str, float] = field(default_factory=dict)  # MiB
    budget: dict[int, tuple[float, float]] = field(default_factory=dict)  # iterations -> (mean, std) accuracy

    @property
    def accuracy(self) -> tuple[float, float] | None:
        """(mean, std) of the method's set on the first architecture, when evaluated."""
        first = next(iter(self.results.get(self.method, {}).values()), None)
        return (first["mean"], first["std"]) if first else None


# ------------------------------------------------------------------------------------ reading runs


def load_run(folder: str | Path) -> RunView:
    """The view of a ``distillset distill`` output folder, finished or still running (its checkpoint)."""
    folder = Path(folder)
    result, config = folder / "result.json", folder / "config.yaml"
    checkpoint = folder / "checkpoint" / "checkpoint.safetensors"
    if not result.is_file() and not checkpoint.is_file():
        raise MissingDataError(f"{folder} is not a distillset run folder (no result.json and no checkpoint); give the "
                               "--out folder of a 'distillset distill' run.")
    settings = _read(config, yaml.safe_load) if config.is_file() else {}
    if not result.is_file():
        return _running_view(folder, settings, checkpoint)
    r = _read(result, json.loads)
    if not {"dataset", "method"} <= r.keys():
        raise CorruptFileError(f"{result} has no 'dataset' or 'method': not a distillset record (damaged?); rerun "
                               "the distill command that wrote it, or leave this folder out.")
    _check_shapes(r, result)
    view = RunView(name=folder.name, dataset=r["dataset"], method=r["method"], ipc=r.get("ipc"),
                   settings={**_flat(settings), **_flat(r.get("params", {}), "params.")},
                   iterations=r.get("params", {}).get("iterations"), history=r.get("history", {}),
                   results={label: {m: _cell(res) for m, res in per_model.items()}
                            for label, per_model in r.get("results", {}).items()},
                   baseline=settings.get("baseline") if settings.get("baseline") in r.get("results", {}) else None,
                   timings=_timings(r), memory=memory_labels(r.get("memory", {})))
    view.scores = improvement_over(view)
    if "own_protocol" in r:
        view.measurements["own protocol"] = _own(r["own_protocol"])
    view.measurements.update(r.get("measurements", {}))
    _read_set(view, folder / "synthetic", r.get("params", {}))
    return view


def _check_shapes(r: dict, path: Path) -> None:
    """The record's parts the report reads, of the types it reads them as: a damaged or hand-edited file is
    named in one line rather than failing mid-report."""
    number = (int, float)
    bad = [k for k in ("params", "history", "results", "memory") if not isinstance(r.get(k, {}), dict)]
    if not bad:
        bad = [f"history.{k}" for k, v in r.get("history", {}).items()
               if not (isinstance(v, list) and all(isinstance(x, number) or x is None for x in v))]
        bad += [k for k in ("distill_seconds", "final_loss") if not isinstance(r.get(k, 0), number) and r.get(k) is not None]
        bad += [f"results.{label}" for label, per_model in r.get("results", {}).items()
                if not isinstance(per_model, dict) or not all(
                    isinstance(res, dict) and isinstance(res.get("mean"), number) and isinstance(res.get("std"), number)
                    for res in per_model.values())]
    if bad:
        raise CorruptFileError(f"{path} is damaged ({', '.join(bad[:3])} not as distillset writes it); rerun the distill "
                               "command that wrote it, or leave this folder out.")


def _read(path: Path, parse):
    """A run file's contents; :class:`CorruptFileError` naming the file when it does not parse."""
    try:
        out = parse(path.read_text())
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]}); rerun "
                               "the distill command that wrote it, or leave this folder out.") from None
    if not isinstance(out, dict):
        raise CorruptFileError(f"{path} does not hold a distillset record; leave this folder out.")
    return out


def _running_view(folder: Path, settings: dict, checkpoint: Path) -> RunView:
    from .methods.base import checkpoint_record

    try:
        record = checkpoint_record(checkpoint)
    except CorruptFileError as e:
        raise CorruptFileError(f"{e} Leave this folder out of the report.") from None
    if not (isinstance(record, dict) and isinstance(record.get("params"), dict) and isinstance(record.get("history"), dict)):
        raise CorruptFileError(f"Checkpoint {checkpoint} has a damaged record; resume the run (distillset distill --out "
                               f"{folder} --resume) or leave this folder out.")
    total = record["params"].get("iterations")
    return RunView(name=folder.name, dataset=record["dataset"], method=record["method"], ipc=record["params"].get("ipc"),
                   status=f"in progress: iteration {record['iteration']} of {total} (last checkpoint)",
                   settings={**_flat(settings), **_flat(record["params"], "params.")}, iterations=total,
                   history=record["history"])


def _read_set(view: RunView, stem: Path, params: dict) -> None:
    """The grid and the learned step sizes from the saved set (absent files: nothing shown)."""
    if not stem.with_suffix(".safetensors").is_file():
        return
    from .synthetic import SyntheticSet

    syn = SyntheticSet.load(stem)
    view.grid_png = grid_png(syn)
    if syn.lrs is not None and syn.lrs.numel() > 1:
        view.step_sizes, view.steps_per_epoch = syn.lrs.float().flatten().tolist(), params.get("steps")
    elif syn.lrs is not None:
        view.measurements["learned step size"] = f"{float(syn.lrs.flatten()[0]):.4g}"


def grid_png(syn) -> bytes:
    """The set's image grid (one row per class) as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(syn.grid()).save(buf, format="PNG")
    return buf.getvalue()


def improvement_over(view: RunView) -> dict[str, str]:
    """IOR (points over the baseline, same protocol) per architecture, when a baseline was evaluated."""
    from .scores import ior

    if view.baseline is None or view.method not in view.results:
        return {}
    base = view.results[view.baseline]
    return {f"IOR over {view.baseline} ({m})": f"{ior(r['mean'], base[m]['mean']):+.2f} points"
            for m, r in view.results[view.method].items() if m in base}


def memory_labels(memory: dict) -> dict[str, float]:
    """``peak_memory()``'s keys as the report's row labels (absent values dropped)."""
    names = {"peak_rss_mib": "peak resident memory (whole process)", "peak_gpu_mib": "peak GPU memory allocated"}
    return {names.get(k, k): v for k, v in memory.items() if v is not None}


def _cell(res: dict) -> dict:
    n = len(res.get("accuracies", [])) or res.get("n", 0)
    return {"mean": res["mean"], "std": res["std"], "n": n, "epochs": res.get("epochs"), "seconds": res.get("seconds")}


def _own(own: dict) -> str:
    return f"{own['mean']:.2f} ± {own['std']:.2f} % ({own.get('protocol', 'own protocol')})"


def _timings(r: dict) -> dict[str, float]:
    out = {"distillation": r.get("distill_seconds")}
    evals = [res.get("seconds") or 0.0 for per_model in r.get("results", {}).values() for res in per_model.values()]
    if evals:
        out["evaluation"] = sum(evals)
    return {k: v for k, v in out.items() if v is not None}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested settings dict as 'a.b' keys, lists and scalars kept as text-friendly values."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------------------ the page


def render_report(runs: list[RunView], path: str | Path | None = None, title: str = "distillset report") -> str:
    """The HTML page for ``runs``; also written (atomically) to ``path`` when given."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from . import __version__

    env = Environment(loader=PackageLoader("distillset", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["png"] = _data_uri
    page = env.get_template("report.html.j2").render(
        title=title, runs=[_figures(r) for r in runs], across=_across(runs) if len(runs) > 1 else None,
        version=__version__)
    if path is not None:
        atomic_write(Path(path), page)
    return page


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figures(view: RunView) -> dict:
    """The view with its plots rendered (PNG bytes)."""
    from .plots import accuracy_figure, history_figure, png_bytes, step_sizes_figure

    plots = []
    if any(view.history.values()):
        plots.append(("Loss curves", f"losses of {view.method} against the iteration",
                      png_bytes(history_figure(view.history, f"{view.method} on {view.dataset}"))))
    if view.step_sizes:
        plots.append(("Learned step sizes", "DD's learned step size of each unrolled step",
                      png_bytes(step_sizes_figure(_tensor(view.step_sizes), view.steps_per_epoch or len(view.step_sizes),
                                                  "learned step sizes"))))
    if len(view.budget) > 1:
        lines = {view.method: [(n, m, s) for n, (m, s) in view.budget.items()]}
        plots.append(("Accuracy against the budget", f"test accuracy of {view.method} sets snapshotted during the run",
                      png_bytes(accuracy_figure(lines, "distillation iterations", f"{view.dataset}, IPC {view.ipc}"))))
    return {"view": view, "plots": plots, "grid_width": _display_width(view.grid_png) if view.grid_png else None}


def _display_width(png: bytes, width_goal: int = 480, height_cap: int = 600) -> int:
    """The grid's on-page width: a whole multiple of its pixels, toward ``width_goal`` but no taller than
    ``height_cap`` (a click zooms 3x)."""
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # PNG's IHDR chunk
    return width * max(1, min(8, -(-width_goal // width), height_cap // height))


def _tensor(values):
    import torch

    return torch.tensor(values)


def _across(runs: list[RunView]) -> dict:
    """The accuracy-vs-IPC plot (methods run at two IPCs or more) and one accuracy-vs-budget plot per data set
    and IPC (final accuracies at each run's iterations, and the snapshots of budget sweeps)."""
    from .plots import accuracy_figure, png_bytes

    by_ipc: dict[str, list] = {}
    by_budget: dict[tuple, dict[str, list]] = {}
    for r in runs:
        if r.accuracy is None or r.ipc is None:
            continue
        by_ipc.setdefault(f"{r.dataset} {r.method}", []).append((r.ipc, *r.accuracy))
        points = [(n, m, s) for n, (m, s) in r.budget.items()] or ([(r.iterations, *r.accuracy)] if r.iterations else [])
        if points:
            by_budget.setdefault((r.dataset, r.ipc), {})[r.name] = points
    by_ipc = {k: v for k, v in by_ipc.items() if len({p[0] for p in v}) > 1}
    plots = []
    if by_ipc:
        plots.append(("Accuracy against IPC", "test accuracy of each method's set against its images per class",
                      png_bytes(accuracy_figure(by_ipc, "images per class", "accuracy vs IPC", logx=True))))
    for (dataset, ipc), lines in sorted(by_budget.items()):
        plots.append((f"Accuracy against the budget: {dataset}, IPC {ipc}",
                      f"test accuracy against the distillation iterations on {dataset} at IPC {ipc}",
                      png_bytes(accuracy_figure(lines, "distillation iterations", f"{dataset}, IPC {ipc}", logx=True))))
    return {"plots": plots}
