"""The CLI's error boundary, driven through bad inputs and injected faults.

Every case asserts: exit code 2 (1 for a diverged run), exactly one line on stderr naming the
problem, no traceback, and no file created, changed or removed anywhere under the working folder.
Cases run in-process (``main(argv)``); two also run as real subprocesses.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from distillset.cli import main
from distillset.cli.common import RUN_CONFIG_HEADER

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--iterations", "2", "--no-eval", "--quiet", "--device", "cpu", "--param", "batch_real=4"]
META = {"dataset": "digits", "method": "dm", "num_classes": 10, "classes": [str(i) for i in range(10)],
        "image_shape": [1, 8, 8], "mean": [0.3053], "std": [0.3758]}  # digits' own


def write_set(folder: Path, name="set", images=None, labels=None, meta=META, drop=()):
    """A synthetic-set pair written directly (no validation), so any damage can be planted."""
    tensors = {"images": torch.zeros(10, 1, 8, 8) if images is None else images,
               "labels": torch.arange(10) if labels is None else labels}
    save_file({k: v for k, v in tensors.items() if k not in drop}, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return str(folder / f"{name}.json")


def nan_pixel():
    x = torch.zeros(10, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    return x


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_mode,
                                         None if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small completed run with a checkpoint (resume and overwrite cases copy it)."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert main(["distill", *FAST, "--checkpoint-every", "1", "--out", str(out)]) == 0
    return out


def _cfg(text):
    return lambda d, run: (d / "c.yaml").write_text(text)


def _copy_run(damage=lambda checkpoint: None):
    """A copy of the finished run in ``d/run``, its checkpoint passed to ``damage``."""
    def setup(d, run):
        shutil.copytree(run, d / "run")
        damage(d / "run" / "checkpoint" / "checkpoint.safetensors")
    return setup


def _edit_result(**changes):
    """A copy of the finished run in ``d/run`` whose result.json has ``changes`` (a hand edit gone wrong)."""
    def setup(d, run):
        shutil.copytree(run, d / "run")
        record = json.loads((d / "run" / "result.json").read_text())
        (d / "run" / "result.json").write_text(json.dumps({**record, **changes}))
    return setup


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _hand_edit(edit, keep_seal=True):
    """``edit(tensors, record)`` on a checkpoint, written back with the checksum it had (a hand edit), or
    without it (``keep_seal=False``: an edit that hides itself)."""
    def damage(p: Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(p, framework="pt") as f:
            meta = f.metadata()
        flat, record = load_file(p), json.loads(meta["record"])
        edit(flat, record)
        kept = meta if keep_seal else {k: v for k, v in meta.items() if k != "sha256"}
        save_file(flat, p, metadata={**kept, "record": json.dumps(record)})
    return damage


def _set(**kw):
    return lambda d, run: write_set(d, **kw)


cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
root = pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")



def case(name, argv, setup, code, text, marks=(), env=None):
    """argv ("{d}" = the case's folder), setup(d, finished_run) or None, exit code, text the line must hold,
    environment variables to set."""
    return pytest.param(argv, setup, code, text, env or {}, id=name, marks=marks)


CASES = [
    # usage and --param
    case("int-flag-not-int", ["distill", "--ipc", "abc"], None, 2, "invalid int value: 'abc'"),
    case("unknown-flag", ["distill", "--ipcs", "3"], None, 2, "unrecognized arguments: --ipcs"),
    case("param-no-equals", ["distill", "--param", "lr_img"], None, 2, "must look like key=value"),
    case("param-unknown-key", ["distill", "--param", "iteratons=2"], None, 2, "Did you mean 'iterations'"),
    case("param-and-flag", ["distill", "--param", "iterations=2", "--iterations", "3"], None, 2, "given twice"),
    case("param-managed", ["distill", "--param", "checkpoint_dir=x"], None, 2, "with --out"),
    case("param-bad-yaml", ["distill", "--param", "lr_img=[1"], None, 2, "not valid YAML"),
    case("param-out-of-range", ["distill", "--param", "lr_img=-1"], None, 2, "'lr_img' parameter of DM must be"),
    case("param-infinite", ["distill", "--param", "lr_img=.inf"], None, 2, "'lr_img' parameter of DM must be a float > 0. Got inf"),
    case("param-bad-option", ["distill", "--param", "image_init=magic"], None, 2, "'image_init' parameter of DM must be one of"),
    case("param-wrong-type", ["distill", "--param", "batch_real=many"], None, 2, "'batch_real' parameter of DM"),
    case("iterations-zero", ["distill", "--iterations", "0"], None, 2, "iterations=0"),
    case("iterations-closed-form", ["distill", "--method", "ls", "--iterations", "5"], None, 2,
         "--iterations must be 0 (it has no iterations; leave the option out). Got 5"),
    case("ipc-zero", ["distill", "--ipc", "0"], None, 2, "--ipc must be an int >= 1"),
    case("ipc-too-large", ["distill", "--ipc", "1000"], None, 2, "larger than the smallest class"),
    case("seed-negative", ["distill", "--seed", "-1"], None, 2, "--seed must be an int in the range [0, "),  # the flag
    case("seed-negative-param", ["distill", "--param", "random_state=-1"], None, 2, "'random_state' parameter of DM"),
    case("checkpoint-every-zero", ["distill", "--checkpoint-every", "0"], None, 2,
         "--checkpoint-every must be an int >= 1"),
    case("ipc-beyond-holdout", ["distill", "--val-per-class", "130", "--ipc", "2"], None, 2,
         "(1 training images after 130 per class were held out for validation). Use ipc <= 1, or hold out fewer."),
    case("no-eval-with-eval-options", ["distill", "--no-eval", "--eval-runs", "3", "--baseline", "none"], None, 2,
         "--no-eval skips the evaluation that --eval-runs set up; drop it or --no-eval."),
    case("no-eval-config-with-eval-options", ["distill", "--config", "{d}/c.yaml", "--eval-runs", "3"],
         _cfg("no_eval: true\n"), 2, "set up; drop it or no_eval: true from "),
    case("unknown-dataset", ["distill", "--dataset", "mnst"], None, 2, "Unknown dataset 'mnst'"),
    case("unknown-method", ["distill", "--method", "dx"], None, 2, "Unknown method 'dx'"),
    case("unknown-model", ["distill", "--model", "convnett"], None, 2, "Unknown model 'convnett'. Did you mean"),
    case("cuda-unavailable", ["distill", "--device", "cuda"], None, 2, "sees no CUDA device", marks=cuda),
    case("device-unknown", ["distill", "--device", "gpu"], None, 2, "'device' parameter must be"),
    case("device-meta", ["distill", "--device", "meta"], None, 2, "'device' parameter must be 'auto', 'cpu'"),
    case("unknown-eval-model", ["distill", "--eval-models", "mlp", "convnett"], None, 2, "Unknown model 'convnett'"),
    case("eval-runs-zero", ["distill", "--eval-runs", "0"], None, 2, "--eval-runs must be an int >= 1. Got 0"),
    case("eval-augment-unknown", ["distill", "--eval-augment", "wiggle"], None, 2, "Unknown augmentation family"),
    case("unknown-baseline", ["distill", "--baseline", "rnd"], None, 2, "Unknown method 'rnd'"),
    case("resume-and-overwrite", ["distill", "--resume", "--overwrite"], None, 2, "contradict"),
    # config files
    case("config-bad-preset", ["distill", "--config", "{d}/c.yaml"], _cfg("preset: turbo\n"), 2, "'turbo' is not one of"),
    case("config-unknown-key", ["distill", "--config", "{d}/c.yaml"], _cfg("ipcs: 3\n"), 2, "Unknown key 'ipcs'"),
    case("config-missing", ["distill", "--config", "{d}/nope.yaml"], None, 2, "Config file not found"),
    case("config-a-folder", ["distill", "--config", "{d}"], None, 2, "is a folder; --config takes a YAML file"),
    case("config-not-yaml", ["distill", "--config", "{d}/c.yaml"], _cfg("a: [1\n"), 2, "is not valid YAML"),
    case("config-a-list", ["distill", "--config", "{d}/c.yaml"], _cfg("- 1\n- 2\n"), 2, "must be a YAML mapping"),
    case("config-wrong-type", ["distill", "--config", "{d}/c.yaml"], _cfg("ipc: ten\n"), 2, "ipc must be an int"),
    case("config-out-empty", ["distill", "--config", "{d}/c.yaml"], _cfg("out: ''\n"), 2,
         "c.yaml: out: the path is empty (an unset shell variable?)"),
    case("config-key-a-list", ["distill", "--config", "{d}/c.yaml"], _cfg("? [a, b]\n: 1\n"), 2, "is not valid YAML"),
    case("config-key-twice", ["distill", "--config", "{d}/c.yaml"], _cfg("ipc: 10\nparams: {lr_img: 1}\nipc: 50\n"), 2,
         "c.yaml: 'ipc' is given twice (line 3); give it once."),
    case("config-keys-equal-in-python", ["distill", "--config", "{d}/c.yaml"], _cfg("1: 10\ntrue: 50\n"), 2,
         "'true' is given twice (line 2, as '1' before); give it once."),  # one key of the dict YAML builds
    case("model-option-twice", ["distill", "--model", "convnet(width=8, width=9)"], None, 2,
         "The model spec 'convnet(width=8, width=9)' gives 'width' twice"),
    case("config-params-a-list", ["distill", "--config", "{d}/c.yaml"], _cfg("params: [1]\n"), 2, "'params' must be"),
    case("config-params-and-flag", ["distill", "--config", "{d}/c.yaml", "--iterations", "3"],
     _cfg("params: {iterations: 2}\n"), 2, "given twice"),
    # output folders
    case("out-empty", ["distill", "--out", ""], None, 2, "argument --out: the path is empty"),
    case("out-not-utf8", ["distill", "--out", "{d}/bad" + os.fsdecode(b"\xff")], None, 2, "is not valid UTF-8"),
    case("evaluate-json-empty", ["evaluate", "{d}/set.json", "--json", " "], None, 2, "argument --json: the path is empty"),
    case("resume-a-foreign-folder", ["distill", "--out", "{d}/mine", "--resume", *FAST],
         lambda d, _: ((d / "mine").mkdir(), (d / "mine" / "report.html").write_text("mine")), 2,
         "holds files but no checkpoint to resume (they are not a run's); choose another --out."),
    case("resume-fewer-iterations", ["distill", "--out", "{d}/run", "--resume", *FAST[2:], "--iterations", "1"],
         _copy_run(), 2, "the checkpoint is at iteration 2, past this run's iterations=1"),
    case("seed-too-large", ["distill", "--seed", str(2**70)], None, 2, "an int in the range [0, 18446744073709551615]"),
    case("out-is-a-file", ["distill", "--out", "{d}/f"], lambda d, _: (d / "f").write_text("x"), 2, "is not a folder"),
    case("out-under-a-file", ["distill", "--out", "{d}/f/run"], lambda d, _: (d / "f").write_text("x"), 2, "which is a file"),
    case("out-not-writable", ["distill", "--out", "{d}/ro/run"], lambda d, _: (d / "ro").mkdir(0o500), 2,
                 "is not writable", marks=root),
    case("out-holds-a-run", ["distill", "--out", "{d}/run"], _copy_run(), 2, "pass --resume to continue"),
    case("resume-changed-setting", ["distill", "--out", "{d}/run", "--resume", *FAST, "--param", "lr_img=2.0"], _copy_run(), 2,
     "the checkpoint has lr_img=1.0 but this run has lr_img=2.0"),
    case("resume-truncated-checkpoint", ["distill", "--out", "{d}/run", "--resume"], _copy_run(_truncate), 2,
     "checkpoint.safetensors is unreadable"),
    case("resume-garbage-checkpoint", ["distill", "--out", "{d}/run", "--resume"],
     _copy_run(lambda p: p.write_bytes(b"\0" * 99)), 2,
     "checkpoint.safetensors is unreadable"),
    # a checkpoint edited by hand: found by its checksum before any work (each resumed into a traceback or silently)
    case("resume-labels-out-of-range", ["distill", "--out", "{d}/run", "--resume"],
         _copy_run(_hand_edit(lambda t, r: t["tensor.labels"].add_(50))), 2, "does not match the checksum"),
    case("resume-reshaped-images", ["distill", "--out", "{d}/run", "--resume"],
         _copy_run(_hand_edit(lambda t, r: t.update({"tensor.images": t["tensor.images"][:1]}))), 2,
         "does not match the checksum"),
    case("resume-lost-optimizer-buffer", ["distill", "--out", "{d}/run", "--resume"],
         _copy_run(_hand_edit(lambda t, r: t.pop(next(k for k in t if k.startswith("optim."))))), 2,
         "does not match the checksum"),
    case("resume-cut-history", ["distill", "--out", "{d}/run", "--resume"],
         _copy_run(_hand_edit(lambda t, r: r["history"]["loss"].pop())), 2, "does not match the checksum"),
    case("resume-seal-cut-off", ["distill", "--out", "{d}/run", "--resume"],  # passed as an old, unsealed one
         _copy_run(_hand_edit(lambda t, r: r["history"]["loss"].pop(), keep_seal=False)), 2, "lost the checksum it was written with"),
    # environment variables: read before any work (a bad one was a traceback in the middle of a run)
    case("env-world-size-text", ["distill", *FAST], None, 2, "WORLD_SIZE='two' must be an int >= 1",
         env={"WORLD_SIZE": "two"}),
    case("env-timeout-negative", ["distill", *FAST], None, 2, "DISTILLSET_TIMEOUT_S='-5' must be a float in the range (0, 1000000000.0]",
         env={"DISTILLSET_TIMEOUT_S": "-5"}),
    case("env-keep-freed-memory-word", ["evaluate", "{d}/set.json"], _set(), 2,
         "DISTILLSET_KEEP_FREED_MEMORY='off' must be an int in the range [0, 1]", env={"DISTILLSET_KEEP_FREED_MEMORY": "off"}),
    # data
    case("data-missing", ["distill", "--dataset", "mnist", "--data-root", "{d}"], None, 2, "not found"),
    # saved sets: evaluate and show
    case("set-unfinished-run", ["show", "{d}/run"], lambda d, _: (d / "run" / "checkpoint").mkdir(parents=True), 2,
         "is a distill run that has not finished"),
    case("set-missing", ["evaluate", "{d}/nope.json"], None, 2, "Synthetic set file not found"),
    case("set-json-a-list", ["evaluate", "{d}/set.json"], _set(meta=[1, 2]), 2, "must hold a JSON object"),
    case("set-json-invalid", ["evaluate", "{d}/set.json"],
     lambda d, _: (write_set(d), (d / "set.json").write_text("{")), 2, "Re-create the set, or restore this file"),
    case("set-labels-negative", ["evaluate", "{d}/set.json"], _set(labels=torch.arange(10) - 1), 2,
     "Labels must lie in [0, 10)"),
    case("set-labels-float", ["evaluate", "{d}/set.json"], _set(labels=torch.arange(10.0)), 2,
     "must be integer class indices"),
    case("set-labels-out-of-range", ["evaluate", "{d}/set.json"], _set(labels=torch.arange(10) + 5), 2,
     "Got values from 5 to 14. If its files were edited or mixed up, restore them"),
    case("set-labels-missing", ["evaluate", "{d}/set.json"], _set(drop=("labels",)), 2,
     "has no labels tensor"),
    case("set-nan-pixel", ["evaluate", "{d}/set.json"], _set(images=nan_pixel()), 2,
     "images holds 1 NaN or infinite value(s)"),
    case("set-int-images", ["evaluate", "{d}/set.json"], _set(images=torch.zeros(10, 1, 8, 8).long()),
     2, "images must be float"),
    case("set-truncated", ["evaluate", "{d}/set.json"],
     lambda d, _: (write_set(d), _truncate(d / "set.safetensors")), 2, "Cannot read synthetic set file"),
    case("set-no-dataset", ["evaluate", "{d}/set.json"],
     _set(meta={k: v for k, v in META.items() if k != "dataset"}), 2, "no 'dataset'"),
    case("set-unknown-dataset", ["evaluate", "{d}/set.json"], _set(meta={**META, "dataset": "mnst"}),
     2, "Unknown dataset 'mnst'"),
    case("set-own-protocol-missing", ["evaluate", "{d}/set.json", "--protocol", "own", "--device", "cpu"],
     _set(), 2, "no own evaluation protocol"),
    case("evaluate-json-under-a-file", ["evaluate", "{d}/set.json", "--json", "{d}/set.json/r.json"],
     _set(), 2, "which is a file"),
    case("evaluate-json-exists", ["evaluate", "{d}/set.json", "--json", "{d}/mine.json"],
     lambda d, _: (write_set(d), (d / "mine.json").write_text("x")), 2, "pass --overwrite to replace it"),
    case("evaluate-lr-learned-none", ["evaluate", "{d}/set.json", "--lr", "learned", "--data-root", "{d}/none"],
         _set(meta={**META, "dataset": "mnist"}), 2, "lr='learned' needs a set that carries"),  # before the data
    case("evaluate-val-too-large", ["evaluate", "{d}/set.json", "--val-per-class", "1000", "--quiet"], _set(), 2,
         "val_per_class must be an int in [1, 130] for 'digits'"),
    case("evaluate-lr-list-infinite", ["evaluate", "{d}/set.json", "--lr", "0.01", "inf", "--val-per-class", "10",
                                       "--data-root", "{d}/none"],
         _set(meta={**META, "dataset": "mnist"}), 2, "'lr' parameter of Evaluator must be a float > 0"),
    case("evaluate-bad-preset", ["evaluate", "{d}/set.json", "--preset", "turbo"], None, 2, "invalid choice: 'turbo'"),
    case("evaluate-epochs-negative", ["evaluate", "{d}/set.json", "--epochs", "-3"], None, 2, "--epochs must be an int"),
    case("evaluate-model-unknown-option", ["evaluate", "{d}/set.json", "--models", "convnet(widht=8)", "--runs", "1",
                                           "--epochs", "1", "--quiet", "--device", "cpu"], _set(), 2,
     "model 'convnet' has no option 'widht'"),
    case("distill-kernel-bad-depth", ["distill", "--method", "kip", "--param", "kernel=conv_ntk(depth=0)", *FAST[:-2]],
     None, 2, "'depth' parameter of ConvKernel"),
    case("distill-augment-unknown", ["distill", "--param", "augment=wiggle", *FAST], None, 2,
     "Unknown augmentation family 'wiggle'"),
    case("experts-augment-unknown", ["experts", "--dataset", "digits", "--augment", "wiggle", "--quiet"], None, 2,
     "Unknown augmentation family 'wiggle'"),
    case("experts-num-experts-zero", ["experts", "--dataset", "digits", "--num-experts", "0"], None, 2,
         "--num-experts must be an int >= 1. Got 0"),
    case("continual-eval-model-option", ["continual", "--dataset", "digits", "--methods", "dm", "--eval-model",
                                         "convnet(widht=3)", "--out", "{d}/cc"], None, 2, "has no option 'widht'"),
    case("continual-method-twice", ["continual", "--methods", "dm", "random", "dm", "--out", "{d}/cc"], None, 2,
         "'dm' given twice; name each once"),
    case("audit-pipeline-twice", ["audit-mia", "--pipelines", "full", "random", "full", "--out", "{d}/aa"], None, 2,
         "'full' given twice"),
    case("overwrite-no-run", ["distill", "--out", "{d}/proj", "--overwrite", *FAST], lambda d, _: (
        (d / "proj" / "checkpoint").mkdir(parents=True), (d / "proj" / "config.yaml").write_text("mine"),
        (d / "proj" / "checkpoint" / "notes.txt").write_text("mine")), 2, "holds files but no run to replace"),
    case("continual-overwrite-no-run", ["continual", "--out", "{d}/cc", "--overwrite"],
         lambda d, _: ((d / "cc").mkdir(), (d / "cc" / "continual.png").write_text("mine")), 2,
         "no continual.json written by distillset): --overwrite replaces a run's own files only"),
    case("evaluate-seed-negative", ["evaluate", "{d}/set.json", "--seed", "-1"], _set(), 2,
         "--seed must be an int in the range [0, 18446744073709551615]. Got -1"),
    case("cache-root-is-a-file", ["cache", "list"], lambda d, _: (d / "c").write_text("x"), 2,
         "is a file ($DISTILLSET_CACHE names it)", env={"DISTILLSET_CACHE": "{d}/c"}),
    # a key given twice kept its last value silently
    case("param-twice", ["distill", *FAST, "--param", "lr_img=1", "--param", "lr_img=2", "--out", "{d}/r"], None, 2,
         "'lr_img' given twice in --param"),
    case("continual-param-twice", ["continual", "--methods", "dm", "--param", "dm.iterations=1", "--param",
                                   "dm.iterations=2", "--out", "{d}/cc"], None, 2, "'dm.iterations' given twice in --param"),
    case("audit-pipeline-near-miss", ["audit-mia", "--pipelines", "ful", "--out", "{d}/aa"], None, 2,
         "Unknown pipeline 'ful'. Did you mean 'full'?"),
    case("audit-param-without-methods", ["audit-mia", "--pipelines", "full", "--param", "dm.iterations=1", "--out",
                                         "{d}/aa"], None, 2, "this run distils with no method; drop --param"),
    case("continual-seed-negative", ["continual", "--seed", "-1", "--out", "{d}/cc"], None, 2, "--seed must be an int"),
    case("audit-seed-too-large", ["audit-mia", "--seed", str(2**64), "--out", "{d}/aa"], None, 2, "--seed must be an int"),
    case("experts-cache-not-writable", ["experts", "--dataset", "digits", "--num-experts", "1"],  # bar drawn: none
         lambda d, _: (d / "cachefile").write_text("x"), 2, "$DISTILLSET_CACHE", env={"DISTILLSET_CACHE": "{d}/cachefile"}),
    case("baseline-distils", ["distill", "--baseline", "dc"], None, 2,
         "--baseline dc distils (its default 1000 iterations would run after yours); a baseline is one of herding, kcenter"),
    case("evaluate-other-classes", ["evaluate", "{d}/set.json", "--runs", "1", "--epochs", "1", "--device", "cpu"],
         _set(meta={**META, "classes": list("abcdefghij")}), 2,
         "The synthetic set's classes (a, b, c, d, ...) are not those of the data set 'digits' (0, 1, 2, 3, ...)"),
    case("evaluate-other-scale", ["evaluate", "{d}/set.json", "--runs", "1", "--epochs", "1", "--device", "cpu"],
         _set(meta={**META, "mean": [0.25]}), 2,
         "The synthetic set was normalised with mean 0.25 but the data set 'digits' has mean 0.3053; evaluate on the"),
    case("evaluate-model-twice", ["evaluate", "{d}/set.json", "--models", "convnet", "mlp", "convnet", "--runs",
                                  "1", "--epochs", "1", "--device", "cpu"], _set(), 2,
         "'convnet' given twice in 'models' (more networks: n_models); name each once"),
    case("dd-pool-source-misspelt", ["distill", "--method", "dd", "--param", "net_init=pretrained", "--param",
                                     "pool_source=mnistt", *FAST], None, 2, "Unknown dataset 'mnistt'. Did you mean"),
    case("eval-epochs-zero", ["distill", "--iterations", "2", "--eval-epochs", "0"], None, 2,
         "--eval-epochs 0 would score untrained networks; give >= 1"),
    case("evaluate-epochs-zero", ["evaluate", "{d}/set.json", "--epochs", "0"], _set(), 2,
         "--epochs 0 would score untrained networks; give >= 1"),
    case("evaluate-json-is-the-set", ["evaluate", "{d}/set.json", "--json", "{d}/set.json", "--overwrite"], _set(), 2,
         "is a file of the set being evaluated; write it elsewhere"),
    case("report-running-checkpoint-truncated", ["report", "{d}/run", "-o", "{d}/r.html"],
         lambda d, run: (_copy_run(lambda p: p.write_bytes(p.read_bytes()[:100]))(d, run),  # a running run:
                         [f.unlink() for f in (d / "run").iterdir() if f.name not in ("config.yaml", "checkpoint")]), 2,
         "checkpoint. Leave this folder out of the report."),
    case("report-history-words", ["report", "{d}/run", "-o", "{d}/r.html"], _edit_result(history={"loss": ["a"]}), 2,
         "(history.loss not as distillset writes it)"),
    case("report-seconds-a-string", ["report", "{d}/run", "-o", "{d}/r.html"], _edit_result(distill_seconds="x"), 2,
         "(distill_seconds not as distillset writes it)"),
    case("report-results-a-list", ["report", "{d}/run", "-o", "{d}/r.html"], _edit_result(results=[]), 2,
         "result.json is damaged (results not as distillset writes it)"),
    case("report-history-a-number", ["report", "{d}/run", "-o", "{d}/r.html"], _edit_result(history=5), 2,
         "(history not as distillset writes it)"),
    case("report-cell-without-std", ["report", "{d}/run", "-o", "{d}/r.html"],
         _edit_result(results={"dm": {"convnet": {"mean": 50.0}}}), 2, "(results.dm not as distillset writes it)"),
    case("report-output-is-the-runs-result", ["report", "{d}/run", "-o", "{d}/run/result.json", "--overwrite"],
         _copy_run(), 2, "exists and is no HTML page"),  # was replaced by the page: the run could not be reported again
    case("report-output-is-a-saved-set", ["report", "{d}/run", "-o", "{d}/set.json", "--overwrite"],
         lambda d, run: (_copy_run()(d, run), write_set(d)), 2, "is no HTML page (--overwrite replaces only a page)"),
    case("report-output-is-the-users-file", ["report", "{d}/run", "-o", "{d}/notes.txt"],  # advice that holds:
         lambda d, run: (_copy_run()(d, run), (d / "notes.txt").write_text("x")), 2,     # not "pass --overwrite"
         "notes.txt exists and is no HTML page"),
    case("report-same-run-twice", ["report", "{d}/run", "{d}/run/"], _copy_run(), 2, "given twice among the RUN_DIRs"),
    case("report-output-empty", ["report", "{d}/run", "-o", ""], _copy_run(), 2, "the path is empty"),
    case("show-label-out-of-range", ["show", "{d}/set.json"], _set(labels=torch.arange(10) + 1), 2,
     "Labels must lie in [0, 10)"),
    case("show-grid-exists", ["show", "{d}/set.json", "--grid", "{d}/mine.png"],
     lambda d, _: (write_set(d), (d / "mine.png").write_text("x")), 2, "pass --overwrite to replace it"),
    case("show-pngs-exist", ["show", "{d}/set.json", "--grid", "{d}/g.png", "--pngs", "{d}/p"],
     lambda d, _: (write_set(d), (d / "p").mkdir(), (d / "p" / "5_0005.png").write_text("x")), 2, "already holds 5_0005.png"),
    case("show-grid-is-a-folder", ["show", "{d}/set.json", "--grid", "{d}"], _set(), 2,
     "is not a file"),
    # the default grid path held the user's own file: it was replaced (show redraws only a grid it drew)
    case("show-default-grid-is-the-users", ["show", "{d}/set.json"],
         lambda d, _: (write_set(d), (d / "set_grid.png").write_text("my notes")), 2, "pass --overwrite to replace it"),
    # the grid named the set's own file: with --overwrite the set became a PNG
    case("show-grid-is-the-set", ["show", "{d}/set.json", "--grid", "{d}/set.safetensors", "--overwrite"], _set(), 2,
         "is a file of the set being shown"),
]


@pytest.mark.parametrize("argv,setup,code,text,env", CASES)
def test_bad_input(argv, setup, code, text, env, tmp_path, monkeypatch, capsys, finished_run):
    monkeypatch.chdir(tmp_path)  # a default runs/<name> folder would land here, and be caught
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("{d}", str(tmp_path)))
    if setup is not None:
        setup(tmp_path, finished_run)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    if argv[0] == "distill" and "--out" not in argv and "--config" not in argv:  # a config may name its own
        argv += ["--out", str(tmp_path / "new")]
    before = snapshot(tmp_path)
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert not out.strip(), out  # refused before any work line
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and err.startswith("distillset"), err
    assert text in err, err
    assert snapshot(tmp_path) == before  # nothing created, changed or removed


def test_there_are_forty_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


def test_a_refused_resume_changes_nothing(tmp_path, finished_run, capsys):
    """The checkpoint and config.yaml stay byte-identical (a refused resume used to rewrite the config)."""
    _copy_run()(tmp_path, finished_run)
    before = snapshot(tmp_path)
    assert main(["distill", *FAST, "--out", str(tmp_path / "run"), "--resume", "--ipc", "2"]) == 2
    assert "the checkpoint has ipc=1 but this run has ipc=2" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_faults_inside_the_run(tmp_path, monkeypatch, capsys):
    """Divergence exits 1; a full disk, a failed linear solve exit 2; each leaves no folder behind."""
    out = tmp_path / "a" / "run"
    assert main(["distill", *FAST, "--param", "lr_img=1e30", "--out", str(out)]) == 1
    assert "diverged" in capsys.readouterr().err and not (tmp_path / "a").exists()

    import distillset._io

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(distillset._io.os, "write", full)
    assert main(["distill", *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1 and not (tmp_path / "a").exists()
    monkeypatch.undo()

    import distillset.kernels

    monkeypatch.setattr(distillset.kernels.torch.linalg, "cholesky_ex",
                        lambda a: (a, torch.ones((), dtype=torch.int32)))  # "not positive definite", every time
    assert main(["distill", "--method", "kip", *FAST[:-2], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not positive definite" in err and err.count("\n") == 1 and not (tmp_path / "a").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """A full disk (or Ctrl-C) mid-write: the target keeps its old bytes and no hidden .tmp stays beside it."""
    import distillset._io

    target = tmp_path / "grid.png"
    target.write_bytes(b"old")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(distillset._io.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        distillset._io.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_overwrite_replaces_only_the_run(tmp_path, finished_run, capsys):
    _copy_run()(tmp_path, finished_run)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "checkpoint" / "notes.txt").write_text("mine too")
    old = (tmp_path / "run" / "synthetic.safetensors").read_bytes()
    assert main(["distill", *FAST, "--out", str(tmp_path / "run"), "--overwrite", "--seed", "1"]) == 0
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "run" / "checkpoint" / "notes.txt").read_text() == "mine too"
    from distillset.cli.distill import CHECKPOINT_FILE
    from distillset.methods.base import CHECKPOINT
    assert CHECKPOINT_FILE == f"checkpoint/{CHECKPOINT}"  # what --overwrite deletes is the checkpoint a run writes
    assert (tmp_path / "run" / "synthetic.safetensors").read_bytes() != old  # seed 1's set, not seed 0's


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_run_killed_before_its_first_checkpoint_resumes_or_is_replaced(tmp_path, capsys, flag):
    """A kill before the first checkpoint leaves only the config.yaml the run wrote first (and an empty checkpoint
    folder): still a run, which --resume, as the interruption message says, starts from the beginning."""
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "config.yaml").write_text(RUN_CONFIG_HEADER + "ipc: 1\n")
    assert main(["distill", *FAST, "--out", str(out), flag]) == 0
    assert (out / "synthetic.safetensors").is_file()
    assert flag == "--overwrite" or "starting from the beginning" in capsys.readouterr().out


def test_resume_refuses_a_folder_with_more_than_a_killed_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(RUN_CONFIG_HEADER + "ipc: 1\n")
    (out / "grid.png").write_bytes(b"x")  # a finished run's file, its checkpoint gone
    assert main(["distill", *FAST, "--out", str(out), "--resume"]) == 2
    assert "no checkpoint to resume (pass --overwrite to replace that run)" in capsys.readouterr().err
    assert (out / "grid.png").read_bytes() == b"x"


def test_a_written_config_resumes_its_run_from_another_folder(tmp_path, monkeypatch, capsys):
    """The config.yaml a run writes records absolute paths: --config from elsewhere finds the run (it started a
    new one in ./<relative out>)."""
    monkeypatch.chdir(tmp_path)
    assert main(["distill", *FAST, "--out", "run"]) == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"out: {tmp_path / 'run'}" in config
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["distill", "--config", str(tmp_path / "run" / "config.yaml"), "--resume"]) == 0
    assert f"-> {tmp_path / 'run'}" in capsys.readouterr().out and not (tmp_path / "elsewhere" / "run").exists()


def test_tilde_in_a_config_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("out: ~/run\n")
    assert main(["distill", *FAST, "--config", str(cfg)]) == 0
    assert (tmp_path / "home" / "run" / "synthetic.safetensors").is_file() and not (tmp_path / "~").exists()


def test_files_follow_the_umask(tmp_path, finished_run):
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished_run.rglob("*") if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def _interrupt(*a, **k):
    raise KeyboardInterrupt


def test_interrupted_evaluate_says_what_it_kept(tmp_path, monkeypatch, capsys):
    """It said "keeps no checkpoints" when --resume-dir kept every network that had finished."""
    import distillset.evaluate

    monkeypatch.setattr(distillset.evaluate.Evaluator, "score", _interrupt)
    assert main(["evaluate", write_set(tmp_path), "--device", "cpu"]) == 130
    assert "interrupted; no network was kept (--resume-dir DIR" in capsys.readouterr().err
    assert main(["evaluate", write_set(tmp_path), "--device", "cpu", "--resume-dir", str(tmp_path / "nets")]) == 130
    assert f"any network that finished is kept in {tmp_path / 'nets'}: rerun" in capsys.readouterr().err


def test_interrupted_distill_says_resume_only_after_a_checkpoint(tmp_path, monkeypatch, capsys):
    """Interrupted before its first checkpoint, it asked for --resume "from the last checkpoint" (there was none)."""
    from distillset.methods.dm import DM

    out = tmp_path / "run"
    monkeypatch.setattr(DM, "fit", _interrupt)
    assert main(["distill", *FAST, "--out", str(out)]) == 130
    assert "before the first checkpoint, so nothing was kept" in capsys.readouterr().err and not out.exists()

    def checkpoint_then_interrupt(self, *a, **k):
        (Path(self.checkpoint_dir) / "checkpoint.safetensors").parent.mkdir(parents=True)
        (Path(self.checkpoint_dir) / "checkpoint.safetensors").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(DM, "fit", checkpoint_then_interrupt)
    assert main(["distill", *FAST, "--out", str(out)]) == 130
    assert "rerun the same command with --resume to continue" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()  # a folder of the user's: kept, with the run's config.yaml in it
    monkeypatch.setattr(DM, "fit", _interrupt)
    assert main(["distill", *FAST, "--out", str(tmp_path / "mine")]) == 130
    assert "rerun the same command with --resume to start again" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["distill", *FAST, "--out", str(tmp_path / "mine"), "--resume"]) == 0  # as the line says


def test_interrupted_continual_resumes_with_the_methods_it_kept(tmp_path, monkeypatch, capsys):
    """It said only "interrupted", and a rerun was refused for the partial record it had left: the finished
    methods had to be run again (with --overwrite)."""
    from distillset.applications import ClassIncremental

    real, calls = ClassIncremental.fit, []

    def second_interrupted(self, data):
        calls.append(self.method)
        return real(self, data) if len(calls) == 1 else _interrupt()

    monkeypatch.setattr(ClassIncremental, "fit", second_interrupted)
    out = tmp_path / "cl"
    argv = ["continual", "--methods", "random", "herding", "--steps", "2", "--ipc", "1", "--orders", "1",
            "--eval-runs", "1", "--eval-epochs", "1", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 130
    assert f"{out / 'continual.json'} keeps the methods that finished: rerun with --resume" in capsys.readouterr().err
    kept = json.loads((out / "continual.json").read_text())["runs"]
    assert [r["method"] for r in kept] == ["random"]
    before = snapshot(tmp_path)
    for changed, words in ((["--ipc", "2"], "has random with ipc=1 but this command has ipc=2"),
                           (["--methods", "herding"], "holds results of 'random', which --methods leaves out")):
        assert main([*argv, *changed, "--resume"]) == 2
        assert words in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # refused before any work or file
    record = (out / "continual.json").read_text()
    for edit, words in ((lambda r: {**r, "data_fingerprint": "0" * 32}, "holds results on other training images"),
                        (lambda r: {**r, "runs": [{**r["runs"][0], "orders": 1}]}, "is not a continual record")):
        (out / "continual.json").write_text(json.dumps(edit(json.loads(record))))
        assert main([*argv, "--resume"]) == 2
        assert words in capsys.readouterr().err
    (out / "continual.json").write_text(record)
    calls.clear()
    assert main([*argv, "--resume"]) == 0
    assert calls == ["herding"] and "random: kept from" in capsys.readouterr().out
    runs = json.loads((out / "continual.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["random", "herding"] and runs[0] == kept[0]


def _cli(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "distillset", *argv], capture_output=True, text=True,
                          cwd=kw.get("cwd"), timeout=120)


def test_real_process_one_line_error(tmp_path):
    r = _cli("distill", "--param", "iterations=2", "--param", "random_state=x", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'random_state' parameter of DM" in r.stderr
    assert not (tmp_path / "o").exists()
    r = _cli("--debug", "distill", "--param", "foo=1", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" in r.stderr  # --debug shows it


def test_help_does_not_import_torch():
    code = ("import sys\nfrom distillset.cli import main\nassert main(['--help']) == 0\n"
            "assert main(['distill', '--help']) == 0\nassert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--overwrite" in r.stdout


def test_out_not_writable_even_as_root(tmp_path, monkeypatch, capsys):
    """The check itself (root passes any permission test, so access() is made to say no)."""
    import distillset.cli.common

    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(distillset.cli.common.os, "access",
                        lambda p, mode: False if Path(p) == tmp_path / "ro" else real(p, mode))
    before = snapshot(tmp_path)
    assert main(["distill", "--out", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ro is not writable; choose another --out" in err
    assert snapshot(tmp_path) == before


def test_sigterm_ends_a_command_as_ctrl_c_does(tmp_path):
    """A terminated continual run that had written nothing leaves no folder behind (it left an empty one)."""
    import signal
    import time

    out = tmp_path / "cl"
    run = subprocess.Popen([sys.executable, "-m", "distillset", "continual", "--dataset", "digits", "--methods", "random",
                            "--steps", "2", "--ipc", "2", "--orders", "1", "--eval-runs", "1", "--eval-epochs", "3000",
                            "--device", "cpu", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while not out.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert out.exists(), "the command never made its folder"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143 and err.strip().endswith("interrupted; nothing was kept: rerun the same command to "
                                                          "start again"), err
    assert not out.exists()


def test_a_second_command_on_the_same_out_is_refused(tmp_path, monkeypatch, capsys):
    """Two commands given one --out at once both passed the emptiness check and wrote over each other."""
    import distillset.cli.common
    from distillset.cli.common import _held

    out = tmp_path / "run"
    out.mkdir()
    with _held(out):  # the first command, still running
        assert main(["distill", *FAST, "--out", str(out)]) == 2
    assert "Another distillset command is writing to --out" in capsys.readouterr().err
    assert not any(out.iterdir())
    # the first one wrote between the second's check and its start
    monkeypatch.setattr(distillset.cli.distill, "check_run_folder",
                        lambda *a: (distillset.cli.common.check_run_folder(*a), (out / "config.yaml").write_text("x")))
    assert main(["distill", *FAST, "--out", str(out)]) == 2
    assert "received files from another command" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["config.yaml"] and (out / "config.yaml").read_text() == "x"


def test_a_failed_command_removes_only_the_folders_it_made(tmp_path, monkeypatch):
    """runs/exp/seed0 fails before its first checkpoint while runs/exp/seed1 has finished: runs/exp, made by the
    first, stays with seed1's result (the whole runs/exp was removed)."""
    from distillset.cli.common import run_folder

    first = tmp_path / "runs" / "exp" / "seed0"
    with pytest.raises(KeyboardInterrupt):
        with run_folder(first):
            (tmp_path / "runs" / "exp" / "seed1").mkdir()
            (tmp_path / "runs" / "exp" / "seed1" / "result.json").write_text("{}")
            raise KeyboardInterrupt
    assert not first.exists() and (tmp_path / "runs" / "exp" / "seed1" / "result.json").exists()
    with pytest.raises(KeyboardInterrupt):  # alone, it leaves nothing
        with run_folder(tmp_path / "a" / "b" / "c"):
            raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()


def test_a_second_sigterm_kills_at_once():
    """The first SIGTERM raises (its cleanup may wait on a network in training); the second is not caught."""
    import signal
    import time

    from distillset.cli.main import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == before


def test_report_overwrite_replaces_its_own_page_whatever_its_name(tmp_path, finished_run, capsys):
    """A page written to a name without .html could not be replaced by the same command with --overwrite."""
    page = tmp_path / "page"
    assert main(["report", str(finished_run), "-o", str(page)]) == 0
    assert main(["report", str(finished_run), "-o", str(page), "--overwrite"]) == 0
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
