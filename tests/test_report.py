"""`raff report` and `raff build --report`: one self-contained HTML page, checked in a real browser.

The browser test uses Chromium from Debian (`apt-get install chromium`) and
skips when no browser is installed. It asserts from the page's DOM, after
Chromium loaded it, that every plot decoded (`img.complete && naturalWidth >
0`), and it takes a screenshot (kept in the test's folder to look at).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import EXAMPLES

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

CHECK_IMAGES = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  var out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = "IMAGES " + loaded.length + " OF " + images.length + " LOADED; WIDTHS " +
    images.map(function (img) { return img.naturalWidth; }).join(",");
  document.body.appendChild(out);
});
</script>"""


def browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def _headless(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of the example library with the pedestal and the S-curve analyses built, with --report."""
    from conftest import run_raff

    lib = tmp_path_factory.mktemp("report") / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    main = lib / "main_config.yaml"
    main.write_text(main.read_text() + "  - name: checks\n    procedures: [pedestal, toa_scurve]\n")
    result = run_raff("build", "checks", "-c", main, "--report", "-w", "2", timeout=600)
    assert result.code == 0, result.err
    return lib, main, result


def test_build_report_writes_one_self_contained_page(built):
    lib, main, result = built
    page = lib / "raff-out" / "checks.html"
    assert f"report of checks: {page}" in result.out
    text = page.read_text()
    # self-contained: no network, no file beside it
    assert not re.search(r'(src|href)="(?!data:|#)', text), "the page refers to something outside itself"
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert text.count('<img alt="') >= 4 and text.count("data:image/png;base64,") >= 4
    for section in ("analysis pedestal", "analysis toa_scurve", "dataset pedestal_run", "dataset toa_threshold_scan"):
        assert f"<h2>{section}</h2>" in text
    assert '<table class="sortable summary">' in text and "<script>" in text
    assert '<tr class="flagged">' in text and "flagged</span> (highlighted)" in text  # unresolved S-curves
    assert "<b>Calib</b>: range(0, 20), 20 values" in text
    assert re.search(r"Shape: <b>\d+ rows × \d+ columns</b> from 20 points", text)
    for field in ("reason of its last build", "acquired on", "emulator/", "raffinerie version", "code digests",
                  "scurve.py", "calibration chain"):
        assert field in text, field


def test_report_of_an_out_of_date_workflow_says_why(raff, built, tmp_path):
    lib, main, _ = built
    analyses = lib / "analysis_procedures.yaml"
    original = analyses.read_text()
    analyses.write_text(original.replace("{scan: Calib, measure: toa}", "{scan: Calib, measure: toa, x: 1}"))
    try:
        r = raff("report", "checks", "-c", main, "-o", tmp_path)
        assert r.code == 0, r.err
        text = (tmp_path / "checks.html").read_text()
        assert "parameters changed (x 1 (new))" in text
        assert "Out of date: this is its last build." in text
    finally:
        analyses.write_text(original)
    r = raff("report", "trimmed_pedestal", "-c", main, "-o", tmp_path)
    assert r.code == 0, r.err
    text = (tmp_path / "trimmed_pedestal.html").read_text()
    assert "calibration pedestal_trim not built yet" in text and "Not built yet" in text


def test_report_renders_in_headless_chromium_with_every_plot(built, tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    lib, _, _ = built
    page = (lib / "raff-out" / "checks.html").read_text()
    images = page.count("<img ")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    dom = _headless(exe, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"IMAGES (\d+) OF (\d+) LOADED; WIDTHS ([\d,]*)", dom.stdout)
    assert found, dom.stdout[-2000:]
    assert int(found.group(2)) == images >= 4
    assert int(found.group(1)) == images, f"only {found.group(1)} of {images} plots loaded"
    assert all(int(w) > 100 for w in found.group(3).split(","))
    shot = lib / "raff-out" / "checks.png"
    r = _headless(exe, "--window-size=1400,2200", f"--screenshot={shot}", (lib / "raff-out" / "checks.html").as_uri())
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 50_000, r.stderr[-2000:]
