"""The arithmetic cost of a network, counted by running it once."""

from __future__ import annotations

import torch
from torch import nn


def gflops_per_megapixel(model: nn.Module, side: int = 64) -> float:
    """Multiply-adds × 2 of the convolutions per megapixel of *output*, counted on a side × side input."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        kernel = module.weight[0].numel()  # in_channels × k × k
        total += 2 * kernel * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    return total / (out.shape[-2] * out.shape[-1]) * 1e6 / 1e9
