"""The sanity checks. Each returns a :class:`CheckResult` and runs on :mod:`saliency_sanity.engine`.

- :func:`model_randomization_test`, :func:`data_randomization_test`, :func:`compare_models`:
  Adebayo et al. 2018;
- :func:`faithfulness_test`, :func:`faithfulness_scores`: perturbation curves (region
  perturbation, pixel flipping, insertion / deletion, ROAD) and their AOPC / ABPC / AUC;
- :func:`localization_test`: localization on grid images in GridPG, DiFull and DiPart, at the
  input and at layers (Rao et al. 2022);
- :func:`smooth_model_randomization_test`, :func:`efficient_model_randomization_test`,
  :func:`random_logit_test`, :func:`activation_scale_analysis`, :func:`method_ranking`: the
  critiques and repairs of the randomization checks;
- :func:`diffroar` (ROAR / KAR / DiffROAR with retraining) and :func:`signal_share`
  (BlockMNIST): Shah, Jain, Netrapalli 2021.
"""

from ..results import COLUMNS, CheckResult
from ..results.spec import register
from . import (
    activation_scales,
    blockmnist,
    data_randomization,
    emprt,
    faithfulness,
    localization,
    model_randomization,
    random_logit,
    roar,
    smprt,
)
from .activation_scales import activation_scale_analysis
from .blockmnist import blockmnist_experiment, signal_share
from .data_randomization import compare_models, data_randomization_test
from .emprt import efficient_model_randomization_test
from .faithfulness import faithfulness_scores, faithfulness_test
from .localization import localization_test
from .model_randomization import model_randomization_test
from .random_logit import random_logit_test
from .ranking import method_ranking
from .roar import DiffRoarResult, diffroar
from .smprt import smooth_model_randomization_test

# The registry of checks (saliency_sanity.results.spec): one line per check, in the CLI's order.
register(model_randomization.SPEC)
register(data_randomization.SPEC)
register(faithfulness.SPEC)
register(localization.SPEC)
register(roar.SPEC)
register(blockmnist.SPEC)
register(smprt.SPEC)
register(emprt.SPEC)
register(random_logit.SPEC)
register(activation_scales.SPEC)

__all__ = [
    "COLUMNS",
    "CheckResult",
    "DiffRoarResult",
    "activation_scale_analysis",
    "blockmnist_experiment",
    "compare_models",
    "data_randomization_test",
    "diffroar",
    "efficient_model_randomization_test",
    "faithfulness_scores",
    "faithfulness_test",
    "localization_test",
    "method_ranking",
    "model_randomization_test",
    "random_logit_test",
    "signal_share",
    "smooth_model_randomization_test",
]
