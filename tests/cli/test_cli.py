import json

import pytest

from distillset.cli import main


def test_list(capsys):
    for what, expect in (("datasets", "digits"), ("methods", "dm"), ("models", "convnet")):
        assert main(["list", what]) == 0
        assert expect in capsys.readouterr().out


def test_a_warning_is_one_line_inside_the_cli():
    import warnings

    from distillset.cli.main import one_line_warnings

    message = DeprecationWarning("The 'init' parameter of DM is now called 'image_init'")
    with one_line_warnings("distill"):
        line = warnings.formatwarning(message, DeprecationWarning, "base.py", 217, "warnings.warn(...)")
    assert line == "distillset distill: warning: The 'init' parameter of DM is now called 'image_init'\n"
    assert "base.py" in warnings.formatwarning(message, DeprecationWarning, "base.py", 217)  # restored after


def test_env(capsys):
    assert main(["env"]) == 0
    assert "torch" in capsys.readouterr().out


def test_distill_evaluate_show(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("ipc: 1\niterations: 999\nparams:\n  batch_real: 8\n")
    rc = main(["distill", "--config", str(cfg), "--iterations", "3", "--out", str(out), "--eval-runs", "1",
               "--eval-epochs", "2", "--quiet", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "dm" in text and "random" in text and "±" in text
    for f in ("synthetic.safetensors", "synthetic.json", "grid.png", "loss.png", "result.json", "config.yaml"):
        assert (out / f).is_file(), f
    report = json.loads((out / "result.json").read_text())
    assert report["params"]["iterations"] == 3  # the flag beats the config file
    assert report["params"]["batch_real"] == 8 and report["ipc"] == 1  # config fills the rest
    assert set(report["results"]) == {"dm", "random"}

    assert main(["evaluate", str(out / "synthetic.json"), "--runs", "1", "--epochs", "2", "--device", "cpu",
                 "--json", str(tmp_path / "ev.json")]) == 0
    assert "convnet" in json.loads((tmp_path / "ev.json").read_text())
    assert main(["show", str(out / "synthetic"), "--grid", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file() and '"method": "dm"' in capsys.readouterr().out
    assert main(["show", str(out), "--grid", str(tmp_path / "g.png"), "--overwrite"]) == 0  # the run folder will do
    for _ in range(2):  # the default grid is show's own output: redrawn, inside the run folder
        assert main(["show", str(out)]) == 0 and (out / "synthetic_grid.png").is_file()
    # DM has no protocol of its own: a one-line error that names the fix
    assert main(["evaluate", str(out / "synthetic.json"), "--protocol", "own", "--device", "cpu"]) == 2
    assert "no own evaluation protocol; use --protocol standard" in capsys.readouterr().err


def test_dd_reports_its_own_protocol(tmp_path, capsys):
    out = tmp_path / "dd"
    assert main(["distill", "--method", "dd", "--iterations", "2", "--param", "steps=2", "--param", "net_init=random",
                 "--param", "batch_real=2", "--eval-runs", "2", "--eval-epochs", "1", "--eval-models", "mlp",
                 "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dd's own protocol (the 6 learned steps with the learned step sizes from fresh random inits" in text
    assert "2 images per class" in text  # DD's own ipc (1 per step), 2 steps; the baseline matches it
    report = json.loads((out / "result.json").read_text())
    assert report["params"]["model"] == "lenet" and report["ipc"] == 1  # the method's own defaults
    assert len(report["own_protocol"]["accuracies"]) == 2  # --eval-runs reaches the own protocol
    assert len(report["results"]["random"]["mlp"]["accuracies"]) == 2
    assert main(["evaluate", str(out / "synthetic.json"), "--protocol", "own", "--device", "cpu"]) == 0
    assert "dd's own protocol" in capsys.readouterr().out
    assert (out / "step_sizes.png").stat().st_size > 1000 and (out / "loss.png").is_file()
    assert main(["show", str(out / "synthetic.json")]) == 0
    assert len(capsys.readouterr().out.split("learned step sizes: ")[1].splitlines()[0].split()) == 6


@pytest.mark.parametrize("argv,msg", [
    (["distill", "--dataset", "mnst"], "Unknown dataset 'mnst'"),
    (["distill", "--method", "dx"], "Unknown method"),
    (["distill", "--ipc", "1000", "--no-eval"], "larger than the smallest class"),
    (["distill", "--param", "lr_img"], "key=value"),
    (["evaluate", "nope/set.json"], "not found"),
])
def test_errors_are_one_line(argv, msg, tmp_path, capsys):
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "distill" else [])) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ipcs: 3\n")
    assert main(["distill", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "Unknown key 'ipcs'" in capsys.readouterr().err


def test_written_config_is_a_valid_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--iterations", "2", "--ipc", "1", "--param", "batch_real=4", "--no-eval", "--quiet",
                 "--out", str(out), "--device", "cpu"]) == 0
    again = tmp_path / "again"
    assert main(["distill", "--config", str(out / "config.yaml"), "--out", str(again)]) == 0
    a = json.loads((out / "result.json").read_text())["params"]
    b = json.loads((again / "result.json").read_text())["params"]
    assert a.pop("checkpoint_dir") != b.pop("checkpoint_dir") and a == b and b["batch_real"] == 4


def test_baseline_method_gets_no_iterations(tmp_path):
    assert main(["distill", "--method", "herding", "--ipc", "1", "--no-eval", "--quiet", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["params"]["iterations"] == 0


def test_params_reach_the_method(tmp_path):
    """--param keys that have flags of their own are used, not shadowed by the CLI's defaults (they were: 300, 0, 100)."""
    out = tmp_path / "run"
    assert main(["distill", "--param", "iterations=2", "--param", "random_state=7", "--param", "checkpoint_every=1",
                 "--param", "lr_img=5e-1", "--param", "batch_real=4", "--no-eval", "--quiet", "--device", "cpu",
                 "--out", str(out)]) == 0
    report = json.loads((out / "result.json").read_text())
    assert report["params"]["iterations"] == 2 and report["seed"] == 7 and report["params"]["checkpoint_every"] == 1
    assert report["params"]["lr_img"] == 0.5  # YAML 1.1 reads 5e-1 as a string; we read the number


def test_resume_continues_and_overwrite_restarts(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--ipc", "1", "--param", "batch_real=4", "--no-eval", "--quiet", "--device", "cpu",
            "--out", str(out)]
    assert main(argv + ["--iterations", "2"]) == 0
    assert main(argv + ["--iterations", "3", "--resume"]) == 0  # a longer run continues the finished one
    assert json.loads((out / "synthetic.json").read_text())["iterations_done"] == 3
    assert main(argv + ["--iterations", "2", "--overwrite"]) == 0
    assert json.loads((out / "synthetic.json").read_text())["iterations_done"] == 2


def test_evaluate_trains_an_ls_set_with_its_recorded_loss(tmp_path, capsys):
    """`distillset evaluate` reads the set's label kind: LS labels train with MSE; --loss ce overrides, with a warning."""
    out = tmp_path / "ls"
    assert main(["distill", "--method", "ls", "--ipc", "1", "--no-eval", "--quiet", "--out", str(out), "--device", "cpu"]) == 0
    meta = json.loads((out / "synthetic.json").read_text())
    assert (meta["label_kind"], meta["loss"]) == ("learned", "mse")
    args = ["evaluate", str(out / "synthetic"), "--runs", "1", "--epochs", "2", "--quiet", "--device", "cpu"]
    assert main([*args, "--json", str(tmp_path / "own.json")]) == 0
    assert "loss=mse (learned labels)" in capsys.readouterr().out
    assert json.loads((tmp_path / "own.json").read_text())["convnet"]["loss"] == "mse"
    with pytest.warns(UserWarning, match="meant for loss='mse'"):
        assert main([*args, "--loss", "ce", "--json", str(tmp_path / "ce.json")]) == 0
    assert json.loads((tmp_path / "ce.json").read_text())["convnet"]["loss"] == "ce"


def test_evaluate_chooses_on_a_validation_split(tmp_path, capsys):
    out = tmp_path / "rnd"
    assert main(["distill", "--method", "random", "--ipc", "1", "--no-eval", "--quiet", "--out", str(out)]) == 0
    args = ["evaluate", str(out / "synthetic"), "--runs", "1", "--epochs", "3", "--quiet", "--device", "cpu",
            "--lr", "0.01", "0.1"]
    assert main(args) == 2  # a choice without a validation split: refused before any training
    assert "--val-per-class" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="distilled without holding out"):
        assert main([*args, "--val-per-class", "5", "--checkpoint", "best_val"]) == 0
    assert "on 5 validation images per class" in capsys.readouterr().out


def test_evaluate_resumes_from_the_networks_it_kept(tmp_path, capsys):
    out = tmp_path / "rnd"
    assert main(["distill", "--method", "random", "--ipc", "1", "--no-eval", "--quiet", "--out", str(out)]) == 0
    args = ["evaluate", str(out / "synthetic"), "--runs", "2", "--epochs", "2", "--quiet", "--device", "cpu",
            "--resume-dir", str(tmp_path / "nets")]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    (tmp_path / "b.json").write_text("a user's file")
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 2  # kept without --overwrite, nothing trained
    assert main([*args, "--json", str(tmp_path / "b.json"), "--overwrite"]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["convnet"] for n in "ab")
    assert a["accuracies"] == b["accuracies"] and b["extra"]["resumed_networks"] == 2
    (tmp_path / "file").write_text("x")
    assert main([*args[:-1], str(tmp_path / "file")]) == 2  # not a folder: one line, before any training
    assert "--resume-dir" in capsys.readouterr().err
    assert main([*args, "--protocol", "own"]) == 2
    assert "own protocol keeps none" in capsys.readouterr().err


def test_experts_then_mtt_reuses_them_and_evaluates_with_the_learned_lr(tmp_path, capsys):
    recipe = ["--model", "mlp", "--num-experts", "2", "--train-epochs", "3", "--quiet"]
    assert main(["experts", *recipe, "--device", "cpu"]) == 0
    assert "2 experts on digits: 4 weight vectors" in capsys.readouterr().out
    assert main(["experts", "--num-experts", "0"]) == 2
    assert "--num-experts must be an int >= 1" in capsys.readouterr().err
    assert main(["experts", "--model", "convnet_bn", "--quiet"]) == 2  # refused before any training
    assert "without BatchNorm" in capsys.readouterr().err
    out = tmp_path / "mtt"
    params = ["num_experts=2", "train_epochs=3", "syn_steps=2", "expert_epochs=1", "max_start_epoch=2", "lr_img=10.0"]
    argv = ["distill", "--method", "mtt", "--model", "mlp", "--iterations", "2", "--no-eval", "--quiet", "--out",
            str(out), "--device", "cpu"]
    for p in params:
        argv += ["--param", p]
    assert main(argv) == 0
    from distillset.cache import list_cache
    assert len([e for e in list_cache() if e["kind"] == "expert" and e["settings"]["model"] == "mlp"
                and e["settings"]["train_epochs"] == 3]) == 2  # the distill run trained no new expert
    capsys.readouterr()
    assert main(["cache", "clear", "--kind", "experts"]) == 2  # a typo of the kind: one line, nothing deleted
    assert "Did you mean 'expert'" in capsys.readouterr().err
    assert "expert" in {e["kind"] for e in list_cache()}
    assert main(["evaluate", str(out / "synthetic"), "--runs", "1", "--epochs", "2", "--lr", "learned", "--quiet",
                 "--device", "cpu"]) == 0


def test_a_multi_formation_set_distils_and_evaluates_under_the_long_protocol(tmp_path, capsys):
    out = tmp_path / "ncfm"
    argv = ["distill", "--method", "ncfm", "--model", "mlp", "--ipc", "1", "--iterations", "2", "--no-eval", "--quiet",
            "--out", str(out), "--device", "cpu", "--param", "num_experts=1", "--param", "train_epochs=1", "--param", "num_freqs=32"]
    assert main(argv) == 0
    assert json.loads((out / "synthetic.json").read_text())["factor"] == 2
    args = ["evaluate", str(out / "synthetic"), "--models", "mlp", "--runs", "1", "--epochs", "3", "--quiet",
            "--device", "cpu", "--protocol", "long", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    training = json.loads((tmp_path / "r.json").read_text())["mlp"]["training"]
    assert (training["optimizer"], training["lr"], training["cutmix_prob"]) == ("adamw", 0.001, 0.5)


def test_the_quick_preset_keeps_pools_and_experts_small_unless_asked():
    import argparse

    from distillset.cli.common import PRESETS
    from distillset.cli.distill import method_params
    from distillset.methods import METHODS

    def args(**params):
        flags = {d: None for d in ("ipc", "iterations", "model", "seed", "device", "checkpoint_every")}
        return argparse.Namespace(params_dict=params, quiet=True, **flags)

    ncfm = method_params(METHODS.get("ncfm"), args(num_experts=3), PRESETS["quick"])
    assert (ncfm["num_experts"], ncfm["train_epochs"]) == (3, 2)  # --param wins, the preset fills the rest
    assert "num_experts" not in method_params(METHODS.get("ncfm"), args(), PRESETS["paper"])  # the paper's 20
    mtt = METHODS.get("mtt")(**method_params(METHODS.get("mtt"), args(), PRESETS["quick"]))
    mtt._validate_params()
    assert (mtt.num_experts, mtt.train_epochs, mtt.max_start_epoch) == (2, 3, 2)


def test_report_and_show_details(tmp_path, capsys):
    import json as _json

    out = tmp_path / "run"
    assert main(["distill", "--method", "dm", "--param", "factor=2", "--iterations", "1", "--no-eval", "--quiet",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert main(["show", str(out), "--grid", str(tmp_path / "g.png")]) == 0
    assert "(hard, trained with ce)  ipc: 1 (each image holds 2x2)" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--runs", "1", "--epochs", "1", "--quiet", "--device", "cpu",
                 "--json", str(tmp_path / "new" / "folder" / "r.json")]) == 0  # its folder is made
    assert _json.loads((tmp_path / "new" / "folder" / "r.json").read_text())
    (out / "result.json").write_text("{}")
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 2
    assert "has no 'dataset' or 'method'" in capsys.readouterr().err
