"""A small progan checkpoint for tests: an untrained `tiny` preset (16x16 images)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write an untrained `tiny` checkpoint (G, D and G_ema from torch seed `seed`) to `path`, as `progan train`
    writes its snapshots; returns `path`."""
    from progan.checkpoint import save_checkpoint
    from progan.configs import resolve_config
    from progan.networks import build_networks

    torch.manual_seed(seed)
    config = resolve_config("tiny")
    G, D = build_networks(config)
    save_checkpoint(path, {"config": config.to_dict(), "lod": 0.0, "kimg": 1.0, "G": G.state_dict(),
                           "D": D.state_dict(), "G_ema": G.state_dict()})
    return path
