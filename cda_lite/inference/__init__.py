"""Inference-time alignment and its rivals (Chapter 7): DAS (SMC towards q·e^{r/α}), Diffusion
Blend (DB-MPA, DB-KLA, DB-MPA-LS) and our importance-weighted correction of its bias, MSDDA's
step-level product, and reward-gradient guidance. Every sampler takes any ε-model and steps with
:func:`cda_lite.sampling.step_mean_std`."""
from cda_lite.inference.blend import (
    RandomChoiceEps, blend_log_z, check_blend_weights, db_kla_eps, db_mpa_eps, db_mpa_ls_eps,
    sample_blend_corrected, sample_db_kla, sample_db_mpa, sample_db_mpa_ls,
)
from cda_lite.inference.common import WeightedReward
from cda_lite.inference.das import (
    SMCResult, adaptive_next_lambda, das, exponential_tempering, polynomial_tempering,
)
from cda_lite.inference.guidance import guided_nfe, sample_guided
from cda_lite.inference.msdda import msdda_combine, sample_msdda
from cda_lite.inference.smc import ess, normalize_log_weights, systematic_resample

__all__ = [
    "das", "SMCResult", "exponential_tempering", "polynomial_tempering", "adaptive_next_lambda",
    "db_mpa_eps", "db_kla_eps", "db_mpa_ls_eps", "RandomChoiceEps", "check_blend_weights", "blend_log_z",
    "sample_db_mpa", "sample_db_kla", "sample_db_mpa_ls", "sample_blend_corrected",
    "msdda_combine", "sample_msdda", "sample_guided", "guided_nfe", "WeightedReward",
    "ess", "normalize_log_weights", "systematic_resample",
]
