"""pytest fixtures a test module takes by importing them."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The 2-core CI machine is shared: one intra-op thread is several times faster than two under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
