"""cda_lite: constrained alignment and composition of diffusion models, from 2-D mixtures to SD 1.5.

``import cda_lite`` is light: it imports no diffusers/transformers. Import the submodule you need,
e.g. ``from cda_lite.gmm import GaussianMixture``.
"""
from cda_lite.profile import profile, pick

__version__ = "0.1.0"
__all__ = ["profile", "pick", "__version__"]
