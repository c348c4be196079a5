import torch

from distillset.plots import plot_history, plot_step_sizes


def test_plots_are_written(tmp_path):
    assert plot_history({"loss": [3.0, 2.0, 1.5], "gap": [-0.1, 0.2, 0.0]}, tmp_path / "a" / "loss.png").stat().st_size > 1000
    assert plot_step_sizes(torch.tensor([0.5, 0.1, 0.3, 0.05]), 2, tmp_path / "lrs.png").stat().st_size > 1000
