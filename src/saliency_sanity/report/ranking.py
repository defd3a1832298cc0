"""The report's ranking section: methods ranked by each check, Kendall's tau, disagreements."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..results.ranking import wide_ranking
from ._util import _num, _png_uri, _table
from ._util import e as _e
from .artifacts import CritiqueArtifacts, _draw

#: Kendall's tau below which two checks' rankings are flagged as disagreeing.
DISAGREEMENT_TAU = 0.5
#: Pairs of checks sharing fewer methods than this are not judged.
MIN_METHODS = 4


def ranking_section(art: CritiqueArtifacts) -> str:
    """Ranks of the methods by each check, Kendall's tau between checks, disagreements."""
    assert art.ranking is not None and art.tau is not None
    ranks, means, tau, n = wide_ranking(art.ranking, art.tau)
    st = art.ranking_settings
    fig = art.figures.get("ranking")
    if fig is None and not ranks.empty:
        from ..plots_critiques import ranking_figure

        fig = _draw(lambda p: ranking_figure(ranks, tau, path=p))
    metric_by_check = art.ranking.drop_duplicates("check").set_index("check")["metric"]
    hib = art.ranking.drop_duplicates("check").set_index("check")["higher_is_better"]
    head = [f"{_e(c)}<br><span class=\"note\">{_e(metric_by_check.get(c, ''))}, "
            f"{'higher' if bool(hib.get(c, False)) else 'lower'} is better</span>"
            for c in ranks.columns]
    rows = []
    for method in ranks.index:
        cells = [_e(method)]
        for c in ranks.columns:
            r = ranks.loc[method, c]
            cells.append("&ndash;" if pd.isna(r) else
                         f'{_num(r, 1 if float(r) % 1 else 0)} <span class="note">'
                         f"({_num(means.loc[method, c])})</span>")
        rows.append(cells)
    trows = []
    for a in tau.index:
        cells = [_e(a)]
        for b in tau.columns:
            t = tau.loc[a, b]
            cells.append(f'{_num(t, 2)} <span class="note">n={_num(n.loc[a, b], 0)}</span>'
                         if a != b else "1")
        trows.append(cells)
    what = ("the mean at full randomization of "
            f"<code>{_e(st.get('metric', ''))}</code> for MPRT and sMPRT, the mean q for eMPRT, "
            "the random-logit similarity, and the true- vs random-label similarity for data "
            "randomization" if st.get("metric") else "its mean over samples")
    out = ['<h2 id="ranking">Method rankings across checks (Binder et al. 2023, claim 3)</h2>',
           "<p>Each check ranks the methods (1 = best, ties share the average rank) by one "
           f"number per method: {what}. Controls are left out. Kendall's tau between two "
           "rankings is 1 when they agree, &minus;1 when reversed.</p>",
           f"<p><b>{_e(disagreement_sentence(tau, n))}</b> "
           f"{_e(movers_sentence(ranks, tau, n))}</p>"]
    groups = st.get("groups") or {}
    if any(g == "faithfulness" for g in groups.values()):
        out.insert(2, "<p>The faithfulness scores rank the methods by their own measure (AOPC, "
                   "ABPC, AUC, ROAD gap: see the Faithfulness section for each direction); "
                   "Binder et al. (2023) call the disagreement between the randomization checks "
                   "and faithfulness the <i>experimental gap</i>.</p>")
        gap = gap_sentence(ranks, tau, groups, n)
        if gap:
            out.insert(4, f'<p class="rule">{_e(gap)}</p>')
    for note in st.get("notes", []) or []:
        out.append(f'<p class="note">{_e(note)}</p>')
    inf = art.ranking[np.isinf(art.ranking["mean"].to_numpy(dtype=float))]
    for check, g in inf.groupby("check", sort=False):
        out.append(f'<p class="note">{_e(check)}: {_e(", ".join(g["method"]))} '
                   "score infinite on some inputs (for eMPRT: the trained model's map is "
                   "constant, H = 0, so q = &infin;), which puts them first; read that rank "
                   "with care.</p>")
    out.append('<p class="sub">Rank by check (mean score in brackets).</p>')
    out.append(_table(["method"] + head, rows, numeric=[False] + [True] * len(ranks.columns)))
    out.append('<p class="sub">Kendall\'s tau-b between the checks\' rankings (n = methods '
               "both rank).</p>")
    out.append(_table([""] + [_e(c) for c in tau.columns], trows,
                      numeric=[False] + [True] * len(tau.columns)))
    if fig is not None:
        out.append(f'<figure><img src="{_png_uri(fig)}" alt="method rankings">'
                   "<figcaption>Left: rank of each method by each check (1 = best). Right: "
                   "Kendall's tau between the checks' rankings.</figcaption></figure>")
    return "\n".join(out)


def _rank_text(r: float, of: int) -> str:
    return f"{r:g} of {of}"


def gap_sentence(ranks: pd.DataFrame, tau: pd.DataFrame, groups: dict[str, str],
                 n: pd.DataFrame | None = None, threshold: float = DISAGREEMENT_TAU,
                 most: int = 3, min_methods: int = MIN_METHODS) -> str:
    """Where the randomization checks and the faithfulness scores disagree, in plain words:
    the range of Kendall's tau between the two groups, how many pairs disagree (tau <
    ``threshold``), the method each group ranks first, and the ``most`` methods whose ranks
    differ most between a randomization check and a faithfulness score, each with that pair.
    ``groups``: ``{check: "randomization" or "faithfulness"}``; "" when a group is missing.

    Example:
        >>> ranks = pd.DataFrame({"MPRT": [1.0, 2.0, 3.0], "AOPC": [3.0, 2.0, 1.0]},
        ...                      index=["a", "b", "c"])
        >>> tau = pd.DataFrame([[1.0, -1.0], [-1.0, 1.0]], index=["MPRT", "AOPC"],
        ...                    columns=["MPRT", "AOPC"])
        >>> s = gap_sentence(ranks, tau, {"MPRT": "randomization", "AOPC": "faithfulness"})
        >>> s.split(". ")[-1][:60]
        'Ranks differ most for a (1 of 3 by MPRT, 3 of 3 by AOPC) and'
    """
    rand = [c for c in ranks.columns if groups.get(c) == "randomization"]
    faith = [c for c in ranks.columns if groups.get(c) == "faithfulness"]
    if not rand or not faith:
        return ""
    pairs = []
    for a in rand:
        for b in faith:
            t = float(tau.loc[a, b]) if a in tau.index and b in tau.columns else math.nan
            cnt = int(n.loc[a, b]) if n is not None and not pd.isna(n.loc[a, b]) else None
            if not math.isnan(t) and (cnt is None or cnt >= min_methods):
                pairs.append((t, a, b, cnt))
    judged = {(a, b) for _, a, b, _ in pairs}
    if not pairs:
        return ("The randomization checks and the faithfulness scores share too few methods "
                "to compare their rankings.")
    lo, hi = min(pairs), max(pairs)
    low = sum(t < threshold for t, *_ in pairs)
    if lo[0] == hi[0]:
        span = f"is {lo[0]:.2f} ({lo[1]} vs {lo[2]})"
    else:
        span = f"runs from {lo[0]:.2f} ({lo[1]} vs {lo[2]}) to {hi[0]:.2f} ({hi[1]} vs {hi[2]})"
    verb = "disagree" if low else "agree"
    parts = [f"The randomization checks and the faithfulness scores {verb}: Kendall's tau "
             f"between them {span}; {low} of {len(pairs)} pairs below {threshold:g}."]
    rand = [a for a in rand if any(a == p[1] for p in pairs)]  # the checks judged
    faith = [b for b in faith if any(b == p[2] for p in pairs)]
    first_r = ranks[rand].mean(axis=1).idxmin()
    first_f = ranks[faith].mean(axis=1).idxmin()
    if first_r == first_f:
        parts.append(f"Both rank {first_r} first on average.")
    else:
        parts.append(f"The randomization checks rank {first_r} first, the faithfulness scores "
                     f"{first_f}.")
    diffs = []
    for method in ranks.index:
        best = None
        for a, b in sorted(judged, key=lambda ab: (rand.index(ab[0]), faith.index(ab[1]))):
            ra, rb = ranks.loc[method, a], ranks.loc[method, b]
            if pd.isna(ra) or pd.isna(rb):
                continue
            d = abs(float(ra) - float(rb))
            if best is None or d > best[0]:
                best = (d, a, b, float(ra), float(rb))
        if best is not None and best[0] >= 1:
            diffs.append((best, method))
    diffs.sort(key=lambda z: -z[0][0])
    if diffs:
        words = []
        for (_, a, b, ra, rb), method in diffs[:most]:
            na, nb = int(ranks[a].notna().sum()), int(ranks[b].notna().sum())
            words.append(f"{method} ({_rank_text(ra, na)} by {a}, {_rank_text(rb, nb)} by {b})")
        joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        parts.append(f"Ranks differ most for {joined}.")
    return " ".join(parts)


def disagreement_sentence(tau: pd.DataFrame, n: pd.DataFrame | None = None,
                          threshold: float = DISAGREEMENT_TAU,
                          min_methods: int = MIN_METHODS) -> str:
    """Name the pairs of checks whose rankings disagree (tau < ``threshold``); pairs sharing
    fewer than ``min_methods`` methods are named apart (too few to judge).

    Example:
        >>> t = pd.DataFrame([[1.0, 0.2], [0.2, 1.0]], index=["A", "B"], columns=["A", "B"])
        >>> disagreement_sentence(t)
        'The checks disagree (tau < 0.5): A vs B (tau = 0.20).'
    """
    pairs, agree, few = [], 0, []
    keys = list(tau.index)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            t = float(tau.loc[a, b])
            cnt = int(n.loc[a, b]) if n is not None and not pd.isna(n.loc[a, b]) else None
            label = f", n = {cnt}" if cnt is not None else ""
            if math.isnan(t) or (cnt is not None and cnt < min_methods):
                few.append(f"{a} vs {b}" + ("" if math.isnan(t) else f" (tau = {t:.2f}{label})"))
            elif t < threshold:
                pairs.append(f"{a} vs {b} (tau = {t:.2f}{label})")
            else:
                agree += 1
    extra = (f" Too few methods in common (fewer than {min_methods}) to judge: "
             f"{'; '.join(few)}." if few else "")
    if pairs:
        return f"The checks disagree (tau < {threshold:g}): {'; '.join(pairs)}.{extra}"
    if agree:
        return (f"All {agree} comparable pairs of checks rank the methods alike "
                f"(tau >= {threshold:g}).{extra}")
    return extra.strip() or "No pair of checks to compare."


def movers_sentence(ranks: pd.DataFrame, tau: pd.DataFrame, n: pd.DataFrame | None = None,
                    threshold: float = DISAGREEMENT_TAU, min_methods: int = MIN_METHODS) -> str:
    """For each pair of checks that disagree (as in :func:`disagreement_sentence`), the method
    whose rank differs most between them, with both ranks (ties: every such method), e.g. an LRP
    composite ranked low by MPRT and high by faithfulness (Binder et al.'s experimental gap).

    Example:
        >>> r = pd.DataFrame({"MPRT": [1.0, 2.0, 3.0], "faithfulness": [2.0, 3.0, 1.0]},
        ...                  index=["gradient", "ig", "lrp"])
        >>> t = pd.DataFrame([[1.0, -0.5], [-0.5, 1.0]], index=r.columns, columns=r.columns)
        >>> movers_sentence(r, t)
        'Largest rank change, MPRT vs faithfulness: lrp (3 vs 1).'
    """
    parts = []
    keys = [k for k in tau.index if k in ranks.columns]
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            t = float(tau.loc[a, b])
            cnt = int(n.loc[a, b]) if n is not None and not pd.isna(n.loc[a, b]) else None
            if math.isnan(t) or t >= threshold or (cnt is not None and cnt < min_methods):
                continue
            both = ranks[[a, b]].dropna()
            if both.empty:
                continue
            diff = (both[a] - both[b]).abs()
            top = diff[diff == diff.max()].index
            names = ", ".join(f"{m} ({both.loc[m, a]:g} vs {both.loc[m, b]:g})" for m in top)
            parts.append(f"{a} vs {b}: {names}")
    return f"Largest rank change, {'; '.join(parts)}." if parts else ""
