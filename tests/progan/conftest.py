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
    from progan.training_loop import training_loop

    def train(values: dict, data: Path, run: Path) -> Path:
        with one_intra_op_thread():
            training_loop(resolve_config("tiny", values), data, run, device="cpu", log=lambda line: None)
        return run

    return train


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained `tiny` checkpoint (seed 0) of G, D and G_ema, as `progan train` writes them."""
    from progan.checkpoint import save_checkpoint
    from progan.configs import resolve_config
    from progan.networks import build_networks

    torch.manual_seed(0)
    config = resolve_config("tiny")
    G, D = build_networks(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"config": config.to_dict(), "lod": 0.0, "kimg": 1.0, "G": G.state_dict(),
                           "D": D.state_dict(), "G_ema": G.state_dict()})
    return path
