"""Stand-ins for the Inception network in tests: a tiny deterministic extractor, images for it, and a weights
file of the real architecture with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganeval.inception import FIDInceptionV3


class TinyExtractor:
    """Deterministic stand-in for the Inception: 2×2 average-pooled colours and their squares (24-d features),
    10 'logits' from a fixed projection. Counts its calls and the images it sees."""

    def __init__(self, resize: str = "tf"):
        self.device, self.resize, self.source = torch.device("cpu"), resize, None
        self.calls = self.images = 0
        self.weight = torch.randn(10, 24, generator=torch.Generator().manual_seed(0))

    def features(self, images, logits: bool = True):
        self.calls += 1
        self.images += images.shape[0]
        x = F.adaptive_avg_pool2d(images.float() / 255, 2).flatten(1)
        features = torch.cat([x, x * x], dim=1)
        return features, (features @ self.weight.T if logits else None)


def random_images(count: int, seed: int, size: int = 32) -> np.ndarray:
    """uint8 NHWC images with smooth random content (so pooled features vary)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.uint8)
    return np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)


def random_weights_file(path: Path) -> Path:
    torch.manual_seed(0)
    network = FIDInceptionV3()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):  # He init keeps activations O(1) through the 94 units
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5)
    torch.save(network.state_dict(), path)
    return path
