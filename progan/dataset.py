"""Training images: uint8 levels at every working resolution, drawn in a seeded endless order, prefetched.

Any `ganeval` source works. A multi-resolution HDF5 file (`celebahq export --h5`) provides each level
directly; other sources (folders, zips, arrays) provide the full size, and coarser levels are 2×2 box averages
of it. A level is kept in RAM when it fits in `cache_mb` (read once: fast random access), otherwise images
are read per minibatch by `workers` threads from the finest stored level and box-averaged down on the device
(float, no rounding). The next minibatch is read in the background while the current one trains.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from gancore.errors import SourceError, UserError
from gancore.sources import BadImage, HDF5Source, ImageSource, open_source, peek_shape, to_uint8

from .configs import is_power_of_two

# gancore's messages end with advice for the metric commands ("... or pass --skip-bad"); training has no such
# switch (a run must see the same images on every resume), so its errors end with this instead.
TRAINING_ADVICE = ("progan train uses every image and has no --skip-bad: fix or remove the files named, or train on "
                   "a cleaned copy (e.g. `celebahq export --h5`)")


@contextlib.contextmanager
def training_advice():
    """Re-raise a SourceError that carries gancore's "--skip-bad" advice with TRAINING_ADVICE instead."""
    try:
        yield
    except SourceError as error:
        if error.advice is None:
            raise
        raise error.with_advice(TRAINING_ADVICE) from None


def box_downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """float NCHW [N, C, S, S] -> [N, C, resolution, resolution] by averaging (S/resolution)² blocks."""
    factor = images.shape[-1] // resolution
    return F.avg_pool2d(images, factor) if factor > 1 else images


class IndexStream:
    """An endless sequence of image indices: epoch e is a permutation of 0..N-1 drawn from (seed, e).

    `position` (images taken so far) is the whole state: a checkpoint stores it to continue exactly.
    """

    def __init__(self, num_images: int, seed: int):
        self.num_images, self.seed, self.position = num_images, seed, 0
        self._epoch, self._order = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0xDA7A]))
            self._epoch, self._order = epoch, rng.permutation(self.num_images)
        return self._order

    def peek(self, count: int, position: int | None = None) -> np.ndarray:
        """The `count` indices from `position` (default: the current one), without advancing."""
        position = self.position if position is None else position
        out = []
        while count > 0:
            epoch, offset = divmod(position, self.num_images)
            chunk = self._permutation(epoch)[offset:offset + count]
            out.append(chunk)
            count -= len(chunk)
            position += len(chunk)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class TrainingData:
    """Real images of one square power-of-two size, served at any coarser working resolution.

    path: a ganeval source; resolution: the training resolution R (None = the data's; a smaller power of
    two trains on box-downsampled images). Raises UserError / SourceError for empty sources, mixed sizes,
    non-square or non-power-of-two images, or data smaller than R.
    """

    def __init__(self, path, resolution: int | None = None, seed: int = 0, cache_mb: int = 4096,
                 workers: int = 4):
        self.path = str(path)
        with training_advice():
            source = open_source(path)
            if isinstance(source, HDF5Source):
                from gancore.sources import _hdf5_resolutions

                self.stored = {res: HDF5Source(path, res) for res in sorted(_hdf5_resolutions(self.path))}
            else:
                self.stored = {_check_size(peek_shape(source), self.path): source}
        self.data_resolution = max(self.stored)
        if not is_power_of_two(self.data_resolution, minimum=4):
            raise UserError(f"{self.path}: images of {self.data_resolution}x{self.data_resolution}; progan "
                               "trains on square power-of-two sizes ≥ 4 (resize or crop them first)")
        self.resolution = resolution or self.data_resolution
        if self.resolution > self.data_resolution:
            raise UserError(f"{self.path}: images are {self.data_resolution}x{self.data_resolution}, smaller "
                               f"than the configured resolution {self.resolution}")
        counts = {len(s) for s in self.stored.values()}
        if len(counts) != 1:
            raise UserError(f"{self.path}: the levels hold different numbers of images ({sorted(counts)})")
        self.num_images = counts.pop()
        self.cache_bytes = cache_mb * 2 ** 20
        self.indices = IndexStream(self.num_images, seed)
        self._ram: dict[int, torch.Tensor] = {}
        self._loaders = ThreadPoolExecutor(max(1, workers), thread_name_prefix="progan-load")
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="progan-prefetch")
        self._pending = None

    # -- levels ---------------------------------------------------------------------------------------------

    def _level_bytes(self, resolution: int) -> int:
        return self.num_images * 3 * resolution * resolution

    def _finest_source_level(self, resolution: int) -> int:
        """The smallest stored (or cached) level ≥ resolution."""
        candidates = [r for r in set(self.stored) | set(self._ram) if r >= resolution]
        return min(candidates)

    def _cache_level(self, resolution: int) -> torch.Tensor | None:
        """The whole level as uint8 NCHW in RAM, when it fits (computed from a finer RAM level if needed)."""
        if resolution in self._ram:
            return self._ram[resolution]
        if self._level_bytes(resolution) > self.cache_bytes:
            return None
        if resolution in self.stored:  # every rank reads all of it (not a rank's share, as ImageStream would)
            chunks = np.array_split(np.arange(self.num_images), max(1, self.num_images // 256))
            level = torch.cat([self._read_stored(resolution, chunk).contiguous() for chunk in chunks])
        else:
            finer = self._cache_level(self._finest_source_level(resolution))
            if finer is None:
                return None
            level = torch.cat([to_uint8(box_downsample(chunk.float(), resolution))
                               for chunk in finer.split(1024)])
        self._ram[resolution] = level
        return level

    def _read(self, resolution: int, indices: np.ndarray) -> torch.Tensor:
        """uint8 NCHW images `indices` at `resolution` or at the finest stored level above it."""
        level = self._cache_level(resolution)
        if level is not None:
            return level[torch.from_numpy(indices)]
        return self._read_stored(self._finest_source_level(resolution), indices)

    def _read_stored(self, stored: int, indices: np.ndarray) -> torch.Tensor:
        """uint8 NCHW images `indices` of the stored level `stored`, decoded by the loader threads and checked."""
        source = self.stored[stored]
        images = list(self._loaders.map(lambda i: _load_checked(source, int(i), stored), indices))
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

    # -- minibatches ----------------------------------------------------------------------------------------

    def _fetch(self, position: int, count: int, resolution: int, part: tuple[int, int]) -> torch.Tensor:
        rank, world = part
        indices = self.indices.peek(count, position)
        share = count // world
        return self._read(resolution, indices[rank * share:(rank + 1) * share])

    def next_batch(self, count: int, resolution: int, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """The next `count` images of the endless order (this rank's share `part` = (rank, world)), uint8
        NCHW at `resolution` or a finer level (use `to_float_reals`). Prefetches the following minibatch."""
        key = (self.indices.position, count, resolution, part)
        if self._pending is not None and self._pending[0] == key:
            batch = self._pending[1].result()
        else:
            batch = self._fetch(*key)
        self.indices.position += count
        self._pending = ((self.indices.position, count, resolution, part),
                         self._prefetcher.submit(self._fetch, self.indices.position, count, resolution, part))
        return batch

    def reals_uint8(self, indices: np.ndarray, resolution: int) -> torch.Tensor:
        """Images `indices` as uint8 NCHW at exactly `resolution` (for grids and metrics)."""
        images = self._read(resolution, np.asarray(indices))
        if images.shape[-1] != resolution:
            images = to_uint8(box_downsample(images.float(), resolution))
        return images

    def close(self) -> None:
        self._prefetcher.shutdown(wait=True)
        self._loaders.shutdown(wait=True)


class RealsSource(ImageSource):
    """The training images at one working resolution, as a ganeval source (uint8 batches via `load_batch`)."""

    def __init__(self, data: TrainingData, resolution: int):
        self.data, self.resolution = data, resolution
        self.path, self.shape = f"{data.path}@{resolution}x{resolution}", (resolution, resolution)

    def __len__(self) -> int:
        return self.data.num_images

    def load_batch(self, indices) -> torch.Tensor:
        return self.data.reals_uint8(np.asarray(indices), self.resolution)

    def load(self, index: int) -> np.ndarray:
        return self.load_batch([index])[0].permute(1, 2, 0).numpy()


def to_float_reals(images: torch.Tensor, resolution: int, device: torch.device) -> torch.Tensor:
    """uint8 NCHW (at `resolution` or a multiple) -> float NCHW in [-1, 1] at `resolution` on `device`."""
    images = images.to(device, non_blocking=True).float()
    return box_downsample(images, resolution) / 127.5 - 1.0


def _check_size(shape: tuple[int, int], path: str) -> int:
    height, width = shape
    if height != width or not is_power_of_two(height, minimum=4):
        raise UserError(f"{path}: images of {width}x{height}; progan trains on square power-of-two sizes ≥ 4 "
                           "(e.g. 128x128): crop or resize them first")
    return height


def _load_checked(source: ImageSource, index: int, resolution: int) -> np.ndarray:
    try:
        image = source.load(index)
    except BadImage as error:
        raise SourceError(f"bad image {source.item_name(index)}: {error}", TRAINING_ADVICE) from None
    if image.shape[:2] != (resolution, resolution):
        raise SourceError(f"{source.item_name(index)}: size {image.shape[1]}x{image.shape[0]} differs from the "
                          f"other images' {resolution}x{resolution}", TRAINING_ADVICE)
    return image
