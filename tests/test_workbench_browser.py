"""The page of `keomlir explain --html` in a real headless browser (Chromium): it loads with no
console error, every tab shows its content when clicked, and a screenshot is kept as a test
artifact ($KEOMLIR_TEST_ARTIFACTS, default test-artifacts/ in the repository).  Skipped where
Chromium is missing; .ci/run installs it."""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from keomlir import explain
from keomlir.workbench import bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
ARTIFACTS = pathlib.Path(os.environ.get("KEOMLIR_TEST_ARTIFACTS", ROOT / "test-artifacts"))

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; "
                                                          ".ci/run installs it): the page is not tested in a browser")

# errors thrown before the page's own script runs are caught from the start of <head>
PROBE_HEAD = "<script>window.probeErrors = []; window.addEventListener('error', function (e) " \
             "{ window.probeErrors.push(String(e.message)); });</script>"
# after the page's script: click every tab and record what is shown, then leave the graph open
PROBE = """<script>
(function () {
  var out = {errors: window.probeErrors, tabs: []};
  var buttons = document.querySelectorAll("nav button[data-tab]");
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].click();
    var key = buttons[k].getAttribute("data-tab");
    var panel = document.getElementById("tab-" + key);
    var box = panel.getBoundingClientRect();
    out.tabs.push({tab: key, visible: !panel.hidden && box.width > 0 && box.height > 20,
                   panelsShown: document.querySelectorAll("section.panel:not([hidden])").length,
                   active: buttons[k].className, text: panel.textContent.trim().length,
                   svgs: panel.querySelectorAll("svg").length, nodes: panel.querySelectorAll("g.node").length,
                   highlighted: panel.querySelectorAll("span.new").length});
  }
  document.querySelector("nav button[data-tab='graph']").click();
  var pre = document.createElement("pre");
  pre.id = "probe-results";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def test_page_in_a_headless_browser(tmp_path):
    aliases = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "e = Vi(1)"]
    formula = "Grad(Exp(-SqDist(x,y)), x, e) * b"
    ex = explain(formula, aliases)
    numbers = bench.bench(formula, aliases, sizes=(300, 200), rounds=3)
    html = ex.to_html(bench=numbers)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "explain.html").write_text(html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE + "</body>", 1))
    shot = ARTIFACTS / "explain.png"
    shot.unlink(missing_ok=True)
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", f"--screenshot={shot}", "--window-size=1280,1000",
                          probed.as_uri()], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HOME=str(tmp_path)))
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "\n".join(console)
    found = re.search(r'<pre id="probe-results"[^>]*>(.*?)</pre>', run.stdout, re.S)
    assert found, (run.returncode, run.stderr[-2000:])
    results = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert results["errors"] == []
    tabs = {t["tab"]: t for t in results["tabs"]}
    assert set(tabs) == {"stages", "graph", "schedule", "llvm", "llvm-opt", "asm", "ptx", "timings", "bench"}
    for name, tab in tabs.items():
        assert tab["visible"] and tab["panelsShown"] == 1 and tab["active"] == "active", tab
        assert tab["text"] > 50, tab
    assert tabs["stages"]["highlighted"] > 0  # autodiff's new lines
    assert tabs["graph"]["nodes"] == len(ex.program.text().splitlines()) - 2 + 1  # and the reduction's
    assert tabs["timings"]["svgs"] == 1
    assert shot.stat().st_size > 10_000  # a picture of the graph, not a blank page
