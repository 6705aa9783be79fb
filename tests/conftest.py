"""Fixtures shared across the test packages."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored after it: a code path chosen by the thread
    count, or a tiny model that runs fastest alone and need not fight other processes for
    cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
