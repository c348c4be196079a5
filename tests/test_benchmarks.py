"""The benchmark runner's promises: independent random streams, records that say what made them."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))

import run  # noqa: E402

from distillset import Evaluator, get_method  # noqa: E402
from distillset.evaluate import network_seeds  # noqa: E402
from distillset.models import get_model  # noqa: E402
from distillset.utils import make_generator  # noqa: E402
from dsdata_helpers import require_shared  # noqa: E402


def test_stages_get_distinct_seeds():
    seeds = [run.stream_seeds(root, ["random", "herding"]) for root in range(3)]
    every = [v for s in seeds for v in s.values()]
    assert len(set(every)) == len(every)
    assert seeds[0] == run.stream_seeds(0, ["random", "herding"])  # a root seed fixes them all


def test_evaluation_networks_share_no_draws_with_distillation(digits):
    """DD's images are normal draws from the distillation stream; no evaluation network may start from them."""
    streams = run.stream_seeds(0, ["random"])
    method = get_method("dd", ipc=1, iterations=0, random_state=streams["distill"], device="cpu", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # iterations=0 warns that it returns the initialisation: wanted here
        syn = method.fit(digits).synthetic_.images.flatten()
    draws = torch.randn(100_000, generator=make_generator(streams["distill"]))  # the stream's first draws
    assert torch.isin(syn, draws).all()  # the test can fail: the set is made of this stream's numbers
    ev = Evaluator(n_models=5, random_state=streams["evaluate"])
    assert streams["distill"] not in {s for pair in network_seeds(ev.random_state, 0, ev.n_models) for s in pair}
    for init_seed, train_seed in network_seeds(ev.random_state, 0, ev.n_models):
        weights = torch.cat([p.flatten() for p in get_model("convnet", digits.image_shape, 10, seed=init_seed).parameters()])
        # float32 values collide by chance (about 1 in 1000 here); a shared stream would match them all
        assert torch.isin(weights, syn).float().mean() < 0.01
        order = torch.randperm(50, generator=make_generator(train_seed))
        assert not torch.equal(order, torch.randperm(50, generator=make_generator(streams["distill"])))


def test_random_baseline_is_not_the_methods_initialisation(digits):
    streams = run.stream_seeds(0, ["random"])
    dm = get_method("dm", ipc=2, iterations=0, random_state=streams["distill"], device="cpu", progress=False)
    rnd = get_method("random", ipc=2, random_state=streams["baseline/random"], device="cpu")
    assert not torch.equal(dm.fit(digits).synthetic_.images, rnd.fit(digits).synthetic_.images)


def test_a_committed_record_reproduces():
    """``run.py --check``: the committed LS record re-runs network for network (bit-identical on its software/CPU)."""
    root = require_shared("mnist")
    env = {**os.environ, "DISTILLSET_DATA": str(root)}
    out = subprocess.run([sys.executable, str(Path(run.__file__)), "--check", "check_mnist_ipc1_ls"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "reproduced" in out.stdout


def _record(method, seed_accs, other=None, loss="ce", **extra):
    """A minimal results record: per root seed, the first architecture's network accuracies."""
    def res(label, accs):
        return {label: {"convnet": {"accuracies": accs, "mean": sum(accs) / len(accs)}}}
    per_seed = [{"seed": i, "results": res(method, a)} for i, a in enumerate(seed_accs)]
    if other is not None:
        for run_, a in zip(per_seed, other):
            run_["other_augment"] = {"augment": "none", **res(method, a)}
    entry = {"eval": {"models": "convnet", "n_models": 2, "epochs": 300, "augment": "auto", "loss": loss}}
    return {"method": method, "dataset": "mnist", "ipc": 1, "seeds": list(range(len(seed_accs))), "entry": entry,
            "per_seed": per_seed, "loss": loss, "other_augment": {"augment": "none"} if other else None,
            "results": res(method, [a for accs in seed_accs for a in accs]), **extra}


def test_scores_join_the_right_records_per_seed():
    import report
    from distillset.scores import ars, lrs

    dm = _record("dm", [[80, 82], [90, 92]], other=[[70, 70], [75, 75]])
    rnd = _record("random", [[60, 60], [50, 50]], other=[[55, 55], [45, 45]])
    full = {"results": {"full": {"convnet": {"mean": 99.0}}}}
    assert report.protocol(dm) == report.protocol(_record("random", [[1, 1]] * 2, loss="mse"))  # loss aside
    s = report.scores_of(dm, rnd, full)
    # per seed: IOR 21 and 41; HLR 18 and 8; ARS from (21, 15) and (41, 30)
    assert s["IOR"] == "31.0 ± 14.1" and s["HLR"] == "13.0 ± 7.1"
    expect_lrs = [lrs(21, 18), lrs(41, 8)]
    assert s["LRS"] == f"{sum(expect_lrs) / 2:.1f} ± {abs(expect_lrs[0] - expect_lrs[1]) / 2 ** 0.5:.1f}"
    expect_ars = [ars(21, 15), ars(41, 30)]
    assert s["ARS"] == f"{sum(expect_ars) / 2:.1f} ± {abs(expect_ars[0] - expect_ars[1]) / 2 ** 0.5:.1f}"
    assert report.scores_of(dm, None, None) == {"IOR": "-", "HLR": "-", "LRS": "-", "ARS": "-"}
    ls = _record("ls", [[80, 82], [90, 92]], label_kind="learned")  # no hard-label networks: no HLR, no LRS
    assert report.scores_of(ls, rnd, full) == {"IOR": "31.0 ± 14.1", "HLR": "-", "LRS": "-", "ARS": "-"}


def test_rows_under_another_network_or_augmentation_get_their_own_table():
    import report

    base = _record("dm", [[80, 82]])
    kernel_net = _record("kip", [[70, 71]])
    kernel_net["entry"]["eval"].update(models="ntk_fc(centred=True)", augment="none")
    assert report.cell_of(base) != report.cell_of(kernel_net)
    assert report.cell_of(base) == report.cell_of(_record("random", [[60, 61]], loss="mse"))  # loss is per row


def test_every_profile_entry_builds_its_method_and_evaluator():
    """A typo in a config's parameters fails here, not hours into a GPU run."""
    import yaml

    from distillset.utils import validate_params

    for path in sorted((Path(run.HERE) / "configs").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text())["entries"]:
            where = f"{path.name}: {entry['name']}"
            if "kind" in entry:  # an application entry (benchmarks/applications.py): its own test below
                continue
            if entry["method"] == "full":  # the runner's whole-training-set reference, not a method
                continue
            params = {"progress": False, **entry.get("params", {}), "ipc": entry.get("ipc", 1), "random_state": 0}
            try:
                get_method(entry["method"], **params)._validate_params()
                ev = dict(entry.get("eval", {}))
                evaluator = Evaluator(ev.pop("models", "convnet"), **ev)
                validate_params("Evaluator", vars(evaluator), Evaluator._parameter_constraints)
            except Exception as e:  # noqa: BLE001 - report which entry
                raise AssertionError(f"{where}: {e}") from None


def test_every_application_entry_names_registered_methods_with_valid_parameters():
    import yaml

    from distillset.data import DATASETS

    entries = yaml.safe_load((Path(run.HERE) / "configs" / "applications.yaml").read_text())["entries"]
    for e in entries:
        DATASETS.get(e["dataset"])
        methods = e.get("methods") or e.get("pipelines") or list(e.get("proxies", {}))
        params = e.get("params") or e.get("proxies") or {}
        for m in methods:
            if m == "full":
                continue
            kw = {"ipc": e.get("ipc", 1), **params.get(m, {})}
            get_method(m, **kw)._validate_params()  # raises, naming the parameter, on a typo
        assert e["kind"] in ("continual", "nas", "audit"), e["name"]


def test_dirty_flag_ignores_the_runners_own_outputs(tmp_path, monkeypatch):
    """An earlier entry of the same run rewrites the report files; only other tracked changes mark a record dirty."""
    bench = tmp_path / "benchmarks"
    (bench / "results").mkdir(parents=True)
    for name in ("run.py", "report.html", "RESULTS.md", "results/a.json"):
        (bench / name).write_text("0\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(git + args, check=True)
    monkeypatch.setattr(run, "HERE", bench)
    for name in ("report.html", "RESULTS.md", "results/a.json"):
        (bench / name).write_text("1\n")
    assert run.git_dirty() is False
    (bench / "run.py").write_text("1\n")
    assert run.git_dirty() is True


def test_a_rerun_picks_up_the_kept_distillation_and_networks(digits, tmp_path):
    entry = {"name": "t", "method": "dm", "ipc": 1, "params": {"iterations": 4}, "baselines": ["random"],
             "eval": {"models": "mlp", "n_models": 2, "epochs": 2, "augment": "none"}}
    kept = tmp_path / ".progress" / "abc" / "t" / "cpu-t1-data0"  # as progress_dir lays it out
    first = run.run_seed(entry, digits, 0, "cpu", progress=kept)
    assert (kept / "seed0" / "distill" / "checkpoint.safetensors").is_file()
    assert len(list((kept / "seed0" / "networks").iterdir())) == 4  # the set's 2 networks and random's 2
    assert run.progress_lines(tmp_path) == ["abc t (cpu-t1-data0) seed0: distilled 4/4 iterations, 4 network(s) kept"]
    again = run.run_seed(entry, digits, 0, "cpu", progress=kept)
    for label in ("dm", "random"):
        assert again["results"][label]["mlp"]["accuracies"] == first["results"][label]["mlp"]["accuracies"]
        assert again["results"][label]["mlp"]["extra"]["resumed_networks"] == 2
    assert torch.equal(again["method_obj"].synthetic_.images, first["method_obj"].synthetic_.images)
    assert again["distill_seconds"] >= first["distill_seconds"] * 0.5  # the resumed fit counts the earlier run
    fresh = run.run_seed(entry, digits, 0, "cpu")  # nothing kept: the same numbers from scratch
    assert fresh["results"]["dm"]["mlp"]["accuracies"] == first["results"]["dm"]["mlp"]["accuracies"]


def test_gpu_data_parts_unpack_to_the_same_files(tmp_path):
    import gpu_data

    root = tmp_path / "data" / "toy"
    for split, classes in (("train", "abcd"), ("test", "ab")):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            (root / split / c / "0.jpg").write_bytes(f"{split}{c}".encode() * 100)
    (root / "README.md").write_text("toy")
    a, b = gpu_data.pack("toy", tmp_path / "data", tmp_path / "gpu")
    with __import__("zipfile").ZipFile(b) as z:
        assert sorted(z.namelist()) == ["toy/train/c/0.jpg", "toy/train/d/0.jpg"]
    for part in (a, b):
        gpu_data.unpack(part, tmp_path / "out")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "out" / "toy") for p in (tmp_path / "out" / "toy").rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (tmp_path / "out" / "toy" / f).read_bytes() for f in files)


def test_parts_let_a_row_finish_seed_by_seed(tmp_path, monkeypatch, capsys):
    """Seeds run apart (other sessions, machines) merge into the record a whole run makes, then go away."""
    import report

    entry = {"name": "t", "dataset": "digits", "method": "dm", "ipc": 1, "seeds": [0, 1],
             "params": {"iterations": 2}, "baselines": ["random"],
             "eval": {"models": "mlp", "n_models": 2, "epochs": 2, "augment": "none"}}
    monkeypatch.setattr(run, "load_profile", lambda profile: [entry])
    monkeypatch.setattr(run, "git_dirty", lambda: False)
    out = tmp_path / "parts-run"
    args = ["--profile", "x", "--only", "t", "--in-process", "--out", str(out), "--part", "--seeds"]
    assert run.main(args + ["1"]) == 0
    folder = out / "parts" / "t"
    sid = run.parts.stamp_id(run.part_stamp(entry, run.entry_data(entry)))
    assert sorted(p.name for p in folder.iterdir()) == [f"seed1-{sid}-set.json", f"seed1-{sid}-set.safetensors",
                                                        f"seed1-{sid}.json"]  # seed 1 is the last: its set too
    assert not (out / "t.json").exists() and "waits for seed(s) 0" in capsys.readouterr().out
    assert any(line.startswith(f"part t seed1-{sid}: made at") for line in run.progress_lines(out))
    monkeypatch.setattr(report, "RESULTS", out)
    assert report.pending_lines()[-2].startswith(f"| t | {sid} | 1: ")
    assert run.main(args + ["0"]) == 0
    record = json.loads((out / "t.json").read_text())
    assert record["parts"]["loaded"] == [0, 1] and not folder.exists() and report.pending_lines() == []
    assert record["command"].endswith("--only t --threads 1")  # the whole entry's command
    assert record["peak_rss_mib"] >= max(r["peak_rss_mib"] for r in record["per_seed"])
    assert (out / "sets" / "t.safetensors").is_file()
    subset = run.run_entry(entry, "x", seeds=[1], out=tmp_path / "subset")  # a one-seed record keeps no parts
    assert subset["parts"] is None and not (tmp_path / "subset" / "parts").exists()
    monkeypatch.setattr(run, "git_dirty", lambda: True)  # a dirty tree keeps no parts
    whole = run.run_entry(entry, "x", out=tmp_path / "whole")
    assert whole["parts"] is None and not (tmp_path / "whole" / "parts").exists()
    for label in ("dm", "random"):
        assert record["results"][label]["mlp"]["accuracies"] == whole["results"][label]["mlp"]["accuracies"]


def test_a_part_loads_only_under_its_own_stamp_and_intact(digits, tmp_path, capsys):
    entry = {"name": "t", "dataset": "digits", "method": "random", "ipc": 1, "seeds": [0], "baselines": [],
             "eval": {"models": "mlp", "n_models": 1, "epochs": 1, "augment": "none"}}
    stamp = {"code": "tree-a"}
    first = run.seed_result(entry, digits, 0, "cpu", None, tmp_path, stamp)
    assert run.parts.load(tmp_path, "t", 0, stamp, need_set=True)["results"] == json.loads(json.dumps(first["results"]))
    assert run.parts.load(tmp_path, "t", 0, {"code": "tree-b"}, need_set=True) is None  # other code: not found
    assert run.parts.load(tmp_path, "t", 0, None, need_set=True) is None  # a dirty tree uses no part
    path = run.parts.part_path(tmp_path, "t", 0, stamp)
    set_meta = json.loads(Path(f"{run.parts.set_stem(path)}.json").read_text())
    assert set_meta["commit"] == first["commit"] and set_meta["benchmark_entry"] == "t"  # its code is named
    other = run.parts.part_path(tmp_path, "t", 0, {"code": "tree-b"})
    other.write_bytes(path.read_bytes())  # a part renamed into another stamp's name
    assert run.parts.load(tmp_path, "t", 0, {"code": "tree-b"}, need_set=False) is None
    assert "holds another stamp" in capsys.readouterr().out
    set_file = Path(f"{run.parts.set_stem(path)}.safetensors")
    set_file.write_bytes(set_file.read_bytes()[:-4] + b"\0\0\0\0")  # a set half-merged from elsewhere
    assert run.parts.load(tmp_path, "t", 0, stamp, need_set=True) is None
    assert "lacks its set" in capsys.readouterr().out
    assert run.parts.load(tmp_path, "t", 0, stamp, need_set=False) is not None
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 0, "x": 1'))  # an edit breaks the checksum
    assert run.parts.load(tmp_path, "t", 0, stamp, need_set=False) is None
    assert "checksum fails" in capsys.readouterr().out
    path.write_text("<<<<<<< HEAD")  # a merge conflict: one line, no traceback
    assert run.parts.load(tmp_path, "t", 0, stamp, need_set=False) is None


def test_a_full_data_entry_keeps_its_part_without_a_set(digits, tmp_path):
    entry = {"name": "f", "dataset": "digits", "method": "full", "seeds": [0],
             "eval": {"models": "mlp", "n_models": 1, "epochs": 1, "augment": "none"}}
    run.seed_result(entry, digits, 0, "cpu", None, tmp_path, {"code": "a"})
    assert run.parts.load(tmp_path, "f", 0, {"code": "a"}, need_set=False)["results"]["full"]


def test_stamps_ignore_descriptions_and_see_settings():
    entry = {"name": "t", "method": "dm", "params": {"iterations": 2}, "paper": "1", "seeds": [0]}
    kw = {"code": "a", "runner": "r", "data_hash": "d", "environment": {"threads": 1}}
    same = run.parts.stamp({**entry, "paper": "2", "seeds": [0, 1, 2]}, **kw)
    assert run.parts.stamp(entry, **kw) == same
    assert run.parts.stamp({**entry, "params": {"iterations": 3}}, **kw) != same
    assert run.parts.stamp(entry, **{**kw, "code": None}) is None
    assert run.parts.stamp({**entry, "extra": "m:f"}, **kw) is None


def test_part_mistakes_are_one_line_before_any_work(monkeypatch):
    entry = {"name": "t", "dataset": "digits", "method": "dm", "seeds": [0, 1]}
    monkeypatch.setattr(run, "git_dirty", lambda: False)
    for seeds, words in ((None, "name them with --seeds"), ([2], "not among t's seeds")):
        with pytest.raises(SystemExit, match=words) as e:
            run.refuse_part([entry], seeds)
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="has an extra hook"):
        run.refuse_part([{**entry, "extra": "m:f"}], [0])
    monkeypatch.setattr(run, "git_dirty", lambda: True)
    with pytest.raises(SystemExit, match="distillset/ is committed"):
        run.refuse_part([entry], [0])


@pytest.mark.parametrize("argv,words", [
    (["--profile", "nope"], "unknown profile 'nope'; known: applications, check, cpu"),
    (["--threads", "0", "--only", "mnist_ipc1_dm"], "--threads must be >= 1"),
    (["--profile", "tables", "--only", "mnist_ipc1_dm", "--seeds", "0", "-1"], "--seeds must be root seeds >= 0"),
    # a seed given twice was run twice and counted as two seeds (std 0 over identical numbers)
    (["--profile", "tables", "--only", "mnist_ipc1_dm", "--seeds", "0", "0"], "'0' given twice in --seeds"),
    (["--profile", "tables", "--only", "mnist_ipc1_dm", "mnist_ipc1_dm"], "'mnist_ipc1_dm' given twice in --only"),
    (["--only", "mnist_ipc1_dm"], "no entry 'mnist_ipc1_dm' in --profile cpu; it is in --profile tables"),
    (["--profile", "tables", "--only", "mnist_ipc1_dmm"], "did you mean mnist_ipc1_dm"),
    # a subset of the seeds without --part replaced the committed record of all of them
    (["--profile", "tables", "--only", "mnist_ipc1_dm", "--seeds", "1"], "mnist_ipc1_dm.json .* without seed.s. 0 2"),
    (["--report", "--only", "mnist_ipc1_dm"], "--report and --only contradict"),  # was ignored silently
    (["--check", "mnist_ipc1_dm", "--progress"], "--check and --progress contradict"),
    # ignored silently: --check re-runs with the record's threads, --report and --progress read every record
    (["--check", "mnist_ipc1_dm", "--threads", "2"], "--check and --threads contradict"),
    (["--report", "--profile", "tables"], "--report and --profile contradict"),
    (["--tolerance", "1"], "with --check; got 1.0 without --check"),
    (["--check", "mnist_ipc1_dm", "--tolerance", "nan"], "a number >= 0, with --check; got nan"),
    (["--check", "speed_cpu"], "is not a record of this runner's entries"),  # was KeyError: 'profile'
])
def test_runner_flag_mistakes_are_one_line_before_any_work(argv, words, monkeypatch):
    monkeypatch.setattr(run, "run_entry", lambda *a, **k: pytest.fail("a run started"))
    monkeypatch.setattr(run.subprocess, "call", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match=words) as e:
        run.main(argv)
    assert "\n" not in str(e.value)


def test_a_damaged_record_is_named_in_one_line(tmp_path, monkeypatch):
    """--report, --check and --progress on a hand-damaged file (each was a traceback)."""
    import report

    for text in ("{not json", "[]", "\udcff"):
        path = tmp_path / "x.json"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(SystemExit, match="x.json") as e:
            report.read_record(path)
        assert "\n" not in str(e.value)
    seed = tmp_path / ".progress" / "c0ffee0" / "e" / "cpu-t1-data0" / "seed0"
    (seed / "distill").mkdir(parents=True)
    (seed / "distill" / "checkpoint.safetensors").write_bytes(b"\xff" * 64)
    assert "a damaged checkpoint" in run.progress_lines(tmp_path)[0]


def test_committed_results_md_is_what_the_report_writes():
    """RESULTS.md is generated: a record, part or NOTES change committed without `run.py --report` fails here."""
    committed = (Path(run.HERE) / "RESULTS.md").read_text()
    assert committed == run.results_text(), "benchmarks/RESULTS.md is stale: run `python benchmarks/run.py --report`"


def test_ablation_refuses_bad_input_in_one_line_before_any_work(tmp_path):
    import ablation

    def refusal(*argv):
        with pytest.raises(SystemExit) as e:
            ablation.main([*argv, "--out", str(tmp_path)])
        return str(e.value)

    assert refusal("no_such_entry", "0").startswith("unknown entry 'no_such_entry' in tables.yaml")
    assert "holds out no validation split" in refusal("mnist_ipc10_dm", "0")
    assert "must look like key=value" in refusal("mnist_ipc10_idm", "0", "ce_weight")
    assert refusal("mnist_ipc10_idm", "0", "no_such_param=1").startswith("Unknown IDM parameter 'no_such_param'.")
    assert "Did you mean 'ce_weight'?" in refusal("mnist_ipc10_idm", "0", "ce_weigth=0")
    assert "got both 'init' and its new name 'image_init'" in refusal("mnist_ipc10_idm", "0", "init=noise",
                                                                      "image_init=real")
    kept = tmp_path / "ablation_mnist_ipc10_idm_seed0_ce_weight-0.json"
    kept.write_text("mine")
    assert "exists: pass --overwrite" in refusal("mnist_ipc10_idm", "0", "ce_weight=0")
    assert kept.read_text() == "mine"  # nothing a user made is overwritten


def test_a_measured_reference_replaces_the_cited_figures():
    """speed.py --reference-code: the row compares with the figure measured here, never the cited one."""
    import speed

    run_row = dict(setting="dm_ipc1", precision="fp32", seconds=0.5, images_per_second=1280.0, peak_rss_mib=480.0,
                   conv_gflops_fp32_peak=100.0)
    record = dict(device="cpu", runs=[run_row, {**run_row, "setting": "kip_step"}], commit="abc", date="2026-12-03",
                  command="python benchmarks/speed.py", versions={"torch": "2.13.0"},
                  hardware=dict(cpu_count=2, torch_threads=2, isa=["avx2"]),
                  reference_measured={"dm_ipc1": {"seconds": 1.25, "peak_rss_mib": 870.0}})
    text = "\n".join(speed.report_lines(record))
    assert "2 torch threads, avx2)" in text and "measured on this machine" in text and "(cited)" not in text
    assert "| dm_ipc1 | fp32 | 1 | 0.500 | 1280 | 480 | - | 1.250 | 2.50x | 870 |" in text
    assert "| kip_step | fp32 | 1 | 0.500 | 1280 | 480 | - | - | - | - |" in text
    cited = "\n".join(speed.report_lines({**record, "reference_measured": None}))
    assert "(cited)" in cited and "| 0.69 | 1.38x | 1229 |" in cited


def test_the_reference_copy_changes_only_what_this_torch_refuses(tmp_path):
    import reference_speed

    code = tmp_path / "code"
    code.mkdir()
    (code / "main_DM.py").write_text("print('dm')\n")
    (code / "networks.py").write_text("        out = out.view(out.size(0), -1)\n")
    (code / "utils.py").write_text("        theta[:] = theta[0]\n        x = y[0]\n")
    with pytest.raises(SystemExit, match="is not a checkout of the reference"):
        reference_speed.prepare(tmp_path, sys.executable, tmp_path / "w0")
    ref = reference_speed.prepare(code, sys.executable, tmp_path)
    assert (ref["dir"] / "networks.py").read_text() == "        out = out.reshape(out.size(0), -1)\n"
    assert (ref["dir"] / "utils.py").read_text() == "        theta[:] = theta[0].clone()\n        x = y[0]\n"
    assert (code / "networks.py").read_text().count("view") == 1  # the checkout itself is untouched
    probe = "from torchvision import datasets, transforms; from torchvision.utils import save_image; print('ok')"
    out = subprocess.run([sys.executable, "-c", probe], env=ref["env"], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr  # the stand-in (or the real torchvision) has what it imports
