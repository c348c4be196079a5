"""The report in a real browser: headless Chromium loads it without console errors and draws the grid.

Skipped, with the reason, where no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""
import json
import re
import shutil
import subprocess

import pytest

from distillset.cli import main

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]

# records uncaught errors and console.error calls, then (on load) every image's decoded and drawn width
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e)); });
var __error = console.error;
console.error = function () { window.__errors.push(Array.from(arguments).join(" ")); __error.apply(console, arguments); };
window.addEventListener("load", function () {
  var images = Array.from(document.images).map(function (i) {
    return {cls: i.className, natural: i.naturalWidth, drawn: i.getBoundingClientRect().width}; });
  var p = document.createElement("pre"); p.id = "__probe";
  p.textContent = JSON.stringify({errors: window.__errors, images: images, title: document.title});
  document.body.appendChild(p);
});
</script>"""


def probe(html: str, tmp_path) -> dict:
    """Load ``html`` (with the probe) in Chromium; what the probe saw."""
    page = tmp_path / "probed.html"
    page.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    out = subprocess.run([BROWSER, *FLAGS, "--dump-dom", "--virtual-time-budget=5000", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the page did not finish loading: {out.stderr[-500:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "run"
    assert main(["distill", "--iterations", "2", "--out", str(run), "--eval-runs", "1", "--eval-epochs", "1",
                 "--quiet", "--device", "cpu"]) == 0
    return run / "report.html"


def test_the_report_loads_without_errors_and_shows_the_grid(report, tmp_path):
    seen = probe(report.read_text(), tmp_path)
    assert seen["errors"] == [] and seen["title"] == "distillset: run"
    grids = [i for i in seen["images"] if "grid" in i["cls"]]
    assert len(grids) == 1 and grids[0]["natural"] > 0 and grids[0]["drawn"] > 0
    assert all(i["natural"] > 0 for i in seen["images"])  # every inlined plot decoded
    shot = tmp_path / "report.png"
    subprocess.run([BROWSER, *FLAGS, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 1600) and len(im.convert("L").getcolors(maxcolors=256) or []) > 10  # drawn, not blank


def test_the_probe_sees_errors_and_broken_images(tmp_path):
    seen = probe('<html><head></head><body><img class="grid" src="data:image/png;base64,AAAA" alt="x">'
                 '<script>console.error("boom"); undefinedFunction();</script></body></html>', tmp_path)
    assert "boom" in seen["errors"] and any("undefinedFunction" in e for e in seen["errors"])
    assert seen["images"][0]["natural"] == 0
