"""The HTML report: structure (tables, inlined images with alt text, nothing external), the CLI, runs in progress."""
import json
from html.parser import HTMLParser

import pytest

from distillset import get_method
from distillset.cli import main
from distillset.report import RunView, load_run, render_report


class Page(HTMLParser):
    """The tags, attributes and texts of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


def check_self_contained(page: Page) -> None:
    """Every image inlined with alt text; no attribute or style reaches outside the page."""
    for tag, attrs in page.tags:
        for key in ("src", "href", "action", "poster"):
            value = attrs.get(key)
            assert value is None or value.startswith(("data:", "#")), (tag, key, value[:60])
    for img in page.all("img"):
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt"), img.get("alt")
    assert "url(" not in "".join(page.text) and "@import" not in "".join(page.text)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny finished runs at IPC 1 and 2 (the second with a baseline)."""
    root = tmp_path_factory.mktemp("runs")
    for ipc in (1, 2):
        assert main(["distill", "--ipc", str(ipc), "--iterations", "3", "--out", str(root / f"ipc{ipc}"), "--eval-runs",
                     "2", "--eval-epochs", "2", "--quiet", "--device", "cpu"]) == 0
    return root


def test_distill_writes_a_report_of_its_run(runs):
    page = Page((runs / "ipc1" / "report.html").read_text())
    check_self_contained(page)
    text = " ".join(page.text)
    assert len(page.all("table")) >= 3  # evaluation, scores, cost (+ settings)
    assert "Evaluation" in text and "IOR over random (convnet)" in text and "peak resident memory" in text
    alts = [img["alt"] for img in page.all("img")]
    assert any("images, one row per class" in a for a in alts) and any("losses" in a for a in alts)
    assert "params.batch_real" in text and "distillation time" in text
    result = json.loads((runs / "ipc1" / "result.json").read_text())
    assert len(result["history"]["loss"]) == 3 and result["memory"]["peak_rss_mib"] > 0


def test_report_command_compares_runs(runs, tmp_path, capsys):
    out = tmp_path / "both.html"
    assert main(["report", str(runs / "ipc1"), str(runs / "ipc2"), "-o", str(out)]) == 0
    page = Page(out.read_text())
    check_self_contained(page)
    text = " ".join(page.text)
    assert "Comparison" in text and "Accuracy against IPC" in text and "Accuracy against the budget: digits, IPC 2" in text
    rows = [a for a in page.all("a") if a.get("href", "").startswith("#run-")]
    assert len(rows) == 4  # the index and the comparison table link each run
    # an existing file is kept unless --overwrite; a folder that is no run is named
    before = out.read_bytes()
    assert main(["report", str(runs / "ipc1"), "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "is not a distillset run folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    assert main(["report", str(broken), "-o", str(tmp_path / "y.html")]) == 2
    err = capsys.readouterr().err
    assert "result.json is damaged" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "y.html").exists()
    assert main(["report", str(runs / "ipc1"), "-o", str(out), "--overwrite"]) == 0 and out.read_bytes() != before


def test_a_run_in_progress_shows_its_losses_so_far(tmp_path, digits):
    get_method("dm", ipc=1, iterations=4, checkpoint_every=2, checkpoint_dir=str(tmp_path / "checkpoint"),
               progress=False).fit(digits)
    view = load_run(tmp_path)
    assert view.status == "in progress: iteration 4 of 4 (last checkpoint)" and len(view.history["loss"]) == 4
    page = Page(render_report([view]))
    assert "in progress: iteration 4 of 4" in " ".join(page.text) and page.all("img")  # the loss curve


def test_dd_step_sizes_and_learned_values_are_shown(tmp_path):
    view = RunView(name="dd", dataset="mnist", method="dd", ipc=1, step_sizes=[0.1, 0.05, 0.2, 0.1], steps_per_epoch=2,
                   measurements={"kernel accuracy": "95.1 %"}, budget={100: (80.0, 1.0), 300: (85.0, 0.5)})
    page = Page(render_report([view]))
    alts = [img["alt"] for img in page.all("img")]
    assert any("step size" in a for a in alts) and any("snapshotted" in a for a in alts)
    assert "kernel accuracy" in " ".join(page.text)
    check_self_contained(page)


def test_the_structure_check_can_fail():
    with pytest.raises(AssertionError):
        check_self_contained(Page('<img src="https://example.org/a.png" alt="x">'))
    with pytest.raises(AssertionError):
        check_self_contained(Page('<img src="data:image/png;base64,AAAA">'))  # no alt text


def test_a_running_run_with_a_damaged_checkpoint_record_is_named(tmp_path):
    """The checkpoint's record parses but is not a record (a JSON list): one line, not a TypeError mid-report."""
    import torch
    from safetensors.torch import save_file

    from distillset.errors import CorruptFileError
    from distillset.report import load_run

    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "run" / "checkpoint" / "checkpoint.safetensors"),
              metadata={"record": "[]"})
    with pytest.raises(CorruptFileError, match="has a damaged record; resume the run"):
        load_run(tmp_path / "run")
