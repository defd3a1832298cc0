"""The README's and docs' demo numbers and figures, regenerated from the code (never typed).

    python tools/readme_demo.py            # run the demo's main check; rewrite the README block
                                           # and docs/images/demo_*.png
    python tools/readme_demo.py --docs     # the whole demo (critiques too, ~4 min): also the
                                           # verdict and ranking tables of docs/report.md
    python tools/readme_demo.py --check    # exit 1 when the README's numbers drift by > 0.01

The paragraph sits between ``<!-- demo-numbers:start -->`` and ``<!-- demo-numbers:end -->`` in
README.md, the tables between ``<!-- demo-verdicts:start/end -->`` and
``<!-- demo-ranking:start/end -->`` in docs/report.md. ``tests/test_readme_numbers.py`` (slow)
runs the README check in the test suite.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"
REPORT_DOC = ROOT / "docs" / "report.md"
PAPER = "0.9 / 0.77 / 0.63 / 0.45 against 0.6 / 0.38 / 0.1 / 0.08"
CONTROLS = ("random_gaussian", "random_uniform")


def demo_result(out: Path, cache_dir: Any = None, critiques: bool = False) -> Any:
    """The demo's main check (and, with ``critiques``, its critiques), written to ``out``."""
    from saliency_sanity.demo import DEMO_CRITIQUES, demo_run

    return demo_run(out, cache_dir=cache_dir, progress=False, log=lambda s: None,
                    critiques=DEMO_CRITIQUES if critiques else None).result


def verdict_table(result: Any) -> str:
    """docs/report.md's table: each method's verdict (``verdicts.verdict``), the randomized
    blocks it ignores and its headline."""
    from saliency_sanity.verdicts import verdict

    lines = ["| method | verdict | ignores | headline |", "|---|---|---|---|"]
    for _, r in verdict(result).iterrows():
        tag = " (control)" if bool(r["control"]) else ""
        lines.append(f"| {r['method']}{tag} | {r['verdict']} | {r['ignores'] or '-'} | "
                     f"{r['headline']} |")
    return "\n".join(lines)


def ranking_table(run_dir: Path) -> str:
    """docs/report.md's ranking table, from the run's ranking.csv and ranking_tau.csv."""
    import pandas as pd

    from saliency_sanity.results.ranking import wide_ranking

    ranks, _, tau, n = wide_ranking(pd.read_csv(run_dir / "ranking.csv"),
                                    pd.read_csv(run_dir / "ranking_tau.csv"))
    checks = list(ranks.columns)
    lines = ["| method | " + " | ".join(checks) + " |", "|---" * (len(checks) + 1) + "|"]
    for method, row in ranks.sort_values(checks[0]).iterrows():
        cells = ["-" if pd.isna(v) else f"{v:g}" for v in row]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    pairs = [f"{a}-{b} {tau.loc[a, b]:.2f} ({int(n.loc[a, b])} methods)"
             for i, a in enumerate(checks) for b in checks[i + 1:]]
    out = "\n".join(lines) + "\n\nKendall's tau: " + "; ".join(pairs) + "."
    gap = gap_text(ranks, tau, n, run_dir)
    return out + (f"\n\nThe report's experimental-gap sentence: {gap}" if gap else "")


def gap_text(ranks: Any, tau: Any, n: Any, run_dir: Path) -> str:
    """The report's sentence on where the randomization checks and the faithfulness scores
    disagree (empty without faithfulness scores)."""
    import json

    from saliency_sanity.report.ranking import gap_sentence

    path = run_dir / "ranking.json"
    groups = json.loads(path.read_text(encoding="utf-8")).get("groups", {}) \
        if path.is_file() else {}
    return gap_sentence(ranks, tau, groups, n)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block between ``<!-- name:start -->`` and ``<!-- name:end -->``
    replaced by ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} block")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"


def numbers(result: Any, metric: str = "spearman_abs") -> dict[str, list[float]]:
    """Mean ``metric`` per randomized stage (1, 2, ...) for each method."""
    s = result.summary()
    s = s[(s["metric"] == metric) & (s["stage"] > 0)].sort_values("stage")
    return {m: g["mean"].round(2).tolist() for m, g in s.groupby("method", sort=False)}


def _seq(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def paragraph(nums: dict[str, list[float]]) -> str:
    """The README's paragraph for these numbers (wording follows what the numbers show)."""
    gbp, grad = nums["guided_backprop"], nums["gradient"]
    above = all(a > b for a, b in zip(gbp, grad, strict=True))
    relation = "stays above the gradient at every stage" if above else \
        "is not above the gradient at every stage"
    flat = min(nums["gradient_x_input"] + nums["integrated_gradients"])
    ctrl = max(abs(v) for c in CONTROLS if c in nums for v in nums[c])
    return (
        f"In the demo figure above, guided backprop {relation}\n"
        f"({_seq(gbp)} against {_seq(grad)}). The paper's MNIST figure reads\n"
        f"{PAPER}. Gradient x input and integrated\n"
        f"gradients stay at {flat:.2f} or above, because the zero background fixes their ranks. "
        f"The random\ncontrols stay within {ctrl:.2f} of 0, and grey bands mark the null "
        "reference. The cascading grid of\nmaps is "
        "[docs/images/demo_cascading_grid.png](docs/images/demo_cascading_grid.png)."
    )


def block(text: str) -> str:
    """The README's current paragraph between the markers."""
    if START not in text or END not in text:
        raise ValueError(f"README.md has no {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d+", text)]


def drift(readme_text: str, nums: dict[str, list[float]]) -> float:
    """Largest difference between the README's numbers and ``nums``' paragraph (inf when the
    paragraphs do not have the same shape)."""
    have, want = floats(block(readme_text)), floats(paragraph(nums))
    if len(have) != len(want):
        return float("inf")
    return max((abs(a - b) for a, b in zip(have, want, strict=True)), default=0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on drift > 0.01")
    p.add_argument("--docs", action="store_true",
                   help="run the critiques too and rewrite docs/report.md's demo tables")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = demo_result(Path(tmp) / "demo", args.cache_dir, critiques=args.docs)
        nums = numbers(result)
        text = README.read_text(encoding="utf-8")
        d = drift(text, nums)
        if args.check:
            print(f"largest drift of the README's demo numbers: {d:.3f}")
            return 0 if d <= 0.01 else 1
        new = text.replace(block(text), paragraph(nums))
        README.write_text(new, encoding="utf-8")
        figs = Path(tmp) / "demo" / "figures"
        shutil.copy(figs / "similarity_spearman_abs.png", IMAGES / "demo_spearman_abs.png")
        shutil.copy(figs / "cascading_grid.png", IMAGES / "demo_cascading_grid.png")
        if args.docs:
            doc = REPORT_DOC.read_text(encoding="utf-8")
            doc = replace_block(doc, "demo-verdicts", verdict_table(result))
            doc = replace_block(doc, "demo-ranking", ranking_table(Path(tmp) / "demo"))
            REPORT_DOC.write_text(doc, encoding="utf-8")
    print(paragraph(nums))
    return 0


if __name__ == "__main__":
    sys.exit(main())
