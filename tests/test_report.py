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
    import torch

    from saliency_sanity.demo import record_accuracy

    model, x = zoo.make("cnn")
    x = x.repeat(2, 1, 1, 1)  # 8 samples
    res = model_randomization_test(
        model, x, methods={"gradient": "gradient", "<b>evil</b> & co": "gradient"},
        scores=["spearman_abs", "ssim"], controls=["edge_sobel", "random_gaussian"],
        progress=False, n_examples=2)
    res.settings["data"] = "<script>alert(1)</script>"
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # 3 of 8 labels wrong: 5 of 8 correct
    assert record_accuracy(res, model, x, y) == {"correct": 5, "n": 8, "accuracy": 0.625}
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
    # order: what was explained, verdicts and headlines, figures, tables, settings
    pos = [text.index(h) for h in ('id="run"', "Accuracy on these inputs", ">Verdicts</h2>",
                                   'id="headlines"', 'id="rule"', "<h2>Figures</h2>",
                                   ">Stage readings</h2>",
                                   ">Per-stage tables</h2>", "<h2>Settings</h2>")]
    assert pos == sorted(pos)
    assert "Rule." in text and "noise resembles nothing" in text
    assert ">Verdicts per score</h2>" not in text  # one verdict: no end-of-curve table
    for word in ("edge_sobel", "random_gaussian", "Versions", "Reproduce this run"):
        assert word in text


def _badges(text: str) -> dict[str, str]:
    """method -> the verdict badge of its row in the report's headline table."""
    import html

    table = text[text.index('id="headlines"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr[^>]*><td>([^<]*)(?: <span class="note">control</span>)?</td><td><span '
                      r'class="badge (\w+)"', table)
    return {html.unescape(m): v for m, v in rows}


def _printed(text: str) -> dict[str, str]:
    """method -> the verdict word of each method line printed by the terminal summary."""
    out = {}
    lines = text[text.index("verdicts: "):].splitlines()
    for line in lines[1:]:
        if line.startswith("rule: "):
            break
        name, _, rest = line.strip().partition("  ")
        out[name.removesuffix(" (control)")] = rest.split()[0]
    return out


def test_every_place_gives_each_method_the_same_verdict(run_dir, capsys):
    """The function, the printed summary, the report's verdict table and the per-stage table
    agree: no method is passed in one place and flagged in another."""
    from saliency_sanity.cli.commands import _summary
    from saliency_sanity.verdicts import format_verdict, stage_verdicts, verdict

    res = CheckResult.load(run_dir)
    one = verdict(res).set_index("method")["verdict"].to_dict()
    assert one["edge_sobel"] == "flagged" and one["random_gaussian"] == "pass"
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert _badges(text) == one
    assert list(_badges(text))[-2:] == ["edge_sobel", "random_gaussian"]  # controls last
    upper = {m: v.upper() for m, v in one.items()}
    assert _printed(format_verdict(res)) == upper
    assert _printed(_summary(res)) == upper
    assert main(["report", str(run_dir), "--out", str(run_dir.parent / "again.html")]) == 0
    assert _printed(capsys.readouterr().out) == upper
    # the per-stage table says the same: flagged <=> a stage reads insensitive (or the maps
    # never depend on the model); passed => every stage changed or was not judged
    sv = stage_verdicts(res)
    sv = sv[sv["metric"].isin(["spearman_abs", "ssim"])]
    for method, g in sv.groupby("method"):
        by_stage = g.groupby("stage")["reading"].agg(set)
        stuck = any(r == {"insensitive"} or "model-independent" in r for r in by_stage)
        assert (one[method] == "flagged") == stuck, (method, by_stage.tolist())
        if one[method] == "pass":
            assert all(r <= {"changed", "model unchanged"} for r in by_stage)
    # and the page never shows another verdict for a method
    assert 'class="badge fail"' not in text


def _headline_rows(text: str) -> dict[str, str]:
    """The rows of the headline table: method -> the row's other cells (HTML)."""
    import html

    table = text[text.index('id="headlines"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td>(.*?)</tr>", table)
    return {html.unescape(re.sub(r" <span.*", "", m)): r for m, r in rows}


def test_report_top_shows_the_run_and_the_headlines_with_their_numbers(run_dir):
    import html

    from saliency_sanity.verdicts import stage_verdicts, verdict

    res = CheckResult.load(run_dir)
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    top = text[:text.index("<h2>Figures</h2>")]
    # what was explained, before anything else
    assert "Accuracy on these inputs</dt><dd><b>5 of 8 (62.5%)</b> correct" in top
    assert "8 inputs of shape 1&times;16&times;16" in top
    assert "4 blocks: conv1, conv2, fc1, fc2" in top
    # one row per method and control, each with its stage headline and the numbers behind it
    rows = _headline_rows(text)
    h = verdict(res).set_index("method")
    sv = stage_verdicts(res)
    assert set(rows) == set(h.index) == {"gradient", "<b>evil</b> & co", "edge_sobel",
                                         "random_gaussian"}
    for method, row in rows.items():
        words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split())
        assert " ".join(str(h.loc[method, "headline"]).split()[:6]) in words
        assert f'class="badge {h.loc[method, "verdict"]}"' in row
        if method in ("gradient", "<b>evil</b> & co"):  # the share kept at each stage
            g = sv[(sv["method"] == method)]
            first = g[g["stage"] == 1].set_index("metric")["retained_mean"]
            assert (f"kept: fc2 {100 * first['spearman_abs']:.0f}/"
                    f"{100 * first['ssim']:.0f}%") in words
    assert "never changes" in rows["edge_sobel"] and 'badge flagged' in rows["edge_sobel"]
    agree = res.stages[1]["output_change"]["prediction_agreement"]
    assert f"at each stage: fc2 {100 * agree:.0f}%" in top


def test_report_rule_in_words_and_long_tables_folded(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    rule = text[text.index('id="rule"'):]
    rule = rule[:rule.index("</div>")]
    sentence = re.sub(r"<[^>]+>", "", rule[:rule.index("<details>")]).split("Rule.", 1)[1]
    assert sentence.count(". ") == 0 and sentence.rstrip().endswith("otherwise.")
    assert "<summary>The formula</summary>" in rule and "d_i = s_K,i" not in rule
    assert "retained_k,i = (s_k,i - F) / (P - F)" in rule and "flagged       = some" in rule
    # the long tables are folded: stage readings, one per score per stage
    for head in (">Stage readings</h2>", ">Per-stage tables</h2>"):
        after = text[text.index(head):]
        assert after.index("<details>") < after.index("<table>")
    per_stage = text[text.index(">Per-stage tables</h2>"):text.index(">Stages</h2>")]
    assert per_stage.count("<details>") == 2 == per_stage.count("<table>")
    assert "<summary>spearman_abs (" in per_stage and "<summary>ssim (" in per_stage


def cnn_factory():
    return zoo.make("cnn")[0]


def test_cli_records_the_accuracy_on_the_explained_inputs(tmp_path):
    import torch

    model, x = zoo.make("cnn")
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    labels = pred.copy()
    labels[0] = (labels[0] + 1) % 10
    for name, y in (("labelled", labels), ("unlabelled", None)):
        npz = tmp_path / f"{name}.npz"
        np.savez(npz, x=x.numpy(), **({"y": y} if y is not None else {}))
        out = tmp_path / name
        assert main(["model-randomization", "--model", "test_report:cnn_factory", "--data",
                     str(npz),
                     "--methods", "gradient", "--scores", "spearman_abs", "--controls", "none",
                     "--out", str(out), "--no-progress"]) == 0
        settings = json.loads((out / "run.json").read_text())["settings"]
        page = (out / "report.html").read_text(encoding="utf-8")
        if y is None:
            assert "accuracy" not in settings
            assert "not measured: no labels were given" in page
        else:
            assert settings["accuracy"] == {"correct": 3, "n": 4, "accuracy": 0.75}
            assert "<b>3 of 4 (75.0%)</b> correct" in page and "low:" not in page


def test_report_command_rebuilds_without_recomputing(run_dir, tmp_path, capsys, monkeypatch):
    import saliency_sanity.engine.evaluator as evaluator

    monkeypatch.setattr(evaluator.Evaluator, "unit", lambda *a, **k: pytest.fail("recomputed"))
    out = tmp_path / "copy.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _printed(printed)["edge_sobel"] == "FLAGGED" and str(out) in printed
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
