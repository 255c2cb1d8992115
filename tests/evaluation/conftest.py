"""Shared fixtures for the evaluation tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # These tests run many tiny ops; on a shared 2-core machine two OpenMP threads fighting
    # other processes for the cores made them 10-30x slower than one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
