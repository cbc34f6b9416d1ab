"""Fixtures of the progan tests: one intra-op thread, a quiet one-thread training run for module fixtures, and an
untrained tiny checkpoint."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch


@contextlib.contextmanager
def one_intra_op_thread():
    """One intra-op thread: faster on the shared 2-core machine, and the same float sums in every process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread():
    with one_intra_op_thread():
        yield


@pytest.fixture(scope="session")
def train_quietly():
    """train(config_values, data, run_dir) -> run_dir: the tiny preset with `config_values`, on the CPU, one
    thread, no log lines."""
    from progan.configs import resolve_config
    from progan.training_loop import run_training

    def train(values: dict, data: Path, run: Path) -> Path:
        with one_intra_op_thread():
            run_training(resolve_config("tiny", values), data, run, device="cpu", log=lambda line: None)
        return run

    return train


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained `tiny` checkpoint (seed 0) of G, D and G_ema, as `progan train` writes them."""
    from toolkit_testing.checkpoints import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
