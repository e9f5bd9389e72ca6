"""The effort and hardware switches: CDA_PROFILE and CDA_DEVICE (cda_lite.profile)."""
import importlib

import pytest
import torch

P = importlib.import_module("cda_lite.profile")  # (cda_lite.profile, the attribute, is the function)


def test_profile_and_pick(monkeypatch):
    monkeypatch.delenv("CDA_PROFILE", raising=False)
    assert P.profile() == "fast" and P.pick(1, 2) == 1
    monkeypatch.setenv("CDA_PROFILE", " FULL ")
    assert P.profile() == "full" and P.pick(1, 2) == 2
    monkeypatch.setenv("CDA_PROFILE", "gpu")
    with pytest.raises(ValueError, match="CDA_PROFILE"):
        P.profile()


def test_full_on_a_cpu_skips_sd_with_a_note(monkeypatch):
    monkeypatch.setenv("CDA_PROFILE", "full")
    monkeypatch.delenv("CDA_DEVICE", raising=False)
    assert P.device() == "cpu" and not P.sd_real()
    note = P.gpu_note()
    assert "tiny random pipeline" in note and "skipped" in note and "CDA_DEVICE=cuda" in note
    monkeypatch.setenv("CDA_PROFILE", "fast")
    assert "skipped" not in P.gpu_note()


@pytest.mark.parametrize("value", ["gpu", "cuda0", "mps", "cuda:x"])
def test_bad_device_names(monkeypatch, value):
    monkeypatch.setenv("CDA_DEVICE", value)
    with pytest.raises(ValueError, match="CDA_DEVICE"):
        P.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CDA_DEVICE", "cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        P.sd_real()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_with_a_gpu_enables_sd(monkeypatch):
    monkeypatch.setenv("CDA_DEVICE", "cuda")
    assert P.sd_real() and "SD 1.5" in P.gpu_note()
    monkeypatch.setenv("CDA_DEVICE", f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="device"):
        P.device()
