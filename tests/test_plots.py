import torch

from distillset.plots import plot_history, plot_step_sizes


def test_plots_are_written(tmp_path):
    assert plot_history({"loss": [3.0, 2.0, 1.5], "gap": [-0.1, 0.2, 0.0]}, tmp_path / "a" / "loss.png").stat().st_size > 1000
    assert plot_step_sizes(torch.tensor([0.5, 0.1, 0.3, 0.05]), 2, tmp_path / "lrs.png").stat().st_size > 1000


def test_empty_history_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="at least one logged value"):
        plot_history({"loss": []}, tmp_path / "loss.png")


def test_plots_leave_the_pyplot_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    plot_history({"loss": [1.0, 0.5]}, tmp_path / "loss.png")
    assert matplotlib.get_backend() == before
