"""Headless Chromium renders report.html: the screenshot is not blank, every image loaded, and
at 1280x800 the run's header and the per-method headlines are visible without scrolling."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import zoo

from saliency_sanity import model_randomization_test
from saliency_sanity.report import write_run

CHROMIUM = "/usr/bin/chromium"

pytestmark = [pytest.mark.chromium, pytest.mark.needs("chromium")]

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(args, profile, **kw):
    try:
        return subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
                              check=True, capture_output=True, timeout=120, **kw)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(page, png, tmp_path, size="1200,2400"):
    _chromium([f"--screenshot={png}", f"--window-size={size}", f"file://{page}"],
              tmp_path / "profile")


def _probe(page, script, tmp_path, size="1280,800") -> str:
    """Load ``page`` with ``script`` appended (it sets document.title); return the title."""
    probe = tmp_path / "probe.html"
    html = page.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", f"<script>{script}</script></body>"),
                     encoding="utf-8")
    out = _chromium(["--dump-dom", f"--window-size={size}", f"file://{probe}"],
                    tmp_path / "profile2", text=True).stdout
    m = re.search(r"<title>(.*?)</title>", out, re.S)
    assert m, out[:500]
    import html as _html

    return _html.unescape(m.group(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import torch

    from saliency_sanity.demo import record_accuracy

    model, x = zoo.make("cnn")
    x = x.repeat(2, 1, 1, 1)
    res = model_randomization_test(model, x, methods=["gradient", "guided_backprop"],
                                   scores=["spearman_abs", "ssim"],
                                   controls=["edge_sobel", "random_gaussian"], progress=False,
                                   n_examples=1)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10
    record_accuracy(res, model, x, y)
    res.settings["data"] = "zoo inputs"
    return write_run(res, tmp_path_factory.mktemp("chromium") / "run") / "report.html"


def test_report_renders_in_chromium(report, tmp_path):
    import matplotlib.image as mpimg

    png = tmp_path / "shot.png"
    _screenshot(report, png, tmp_path)
    img = mpimg.imread(png)
    assert img.shape[:2] == (2400, 1200)
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.05  # not a blank page
    # the verdict badges' colours (pass green / fail red) are on the page
    assert ((rgb[..., 0] > 0.95) & (rgb[..., 1] < 0.9) & (rgb[..., 2] < 0.9)).sum() > 50

    # every <img> decodes (the DOM says so)
    title = _probe(report, "document.title = Array.from(document.images).every("
                           "i => i.complete && i.naturalWidth > 0) ? 'IMAGES-OK' : "
                           "'IMAGES-MISSING';", tmp_path, size="1200,2400")
    assert title == "IMAGES-OK"


def test_headlines_are_visible_without_scrolling(report, tmp_path):
    import matplotlib.image as mpimg

    # where the browser lays out the header and the headline table in a 1280x800 window
    title = _probe(report, """
const box = id => { const r = document.getElementById(id).getBoundingClientRect();
                    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
const rows = Array.from(document.querySelectorAll('#headlines tbody tr'));
document.title = JSON.stringify({run: box('run'), headlines: box('headlines'),
  rows: rows.map(r => r.getBoundingClientRect().bottom), width: innerWidth,
  height: innerHeight, scrollY: scrollY,
  text: document.getElementById('headlines').innerText});
""", tmp_path)
    got = json.loads(title)
    # --dump-dom's window keeps room for browser chrome (innerHeight < 800), the screenshot's
    # does not; the layout depends on the width only, so the fold is the screenshot's 800 px
    assert got["width"] == 1280 and got["scrollY"] == 0
    assert 0 <= got["run"]["top"] < got["run"]["bottom"] <= got["headlines"]["top"]
    assert len(got["rows"]) == 4  # 2 methods, 2 controls
    assert max(got["rows"]) <= got["headlines"]["bottom"] <= 800  # every headline on screen
    assert got["headlines"]["right"] <= got["width"]  # and nothing cut off on the right
    assert "changes with every randomized block" in got["text"] or "flagged" in got["text"]

    # the pixels agree: the top 800 px are not blank and hold the badge colours of the rows
    png = tmp_path / "top.png"
    _screenshot(report, png, tmp_path, size="1280,800")
    rgb = mpimg.imread(png)[..., :3]
    assert rgb.shape[:2] == (800, 1280)
    band = rgb[int(got["headlines"]["top"]):int(got["headlines"]["bottom"])]
    assert float(band.std()) > 0.05
    green = (band[..., 1] > band[..., 0] + 0.05) & (band[..., 1] > band[..., 2] + 0.05)
    red = (band[..., 0] > band[..., 1] + 0.1) & (band[..., 0] > band[..., 2] + 0.1)
    assert green.sum() > 50 and red.sum() > 50  # pass and fail badges are on screen
    dark = (rgb.max(axis=2) < 0.35).sum()  # text drawn above the fold
    assert dark > 5000
