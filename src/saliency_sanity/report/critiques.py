"""Report sections for the critiques saved beside a model randomization run.

Read from the run directory only (nothing is recomputed): ``smprt/``, ``emprt/``,
``random_logit/`` (CheckResult directories), ``activation_scales.csv`` (+ ``.json``),
``ranking.csv``, ``ranking_tau.csv`` (+ ``ranking.json``) and the figures
``figures/activation_scales.png`` and ``figures/ranking.png`` (drawn from the tables when
missing). Each section appears only when its files exist; an unreadable file gives a note in
the page instead of a failed report. All text from the run is escaped.

The files are read by :mod:`.artifacts`; the ranking section is in :mod:`.ranking`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results import CheckResult
from ..verdicts import MAIN_SCORES
from ._util import _num, _png_uri, _table
from ._util import e as _e
from .artifacts import CritiqueArtifacts, _draw
from .ranking import ranking_section


def contents(result: CheckResult, art: CritiqueArtifacts) -> list[tuple[str, str]]:
    """``(anchor, title)`` of the critique sections the page will show, in order."""
    out = []
    if "null_reference" in result.settings:  # model randomization records its null reference
        out.append(("null-reference", "Null reference"))
    if art.scales is not None:
        out.append(("activation-scales", "Activation scales"))
    for attr, anchor, title in (("smprt", "smprt", "sMPRT"), ("emprt", "emprt", "eMPRT"),
                                ("random_logit", "random-logit", "Random logit")):
        if getattr(art, attr) is not None:
            out.append((anchor, title))
    if art.faithfulness is not None:
        out.append(("faithfulness", "Faithfulness"))
    if art.ranking is not None:
        out.append(("ranking", "Method rankings"))
    return out


def critique_sections(result: CheckResult, art: CritiqueArtifacts) -> str:
    """The HTML of every critique section present (the null reference for model
    randomization, then activation scales, sMPRT, eMPRT, random logit, rankings)."""
    parts = []
    if "null_reference" in result.settings:
        parts.append(null_section(result))
    builders: list[tuple[str, Callable[[], str]]] = []
    if art.scales is not None:
        builders.append(("activation scales", lambda: scales_section(art)))
    if art.smprt is not None:
        builders.append(("sMPRT", lambda: smprt_section(art.smprt)))  # type: ignore[arg-type]
    if art.emprt is not None:
        builders.append(("eMPRT", lambda: emprt_section(art.emprt)))  # type: ignore[arg-type]
    if art.random_logit is not None:
        builders.append(("random logit",
                         lambda: random_logit_section(art.random_logit)))  # type: ignore[arg-type]
    if art.faithfulness is not None:
        from .faithfulness import faithfulness_section

        builders.append(("faithfulness", lambda: faithfulness_section(
            art.faithfulness, art.figures)))  # type: ignore[arg-type]
    if art.ranking is not None:
        builders.append(("rankings", lambda: ranking_section(art)))
    for name, build in builders:
        try:
            parts.append(build())
        except Exception as err:  # a bad extra file must not cost the whole report
            parts.append(f'<p class="rule">The {_e(name)} section could not be drawn: '
                         f"{_e(type(err).__name__)}: {_e(err)}</p>")
    for note in art.notes:
        parts.append(f'<p class="rule">{_e(note)}</p>')
    return "\n".join(p for p in parts if p)


def null_section(result: CheckResult) -> str:
    """One paragraph on the null reference of a model randomization run."""
    info = result.settings.get("null_reference")
    enabled = result.null is not None and not result.null.empty
    head = '<h2 id="null-reference">Null reference</h2>'
    if not enabled:
        return (head + "<p>This run has no null reference (it was switched off), so the "
                "verdicts cannot measure what the maps of two unrelated random models share by "
                "chance: their floor falls back to the random-map controls' similarity (0 "
                "without them), which ignores what a method keeps whatever the weights.</p>")
    seed = info.get("seed") if isinstance(info, dict) else None
    seed_txt = f" (seed {_e(seed)}, derived from the run's seed)" if seed is not None else ""
    return (head + "<p>At every stage the same blocks were randomized a second time, on a fresh "
            f"copy of the trained model, with an independent seed{seed_txt}. The similarity "
            "between the maps of these two random models is the null reference: what maps of "
            "unrelated random models share by chance (input structure such as the background, "
            "the architecture's own bias). At full randomization it is the floor of the verdicts: "
            "the share of similarity a method's maps keep is measured from it. It is drawn as "
            "dotted lines on the similarity curves (Figures), given as the floor and the stage "
            "null band in the stage readings, and as the rows marked <i>null</i> in the "
            "per-stage tables.</p>")


def _ordered_metrics(metrics: Sequence[str]) -> list[str]:
    ms = list(dict.fromkeys(metrics))
    return [m for m in MAIN_SCORES if m in ms] + [m for m in ms if m not in MAIN_SCORES]


def _cell(mean: Any, lo: Any, hi: Any, n_nan: Any = 0) -> str:
    nan = f" ({int(n_nan)} NaN)" if n_nan and not pd.isna(n_nan) and int(n_nan) else ""
    return f'{_num(mean)}<br><span class="note">[{_num(lo)}, {_num(hi)}]{nan}</span>'


def _summary(res: CheckResult) -> pd.DataFrame:
    """``res.summary()`` without numpy's warnings for infinite values (eMPRT's q = inf)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return res.summary()


def _summary_table(res: CheckResult, metrics: Sequence[str] | None = None) -> str:
    """Mean [95% CI] at the check's last stage: methods as rows, metrics as columns."""
    s = _summary(res)
    if s.empty:
        return "<p>No results.</p>"
    s = s[s["stage"] == s["stage"].max()]
    metrics = list(metrics) if metrics else _ordered_metrics(s["metric"])
    controls = set(res.settings.get("controls", []))
    rows, classes = [], []
    for method in dict.fromkeys(s["method"]):
        g = s[s["method"] == method].set_index("metric")
        cells = [_e(method) + (" (control)" if method in controls else "")]
        for m in metrics:
            if m in g.index:
                r = g.loc[m]
                cells.append(_cell(r["mean"], r["lo"], r["hi"], r["n_nan"]))
            else:
                cells.append("&ndash;")
        rows.append(cells)
        classes.append("control" if method in controls else "")
    return _table(["method"] + [_e(m) for m in metrics], rows, classes,
                  [False] + [True] * len(metrics))


def _direction(res: CheckResult) -> str:
    scores = res.settings.get("scores") or {}
    dissim = [m for m, s in scores.items() if isinstance(s, dict) and m == "mse"]
    extra = (f" ({', '.join(_e(m) for m in dissim)} is a distance: higher is better)"
             if dissim else "")
    return f"<b>Lower similarity is better</b>{extra}."


def _methods_list(res: CheckResult) -> str:
    controls = set(res.settings.get("controls", []))
    names = [m for m in (res.settings.get("methods") or {}) if m not in controls]
    return ", ".join(_e(m) for m in names) or "&ndash;"


def smprt_section(res: CheckResult) -> str:
    """sMPRT: settings, direction, mean [95% CI] per method at full randomization."""
    st = res.settings
    k = int(res.table["stage"].max()) if not res.table.empty else 0
    return (
        '<h2 id="smprt">sMPRT (smooth model parameter randomization, Hedstroem et al. 2023)</h2>'
        "<p>Each method's maps are averaged over "
        f"{_e(st.get('samples'))} noisy copies of the input (noise {_num(st.get('noise'), 2)} "
        f"&times; (max &minus; min) of the input), normalized by "
        f"<code>{_e(st.get('normalize'))}</code>, for the trained model and for each stage of "
        f"the {_e(st.get('order'))} randomization (init {_e(st.get('init'))}); the noise draws "
        "are the same at every stage, so changes come from the model. Averaging removes the "
        "noise that makes plain MPRT maps look dissimilar. Methods: "
        f"{_methods_list(res)} (controls are not smoothed). {_direction(res)}</p>"
        f'<p class="sub">Similarity to the trained model\'s smoothed maps at stage {k} (every '
        "block random): mean [95% t-interval] over samples.</p>" + _summary_table(res))


def emprt_section(res: CheckResult) -> str:
    """eMPRT: q = (H(random) - H(trained)) / H(trained) per method."""
    st = res.settings
    s = _summary(res)
    controls = set(st.get("controls", []))
    rows, classes = [], []
    if not s.empty:
        for method in dict.fromkeys(s["method"]):
            g = s[s["method"] == method].set_index("metric")

            def cell(m: str, g: pd.DataFrame = g) -> str:
                if m not in g.index:
                    return "&ndash;"
                r = g.loc[m]
                return _cell(r["mean"], r["lo"], r["hi"], r["n_nan"])

            rows.append([_e(method) + (" (control)" if method in controls else ""),
                         cell("emprt"), cell("entropy_trained"), cell("entropy_randomized")])
            classes.append("control" if method in controls else "")
    return (
        '<h2 id="emprt">eMPRT (efficient model parameter randomization, Hedstroem et al. '
        "2023)</h2><p>No pairwise similarity: "
        "q = (H(e<sub>random</sub>) &minus; H(e)) / H(e), where H is the entropy (nats) of a "
        f"{_e(st.get('bins'))}-bin histogram of a map (channels summed"
        f"{', absolute values' if st.get('absolute') else ''}), e the trained model's map and "
        "e<sub>random</sub> the fully randomized model's (init "
        f"{_e(st.get('init'))}). <b>Higher q is better</b>: a method that depends on the "
        "parameters should give much noisier maps for a random model. A constant trained map "
        f"has H = 0 and q = &infin;. Methods: {_methods_list(res)}.</p>"
        '<p class="sub">Mean [95% t-interval] over samples.</p>'
        + _table(["method", "q (eMPRT)", "H trained", "H random"], rows, classes,
                 [False, True, True, True]))


def random_logit_section(res: CheckResult) -> str:
    """Random logit: similarity of the explained class's map and a random other class's."""
    st = res.settings
    return (
        '<h2 id="random-logit">Random logit (Sixt et al. 2020)</h2>'
        "<p>Each input's map for the explained class (the trained model's prediction, or the "
        "given label) is compared with its map for another class drawn uniformly among the "
        f"other {int(st.get('num_classes', 0)) - 1 if st.get('num_classes') else '?'} classes "
        f"(seed {_e(st.get('seed'))}). A map that explains the class should change when "
        f"another class is explained. Methods: {_methods_list(res)}. {_direction(res)}</p>"
        '<p class="sub">Mean [95% t-interval] over samples.</p>' + _summary_table(res))


def scales_section(art: CritiqueArtifacts) -> str:
    """Activation scales (Binder et al. 2023, claim 2): table, figure, a sentence."""
    df = art.scales
    assert df is not None
    st = art.scales_settings
    fig = art.figures.get("activation_scales")
    if fig is None and not df.empty:
        from ..plots_critiques import activation_scales_figure

        fig = _draw(lambda p: activation_scales_figure(df, "spearman", path=p))
    out = ['<h2 id="activation-scales">Activation scales (Binder et al. 2023, claim 2)</h2>',
           "<p>For each stage of the "
           f"{_e(st.get('order', 'cascading'))} randomization and each block, the forward "
           "activations of the trained and the stage's model on the same inputs are compared: "
           "<code>spearman</code> = rank correlation of the per-channel mean |activation|, "
           "<code>spearman_spatial</code> = the same for the per-position mean over channels, "
           "<code>scale_ratio</code> = mean |activation| random / trained. If the scales "
           "survive randomization, explanations that multiply gradients by activations can only "
           "be expected to change to a certain extent.</p>",
           f"<p><b>{_e(scales_sentence(df))}</b></p>"]
    if fig is not None:
        out.append(f'<figure><img src="{_png_uri(fig)}" alt="activation scales">'
                   "<figcaption>Rank correlation of per-channel mean |activation|, trained vs "
                   "randomized, per stage (rows) and block (columns); boxed cells are randomized "
                   "blocks.</figcaption></figure>")
    cols = ["stage", "randomized_block", "block", "position", "n_channels", "spearman",
            "spearman_spatial", "scale_ratio"]
    have = [c for c in cols if c in df.columns]
    numeric = [c in ("spearman", "spearman_spatial", "scale_ratio", "n_channels", "stage")
               for c in have]

    def rows(sub: pd.DataFrame) -> list[list[str]]:
        return [[_num(r[c], 0) if c in ("stage", "n_channels") else
                 (_num(r[c]) if num else _e(r[c])) for c, num in zip(have, numeric, strict=True)]
                for _, r in sub.iterrows()]

    rnd = df[df["position"] == "randomized"] if "position" in df.columns else df
    out.append('<p class="sub">Randomized blocks (the informative rows):</p>')
    out.append(_table([_e(c) for c in have], rows(rnd), numeric=numeric))
    out.append("<details><summary>Every block and stage</summary>"
               + _table([_e(c) for c in have], rows(df), numeric=numeric) + "</details>")
    return "\n".join(out)


def scales_sentence(df: pd.DataFrame) -> str:
    """Whether the activation scales are preserved, in one or two sentences.

    Example:
        >>> df = pd.DataFrame({"position": ["below", "randomized"], "spearman": [1.0, 0.8],
        ...                    "spearman_spatial": [1.0, 0.9]})
        >>> scales_sentence(df).startswith("Blocks below")
        True
    """
    parts = []
    below = df[df["position"] == "below"]["spearman"].dropna()
    if len(below):
        if bool(np.all(below.to_numpy() >= 0.999)):
            parts.append(f"Blocks below the randomized ones keep their activations exactly "
                         f"(rank correlation 1 in all {len(below)} cases).")
        else:
            parts.append(f"Blocks below the randomized ones: channel rank correlation "
                         f"{below.min():.2f} to {below.max():.2f}.")
    rnd = df[df["position"] == "randomized"]
    sp = rnd["spearman"].dropna()
    if len(sp):
        med = float(sp.median())
        kept = int((sp > 0.5).sum())
        spatial = rnd["spearman_spatial"].dropna() if "spearman_spatial" in rnd else pd.Series()
        sp_txt = (f"; per-position median {float(spatial.median()):.2f}" if len(spatial) else "")
        if med > 0.5:
            verdict = ("Scales are largely PRESERVED by randomization: explanations built on "
                       "activations cannot be expected to change fully (Binder et al.).")
        elif len(spatial) and float(spatial.median()) > 0.5:
            verdict = ("The channel ranking is lost in randomized blocks, but the spatial "
                       "pattern of activation magnitude is largely PRESERVED.")
        else:
            verdict = "Randomized blocks do NOT preserve the activation scales."
        parts.append(f"In randomized blocks the channel rank correlation has median {med:.2f} "
                     f"({kept} of {len(sp)} above 0.5{sp_txt}). {verdict}")
    elif len(rnd):
        parts.append("The randomized blocks have no channel correlation (one channel or "
                     "constant activations).")
    return " ".join(parts) or "No activation-scale rows."


