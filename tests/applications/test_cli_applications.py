"""The continual, nas and audit-mia commands: a record and a plot each; bad settings refused before work."""
import json

from distillset.cli import main


def test_commands_write_a_record_and_a_plot(tmp_path, capsys):
    assert main(["continual", "--methods", "random", "dm", "--steps", "2", "--ipc", "2", "--orders", "2", "--eval-runs",
                 "1", "--eval-epochs", "2", "--param", "dm.iterations=2", "--out", str(tmp_path / "cl")]) == 0
    cl = json.loads((tmp_path / "cl" / "continual.json").read_text())
    assert [r["method"] for r in cl["runs"]] == ["random", "dm"] and cl["runs"][1]["params"] == {"iterations": 2}
    assert "environment" in cl and cl["seed"] == 0 and (tmp_path / "cl" / "continual.png").stat().st_size > 1000
    assert main(["audit-mia", "--pipelines", "random", "--pool-size", "60", "--models", "3", "--ipc", "2",
                 "--eval-epochs", "2", "--eval-augment", "none", "--out", str(tmp_path / "mia")]) == 0
    mia = json.loads((tmp_path / "mia" / "audit.json").read_text())
    assert mia["pipelines"]["random"]["lira"]["auc"] >= 0 and (tmp_path / "mia" / "roc.png").is_file()
    assert main(["nas", "--random", "--grid", "cpu", "--eval-epochs", "1", "--full-epochs", "1", "--full-per-class",
                 "10", "--val-per-class", "5", "--out", str(tmp_path / "nas")]) == 0
    nas = json.loads((tmp_path / "nas" / "nas.json").read_text())
    assert len(nas["architectures"]) == 24 and "all" in nas["proxies"]["random"]["correlations"]
    capsys.readouterr()


def test_bad_settings_are_one_line_before_any_work(tmp_path, capsys):
    cases = [
        (["continual", "--methods", "random", "dm", "--param", "dm.nope=1"], "nope"),
        (["continual", "--methods", "random", "--param", "iterations=1"], "METHOD.KEY=VALUE"),
        (["continual", "--methods", "random", "--steps", "3"], "does not split the 10 classes"),
        (["audit-mia", "--models", "2"], "n_models must be an int >= 3"),
        (["nas"], "--sets PATH"),
        (["nas", "--random", "--grid", "huge"], "Unknown grid"),
        (["nas", "--random", "--full-epochs", "-1"], "'full_epochs' parameter of ArchitectureSearch"),
        (["continual", "--methods", "random", "datm"], "makes soft labels"),
        # the names before the data: a typo costs no download, and is said as such
        (["continual", "--dataset", "mnist", "--data-root", str(tmp_path / "none"), "--param", "dm.nope=1"], "nope"),
        (["continual", "--methods", "dn", "--param", "dm.iterations=1"], "Unknown method 'dn'. Did you mean"),
        (["nas", "--random", "--eval-runs", "0"], "--eval-runs must be an int >= 1"),
    ]
    for argv, message in cases:
        out = tmp_path / "out"
        assert main(argv + ["--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not out.exists(), argv  # nothing written
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("a user's file")
    assert main(["audit-mia", "--pipelines", "random", "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err  # audit-mia has no --resume: the advice named one
    assert "already holds files; pass --overwrite to replace it" in err and "--resume" not in err
    assert main(["continual", "--methods", "random", "--out", str(tmp_path / "full")]) == 2
    assert "pass --resume to continue that run, --overwrite" in capsys.readouterr().err


def test_an_old_parameter_name_is_taken_under_its_new_one_as_in_distill():
    import argparse

    import pytest

    from distillset.cli.applications import _params

    with pytest.warns(DeprecationWarning, match="now called 'image_init'"):
        assert _params(argparse.Namespace(param=["dm.init=noise"]), ["random", "dm"]) == {
            "random": {}, "dm": {"image_init": "noise"}}


def test_every_command_that_reads_data_takes_data_root_and_download():
    from distillset.cli.main import build_parser

    parser = build_parser()
    for argv in (["distill"], ["evaluate", "set"], ["experts"], ["continual", "--out", "o"], ["nas", "--out", "o"],
                 ["audit-mia", "--out", "o"]):
        args = parser.parse_args([*argv, "--data-root", "/d", "--download"])
        assert (args.data_root, args.download) == ("/d", True), argv


def test_nas_names_proxies_by_their_run_folder_or_file(tmp_path):
    """Two run folders under one parent, or two set files in one folder, are two proxies (both were 'runs')."""
    from distillset.cli.applications import _proxy_name

    for run in ("a", "b"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "synthetic.json").write_text("{}")
    names = [_proxy_name(str(tmp_path / p)) for p in ("runs/a", "runs/b/synthetic.json", "sets/x.json",
                                                      "sets/y.safetensors")]
    assert names == ["a", "b", "x", "y"]
