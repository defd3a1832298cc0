"""The sanity checks. Each returns a :class:`CheckResult`."""

from ._result import COLUMNS, CheckResult
from .data_randomization import compare_models, data_randomization_test
from .model_randomization import model_randomization_test

__all__ = [
    "COLUMNS",
    "CheckResult",
    "compare_models",
    "data_randomization_test",
    "model_randomization_test",
]

# critiques of the randomization checks (issue 7)
from .activation_scales import activation_scale_analysis  # noqa: E402
from .emprt import efficient_model_randomization_test  # noqa: E402
from .random_logit import random_logit_test  # noqa: E402
from .ranking import method_ranking  # noqa: E402
from .smprt import smooth_model_randomization_test  # noqa: E402

__all__ += [
    "activation_scale_analysis",
    "efficient_model_randomization_test",
    "method_ranking",
    "random_logit_test",
    "smooth_model_randomization_test",
]
