"""Names of the files in a run directory, shared by whoever writes and whoever reads them."""

from __future__ import annotations

RESULTS_CSV = "results.csv"
NULL_CSV = "null.csv"
RUN_JSON = "run.json"
EXAMPLES_NPZ = "examples.npz"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

#: Subdirectories of the critique checks saved beside a model randomization run, by option.
EXTRA_DIRS = {"smprt": "smprt", "emprt": "emprt", "random_logit": "random_logit",
              "faithfulness": "faithfulness"}
SCALES_CSV = "activation_scales.csv"
SCALES_JSON = "activation_scales.json"
RANKING_CSV = "ranking.csv"
RANKING_TAU_CSV = "ranking_tau.csv"
RANKING_JSON = "ranking.json"
#: Figures the critiques add to ``figures/``.
CRITIQUE_FIGURES = ("activation_scales", "ranking")
