"""The 2-D truth: exact solutions on Gaussian mixtures, one module per problem.

- :mod:`cda_lite.exact.rewards` — linear and concave quadratic rewards (closed-form tilts);
- :mod:`cda_lite.exact.alignment` — reward tilts and constrained alignment (UR-A, Theorem 1);
- :mod:`cda_lite.exact.product` — product composition (UR-C "AND", Theorem 3), with the closed-form
  references :class:`GaussianProduct` / :class:`GridProduct`;
- :mod:`cda_lite.exact.mixture` — mixture composition ("OR", Theorem 5);
- :mod:`cda_lite.exact.simplex` — the simplex solver both compositions share;
- :mod:`cda_lite.exact.problems` — 2-D problem files (JSON), and :mod:`cda_lite.exact.cli` —
  ``python -m cda_lite.exact PROBLEM.json``.

Everything here is closed form (or a fine 2-D grid where no closed form exists) and serves as the
ground truth that learned and sampled answers are checked against; it imports nothing learned
(checked by import-linter). Chapters 2, 3, 5, 6. The public names of every module are re-exported here,
so ``from cda_lite.exact import align_dual`` works.
"""
from __future__ import annotations

from cda_lite.errors import InfeasibleConstraintError
from cda_lite.exact.alignment import (AlignResult, align_dual, dual_function, expected_rewards, kl_tilt,
                                      log_partition, tilt)
from cda_lite.exact.cli import main, solve_problem
from cda_lite.exact.mixture import MixtureResult, mixture_dual
from cda_lite.exact.problems import AlignmentProblem, CompositionProblem, load_problem, save_problem
from cda_lite.exact.product import GaussianProduct, GridProduct, ProductResult, gaussian_kl, product_dual
from cda_lite.exact.rewards import LinearReward, QuadraticReward, reward_from_dict
from cda_lite.exact.simplex import check_experts, simplex_solve

__all__ = [
    "LinearReward", "QuadraticReward", "InfeasibleConstraintError", "tilt", "log_partition",
    "expected_rewards", "kl_tilt", "dual_function", "align_dual", "AlignResult", "product_dual",
    "ProductResult", "mixture_dual", "MixtureResult", "gaussian_kl", "reward_from_dict",
    "GaussianProduct", "GridProduct", "simplex_solve", "check_experts",
    "AlignmentProblem", "CompositionProblem", "load_problem", "save_problem", "solve_problem", "main",
]
