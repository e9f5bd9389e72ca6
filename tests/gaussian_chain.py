"""The exact law of a DDIM(η) chain run with the exact ε of a single Gaussian (a test truth): every step
is affine in x plus Gaussian noise, so the samples stay Gaussian; mean and covariance are propagated
from N(0, I) in closed form, independently of the library's samplers."""
import math

import numpy as np
import torch

from cda_lite.gmm import GaussianMixture
from cda_lite.sampling import mean_eps_coefficient, step_mean_std


def chain_law(gm, chain):
    """The chain's final law, a single-Gaussian GaussianMixture."""
    mu, Sig, d = gm.means[0], gm.covs[0], gm.dim
    m, S = np.zeros(d), np.eye(d)
    for ab_t, ab_s in zip(chain.ab_t, chain.ab_s):
        Ci = np.linalg.inv(ab_t * Sig + (1 - ab_t) * np.eye(d))  # ε(x) = √(1−ᾱ) C⁻¹ (x − √ᾱ μ)
        a, c = math.sqrt(ab_s / ab_t), mean_eps_coefficient(ab_t, ab_s, chain.eta)
        _, sigma = step_mean_std(torch.zeros(1), torch.zeros(1), ab_t, ab_s, chain.eta)
        M = a * np.eye(d) + c * math.sqrt(1 - ab_t) * Ci
        m = M @ m - c * math.sqrt(1 - ab_t) * math.sqrt(ab_t) * Ci @ mu
        S = M @ S @ M.T + sigma**2 * np.eye(d)
    return GaussianMixture.gaussian(m, S)
