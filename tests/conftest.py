"""Unit tests run single-threaded: tiny torch models are fastest that way on shared CPUs."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    torch.set_num_threads(1)
    yield
