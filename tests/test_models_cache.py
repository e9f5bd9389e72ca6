"""The frozen time-embedding cache of cda_lite.models.TimeEmbedding never changes a network's output:
checked against an uncached twin before and after in-place weight changes and load_state_dict."""
import copy

import torch

from cda_lite.models import MLPEps


def test_cached_embedding_matches_an_uncached_twin():
    torch.manual_seed(0)
    frozen = MLPEps(100, 2, 32, 2)
    live = copy.deepcopy(frozen)  # requires_grad stays True: never cached
    for p in frozen.parameters():
        p.requires_grad_(False)
    x = torch.randn(16, 2)
    for t in (0, 50, 99, 50):
        assert torch.equal(frozen(x, t), live(x, t).detach())
    assert len(frozen.time._cache) == 3 and not live.time._cache
    with torch.no_grad():  # an in-place change of the weights must miss the cache
        frozen.time.proj[0].weight.mul_(1.5)
        live.time.proj[0].weight.mul_(1.5)
    assert torch.equal(frozen(x, 50), live(x, 50).detach())
    state = MLPEps(100, 2, 32, 2).state_dict()
    frozen.load_state_dict(state)
    live.load_state_dict(state)
    assert torch.equal(frozen(x, 50), live(x, 50).detach())
    # per-sample timesteps are not cached and agree too
    t = torch.randint(0, 100, (16,))
    assert torch.equal(frozen(x, t), live(x, t).detach())


def test_cached_noise_level_embedding_matches_an_uncached_twin():
    import numpy as np
    sig = np.sqrt(1 - np.cumprod(1 - np.linspace(1e-4, 0.1, 100)))
    torch.manual_seed(0)
    frozen = MLPEps(100, 2, 32, 2, affine=True, sigmas=sig)
    live = copy.deepcopy(frozen)
    frozen.requires_grad_(False)
    x = torch.randn(16, 2)
    for t in (0, 1, 99, 1):
        assert torch.equal(frozen(x, t), live(x, t).detach())
    assert len(frozen.time._cache) == 3
