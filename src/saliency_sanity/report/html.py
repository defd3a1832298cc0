"""``report.html``: verdicts first, then figures, per-stage tables, settings and versions.

The page is one self-contained file: figures are embedded as base64 PNG data URIs, the style is
inline, nothing is fetched, so it opens offline and can be mailed around. Every piece of text that
comes from the user or the run (method names, paths, settings, the command) is escaped with
:func:`html.escape`.

Example:
    >>> import tempfile, pandas as pd
    >>> from saliency_sanity.checks import CheckResult, COLUMNS
    >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(
    ...     [["<b>m</b>", 1, "fc", 0, "spearman_abs", 0.1]], columns=COLUMNS))
    >>> page = render_report(r, figures=[])
    >>> "&lt;b&gt;m&lt;/b&gt;" in page and "<b>m</b>" not in page
    True
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .._io import atomic_write
from ..results import CheckResult
from ..results.files import CRITIQUE_FIGURES
from ..results.spec import find as find_check
from ..results.spec import get as get_check
from ..verdicts import MAIN_SCORES
from ._util import PNG_SIGNATURE, _ci, _num, _png_uri, _table, e
from .artifacts import CritiqueArtifacts, load_critiques
from .hooks import per_score_verdicts
from .summary import CSS as _SUMMARY_CSS
from .summary import _badge

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;
 background:#f6f7f9;color:#1d2330;font-size:14px;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:16px 28px 60px;background:#fff;
 box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:34px 0 10px;padding-bottom:4px;
 border-bottom:2px solid #e3e6ec}h3{font-size:15px;margin:22px 0 8px}
.sub{color:#5b6473;margin:0 0 14px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;
 white-space:nowrap}
tr.control td{background:#fafafa;color:#4a5160}
.badge{display:inline-block;min-width:86px;text-align:center;padding:2px 8px;border-radius:10px;
 font-weight:700;font-size:12px;letter-spacing:.03em;text-transform:uppercase}
.pass{background:#d8f3dc;color:#1b6b34}.flagged{background:#fbdada;color:#9b1c1c}
.inconclusive{background:#fff1c2;color:#7a5b00}.invalid{background:#e4e4e4;color:#444}
.rule{background:#f3f6fb;border-left:4px solid #7a9cc6;padding:10px 14px;margin:10px 0;
 font-size:13px}
.note{color:#5b6473;font-size:12.5px}
figure{margin:14px 0 22px}figure img{max-width:100%;border:1px solid #e3e6ec}
figure.grid img{max-width:820px}
figcaption{color:#5b6473;font-size:12.5px;margin-top:4px}
pre{background:#f3f4f7;padding:10px;overflow-x:auto;font-size:12px;border-radius:4px}
code{background:#f3f4f7;padding:1px 4px;border-radius:3px;font-size:12.5px}
details summary{cursor:pointer;color:#34538a}
.grid2{display:flex;flex-wrap:wrap;gap:8px 22px}
"""


def _figures_from_dir(directory: Path) -> list[tuple[str, bytes]]:
    out = []
    for p in sorted(directory.glob("*.png")):
        data = p.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            out.append((p.stem, data))
    return out


def save_check_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write the figures of ``result``'s check into ``directory``
    (:func:`saliency_sanity.plots.save_figures`: the check's registered ``figures``)."""
    from ..plots import save_figures

    return save_figures(result, directory)


def _figures_from_result(result: CheckResult) -> list[tuple[str, bytes]]:
    """Draw the run's figures from the saved result (no maps are recomputed)."""
    with tempfile.TemporaryDirectory(prefix="saliency-sanity-report-") as tmp:
        try:
            save_check_figures(result, tmp)
        except ValueError:  # e.g. no example maps: draw what can be drawn
            pass
        return _figures_from_dir(Path(tmp))


_CAPTIONS = {
    "cascading_grid": "Maps of the first kept input: the trained model, then each randomization "
                      "stage (columns), for every method and control (rows).",
    "maps_true_vs_random": "Maps of the true-label and the random-label model on the same inputs.",
}


def _caption(stem: str) -> str:
    if stem in _CAPTIONS:
        return _CAPTIONS[stem]
    if stem.startswith("similarity_"):
        return (f"{stem[len('similarity_'):]}: one panel per method, its mean and 95% interval "
                "over samples at each stage, starting from the trained model (a map compared "
                "with itself: the score's perfect value). Grey band: the null reference (two "
                "independently randomized models); grey lines with markers: the controls.")
    if stem.startswith("bars_"):
        return f"{stem[len('bars_'):]}: true-label vs random-label maps per method."
    return stem


def _stage_labels(result: CheckResult) -> dict[int, str]:
    labels = {0: "trained"}
    for st in result.stages:
        if int(st.get("index", -1)) > 0:
            labels[int(st["index"])] = str(st.get("block"))
    for k, layer in result.table.drop_duplicates("stage")[["stage", "layer"]].itertuples(
            index=False):
        labels.setdefault(int(k), str(layer))
    return labels


def _detail_section(result: CheckResult, margin: float, min_samples: int) -> str:
    """The verdict of every method and score with its numbers (folded), for a check whose
    verdict hook judges per score (data randomization); empty otherwise."""
    v = per_score_verdicts(result, margin=margin, min_samples=min_samples)
    if v is None:
        return ""
    if v.empty:
        return "<h2>Verdicts per score</h2><p>No results.</p>"
    rank = {m: i for i, m in enumerate(MAIN_SCORES)}
    v = v.sort_values("metric", key=lambda c: c.map(lambda m: rank.get(m, len(rank))),
                      kind="stable")
    head = ["method", "score", "verdict", "n", "similarity", "random maps",
            "sim &minus; random (95% CI)", "p (paired t)", "P &minus; sim (95% CI)", "margin",
            "reason"]
    rows, classes = [], []
    for _, r in v.iterrows():
        rows.append([e(r["method"]), e(r["metric"]), _badge(r["verdict"]), _num(r["n"], 0),
                     _num(r["last_stage_mean"]), _num(r["null_mean"]),
                     f"{_num(r['diff_mean'])} {_ci(r['diff_lo'], r['diff_hi'])}",
                     _num(r["p_value"], 4),
                     f"{_num(r['change_mean'])} {_ci(r['change_lo'], r['change_hi'])}",
                     _num(r["delta"]), f'<span class="note">{e(r["reason"])}</span>'])
        classes.append("control" if r["control"] else "")
    return ('<h2 id="verdicts-per-score">Verdicts per score</h2>'
            '<p class="sub">The random-label model\'s maps against the true-label model\'s. '
            "Differences are in oriented units (higher = more similar).</p>"
            f"<details><summary>Every method and score ({len(rows)} rows): intervals, "
            "p-values, margins and reasons</summary>" + _table(head, rows, classes)
            + "</details>")


def _figures_section(figs: list[tuple[str, bytes]]) -> str:
    if not figs:
        return '<span id="figures"></span><h2>Figures</h2><p>This run has no figures.</p>'
    order = {"cascading_grid": 0, "maps_true_vs_random": 0}
    main = {f"{kind}_{m}" for kind in ("similarity", "bars") for m in MAIN_SCORES}
    figs = sorted(figs, key=lambda f: (order.get(f[0], 1 if f[0] in main else 2), f[0]))
    out = ['<span id="figures"></span><h2>Figures</h2>']
    for stem, data in figs:
        cls = ' class="grid"' if stem in order else ""
        out.append(f'<figure{cls}><img src="{_png_uri(data)}" alt="{e(stem)}">'
                   f"<figcaption>{e(_caption(stem))}</figcaption></figure>")
    return "\n".join(out)


def _stage_tables_section(result: CheckResult) -> str:
    summ = result.summary()
    if summ.empty:
        return ""
    null = result.summary(null=True)
    labels = _stage_labels(result)
    controls = set(result.settings.get("controls", []))
    stages = sorted(int(s) for s in summ["stage"].unique())
    out = ['<h2 id="per-stage">Per-stage tables</h2>',
           '<p class="sub">Mean similarity to the trained model\'s maps [95% t-interval] over '
           "samples; rows marked null: the similarity between maps of two independently "
           "randomized models at that stage. One fold-out per score.</p>"]
    for metric in list(dict.fromkeys(summ["metric"])):
        sm = summ[summ["metric"] == metric]
        nm = null[null["metric"] == metric] if not null.empty else null
        rows, classes = [], []
        for method in list(dict.fromkeys(sm["method"])):
            for kind, src in (("", sm), ("null", nm)):
                g = src[src["method"] == method] if len(src) else src
                if kind and g.empty:
                    continue
                cells = []
                for k in stages:
                    c = g[g["stage"] == k] if len(g) else g
                    if c.empty:
                        cells.append("")
                    else:
                        c0 = c.iloc[0]
                        nan = f" ({int(c0['n_nan'])} NaN)" if int(c0["n_nan"]) else ""
                        cells.append(f"{_num(c0['mean'])} <span class=\"note\">"
                                     f"{_ci(c0['lo'], c0['hi'])}{nan}</span>")
                name = e(method) + (" (control)" if method in controls else "")
                rows.append([name + (" &middot; <i>null</i>" if kind else ""), *cells])
                classes.append("control" if (method in controls or kind) else "")
        out.append(f"<details><summary>{e(metric)} ({len(rows)} rows)</summary>")
        out.append(_table(["method"] + [e(labels.get(k, k)) for k in stages], rows, classes,
                          [False] + [True] * len(stages)) + "</details>")
    return "\n".join(out)


def _stages_section(result: CheckResult) -> str:
    if not result.stages:
        return ""
    rows = []
    for st in result.stages:
        oc = st.get("output_change") or {}
        rows.append([_num(st.get("index"), 0), e(st.get("block") or "trained"),
                     e(", ".join(map(str, st.get("layers") or []))),
                     _num(oc.get("logit_correlation")), _num(oc.get("prediction_agreement")),
                     e("yes" if st.get("unchanged") else "")])
    return ("<h2>Stages</h2>" + _table(
        ["stage", "block", "randomized", "logit corr. with trained", "prediction agreement",
         "unchanged"], rows, numeric=[True, False, False, True, True, False]))


def _cam_layers(settings: dict) -> str | None:
    """The layer each Grad-CAM-type method used ("auto" choices resolved), or None."""
    parts = []
    for label, m in (settings.get("methods") or {}).items():
        if isinstance(m, dict) and m.get("resolved_layer"):
            how = "automatic" if m.get("layer") == "auto" else "given"
            parts.append(f"{label}: {m['resolved_layer']} ({how})")
    return "; ".join(parts) or None


def _settings_section(result: CheckResult) -> str:
    st = result.settings
    keys = [("check", result.check), ("order", st.get("order")), ("init", st.get("init")),
            ("seed", st.get("seed")), ("target mode", st.get("target_mode")),
            ("samples", st.get("n_samples")), ("input shape", st.get("input_shape")),
            ("model", st.get("model")), ("data", st.get("data")), ("device", st.get("device")),
            ("Grad-CAM layer", _cam_layers(st)), ("critiques", st.get("critiques"))]
    rows = [[e(k), e(json.dumps(val) if isinstance(val, (dict, list)) else val)]
            for k, val in keys if val is not None]
    out = ['<span id="settings"></span><h2>Settings</h2>', _table(["setting", "value"], rows)]
    cmd = st.get("command")
    if cmd:
        out.append("<h3>Reproduce this run</h3>"
                   f"<pre>{e(cmd)}</pre>")
    else:
        out.append('<p class="note">No command was recorded (a run from the Python API); the '
                   "settings below reproduce it.</p>")
    ver = st.get("versions") or {}
    if ver:
        out.append("<h3>Versions</h3>" + _table(
            ["package", "version"], [[e(k), e(val)] for k, val in ver.items()]))
    out.append("<details><summary>All settings (run.json)</summary><pre>"
               f"{e(json.dumps(st, indent=2, default=str))}</pre></details>")
    return "\n".join(out)


def render_report(result: CheckResult, figures: list[tuple[str, bytes]] | None = None,
                  title: str | None = None, margin: float = 0.1, min_samples: int = 5,
                  critiques: CritiqueArtifacts | None = None) -> str:
    """The report page of ``result`` as an HTML string: the ``report`` part its check declares
    (:mod:`saliency_sanity.results.spec`; a check that is not registered gets the randomization
    page, titled with its name).

    ``figures``: ``(name, png_bytes)`` pairs to embed; None draws them from the result.
    ``critiques``: the extras saved beside the run (:func:`.critiques.load_critiques`); their
    sections (and, for model randomization, the null reference) follow the main figures.

    Example:
        >>> # page = render_report(CheckResult.load("runs/demo"))
    """
    if figures is None:
        figures = _figures_from_result(result)
    spec = find_check(result.check)
    if spec is None:
        spec, title = get_check("model_randomization"), title or result.check
    if spec.report is None:
        raise ValueError(f"the {result.check} check declares no report page: its run directory "
                         "is written together with its page (saliency-sanity "
                         f"{spec.cli.command if spec.cli else result.check})")
    return spec.part("report")(result, figures, title=title or spec.title, margin=margin,
                               min_samples=min_samples, critiques=critiques)


def _page(name: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(name)} &middot; saliency-sanity</title><style>{_CSS}{_SUMMARY_CSS}"
            "</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 result: CheckResult | None = None, margin: float = 0.1,
                 min_samples: int = 5) -> Path:
    """Write ``report.html`` for a run directory from its saved results (nothing is recomputed);
    return its path. Figures are taken from ``run_dir/figures`` when present, else drawn from the
    saved result. The file is written atomically.

    Example:
        >>> # build_report("runs/demo")   # -> runs/demo/report.html
    """
    d = Path(run_dir)
    if result is None:
        result = CheckResult.load(d)
    figs = _figures_from_dir(d / "figures") if (d / "figures").is_dir() else []
    if not [f for f in figs if f[0] not in CRITIQUE_FIGURES]:
        figs = figs + _figures_from_result(result)
    page = render_report(result, figures=figs, margin=margin, min_samples=min_samples,
                         critiques=load_critiques(d))
    target = Path(out) if out is not None else d / "report.html"
    atomic_write(target, lambda p: _write_shareable(p, page))
    return target


def _write_shareable(path: Path, text: str) -> None:
    """Write ``text`` with the usual file mode (0644 under umask 022), not the temporary file's
    0600: the report is meant to be shared."""
    path.write_text(text, encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)

