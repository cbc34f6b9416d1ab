"""One image-source layer for every command of every package.

A source is an indexable collection of RGB images of one size:

- a directory, searched recursively for .png/.jpg/.jpeg/.webp/.bmp files (sorted by relative path);
- a .zip archive of such files (sorted by member name);
- a .npy / .npz array of uint8 images, NHWC or NCHW (N×H×W grayscale also accepted);
- a multi-resolution HDF5 file with datasets ``data{R}x{R}`` (the largest by default, or ``resolution=R``).

`open_source` picks the right reader; `ImageStream` turns a source into uint8 NCHW RGB torch batches, in a
deterministic order or as a seeded random subset, decoding files in DataLoader worker processes. Grayscale
becomes RGB by repetition, RGBA and LA lose their alpha channel. Bad input (unreadable or truncated files,
mixed sizes, an empty source, fewer images than asked) raises `SourceError` with a message that names the
files or counts; with ``skip_bad=True`` bad files are skipped instead and listed in ``ImageStream.skipped``.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import distributed
from .errors import SKIP_BAD_ADVICE, SourceError
from .imagefiles import IMAGE_EXTENSIONS, list_image_files
from .processes import die_with_parent

ARRAY_EXTENSIONS = (".npy", ".npz")
HDF5_EXTENSIONS = (".h5", ".hdf5")

# The decompression-bomb guard is ours (`max_pixels`, checked from the header before decoding), not PIL's warning.
Image.MAX_IMAGE_PIXELS = None
MAX_PIXELS_ENV_VAR = "GANCORE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own error threshold (2 x 89,478,485): ~537 MB as RGB, 4x a 6000^2 photo


def max_pixels() -> int:
    """The largest image (width x height) any reader decodes: $GANCORE_MAX_PIXELS, else 178,956,970.

    The environment variable (set by the CLIs' --max-pixels) reaches decoding worker processes too."""
    text = os.environ.get(MAX_PIXELS_ENV_VAR)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise SourceError(f"{MAX_PIXELS_ENV_VAR}={text!r} is not a whole number of pixels") from None
    if value <= 0:
        raise SourceError(f"{MAX_PIXELS_ENV_VAR}={text!r} must be positive")
    return value


def check_pixel_count(width: int, height: int, limit: int | None = None) -> None:
    """Raise BadImage('too large ...') when a width x height image exceeds the pixel limit."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise BadImage(f"too large: {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                       f"(raise it with --max-pixels or ${MAX_PIXELS_ENV_VAR})")


class BadImage(Exception):
    """One image could not be used; the message says why."""


# --------------------------------------------------------------------------------------------------------------
# Pixel conversion


def to_rgb_hwc(array: np.ndarray) -> np.ndarray:
    """Any of HW, HW1, HW2 (LA), HW3, HW4 (RGBA) uint8 -> uint8 HW3 (a view where possible)."""
    if array.dtype != np.uint8:
        raise BadImage(f"pixel type {array.dtype}, expected uint8")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise BadImage(f"array of shape {array.shape} is not an image")
    channels = array.shape[2]
    if channels in (1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    return array  # possibly a strided view (arrays in NCHW); the batch stacking makes the one copy


def decode_image(data: bytes | str | os.PathLike) -> np.ndarray:
    """Decode an image file (path or bytes) to uint8 HW3 RGB; raise BadImage on any failure."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            check_pixel_count(*image.size)  # from the header: a bomb is refused before any pixel is decoded
            image.load()  # forces a full decode so truncated files fail here, not later
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(image, dtype=np.int64)
                pixels = np.clip(pixels >> 8 if image.mode.startswith("I;16") else pixels, 0, 255)
                return to_rgb_hwc(pixels.astype(np.uint8))
            if image.mode == "F":
                return to_rgb_hwc(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            return to_rgb_hwc(np.asarray(image))
    except (BadImage, SourceError):
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        raise BadImage(f"cannot decode: {error}") from None


def header_size(data: bytes | str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels; raise BadImage when unreadable."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - PIL raises many types
        raise BadImage(f"cannot decode: {error}") from None
    return height, width


def _channel_layout(shape: Sequence[int]) -> str:
    """'NHWC', 'NCHW' or 'NHW' for an array of images; raise SourceError when it is not one."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise SourceError(f"array of shape {tuple(shape)} is not a batch of images (expected NHWC, NCHW or NHW)")
    if shape[3] in (1, 2, 3, 4):
        return "NHWC"
    if shape[1] in (1, 2, 3, 4):
        return "NCHW"
    raise SourceError(f"array of shape {tuple(shape)}: no axis of 1-4 colour channels at position 1 or 3")


def _array_image(array: np.ndarray, layout: str) -> np.ndarray:
    """One image of a batch array in `layout` -> uint8 HW3."""
    if layout == "NCHW":
        array = np.moveaxis(array, 0, -1)
    return to_rgb_hwc(np.asarray(array))


# --------------------------------------------------------------------------------------------------------------
# Sources


class ImageSource:
    """An indexable set of images. Subclasses implement `__len__`, `load` and `item_name`."""

    path: str
    shape: tuple[int, int] | None = None  # (H, W) when known without decoding (arrays, HDF5)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> np.ndarray:
        """Image `index` as uint8 HW3 RGB; raises BadImage."""
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index`, from the file header where there is one (no decoding); raises BadImage."""
        return tuple(self.load(index).shape[:2])

    def item_name(self, index: int) -> str:
        """What to call image `index` in messages (a file name or 'array[7]')."""
        return f"{self.path}[{index}]"

    def describe(self) -> str:
        return f"{self.path} ({len(self)} images)"

    def close(self) -> None:
        """Release handles; sources reopen lazily, so closing is always safe."""


class FileListSource(ImageSource):
    """Image files given one by one, in the given order (e.g. a build's selected images)."""

    def __init__(self, files: Sequence[str | os.PathLike], name: str | None = None):
        self.files = [Path(f) for f in files]
        self.path = name or (str(self.files[0].parent) if self.files else "<file list>")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        return decode_image(self.files[index])

    def image_size(self, index: int) -> tuple[int, int]:
        return header_size(self.files[index])

    def item_name(self, index: int) -> str:
        return str(self.files[index])


class FolderSource(FileListSource):
    def __init__(self, path: str | os.PathLike):
        super().__init__(list_image_files(path), str(path))


class _LazyHandle:
    """A file handle opened on first use in each process (DataLoader workers fork with no open handles)."""

    def __init__(self, opener):
        self._opener, self._handle, self._pid = opener, None, None

    def get(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._opener(), os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __getstate__(self):
        return {"_opener": self._opener, "_handle": None, "_pid": None}


class ZipSource(ImageSource):
    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            with zipfile.ZipFile(path) as archive:
                self.members = sorted(
                    info.filename for info in archive.infolist()
                    if not info.is_dir() and Path(info.filename).suffix.lower() in IMAGE_EXTENSIONS
                    and not Path(info.filename).name.startswith("._")
                )
        except (zipfile.BadZipFile, OSError) as error:
            raise SourceError(f"{path}: not a readable zip archive ({error})") from None
        self._zip = _LazyHandle(lambda: zipfile.ZipFile(self.path))

    def __len__(self) -> int:
        return len(self.members)

    def _member_bytes(self, index: int) -> bytes:
        try:
            return self._zip.get().read(self.members[index])
        except Exception as error:  # noqa: BLE001 - CRC errors, truncated archives
            raise BadImage(f"cannot read from archive: {error}") from None

    def load(self, index: int) -> np.ndarray:
        return decode_image(self._member_bytes(index))

    def image_size(self, index: int) -> tuple[int, int]:
        return header_size(self._member_bytes(index))

    def item_name(self, index: int) -> str:
        return f"{self.path}:{self.members[index]}"

    def close(self) -> None:
        self._zip.close()


class ArraySource(ImageSource):
    """A .npy (memory-mapped) or .npz array of uint8 images."""

    def __init__(self, path: str | os.PathLike, key: str | None = None):
        self.path = str(path)
        try:
            if self.path.lower().endswith(".npz"):
                with np.load(self.path) as archive:
                    keys = list(archive.keys())
                    if key is None:
                        candidates = [k for k in ("images", "arr_0", "x", "data") if k in keys]
                        if len(keys) == 1:
                            key = keys[0]
                        elif candidates:
                            key = candidates[0]
                        else:
                            raise SourceError(f"{path}: holds arrays {keys}; none is called 'images' or 'arr_0'")
                    if key not in keys:
                        raise SourceError(f"{path}: no array {key!r} (has {keys})")
                    self.array = archive[key]
            else:
                self.array = np.load(self.path, mmap_mode="r")
        except SourceError:
            raise
        except Exception as error:  # noqa: BLE001 - any parse failure is reported as such
            raise SourceError(f"{path}: not a readable numpy file ({error})") from None
        if self.array.dtype != np.uint8:
            raise SourceError(f"{path}: pixel type {self.array.dtype}, expected uint8 in [0, 255]")
        self.layout = _channel_layout(self.array.shape)
        self.shape = tuple(self.array.shape[2:4] if self.layout == "NCHW" else self.array.shape[1:3])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def load(self, index: int) -> np.ndarray:
        return _array_image(self.array[index], self.layout)


def _hdf5_resolutions(path: str) -> dict[int, str]:
    import h5py

    with h5py.File(path, "r") as file:
        names = [name for name in file if isinstance(file.get(name, getlink=False), h5py.Dataset)]
    found = {}
    for name in names:
        if name.startswith("data") and "x" in name[4:]:
            height, _, width = name[4:].partition("x")
            if height.isdigit() and height == width:
                found[int(height)] = name
    return found


class HDF5Source(ImageSource):
    """A multi-resolution HDF5 file (datasets data4x4 … data1024x1024, uint8 NCHW or NHWC)."""

    def __init__(self, path: str | os.PathLike, resolution: int | None = None):
        import h5py

        self.path = str(path)
        try:
            levels = _hdf5_resolutions(self.path)
        except OSError as error:
            raise SourceError(f"{path}: not a readable HDF5 file ({error})") from None
        if not levels:
            raise SourceError(f"{path}: no datasets named data<R>x<R> in this HDF5 file")
        if resolution is None:
            resolution = max(levels)
        if resolution not in levels:
            raise SourceError(f"{path}: no {resolution}x{resolution} level; it has {sorted(levels)}")
        self.resolution, self.dataset_name = resolution, levels[resolution]
        self._file = _LazyHandle(lambda: h5py.File(self.path, "r"))
        dataset = self._file.get()[self.dataset_name]
        if dataset.dtype != np.uint8:
            raise SourceError(f"{path}:{self.dataset_name}: pixel type {dataset.dtype}, expected uint8")
        square_nchw = len(dataset.shape) == 4 and tuple(dataset.shape[2:]) == (resolution, resolution)
        self.layout = "NCHW" if square_nchw else _channel_layout(dataset.shape)  # data4x4 NCHW is not 4-channel NHWC
        self.length = int(dataset.shape[0])
        self.shape = (resolution, resolution)
        self._file.close()

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> np.ndarray:
        return _array_image(self._file.get()[self.dataset_name][index], self.layout)

    def item_name(self, index: int) -> str:
        return f"{self.path}:{self.dataset_name}[{index}]"

    def close(self) -> None:
        self._file.close()


class TensorSource(ImageSource):
    """Images already in memory: a uint8 NCHW/NHWC numpy array or torch tensor (Python API only)."""

    def __init__(self, images: np.ndarray | torch.Tensor, name: str = "<array>"):
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if array.dtype != np.uint8:
            raise SourceError(f"{name}: pixel type {array.dtype}, expected uint8 in [0, 255]")
        self.path, self.array = name, array
        self.layout = _channel_layout(array.shape)
        self.shape = tuple(array.shape[2:4] if self.layout == "NCHW" else array.shape[1:3])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def load(self, index: int) -> np.ndarray:
        return _array_image(self.array[index], self.layout)


# Extension point: other packages register openers for their own file kinds, e.g. the trainer registers
# its generator checkpoints, so that `ganeval swd run/network-snapshot.pt real/` samples images on the fly.
# An opener takes (path, resolution) and returns an ImageSource; a source that can produce whole batches
# at once (a generator on the GPU) implements `load_batch(indices) -> uint8 NCHW tensor`.
# Two ways in: `register_source_opener` at run time, or an installed package's entry point in the group below
# (name = the suffix without its dot, value = "module:opener"), loaded the first time such a file is opened.
# gancore names no package of its own: progan declares its ".pt" opener in pyproject.toml.
SOURCE_ENTRY_POINT_GROUP = "gancore.sources"
_SOURCE_OPENERS: dict[str, object] = {}


def register_source_opener(suffix: str, opener) -> None:
    """Make `open_source` open files ending in `suffix` (e.g. ".pkl") with `opener(path, resolution)`."""
    _SOURCE_OPENERS[suffix.lower()] = opener


def _installed_opener(suffix: str):
    """The opener an installed package declares for `suffix` (entry point group `gancore.sources`), or None."""
    if suffix in _SOURCE_OPENERS:
        return _SOURCE_OPENERS[suffix]
    for entry_point in importlib.metadata.entry_points(group=SOURCE_ENTRY_POINT_GROUP):
        if "." + entry_point.name.lower() == suffix:
            register_source_opener(suffix, entry_point.load())
            return _SOURCE_OPENERS[suffix]
    return None


def open_source(source: str | os.PathLike | ImageSource | np.ndarray | torch.Tensor,
                resolution: int | None = None) -> ImageSource:
    """Open a path (directory, .zip, .npy/.npz, .h5/.hdf5, registered kinds), a list of image files, or
    wrap an in-memory array.

    `resolution` picks the level of a multi-resolution HDF5 file (default: the largest).
    Raises SourceError for a missing path, an unknown kind of file or an empty source.
    """
    if isinstance(source, ImageSource):
        opened = source
    elif isinstance(source, (list, tuple)):
        opened = FileListSource(source)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        opened = TensorSource(source)
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if not path.exists():
            raise SourceError(f"{path}: no such file or directory")
        opener = None if path.is_dir() else _installed_opener(suffix)
        if path.is_dir():
            opened = FolderSource(path)
        elif opener is not None:
            opened = opener(path, resolution)
        elif suffix == ".zip":
            opened = ZipSource(path)
        elif suffix in ARRAY_EXTENSIONS:
            opened = ArraySource(path)
        elif suffix in HDF5_EXTENSIONS:
            opened = HDF5Source(path, resolution)
        else:
            raise SourceError(
                f"{path}: unknown kind of source; give a directory of images, a .zip, a .npy/.npz array "
                f"or a multi-resolution .h5 file"
            )
    if len(opened) == 0:
        kinds = "/".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
        raise SourceError(f"{opened.path}: empty source (no {kinds} images found)")
    return opened


# --------------------------------------------------------------------------------------------------------------
# Streaming batches


def select_indices(total: int, num_images: int | None, seed: int | None) -> np.ndarray:
    """The candidate order: 0..total-1, or a seeded random permutation of it when `seed` is given."""
    if seed is None:
        return np.arange(total)
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(total)


class _ChunkLoader(torch.utils.data.Dataset):
    """Maps a chunk number to [(position, image or None, reason)] for a fixed list of indices."""

    def __init__(self, source: ImageSource, order: np.ndarray, chunk_size: int):
        self.source, self.order, self.chunk_size = source, order, chunk_size

    def __len__(self) -> int:
        return (len(self.order) + self.chunk_size - 1) // self.chunk_size

    def __getitem__(self, chunk: int):
        results = []
        for index in self.order[chunk * self.chunk_size:(chunk + 1) * self.chunk_size]:
            try:
                results.append((int(index), self.source.load(int(index)), None))
            except BadImage as error:
                results.append((int(index), None, str(error)))
        return results


def _keep_as_is(chunk):
    """DataLoader collate that leaves a chunk's numpy images alone (no tensor conversion in workers)."""
    return chunk


def _default_workers(source: ImageSource) -> int:
    if isinstance(source, (ArraySource, TensorSource)):
        return 0
    return min(4, os.cpu_count() or 1)


@dataclass
class SkippedImage:
    """A file a stream skipped: its name, why, and the stream position its replacement took (the good images
    delivered before it), so that a prefix of N images met exactly the skips at positions below N."""

    name: str
    reason: str
    position: int = 0


class ImageStream:
    """Iterate over `num_images` images of a source as uint8 NCHW RGB torch batches (CPU tensors).

    Order: the source's own order, or a random subset drawn with `seed`. All images must have one size: the
    size most of the first 100 files have, read from their headers (`peek_shape`). Bad images raise SourceError,
    or with `skip_bad` are replaced by the next candidates and recorded in `skipped`. Iterating again restarts
    the same stream.
    """

    def __init__(self, source, num_images: int | None = None, seed: int | None = None, batch_size: int = 64,
                 skip_bad: bool = False, num_workers: int | None = None, resolution: int | None = None):
        max_pixels()  # a bad $GANCORE_MAX_PIXELS is one clear error here, not one per decoding worker
        self.source = open_source(source, resolution)
        total = len(self.source)
        self.num_images = total if num_images is None else int(num_images)
        if self.num_images <= 0:
            raise SourceError(f"asked for {self.num_images} images; give a positive number")
        if self.num_images > total:
            raise SourceError(f"{self.source.path}: has {total} images, {self.num_images} asked "
                              f"(lower --num-images or add images)")
        self.seed, self.batch_size, self.skip_bad = seed, max(1, int(batch_size)), skip_bad
        self.num_workers = _default_workers(self.source) if num_workers is None else num_workers
        self.order = select_indices(total, self.num_images, seed)
        self.skipped: list[SkippedImage] = []
        self.shape: tuple[int, int] | None = self.source.shape

    def __len__(self) -> int:
        return self.num_images

    def _loader(self, order: np.ndarray, chunk: int) -> Iterator[list]:
        """Chunks of `chunk` decoded candidates of `order`, in order (in worker processes when asked)."""
        dataset = _ChunkLoader(self.source, order, chunk)
        if self.num_workers == 0:
            return (dataset[i] for i in range(len(dataset)))
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False,
                                                num_workers=self.num_workers, prefetch_factor=4,
                                                collate_fn=_keep_as_is, worker_init_fn=die_with_parent))

    def _check(self, index: int, image: np.ndarray | None, reason: str | None) -> str | None:
        if image is None:
            return reason
        if image.shape[:2] != tuple(self.shape):
            return (f"size {image.shape[1]}x{image.shape[0]} (WxH) differs from the majority's "
                    f"{self.shape[1]}x{self.shape[0]}")
        return None

    def __iter__(self) -> Iterator[torch.Tensor]:
        """uint8 NCHW batches in stream order (under torchrun: only this rank's blocks)."""
        for _, batch in self.batches():
            yield batch

    def batches(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(stream position of the first image, uint8 NCHW batch) pairs.

        In one process: the whole stream, in order. Under torchrun (several ranks): only the blocks of
        `batch_size` consecutive positions dealt to this rank (block b goes to rank b mod world), so the
        ranks together see exactly the single-process stream.
        """
        self.skipped = []
        if self.shape is None and not callable(getattr(self.source, "load_batch", None)):
            self.shape = peek_shape(self.source, self.skip_bad)  # the majority size, from file headers
        if callable(getattr(self.source, "load_batch", None)):
            for start in range(0, self.num_images, self.batch_size):
                if distributed.owns_block(start // self.batch_size):
                    yield start, self.source.load_batch(self.order[start:min(start + self.batch_size,
                                                                                 self.num_images)])
        elif distributed.is_distributed():
            yield from self._decode_owned_blocks()
        else:
            position = 0
            for batch in self._decode_all():
                yield position, batch
                position += batch.shape[0]

    def _decode_owned_blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        if self.skip_bad:
            raise SourceError("--skip-bad needs a single process (which images replace the bad ones depends on "
                              "the whole stream); clean the source or run without torchrun")
        size = self.batch_size
        blocks = [b for b in range((self.num_images + size - 1) // size) if distributed.owns_block(b)]
        owned = np.concatenate([self.order[b * size:min((b + 1) * size, self.num_images)] for b in blocks]) \
            if blocks else np.zeros(0, dtype=np.int64)
        for block, results in zip(blocks, self._loader(owned, size)):
            bad = [SkippedImage(self.source.item_name(index), problem) for index, image, reason in results
                   if (problem := self._check(index, image, reason)) is not None]
            if bad:
                raise SourceError(f"bad image(s) in {self.source.path}: "
                                  + "; ".join(f"{item.name}: {item.reason}" for item in bad[:5]))
            yield block * size, _stack_nchw([image for _, image, _ in results])

    def _decode_all(self) -> Iterator[torch.Tensor]:
        pending: list[np.ndarray] = []
        delivered = 0
        # small chunks: candidates beyond num_images are decoded only when images are skipped
        loader = self._loader(self.order, max(1, min(self.batch_size, 32)))
        try:
            for results in loader:
                bad = []
                for index, image, reason in results:
                    if delivered + len(pending) >= self.num_images:
                        break
                    problem = self._check(index, image, reason)
                    if problem is not None:
                        bad.append(SkippedImage(self.source.item_name(index), problem, delivered + len(pending)))
                        continue
                    pending.append(image)
                if bad and not self.skip_bad:
                    listed = "; ".join(f"{item.name}: {item.reason}" for item in bad[:5])
                    more = f" (and {len(bad) - 5} more in this batch)" if len(bad) > 5 else ""
                    raise SourceError(f"bad image(s) in {self.source.path}: {listed}{more}", SKIP_BAD_ADVICE)
                self.skipped.extend(bad)
                while len(pending) >= self.batch_size:
                    batch, pending = pending[:self.batch_size], pending[self.batch_size:]
                    delivered += len(batch)
                    yield _stack_nchw(batch)
                if delivered + len(pending) >= self.num_images:
                    break
        finally:
            del loader
        if pending:
            delivered += len(pending)
            yield _stack_nchw(pending)
        if delivered < self.num_images:
            raise SourceError(
                f"{self.source.path}: only {delivered} usable images, {self.num_images} asked "
                f"({len(self.skipped)} skipped, e.g. {self.skipped[0].name}: {self.skipped[0].reason})"
                if self.skipped else f"{self.source.path}: only {delivered} images, {self.num_images} asked"
            )


def _stack_nchw(images: list[np.ndarray]) -> torch.Tensor:
    """HW3 images -> uint8 [N, 3, H, W] tensor in channels-last memory (one copy; .to(device) keeps it)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


SIZE_SAMPLE = 100  # files whose header decides a source's image size (the majority among them)


def peek_shape(source: ImageSource, skip_bad: bool = False) -> tuple[int, int]:
    """(H, W) of a source's images: known for arrays and HDF5; otherwise the size most of the first 100 files
    have (read from their headers, not decoded).

    Without `skip_bad`, an unreadable file or a second size among them raises SourceError naming the odd
    files (the minority); with it they are left for the stream to skip and report."""
    if source.shape is not None:
        return tuple(source.shape)
    sizes: dict[tuple[int, int], list[int]] = {}
    for index in range(min(len(source), SIZE_SAMPLE)):
        try:
            sizes.setdefault(tuple(source.image_size(index)), []).append(index)
        except BadImage as error:
            if not skip_bad:
                raise SourceError(f"bad image {source.item_name(index)}: {error}", SKIP_BAD_ADVICE) from None
    if not sizes:
        raise SourceError(f"{source.path}: no readable image among the first {min(len(source), SIZE_SAMPLE)} "
                          f"files")
    majority = max(sizes, key=lambda size: (len(sizes[size]), -sizes[size][0]))
    if len(sizes) > 1 and not skip_bad:
        odd = [(index, size) for size, indices in sizes.items() if size != majority for index in indices]
        listed = "; ".join(f"{source.item_name(index)}: {size[1]}x{size[0]}" for index, size in sorted(odd)[:5])
        more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
        raise SourceError(f"mixed image sizes in {source.path}: {len(sizes[majority])} of "
                          f"{sum(map(len, sizes.values()))} sampled files are {majority[1]}x{majority[0]} (WxH), "
                          f"these differ: {listed}{more}", SKIP_BAD_ADVICE)
    return majority


# --------------------------------------------------------------------------------------------------------------
# Two sources at one resolution (what every two-set metric compares)


def box_reduce(images: torch.Tensor, steps: int) -> torch.Tensor:
    """uint8 NCHW [N, C, H, W] -> uint8 [N, C, H/2^steps, W/2^steps] by the original's 2×2 box filter chain.

    The chain of NVIDIA's dataset_tool.py (TFRecordExporter.add_image), which made every lower level of the
    training data: in float32, each step is (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) * 0.25
    of the previous step's float image (not of a rounded one); the last is rounded half to even and clipped.
    Sides must stay even down the chain."""
    if steps == 0:
        return images
    *_, last = box_levels(images, steps)
    return to_uint8(last)


def box_levels(images: torch.Tensor, steps: int) -> Iterator[torch.Tensor]:
    """The float32 levels of the original's 2×2 box filter chain of uint8 NCHW `images`, halved `steps` times:
    each the mean of 2×2 blocks of the previous float level (round one with `to_uint8`)."""
    level = images.float()
    for _ in range(steps):
        level = (level[..., 0::2, 0::2] + level[..., 0::2, 1::2] + level[..., 1::2, 0::2]
                 + level[..., 1::2, 1::2]) * 0.25
        yield level


def to_uint8(level: torch.Tensor) -> torch.Tensor:
    """A float level in 0–255 rounded half to even and clipped, as uint8."""
    return level.round().clamp(0, 255).to(torch.uint8)


class ReducedSource(ImageSource):
    """Another source's images reduced 2^steps times per side by `box_reduce` (as they are loaded)."""

    def __init__(self, inner: ImageSource, steps: int):
        self.inner, self.steps, self.path = inner, steps, inner.path
        factor = 2 ** steps
        self.shape = None if inner.shape is None else (inner.shape[0] // factor, inner.shape[1] // factor)
        if callable(getattr(inner, "load_batch", None)):  # a generator: whole batches, reduced on its device
            self.load_batch = lambda indices: box_reduce(inner.load_batch(indices), steps)

    def __len__(self) -> int:
        return len(self.inner)

    def load(self, index: int) -> np.ndarray:
        """One image reduced; BadImage when its sides do not halve `steps` times (the stream skips or reports it;
        an image that halves to another size is caught by the stream's size check, as in any source)."""
        pixels = self.inner.load(index)
        factor = 2 ** self.steps
        if pixels.shape[0] % factor or pixels.shape[1] % factor:
            raise BadImage(f"size {pixels.shape[1]}x{pixels.shape[0]} (WxH) cannot be reduced {factor}x like the "
                           f"other images")
        image = torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1)[None]  # writable
        return box_reduce(image, self.steps)[0].permute(1, 2, 0).numpy()

    def image_size(self, index: int) -> tuple[int, int]:
        height, width = self.inner.image_size(index)
        return height // 2 ** self.steps, width // 2 ** self.steps

    def item_name(self, index: int) -> str:
        return self.inner.item_name(index)

    def describe(self) -> str:
        return f"{self.inner.describe()} reduced {2 ** self.steps}x by the 2x2 box filter chain"

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self):  # the generator's bound loader does not travel to decoding workers (none are used)
        return {key: value for key, value in vars(self).items() if key != "load_batch"}


@dataclass
class SourcePair:
    """Two opened sources with images of one size (H, W), and the notes saying how they were matched."""

    gen: ImageSource
    real: ImageSource
    size: tuple[int, int]
    notes: list[str]


def _reduction_steps(large: tuple[int, int], small: tuple[int, int]) -> int | None:
    """k when `large` halved k ≥ 1 times (even sides all the way) is `small`; else None."""
    steps, size = 0, tuple(large)
    while size != tuple(small):
        if size[0] % 2 or size[1] % 2 or size[0] <= small[0]:
            return None
        size, steps = (size[0] // 2, size[1] // 2), steps + 1
    return steps


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def at_size(source: ImageSource, current: tuple[int, int], target: tuple[int, int],
            steps: int) -> tuple[ImageSource, str]:
    """`source` (images of `current` size) at the smaller `target` size: a multi-resolution HDF5 file's matching
    level, else its images reduced by the box filter chain; with the note line saying which."""
    if isinstance(source, HDF5Source) and target[0] == target[1]:
        levels = _hdf5_resolutions(source.path)
        if target[0] in levels:
            return HDF5Source(source.path, target[0]), (
                f"{source.path}: its {levels[target[0]]} level is used, to match the other source's "
                f"{_size_text(target)} images")
    return ReducedSource(source, steps), (
        f"{source.path}: {_size_text(current)} images reduced {2 ** steps}x to {_size_text(target)} by the "
        f"original's 2x2 box filter chain, to match the other source")


def pair_sources(gen, real, skip_bad: bool = False) -> SourcePair:
    """Open GEN and REAL (anything `open_source` takes) at one image size, as the original evaluated a snapshot
    at its resolution: the larger side becomes the smaller one's size, reading the matching level of a
    multi-resolution HDF5 file, else reducing with `box_reduce`. Sizes read from headers (nothing decoded).

    Raises SourceError naming both sizes when neither is the other halved a whole number of times."""
    gen, real = open_source(gen), open_source(real)
    sizes = {"gen": tuple(peek_shape(gen, skip_bad)), "real": tuple(peek_shape(real, skip_bad))}
    if sizes["gen"] == sizes["real"]:
        return SourcePair(gen, real, sizes["gen"], [])
    large, small = sorted(sizes, key=lambda name: sizes[name][0] * sizes[name][1], reverse=True)
    steps = _reduction_steps(sizes[large], sizes[small])
    if steps is None:
        raise SourceError(
            f"the two sources have image sizes {_size_text(sizes['gen'])} ({gen.path}) and "
            f"{_size_text(sizes['real'])} ({real.path}); one must be the other halved a whole number of times "
            f"(2x, 4x, 8x, ...) to compare them at one resolution")
    opened = {"gen": gen, "real": real}
    opened[large], note = at_size(opened[large], sizes[large], sizes[small], steps)
    return SourcePair(opened["gen"], opened["real"], sizes[small], [note])
