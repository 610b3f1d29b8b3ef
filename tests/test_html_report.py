"""The HTML report of the tiny run (`snakemake --report`), rendered in headless Chromium as a reader
sees it: every table and figure the run wrote is a report item with a caption and a category,
every table is shown inline in its caption, every figure decodes, the front page carries the
config and the verdicts, and the page raises no JavaScript error. Screenshots of the front page, a
table and a figure are saved beside the report (their paths are printed)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Before the report's own scripts: collect every error, failed resource load and console.error.
PROBE_HEAD = """<script>
window.__probe_errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { __probe_errors.push("failed to load " + t.tagName + " " + String(t.src || t.href).slice(0, 80)); }
  else { __probe_errors.push("error: " + e.message + " at " + e.filename + ":" + e.lineno); }
}, true);
window.addEventListener("unhandledrejection", function (e) { __probe_errors.push("unhandled rejection: " + e.reason); });
(function () {
  var original = console.error;
  console.error = function () { __probe_errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
})();
</script>"""

# After them: drive the report's app through every category, item and figure, or leave it on one
# view for a screenshot (MODE), and write what it found into <pre id="probe-result">.
PROBE_TAIL = """<script>
window.addEventListener("load", async function () {
  const MODE = %s;
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const categoryOf = path => Object.keys(categories).find(c => Object.values(categories[c]).some(p => p.includes(path)));
  const out = {errors: __probe_errors, categories: {}, results: {}};
  await sleep(300);
  out.front = document.querySelector("#app").innerText;
  out.verdict_rows = Array.from(document.querySelectorAll("#verdicts tbody tr")).map(tr => tr.innerText);
  if (MODE.view === "probe") {
    for (const cat of Object.keys(categories)) {
      out.categories[cat] = {};
      for (const sub of Object.keys(categories[cat])) {
        // As a reader gets there: the main menu, the category's menu (straight from another
        // subcategory the listing keeps the old one's items; a category with one subcategory
        // opens it directly), then the subcategory.
        app.setView({navbarMode: "menu", category: undefined, subcategory: undefined});
        await sleep(100);
        app.showCategory(cat);
        await sleep(100);
        app.setView({navbarMode: "subcategory", category: cat, subcategory: sub});
        await sleep(100);
        out.categories[cat][sub] = {paths: categories[cat][sub], text: document.querySelector("nav").innerText};
      }
    }
    for (const [path, r] of Object.entries(results)) {
      app.showResultInfo(path);
      await sleep(100);
      const item = {name: r.name, mime: r.mime_type, caption: r.caption, shown: document.querySelector("nav").innerText};
      if (r.mime_type.startsWith("image/")) {
        app.setView({content: "img", contentPath: r.data_uri, resultPath: path});
        await sleep(300);
        const img = Array.from(document.querySelectorAll("#app img")).find(i => i.src === r.data_uri);
        // Poll rather than await img.decode(): under virtual time a pending decode lets the clock run on.
        for (let i = 0; img && i < 200 && !(img.complete && img.naturalWidth); i++) await sleep(50);
        item.img = img ? {width: img.naturalWidth, height: img.naturalHeight} : null;
      }
      out.results[path] = item;
    }
  } else if (MODE.view !== "front") {
    const path = Object.keys(results).find(p => results[p].name === MODE.name);
    const cat = categoryOf(path);
    const sub = Object.keys(categories[cat]).find(s => categories[cat][s].includes(path));
    app.setView({navbarMode: "subcategory", category: cat, subcategory: sub});
    await sleep(100);
    if (MODE.view === "figure") {
      app.setView({content: "img", contentPath: results[path].data_uri, resultPath: path});
      await sleep(300);
    }
    app.showResultInfo(path);
    await sleep(300);
  }
  const pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def run_browser(page: Path, mode: dict, *extra: str) -> subprocess.CompletedProcess:
    """Open the report with the probe injected; `extra` is --dump-dom or --screenshot=PATH."""
    text = page.read_text()
    head, end = text.index("<head>") + len("<head>"), text.rindex("</body>")  # the page's own: a script may quote others
    probe = page.with_name(f"probe-{mode['view']}.html")
    probe.write_text(text[:head] + PROBE_HEAD + text[head:end] + PROBE_TAIL % json.dumps(mode) + text[end:])
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=300000", *extra, probe.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def html_report(tiny_run, tmp_path_factory) -> Path:
    if browser() is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium); .ci/run installs it")
    out = tmp_path_factory.mktemp("html_report") / "report.html"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(TEST_CONFIG), "--report", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def probed(html_report) -> dict:
    dom = run_browser(html_report, {"view": "probe"}, "--dump-dom").stdout
    found = re.search(r'<pre id="probe-result"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the probe never finished: the report did not load"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.workflow
def test_report_loads_without_javascript_errors(probed):
    assert probed["errors"] == []


@pytest.mark.workflow
def test_every_table_and_figure_is_in_the_report_with_a_caption(tiny_run, probed):
    expected = sorted(p.name for p in (tiny_run / "tables").glob("*.tsv")) + sorted(p.name for p in (tiny_run / "figures").glob("*.png"))
    items = {item["name"]: item for item in probed["results"].values()}
    missing = [name for name in expected if name not in items]
    assert not missing, f"written by the run but not marked report(...): {missing}"
    listed = "\n".join(sub["text"] for subs in probed["categories"].values() for sub in subs.values())
    assert not [name for name in expected if name not in listed], "an item is missing from its category's listing"
    assert "Other" not in probed["categories"], f"report items without a category: {probed['categories'].get('Other')}"
    for name in expected:
        caption = items[name]["caption"]
        assert caption.strip(), f"{name} has no caption"
        assert "System Message" not in caption and "system-message" not in caption, f"{name}: the caption's rst did not render"
        assert "description" in items[name]["shown"].lower(), f"{name}: the caption is not shown when the item is opened"


@pytest.mark.workflow
def test_every_table_is_shown_inline_in_full(tiny_run, probed):
    for item in probed["results"].values():
        # claims.tsv's verdicts are on the front page (test_front_page_states_scale_config_and_verdicts).
        if not item["name"].endswith(".tsv") or item["name"] == "claims.tsv":
            continue
        rows = [line for line in (tiny_run / "tables" / item["name"]).read_text().splitlines() if line]
        assert item["caption"].count("<tr") == len(rows), f"{item['name']}: the caption does not show the table's {len(rows)} rows"


@pytest.mark.workflow
def test_every_figure_decodes(probed):
    figures = [item for item in probed["results"].values() if item["mime"].startswith("image/")]
    assert figures
    for item in figures:
        assert item["img"] is not None, f"{item['name']} was not shown"
        assert item["img"]["width"] > 0 and item["img"]["height"] > 0, f"{item['name']} does not decode"


@pytest.mark.workflow
def test_front_page_states_scale_config_and_verdicts(tiny_run, probed):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    front = probed["front"]
    assert "System Message" not in front and "Unknown target" not in front
    assert "tiny-scale analogue" in front and config["run_name"] in front
    assert f"{len(config['seeds'])} ({', '.join(map(str, config['seeds']))})" in front
    assert all(method in front for method in config["methods"])
    claims = tiny_run / "tables" / "claims.tsv"
    if claims.exists():
        n_claims = sum(1 for line in claims.read_text().splitlines()[1:] if line.strip())
        assert len(probed["verdict_rows"]) == n_claims, "the front page does not show every claim's verdict"
        assert all(re.search(r"reproduced|inconclusive", row) for row in probed["verdict_rows"])
    else:
        assert "no claims table" in front


@pytest.mark.workflow
def test_screenshots(html_report, probed):
    """A front page, a table and a figure as a reader sees them (the PNGs are printed for a look)."""
    shots = {"front": {"view": "front"}, "table": {"view": "table", "name": "laser_table1.tsv"},
             "figure": {"view": "figure", "name": "accuracy_vs_iteration.png"}}
    for label, mode in shots.items():
        png = html_report.with_name(f"screenshot-{label}.png")
        run_browser(html_report, mode, f"--screenshot={png}")
        assert png.stat().st_size > 10_000, f"{label}: blank screenshot"
        print(f"report screenshot ({label}): {png}")
