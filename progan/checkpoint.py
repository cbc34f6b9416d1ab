"""Checkpoints (tensors and plain Python values only: `torch.load(weights_only=True)` reads them) and the
generator as a `ganeval` image source, so that `ganeval swd run/network-snapshot-000120.pt real/` works.

The ".pt" opener is declared as an entry point of the `gancore.sources` group in pyproject.toml, so gancore finds
it after `pip install` without naming this package; importing this module also registers it directly.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gancore.errors import SourceError
from gancore.runtime import atomic_output, resolve_device
from gancore.sources import ImageSource, register_source_opener

from .configs import TrainingConfig
from .dataset import box_downsample, to_uint8
from .networks import Generator

FORMAT = "progan-checkpoint"
CHECKPOINT_SUFFIX = ".pt"
DEFAULT_SOURCE_IMAGES = 50000


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` (plus the format tag) atomically: a temporary file renamed at the end."""
    path = Path(path)
    with atomic_output(path) as temporary:
        torch.save({"format": FORMAT, "version": 1, **state}, temporary)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint written by `save_checkpoint`, read with weights_only=True; SourceError otherwise."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise SourceError(f"{path}: not a readable progan checkpoint ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SourceError(f"{path}: not a progan checkpoint (no '{FORMAT}' tag)")
    return state


def generator_from_checkpoint(state: dict, device: torch.device) -> Generator:
    """The EMA generator of a checkpoint, in eval mode at the checkpoint's lod."""
    config = TrainingConfig.from_dict(state["config"])
    G = Generator(config)
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False).to(device)


def latents_for(indices, latent_size: int, seed: int) -> torch.Tensor:
    """One N(0, I) latent per image index, drawn from (seed, index): the same image for the same index on every
    device, batch size and order. float32 [len(indices), latent_size] on the CPU."""
    rows = [torch.from_numpy(np.random.default_rng(np.random.SeedSequence([seed, int(i)]))
                             .standard_normal(latent_size, dtype=np.float32)) for i in indices]
    return torch.stack(rows)


def smooth_latents(frames: int, latent_size: int, sigma: float, seed: int) -> torch.Tensor:
    """The paper's interpolation latents: one N(0, I) latent per frame, blurred over time with a Gaussian of
    `sigma` frames (wrapping, as the original's video), each renormalised onto the radius-sqrt(latent_size)
    hypersphere. float32 [frames, latent_size]."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E7]))
    latents = rng.standard_normal((frames, latent_size))
    if sigma > 0:
        latents = gaussian_filter1d(latents, sigma, axis=0, mode="wrap")
    latents *= np.sqrt(latent_size) / np.linalg.norm(latents, axis=1, keepdims=True)
    return torch.from_numpy(latents.astype(np.float32))


def images_to_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """G output (float NCHW, [-1, 1], any power-of-two size) -> uint8 NCHW at `resolution`: nearest upsampling
    like the original's full-resolution output, or box averaging when asked for less."""
    images = (images.float() + 1.0) * 127.5
    if images.shape[-1] < resolution:
        images = F.interpolate(images, scale_factor=resolution // images.shape[-1], mode="nearest")
    return to_uint8(box_downsample(images, resolution))


class GeneratorSource(ImageSource):
    """`num_images` images of a generator (image i from latent (seed, i)), as a ganeval source.

    resolution: output side (default: G's full resolution R). Produces whole batches on `device` through
    `load_batch`, the fast path ganeval's streams use.
    """

    def __init__(self, G: Generator, lod: float | None = None, resolution: int | None = None,
                 num_images: int = DEFAULT_SOURCE_IMAGES, seed: int = 0, device=None, name: str = "<generator>",
                 batch_size: int = 32):
        self.G, self.lod = G, float(G.lod) if lod is None else lod
        self.resolution = resolution or G.resolution
        self.num_images, self.seed, self.path = num_images, seed, name
        self.device = next(G.parameters()).device if device is None else torch.device(device)
        self.shape = (self.resolution, self.resolution)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.num_images

    @torch.no_grad()
    def load_batch(self, indices) -> torch.Tensor:
        out = []
        for start in range(0, len(indices), self.batch_size):
            z = latents_for(indices[start:start + self.batch_size], self.G.latent_size, self.seed)
            out.append(images_to_uint8(self.G(z.to(self.device), self.lod), self.resolution).cpu())
        return torch.cat(out)

    def load(self, index: int) -> np.ndarray:
        return self.load_batch([index])[0].permute(1, 2, 0).numpy()


def open_checkpoint_source(path, resolution: int | None = None) -> GeneratorSource:
    """ganeval opener for ".pt" checkpoints: the EMA generator, $PROGAN_SOURCE_IMAGES images (default 50000)."""
    device = resolve_device(None)
    G = generator_from_checkpoint(load_checkpoint(path), device)
    count = int(os.environ.get("PROGAN_SOURCE_IMAGES", DEFAULT_SOURCE_IMAGES))
    return GeneratorSource(G, resolution=resolution, num_images=count, name=str(path))


register_source_opener(CHECKPOINT_SUFFIX, open_checkpoint_source)
