"""report.html: self-contained, every image a valid embedded PNG, user text escaped, verdicts
first, rebuilt by ``saliency-sanity report`` without recomputing."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import zoo

from saliency_sanity import model_randomization_test
from saliency_sanity.checks import CheckResult
from saliency_sanity.cli import main
from saliency_sanity.report import build_report, write_run

PNG = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.external: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            v = a.get(key)
            if v and not v.startswith("data:") and not v.startswith("#"):
                self.external.append(v)


def check_page(text: str) -> _Collect:
    """Every <img> is a data URI decoding to a PNG that Pillow/matplotlib can open; nothing is
    fetched from outside the file."""
    import matplotlib.image as mpimg

    p = _Collect()
    p.feed(text)
    assert p.imgs, "no images in the report"
    for img in p.imgs:
        src = img.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        arr = mpimg.imread(io.BytesIO(data), format="png")
        assert arr.ndim == 3 and min(arr.shape[:2]) > 50
        assert float(arr.std()) > 0.01  # not blank
    assert p.external == []
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model, x = zoo.make("cnn")
    x = x.repeat(2, 1, 1, 1)  # 8 samples
    res = model_randomization_test(
        model, x, methods={"gradient": "gradient", "<b>evil</b> & co": "gradient"},
        scores=["spearman_abs", "ssim"], controls=["edge_sobel", "random_gaussian"],
        progress=False, n_examples=2)
    res.settings["data"] = "<script>alert(1)</script>"
    return write_run(res, tmp_path_factory.mktemp("rep") / "run",
                     command=["saliency-sanity", "x", "--out", "a<b"])


def test_report_is_written_and_self_contained(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    p = check_page(text)
    figs = sorted(f.stem for f in (run_dir / "figures").glob("*.png"))
    assert len(p.imgs) == len(figs) == 3  # grid + one curve per score
    assert "script" not in p.tags and "<b>evil</b>" not in text
    assert "&lt;b&gt;evil&lt;/b&gt; &amp; co" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "saliency-sanity x --out &#x27;a&lt;b&#x27;" in text
    # order: verdicts, figures, tables, settings
    pos = [text.index(h) for h in ("<h2>Verdicts</h2>", "<h2>Figures</h2>",
                                   "<h2>Per-stage tables</h2>", "<h2>Settings</h2>")]
    assert pos == sorted(pos)
    assert "Rule." in text and "Binder" in text
    for word in ("edge_sobel", "random_gaussian", "Versions", "Reproduce this run"):
        assert word in text


def test_report_verdicts_match_the_verdicts_table(run_dir):
    from saliency_sanity.verdicts import method_summary, verdicts

    res = CheckResult.load(run_dir)
    s = method_summary(verdicts(res)).set_index("method")["verdict"]
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert s["edge_sobel"] == "fail"
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>(?:method|control)</td><td><span "
                      r'class="badge (\w+)"', text)
    import html

    assert {html.unescape(m): v for m, v in rows} == s.to_dict()


def test_report_command_rebuilds_without_recomputing(run_dir, tmp_path, capsys, monkeypatch):
    import saliency_sanity.engine.evaluator as evaluator

    monkeypatch.setattr(evaluator.Evaluator, "unit", lambda *a, **k: pytest.fail("recomputed"))
    out = tmp_path / "copy.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "edge_sobel" in printed and "FAIL" in printed and str(out) in printed
    check_page(out.read_text(encoding="utf-8"))


def test_report_draws_figures_when_the_run_has_none(tmp_path):
    model, x = zoo.make("cnn")
    res = model_randomization_test(model, x, methods=["gradient"], scores=["spearman_abs"],
                                   controls=False, progress=False, n_examples=1)
    d = write_run(res, tmp_path / "r", figures=False, report=False)
    assert not (d / "report.html").exists()
    path = build_report(d)
    p = check_page(path.read_text(encoding="utf-8"))
    assert len(p.imgs) == 2
    assert oct(path.stat().st_mode & 0o777) != "0o600"


def test_data_randomization_report_shows_invalid(tmp_path):
    import pandas as pd

    from saliency_sanity.checks import COLUMNS

    rows = [(m, 1, "random_labels", i, "spearman_abs", float(v))
            for m in ("gradient", "random_gaussian") for i, v in enumerate(np.linspace(0, .1, 6))]
    res = CheckResult(check="data_randomization", table=pd.DataFrame(rows, columns=COLUMNS),
                      settings={"valid": False, "invalid_reason": "train acc 0.4 < 0.95",
                                "controls": ["random_gaussian"]})
    d = write_run(res, tmp_path / "d")
    text = (d / "report.html").read_text(encoding="utf-8")
    assert "INVALID run" in text and "train acc 0.4 &lt; 0.95" in text
    assert 'class="badge invalid"' in text
    check_page(text)
    assert json.loads((d / "run.json").read_text())["settings"]["valid"] is False
