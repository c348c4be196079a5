"""TensorBoard events of a run, read back with TensorBoard's own reader (skipped without the extra)."""
import sys

import pytest

from distillset import get_method
from distillset.cli import main
from distillset.errors import MissingDependencyError
from distillset.tensorboard import TensorBoardLogger, require_tensorboard

tb = pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'distillset[tensorboard]')")


def read(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_run_logs_losses_grids_evaluation_and_settings(tmp_path, capsys):
    log_dir = tmp_path / "tb"
    assert main(["distill", "--iterations", "4", "--out", str(tmp_path / "run"), "--eval-runs", "1", "--eval-epochs",
                 "1", "--quiet", "--device", "cpu", "--tensorboard", str(log_dir), "--image-every", "2"]) == 0
    acc = read(log_dir)
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("distill/loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Images("synthetic/grid")] == [2, 4]
    assert {"eval/dm/convnet", "eval/random/convnet"} <= set(tags["scalars"])
    assert "settings/text_summary" in tags["tensors"]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_a_resumed_run_does_not_fork_its_curves(tmp_path, digits):
    def stop_at(n):
        def cb(method, it, losses):
            if it + 1 == n:
                raise KeyboardInterrupt
        return cb

    params = dict(ipc=1, iterations=6, checkpoint_every=2, log_every=1, checkpoint_dir=str(tmp_path / "ckpt"),
                  progress=False)
    with pytest.raises(KeyboardInterrupt), TensorBoardLogger(tmp_path / "tb", image_every=100) as logger:
        get_method("dm", **params).fit(digits, logger=logger, callback=stop_at(3))  # logged 1..3, checkpoint at 2
    with TensorBoardLogger(tmp_path / "tb", image_every=100) as logger:
        get_method("dm", **params).fit(digits, resume=True, logger=logger)
    steps = [e.step for e in read(tmp_path / "tb").Scalars("distill/loss")]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 3 of the interrupted run is purged, not drawn twice


def test_missing_tensorboard_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # "import tensorboard" now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'distillset\[tensorboard\]'"):
        require_tensorboard()
    assert main(["distill", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb"), "--quiet"]) == 2
    assert "needs the tensorboard package" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()
