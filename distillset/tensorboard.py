"""TensorBoard logs of a run: losses, learned step sizes, image grids, evaluation and hyper-parameters.

Needs the optional ``tensorboard`` package (``pip install 'distillset[tensorboard]'``); written through
``torch.utils.tensorboard``. Pass a logger to ``fit`` and the loop feeds it: the losses at each log
flush (no extra host syncs), the set's grid and learned step sizes every ``image_every`` iterations.
A resumed run purges the events after its checkpoint's iteration, so the curves do not fork.

Examples
--------
>>> import tempfile
>>> from distillset import get_method, load_dataset
>>> with tempfile.TemporaryDirectory() as d, TensorBoardLogger(d, image_every=2) as tb:
...     m = get_method("dm", ipc=1, iterations=2, progress=False).fit(load_dataset("digits"), logger=tb)
...     tb.written_["loss"]
2
"""
from __future__ import annotations

from pathlib import Path

from .errors import MissingDependencyError


def require_tensorboard() -> None:
    """Raise :class:`MissingDependencyError` (one line, with the fix) unless ``tensorboard`` is installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise MissingDependencyError("TensorBoard logging needs the tensorboard package; install it with "
                                     "pip install 'distillset[tensorboard]' (or pip install tensorboard).") from None


class TensorBoardLogger:
    """Writes one run's events into ``log_dir`` (created if absent). One folder per run (e.g. ``runs/tb/NAME``):
    a run hides what an earlier run logged into the same folder from its first step on.

    Parameters
    ----------
    log_dir : str or Path
    image_every : int, default=100
        Iterations between image grids (and learned step sizes) of the current set.

    Attributes
    ----------
    written_ : dict
        How many values of each logged quantity are in the log.
    """

    def __init__(self, log_dir: str | Path, image_every: int = 100):
        self.log_dir = log_dir
        self.image_every = image_every

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, method, iteration: int, history: dict[str, list[float]]) -> None:
        """Called by ``fit`` before the loop: start a writer at ``iteration`` and record the settings."""
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.close()
        # the checkpoint holds iterations 1..iteration: whatever an earlier run logged after them goes (a fresh
        # run purges from step 1: a rerun into the same folder replaces its curves rather than overlaying them)
        self.writer_ = SummaryWriter(str(self.log_dir), purge_step=iteration + 1)
        self.written_ = {k: len(v) for k, v in history.items()}  # a resumed run's earlier values are in the log
        self.method_ = method
        if iteration == 0:
            text = "\n".join(f"    {k} = {v!r}" for k, v in sorted(method._json_params().items()))
            self.writer_.add_text("settings", f"{method.name}\n\n{text}", 0)

    def scalars(self, history: dict[str, list[float]]) -> None:
        """Every value logged since the last call; ``history[key][i]`` belongs to iteration ``i + 1``."""
        for key, values in history.items():
            start = self.written_.get(key, 0)
            for i in range(start, len(values)):
                self.writer_.add_scalar(f"distill/{key}", values[i], i + 1)
            self.written_[key] = len(values)

    def synthetic(self, iteration: int, syn) -> None:
        """The set's image grid, and its learned step size(s) when it has any."""
        grid = syn.grid()
        self.writer_.add_image("synthetic/grid", grid, iteration, dataformats="HWC" if grid.ndim == 3 else "HW")
        if syn.lrs is not None:
            lrs = syn.lrs.detach().float().flatten().cpu()
            self.writer_.add_scalar("distill/learned_lr_mean", float(lrs.mean()), iteration)
            if lrs.numel() > 1:
                self.writer_.add_histogram("distill/learned_lrs", lrs, iteration)

    def evaluation(self, results: dict[str, dict], iteration: int) -> None:
        """Test accuracies ({set: {model: EvalResult or its dict}}) and the hyper-parameters (HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {}
        for label, per_model in results.items():
            for model, r in per_model.items():
                mean = r["mean"] if isinstance(r, dict) else r.mean
                metrics[f"eval/{label}/{model}"] = mean
                self.writer_.add_scalar(f"eval/{label}/{model}", mean, iteration)
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in self.method_._json_params().items() if v is not None}
        for event in hparams(params, metrics):  # in this run's own folder, not a sub-run as add_hparams makes
            self.writer_.file_writer.add_summary(event)

    def close(self) -> None:
        if getattr(self, "writer_", None) is not None:
            self.writer_.close()
            self.writer_ = None
