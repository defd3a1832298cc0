"""Which critique checks to compute beside a model randomization run, and their settings.

This module imports no torch: the CLI builds options from its flags and the report reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..results import CheckResult


@dataclass
class CritiqueOptions:
    """Which extras to compute beside a model randomization run, and their settings.

    Attributes:
        smprt, emprt, random_logit, activation_scales: compute that extra.
        smprt_samples, smprt_noise: sMPRT's noisy copies per map and noise level (fraction of
            each input's max - min); paper: 50 and 0.1.
        smprt_normalize: ``"second_moment"`` (the paper's implementation) or ``"none"``: the
            post-processing applied to both maps before each score.
        smprt_order: sMPRT's randomization order (paper: ``"bottom_up"``).
        smprt_methods: methods for sMPRT: labels of the run's methods (their settings are
            kept), other method names, or a ``{label: spec}`` dict; None = the run's methods minus
            the noise-averaged ones (SmoothGrad, VarGrad, IG-SmoothGrad).
        methods: methods for eMPRT and the random logit test, chosen as ``smprt_methods``;
            None = the run's methods.
        emprt_bins: histogram bins of eMPRT (paper: 100).
        data_randomization_run: a data randomization run directory whose results join the
            method ranking.
        faithfulness: compute the faithfulness check (perturbation curves of the trained
            model's maps) beside the run, in ``faithfulness/``; each of its scores joins the
            method ranking (Binder et al.'s experimental gap).
        faithfulness_metrics: its metrics (default: region perturbation and ROAD).
        faithfulness_settings: per-metric settings overriding the check's defaults.

    Example:
        >>> CritiqueOptions.all(smprt_samples=10).any(), CritiqueOptions().any()
        (True, False)
    """

    smprt: bool = False
    emprt: bool = False
    random_logit: bool = False
    activation_scales: bool = False
    smprt_samples: int = 50
    smprt_noise: float = 0.1
    smprt_normalize: str = "second_moment"
    smprt_order: str = "bottom_up"
    smprt_methods: Sequence[Any] | Mapping[str, Any] | None = None
    methods: Sequence[Any] | Mapping[str, Any] | None = None
    emprt_bins: int = 100
    data_randomization_run: str | os.PathLike | None = None
    faithfulness: bool = False
    faithfulness_metrics: Sequence[str] = ("region_perturbation", "road")
    faithfulness_settings: Mapping[str, Mapping[str, Any]] | None = None

    @classmethod
    def all(cls, **kw: Any) -> CritiqueOptions:
        """Every extra on (``--critiques``), with ``kw`` overriding settings."""
        base = {"smprt": True, "emprt": True, "random_logit": True, "activation_scales": True}
        base.update(kw)
        return cls(**base)

    def any(self) -> bool:
        """True when anything beyond the main check is asked for."""
        return bool(self.smprt or self.emprt or self.random_logit or self.activation_scales
                    or self.data_randomization_run or self.faithfulness)

    def validate(self) -> None:
        """Raise ValueError for settings no extra can run with (called before any work)."""
        s = self.smprt_samples
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ValueError(f"smprt_samples must be a positive integer, got {s!r}")
        if not isinstance(self.smprt_noise, (int, float)) or not self.smprt_noise >= 0:
            raise ValueError(f"smprt_noise must be a non-negative fraction of the input range, "
                             f"got {self.smprt_noise!r}")
        b = self.emprt_bins
        if not isinstance(b, int) or isinstance(b, bool) or b < 2:
            raise ValueError(f"emprt_bins must be an integer >= 2, got {b!r}")
        if self.smprt_normalize not in ("second_moment", "none"):
            raise ValueError(f"smprt_normalize must be 'second_moment' or 'none', got "
                             f"{self.smprt_normalize!r}")
        if self.data_randomization_run is not None:
            load_data_randomization_run(self.data_randomization_run)
        if self.faithfulness:
            check_faithfulness_metrics(self.faithfulness_metrics, "faithfulness_metrics")

    def settings(self) -> dict[str, Any]:
        """JSON-able record of the options (for ``run.json``)."""
        out = asdict(self)
        out["smprt_methods"] = jsonable_spec(self.smprt_methods)
        out["methods"] = jsonable_spec(self.methods)
        out["faithfulness_metrics"] = list(self.faithfulness_metrics)
        out["faithfulness_settings"] = jsonable_spec(self.faithfulness_settings)
        if self.data_randomization_run is not None:
            out["data_randomization_run"] = str(self.data_randomization_run)
        return out


#: The faithfulness check's metrics (``saliency_sanity.checks.faithfulness.METRICS``; this
#: module imports no torch).
FAITHFULNESS_METRICS = ("region_perturbation", "pixel_flipping", "insertion", "deletion", "road")


def check_faithfulness_metrics(metrics: Any, what: str = "metrics") -> list[str]:
    """The faithfulness metrics as a list, or ValueError naming the unknown ones.

    Example:
        >>> check_faithfulness_metrics("road, region_perturbation")
        ['road', 'region_perturbation']
        >>> check_faithfulness_metrics(["pixelflip"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: metrics: unknown faithfulness metric(s) 'pixelflip'; known: ...
    """
    items = ([t.strip() for t in metrics.split(",") if t.strip()] if isinstance(metrics, str)
             else [str(m) for m in metrics])
    unknown = [m for m in items if m not in FAITHFULNESS_METRICS]
    if unknown:
        raise ValueError(f"{what}: unknown faithfulness metric(s) "
                         f"{', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(FAITHFULNESS_METRICS)}")
    if not items:
        raise ValueError(f"{what}: no metric given; choose among "
                         f"{', '.join(FAITHFULNESS_METRICS)}")
    if len(set(items)) != len(items):
        raise ValueError(f"{what}: a metric is named twice: {', '.join(items)}")
    return items


def load_data_randomization_run(path: str | os.PathLike) -> CheckResult:
    """Load a data randomization run directory, or raise ValueError saying what is wrong.

    Example:
        >>> load_data_randomization_run("/no/such/dir")
        Traceback (most recent call last):
        ...
        ValueError: data_randomization_run /no/such/dir is not a folder
    """
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"data_randomization_run {p} is not a folder")
    try:
        res = CheckResult.load(p)
    except (OSError, ValueError) as err:
        raise ValueError(f"data_randomization_run {p}: {err}") from err
    if res.check != "data_randomization":
        raise ValueError(f"data_randomization_run {p} holds a {res.check!r} run; pass a folder "
                         "written by 'saliency-sanity data-randomization'")
    return res


def jsonable_spec(spec: Any) -> Any:
    return json.loads(json.dumps(spec, default=repr, sort_keys=True))
