"""Headless Chromium renders report.html: the screenshot is not blank and every image loaded."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import zoo

from saliency_sanity import model_randomization_test
from saliency_sanity.report import write_run

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="needs Debian's chromium (apt-get install -y chromium)"),
]


def _screenshot(page, png, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,2400", f"file://{page}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def test_report_renders_in_chromium(tmp_path):
    import matplotlib.image as mpimg

    model, x = zoo.make("cnn")
    res = model_randomization_test(model, x.repeat(2, 1, 1, 1), methods=["gradient"],
                                   scores=["spearman_abs", "ssim"],
                                   controls=["edge_sobel", "random_gaussian"], progress=False,
                                   n_examples=1)
    d = write_run(res, tmp_path / "run")
    png = tmp_path / "shot.png"
    _screenshot(d / "report.html", png, tmp_path)
    img = mpimg.imread(png)
    assert img.shape[:2] == (2400, 1200)
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.05  # not a blank page
    # the verdict badges' colours (pass green / fail red) are on the page
    assert ((rgb[..., 0] > 0.95) & (rgb[..., 1] < 0.9) & (rgb[..., 2] < 0.9)).sum() > 50

    # every <img> decodes (the DOM says so): dump the DOM and check naturalWidth via a probe page
    probe = tmp_path / "probe.html"
    html = (d / "report.html").read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", """<script>
document.title = Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)
  ? 'IMAGES-OK' : 'IMAGES-MISSING';
</script></body>"""), encoding="utf-8")
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", f"file://{probe}"],
        check=True, capture_output=True, timeout=120, text=True).stdout
    assert "<title>IMAGES-OK</title>" in out
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
