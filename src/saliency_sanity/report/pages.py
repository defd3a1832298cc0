"""The report pages the checks declare (``CheckSpec.report``): the randomization page (model and
data randomization and the stage-wise extras), the faithfulness page and the localization page.

Each is ``page(result, figures, *, title, margin, min_samples, critiques) -> html``, called by
:func:`.html.render_report` through the registry of checks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..results import CheckResult
from ..results.files import CRITIQUE_FIGURES
from ..verdicts import has_verdict, verdict
from ._util import e
from .artifacts import CritiqueArtifacts
from .critiques import contents, critique_sections, scales_section
from .html import (
    _CSS,
    _SUMMARY_CSS,
    _detail_section,
    _figures_section,
    _page,
    _settings_section,
    _stage_tables_section,
    _stages_section,
)
from .summary import headlines_section, run_header, stage_readings_section

Figures = list[tuple[str, bytes]]


def randomization_page(result: CheckResult, figures: Figures, *, title: str,
                       margin: float = 0.1, min_samples: int = 5,
                       critiques: CritiqueArtifacts | None = None, **_: Any) -> str:
    """The page of a randomization run: verdicts and headlines first (the one verdict per method,
    :func:`saliency_sanity.verdicts.verdict`, for a check that declares a verdict),
    then the figures, the extras saved beside the run, the detail tables and the settings.

    Example:
        >>> import pandas as pd
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(
        ...     [["g", 1, "fc", 0, "ssim", 0.1]],
        ...     columns=["method", "stage", "layer", "sample", "metric", "value"]))
        >>> "<h1>MPRT</h1>" in randomization_page(r, [], title="MPRT")
        True
    """
    v = (verdict(result, min_samples=min_samples, margin=margin) if has_verdict(result.check)
         else pd.DataFrame())
    order = result.settings.get("order")
    sub = ", ".join(str(x) for x in (
        f"{order} order" if order else None,
        f"init {result.settings.get('init')}" if result.settings.get("init") else None,
        f"seed {result.settings.get('seed')}" if result.settings.get("seed") is not None else None,
        f"{result.table['sample'].nunique()} samples" if not result.table.empty else None,
    ) if x)
    art = critiques if critiques is not None else CritiqueArtifacts()
    figures = [f for f in figures if f[0] not in CRITIQUE_FIGURES]
    extra = critique_sections(result, art)
    toc = contents(result, art)
    nav = ""
    if len(toc) > 1:
        nav = ('<p class="sub">Sections: <a href="#verdicts">Verdicts</a> &middot; '
               '<a href="#figures">Figures</a> &middot; ' + " &middot; ".join(
                   f'<a href="#{a}">{e(t)}</a>' for a, t in toc)
               + ' &middot; <a href="#settings">Settings</a></p>')
    body = "\n".join([
        f'<div class="head"><h1>{e(title)}</h1>'
        f'<p class="sub">saliency-sanity report &middot; {e(sub)}</p></div>',
        run_header(result),
        nav,
        headlines_section(result, v, margin, min_samples),
        _figures_section(figures),
        extra,
        _detail_section(result, margin, min_samples),
        stage_readings_section(result, min_samples),
        _stage_tables_section(result),
        _stages_section(result),
        _settings_section(result),
    ])
    return _page(title, body)


def faithfulness_page(result: CheckResult, figures: Figures, *, title: str,
                      critiques: CritiqueArtifacts | None = None, **_: Any) -> str:
    """The page of a faithfulness run: the curves and scores, the methods ranked by each score
    with Kendall's tau between the scores, the settings.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"method": "g", "stage": 0, "layer": "", "sample": [0, 1],
        ...                   "metric": "pixel_flipping:0", "value": [0.9, 0.8]})
        >>> "<h1>Faithfulness</h1>" in faithfulness_page(
        ...     CheckResult(check="faithfulness", table=t), [], title="Faithfulness")
        True
    """
    from .faithfulness import faithfulness_section, ranking_artifacts
    from .ranking import ranking_section

    art = critiques if critiques is not None and critiques.ranking is not None else (
        ranking_artifacts(result))
    sub = f"seed {result.settings.get('seed')}, {result.table['sample'].nunique()} samples" \
        if not result.table.empty else ""
    parts = ['<div class="head"><h1>Faithfulness</h1>'
             f'<p class="sub">saliency-sanity report &middot; {e(sub)}</p></div>',
             run_header(result), faithfulness_section(result, dict(figures))]
    if art is not None:
        parts.append(ranking_section(art))
    parts.append(_settings_section(result))
    return _page(title, "\n".join(parts))


def localization_page(result: CheckResult, figures: Figures, *, title: str | None = None,
                      **_: Any) -> str:
    """The page of a localization run (:func:`.localization.render_localization`).

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"method": "g", "setting": "gridpg", "layer": "input",
        ...                   "sample": [0], "head": 0, "metric": "localization",
        ...                   "value": [0.5]})
        >>> "<h1>L</h1>" in localization_page(CheckResult("localization", t), [], title="L")
        True
    """
    from .localization import render_localization

    return render_localization(result, figures, _CSS + _SUMMARY_CSS, _settings_section(result),
                               title)


def activation_scales_page(result: CheckResult, figures: Figures, *, title: str,
                           **_: Any) -> str:
    """The page of an activation-scale run on its own (beside a model randomization run the
    same section is part of that run's page): the table, the figure, the settings.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"stage": [1], "randomized_block": ["fc"], "block": ["fc"],
        ...                   "position": ["randomized"], "n_channels": [4], "spearman": [0.1],
        ...                   "spearman_spatial": [0.2], "scale_ratio": [1.0]})
        >>> page = activation_scales_page(CheckResult("activation_scales", t), [], title="S")
        >>> 'id="activation-scales"' in page
        True
    """
    art = CritiqueArtifacts(scales=result.table, scales_settings=result.settings,
                            figures=dict(figures))
    head = (f'<div class="head"><h1>{e(title)}</h1><p class="sub">saliency-sanity report '
            f"&middot; seed {e(result.settings.get('seed'))}</p></div>")
    return _page(title, "\n".join([head, scales_section(art), _settings_section(result)]))
