"""Checkpoints (tensors and plain Python values only: `torch.load(weights_only=True)` reads them) and the
generator as a `ganeval` image source, so that `ganeval swd run/network-snapshot-000120.pt real/` works.

The ".pt" opener is declared as an entry point of the `gancore.sources` group in pyproject.toml, so gancore finds
it after `pip install` without naming this package; importing this module also registers it directly.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gancore.errors import SourceError, UserError
from gancore.runtime import resolve_device, torch_save_atomic
from gancore.sources import ImageSource, register_source_opener, to_uint8

from .configs import TrainingConfig
from .dataset import box_downsample
from .networks import Discriminator, Generator

FORMAT = "progan-checkpoint"
CHECKPOINT_SUFFIX = ".pt"
DEFAULT_SOURCE_IMAGES = 50000
SOURCE_IMAGES_VARIABLE = "PROGAN_SOURCE_IMAGES"


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` (plus the format tag) atomically: a temporary file renamed at the end. A failed write (a full
    disk) raises OSError naming `path` (gancore.runtime.torch_save_atomic), which the CLIs print as one line."""
    return torch_save_atomic({"format": FORMAT, "version": 1, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint written by `save_checkpoint`, checked before use: every zip member's CRC (a flipped byte in a
    tensor is found), read with weights_only=True (nothing but tensors and plain values), then
    `check_checkpoint` (config, weights and lod). SourceError otherwise."""
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise SourceError(f"{path}: refused: {_refusal_reason(error)}; it is not a progan checkpoint and nothing "
                          "in it was run") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise SourceError(f"{path}: not a readable progan checkpoint ({_first_line(error)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SourceError(f"{path}: not a progan checkpoint (no '{FORMAT}' tag)")
    check_checkpoint(state, path)
    return state


def _check_archive(path) -> None:
    """The file is a zip archive (PyTorch's format) whose members all pass their CRC-32 check."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as error:
        raise SourceError(f"{path}: not a progan checkpoint, or a truncated one (not a complete zip archive: "
                          f"{error})") from None
    if damaged is not None:
        raise SourceError(f"{path}: damaged: member {damaged} fails its CRC check (the file was altered or "
                          "corrupted on disk); use another snapshot")


def _refusal_reason(error: Exception) -> str:
    """What the weights-only reader refused, without PyTorch's advice to load the file unrestricted."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f" ({found.group(1)})" if found else ""
    return f"it holds Python objects other than tensors and plain values{what}"


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(error).__name__


def check_checkpoint(state: dict, path="<checkpoint>") -> TrainingConfig:
    """Validate a loaded checkpoint: a usable 'config', the G / G_ema / D weights it implies (names and shapes,
    found by building the networks on the meta device: no memory, no time), every weight finite, and lod a finite
    number in [0, log2(R) - 2]. Returns the config; SourceError naming the first problem."""
    if not isinstance(state.get("config"), dict):
        raise SourceError(f"{path}: a progan checkpoint without its 'config' (not written by progan train or "
                          "progan import)")
    try:
        config = TrainingConfig.from_dict(state["config"])
    except (UserError, TypeError, ValueError) as error:
        raise SourceError(f"{path}: its config is not usable: {error}") from None
    if config.resolution is None:
        raise SourceError(f"{path}: its config has no resolution")
    if not isinstance(state.get("G_ema"), dict):
        raise SourceError(f"{path}: a progan checkpoint without the generator weights 'G_ema'")
    with torch.device("meta"):
        G, D = Generator(config), Discriminator(config)
    for key, module in (("G_ema", G), ("G", G), ("D", D)):
        if key in state:
            _check_weights(state[key], module.state_dict(), f"{path}: {key}")
    max_lod = math.log2(config.resolution) - 2
    for where, lod in (("lod", state.get("lod", 0.0)), ("G_ema's lod", state["G_ema"].get("lod", 0.0))):
        lod = _scalar(lod)
        if not (math.isfinite(lod) and 0 <= lod <= max_lod):
            raise SourceError(f"{path}: {where} is {lod}, not a number in [0, {max_lod:g}] for {config.resolution}²")
    return config


def _scalar(value) -> float:
    """A Python or one-element tensor number as float; NaN for anything else."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _check_weights(weights, expected: dict[str, torch.Tensor], where: str) -> None:
    if not isinstance(weights, dict):
        raise SourceError(f"{where}: not a set of weights")
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise SourceError(f"{where}: the weights do not match the checkpoint's config (missing: "
                          f"{', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'})")
    for name, reference in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != reference.shape:
            shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise SourceError(f"{where}: {name} is {shape} where the config gives {list(reference.shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SourceError(f"{where}: {name} holds NaN or infinite values (a diverged run?); use an earlier "
                              "snapshot")


def generator_from_checkpoint(state: dict, device: torch.device) -> Generator:
    """The EMA generator of a (loaded, so checked) checkpoint, in eval mode at the checkpoint's lod."""
    G = Generator(TrainingConfig.from_dict(state["config"]))
    G.load_state_dict(state["G_ema"])
    G.lod.fill_(float(state.get("lod", G.lod)))
    return G.eval().requires_grad_(False).to(device)


def check_output_resolution(resolution: int | None, G: Generator) -> int:
    """The output side asked for (None = G's own): a power of two from 4 to G's resolution, else UserError."""
    if resolution is None:
        return G.resolution
    if not (4 <= resolution <= G.resolution and resolution & (resolution - 1) == 0):
        raise UserError(f"--resolution {resolution}: give a power of two from 4 to the network's {G.resolution}")
    return resolution


def latents_for(indices, latent_size: int, seed: int) -> torch.Tensor:
    """One N(0, I) latent per image index, drawn from (seed, index): the same image for the same index on every
    device, batch size and order. float32 [len(indices), latent_size] on the CPU."""
    rows = [torch.from_numpy(np.random.default_rng(np.random.SeedSequence([seed, int(i)]))
                             .standard_normal(latent_size, dtype=np.float32)) for i in indices]
    return torch.stack(rows)


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


def write_generated_images(G: Generator, out_dir, num: int, seed: int = 0, resolution: int | None = None,
                           allow_many: bool = False) -> Path:
    """Write `num` images of G (image i from latent (seed, i), at `resolution`, default G's own) as
    OUT/000000.png …, each PNG atomically, under the folder's writer lock. Refused before any work or folder is
    made (UserError) when `resolution` is not a power of two from 4 to G's, when `num` is above FILE_COUNT_LIMIT
    without `allow_many`, or when the PNGs could need more space than OUT's disk has free. Returns OUT."""
    from gancore.imagefiles import png_size_bound, write_png
    from gancore.locking import FolderLock
    from gancore.outputs import check_output_path, check_room_for_files

    side = check_output_resolution(resolution, G)
    check_room_for_files(out_dir, num, png_size_bound(side, side), f"PNGs of {side}x{side}", allow_many)
    out = check_output_path(out_dir, folder=True)
    source = GeneratorSource(G, resolution=side, num_images=num, seed=seed)
    with FolderLock(out, "progan generate"):
        for start in range(0, num, 64):
            batch = source.load_batch(np.arange(start, min(start + 64, num)))
            for offset, image in enumerate(batch):
                write_png(out / f"{start + offset:06d}.png", image.permute(1, 2, 0).numpy())
    return out


def open_checkpoint_source(path, resolution: int | None = None) -> GeneratorSource:
    """ganeval opener for ".pt" checkpoints: the EMA generator, $PROGAN_SOURCE_IMAGES images (default 50000)."""
    count = source_image_count()
    device = resolve_device(None)
    G = generator_from_checkpoint(load_checkpoint(path), device)
    return GeneratorSource(G, resolution=resolution, num_images=count, name=str(path))


def source_image_count() -> int:
    """$PROGAN_SOURCE_IMAGES (a positive whole number), else DEFAULT_SOURCE_IMAGES; UserError when malformed."""
    text = os.environ.get(SOURCE_IMAGES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_SOURCE_IMAGES
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{SOURCE_IMAGES_VARIABLE}={text!r}: give a positive whole number of images")
    return int(text)


register_source_opener(CHECKPOINT_SUFFIX, open_checkpoint_source)
