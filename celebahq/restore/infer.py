"""Running the restoration networks on whole photographs of any size: tiled, batched, deterministic.

Images are cut into tiles of at most about `tile` × `tile` input pixels (a side of n·tile or less is split into n
near-equal tiles), each run inside a window with at least `margin` pixels of surrounding context on every side
where the image has them (at an image edge the network sees the same edge as on the whole image); only the tile's
own part of the output is kept. With a margin larger than what the network's output effectively depends on, the
tiled result equals the whole-image one to within a grey level and there is no seam (tests/celebahq/test_restore.py
checks both). Memory is bounded by the batch of windows, whatever the image size. Windows of one shape are batched
(on CUDA in calls of a power of two of them).

Window shapes are bounded: every window starts at a multiple of `BUCKET` pixels and is replicate-padded at its
bottom and right to a multiple of `size_bucket` pixels (`BUCKET` on CPU, coarser on CUDA), by at least `margin`
pixels where it ends at the image's edge (the same padding a whole-image run gets, so tiled and whole agree, and
the edge's pixels do not depend on the bucket: CPU and CUDA agree). On CUDA this matters: cuDNN builds an
execution plan for every new input shape (~0.4 ms of host time per convolution, measured on an H100 where exact
window sides, new for nearly every photo, left the GPU idle 94% of a build), and a bounded set of shapes lets it
reuse them. On CUDA the
networks' layers run in float16 (weights converted once, channels_last) with float32 input skips, the arithmetic of
autocast; on CPU in float32.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gancore.errors import UserError
from gancore.imagefiles import list_image_files, write_png
from gancore.outputs import check_apart, output_folder
from gancore.runtime import progress_bar
from gancore.sources import BadImage, decode_image, to_rgb_hwc

from .models import load_restorer

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_TILE = {"cleanup": 512, "sr": 192}  # input pixels (a tile runs with its margins: ≤ 1.4× the work)
# On CUDA memory is plenty and every network call costs host time: bigger tiles, fewer windows (a typical face's
# SR input, 150–550 px, is one window; a photo up to 2,144 px a side too), less margin work
DEFAULT_TILE_CUDA = {"cleanup": 2048, "sr": 512}
# On CUDA window sides are padded to multiples of these (input pixels), so the shapes cuDNN plans for are few
# (sides ≤ tile + 3 margins + a bucket): 82 (cleanup) and 88 (SR) after 2,000 photos, each planned once (~0.4 ms
# per convolution, once per shape and batch size), where exact sides gave every photo new ones. Network pixels
# per image pixel (margins, padding; benchmarks/restore_shapes.py, 2,000 synthetic sources): cleanup 1.27, SR 1.30;
# 1.18 and 1.20 with steps of 64 / 32 pixels, for 183 / 234 shapes (planning then costs a few ms per source in the
# first thousand); 2.00 and 2.10 with tiles 1024/384 and a far-edge window shifted back over its neighbour, as
# until 2026-11-26
SIZE_BUCKET_CUDA = {"cleanup": 128, "sr": 64}
DEFAULT_MARGIN = {"cleanup": 48, "sr": 16}  # input pixels of context around each tile
BUCKET = 16  # window starts and padded window sides are multiples of this many input pixels


def shipped_weights(kind: str) -> Path:
    """Path of the weights shipped in the package for "cleanup" or "sr" (may not exist in a source checkout)."""
    return WEIGHTS_DIR / f"{kind}.pt"


def default_device() -> torch.device:
    """CUDA when available and usable in this process (not a worker forked after CUDA started), else CPU."""
    usable = torch.cuda.is_available() and not torch.cuda._is_in_bad_fork()
    return torch.device("cuda" if usable else "cpu")


@dataclass(frozen=True)
class Tiling:
    """How a network runs over an image: tiles of `tile` input pixels with `margin` pixels of context, windows
    starting at multiples of `bucket`, their sides padded to multiples of `size_bucket`, ≤ `batch` windows of one
    shape per call; `fixed_batch` (CUDA): each call gets a power of two of windows."""

    tile: int
    margin: int
    bucket: int
    size_bucket: int
    batch: int
    fixed_batch: bool

    @classmethod
    def for_network(cls, kind: str, align: int, on_cuda: bool, tile: int | None = None, margin: int | None = None,
                    batch: int = 8, size_bucket: int | None = None) -> Tiling:
        """The defaults of network `kind` (shift-equivariant for multiples of `align`) on CUDA or a CPU."""
        bucket = math.lcm(BUCKET, align)  # the cleanup net is shift-equivariant for multiples of 8
        return cls(
            tile=_round_up(tile or (DEFAULT_TILE_CUDA if on_cuda else DEFAULT_TILE)[kind], bucket),
            margin=_round_up(DEFAULT_MARGIN[kind] if margin is None else margin, bucket),
            bucket=bucket,
            size_bucket=math.lcm(bucket, size_bucket or (SIZE_BUCKET_CUDA[kind] if on_cuda else bucket)),
            batch=batch,
            fixed_batch=on_cuda,
        )

    def windows_by_shape(self, height: int, width: int) -> dict[tuple[int, int], list]:
        """The (rows, cols) windows of an H×W image (see `_windows`), grouped by the padded shape they run at."""
        groups: dict[tuple[int, int], list] = {}
        for rows in _windows(height, self.tile, self.margin, self.bucket):
            for cols in _windows(width, self.tile, self.margin, self.bucket):
                groups.setdefault((self.padded_side(rows, height), self.padded_side(cols, width)), []).append(
                    (rows, cols))
        return groups

    def padded_side(self, window: tuple[int, int, int, int], length: int) -> int:
        """The side a window runs at: a multiple of `size_bucket`, and for a window that ends at the image's far
        edge at least `margin` pixels of replicated edge beyond it, so that edge's pixels never depend on how much
        padding the bucket adds (the network's reach is within the margin, as for tiles)."""
        size = window[3] - window[2]
        return _round_up(size + (self.margin if window[3] == length else 0), self.size_bucket)

    def call_sizes(self, count: int) -> list[int]:
        """The windows of each call that runs `count` windows of one shape: ≤ `batch` each; with `fixed_batch` each
        a power of two (5 windows: 4 + 1), so cuDNN plans a shape for a few batch sizes and no call computes
        blank windows."""
        sizes = []
        while count:
            size = min(self.batch, count)
            size = 1 << (size.bit_length() - 1) if self.fixed_batch else size
            sizes.append(size)
            count -= size
        return sizes


class Restorer:
    """One network ready to run: `restorer(image)` -> restored image (uint8 HWC RGB in, uint8 HWC RGB out)."""

    def __init__(self, kind: str, weights: str | os.PathLike | None = None, device: torch.device | str | None = None,
                 tile: int | None = None, margin: int | None = None, batch: int = 8, half: bool | None = None,
                 size_bucket: int | None = None):
        if kind not in DEFAULT_TILE:
            raise ValueError(f"unknown restorer {kind!r}: cleanup or sr")
        model, self.info = load_restorer(weights or shipped_weights(kind), kind)  # checked; WeightFileError
        self.kind = kind
        self.device = torch.device(device) if device is not None else default_device()
        on_cuda = self.device.type == "cuda"
        # float16 layers (default on CUDA): the arithmetic of autocast, with the weights cast once instead of at
        # every call; channels_last on CUDA, the layout cuDNN's float16 kernels use (no transposes around them)
        self.half = on_cuda if half is None else bool(half)
        model = model.eval().half() if self.half else model.eval()
        self.model = model.to(self.device, memory_format=torch.channels_last if on_cuda else torch.preserve_format)
        self.scale = getattr(model, "SCALE", 1)
        # On CUDA a network call gets a power of two of windows (≤ `batch`): cuDNN then plans each window shape for
        # a few counts only. The networks treat samples independently, so a window's output does not depend on the
        # others of its call.
        self.tiling = Tiling.for_network(kind, model.ALIGN, on_cuda, tile, margin, batch, size_bucket)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 HW, HW1, HW3 or HW4 (RGBA: alpha dropped) -> uint8 HWC RGB (×4 the size for SR)."""
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image; got {image.dtype}")
        image = np.require(to_rgb_hwc(image), requirements=("C", "W"))  # torch wants a writable array
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"empty image, shape {image.shape}")
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        return self.restore_tensor(x).permute(1, 2, 0).cpu().numpy()

    def restore_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """[3, H, W] uint8 (or float with values 0–255) on the restorer's device -> uint8 [3, s·H, s·W] on the same
        device (s = 4 for SR, 1 for cleanup): the pixels of `__call__`, without a trip through host memory."""
        if x.ndim != 3 or x.shape[0] != 3 or min(x.shape[1:]) < 1:
            raise ValueError(f"expected a [3, H, W] image tensor; got shape {tuple(x.shape)}")
        height, width = x.shape[1:]
        out = torch.empty((3, height * self.scale, width * self.scale), dtype=torch.uint8, device=x.device)
        for shape, windows in self.tiling.windows_by_shape(height, width).items():
            start = 0
            for count in self.tiling.call_sizes(len(windows)):
                self._run(x, shape, windows[start:start + count], out)
                start += count
        return out

    @torch.no_grad()
    def _run(self, image: torch.Tensor, shape: tuple[int, int], windows: list, out: torch.Tensor) -> None:
        """Run one batch of windows of `image` [3, H, W], each replicate-padded at its bottom/right to `shape`, and
        store each tile's own part in `out`."""
        regions = []
        for (_, _, r0, r1), (_, _, c0, c1) in windows:
            region = image[:, r0:r1, c0:c1].float()
            pad_rows, pad_cols = shape[0] - (r1 - r0), shape[1] - (c1 - c0)
            regions.append(F.pad(region, (0, pad_cols, 0, pad_rows), mode="replicate") if pad_rows or pad_cols
                           else region)
        x = torch.stack(regions).to(self.device).div_(255.0)  # float32: the networks' input skips stay float32
        y = self.model(x)
        y = y.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).to(out.device)
        s = self.scale
        for restored, ((top, bottom, r0, _), (left, right, c0, _)) in zip(y, windows):
            oy, ox = (top - r0) * s, (left - c0) * s
            out[:, top * s:bottom * s, left * s:right * s] = \
                restored[:, oy:oy + (bottom - top) * s, ox:ox + (right - left) * s]


def _windows(length: int, tile: int, margin: int, bucket: int) -> list[tuple[int, int, int, int]]:
    """The tiles along one side of `length` pixels: (own start, own stop, window start, window stop).

    A side no longer than tile + 2·margin is one window, [0, length). A longer one is cut into n = ⌈length / tile⌉
    own parts of near-equal size, their boundaries at multiples of `bucket`; each window holds its own part with
    `margin` pixels of context on each side where the image has them (window start = own start − margin, a multiple
    of `bucket` since `margin` is one; stop = own stop + margin, or the image's end). Near-equal parts leave no
    sliver: a side of 1.2 tiles is two windows of 0.6 tile + margins, not a full tile and a far-edge window shifted
    inward over most of it (network pixels per image pixel on CUDA: benchmarks/restore_shapes.py).
    """
    if length <= tile + 2 * margin:
        return [(0, length, 0, length)]
    parts = -(-length // tile)
    bounds = sorted({round(k * length / parts / bucket) * bucket for k in range(parts)} | {length})
    return [(start, stop, max(start - margin, 0), min(stop + margin, length))
            for start, stop in itertools.pairwise(bounds)]


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


@functools.lru_cache(maxsize=4)
def shipped_restorer(kind: str, device: str | None = None) -> Restorer:
    """The shipped network of `kind`, loaded once per process (and device)."""
    return Restorer(kind, device=device)


def cleanup_image(image: np.ndarray, **kwargs) -> np.ndarray:
    """JPEG artifact removal with the shipped weights (or Restorer kwargs): uint8 image -> uint8 HWC RGB, same size."""
    return (Restorer("cleanup", **kwargs) if kwargs else shipped_restorer("cleanup"))(image)


def cleanup_tensor(x: torch.Tensor) -> torch.Tensor:
    """The build's `--cleanup net` stage on the device: [3, H, W] uint8 (or float with values 0–255) -> uint8
    [3, H, W], the shipped network run where `x` lives (the pixels of `cleanup_image`, no host round trip)."""
    return shipped_restorer("cleanup", str(x.device)).restore_tensor(x)


def super_resolve(image: np.ndarray, **kwargs) -> np.ndarray:
    """4× super-resolution with the shipped weights (or Restorer kwargs): uint8 image -> uint8 HWC RGB, 4× the sides."""
    return (Restorer("sr", **kwargs) if kwargs else shipped_restorer("sr"))(image)


def net_upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """The build's `--sr net` stage: uint8 HWC RGB -> uint8 HWC RGB `factor`× the sides.

    Factor 4 is the network alone; other factors are the network's 4× result resized with PIL Lanczos to the
    requested size (factor 2: 4× then down 2×; factor 8: 4× then up 2×; 16: 4× then up 4×, the plans of very
    small faces); factor 1 returns the image.
    """
    if factor == 1:
        return image
    upscaled = super_resolve(image)
    height, width = image.shape[:2]
    if factor == 4:
        return upscaled
    return np.asarray(Image.fromarray(upscaled).resize((width * factor, height * factor),
                                                       Image.Resampling.LANCZOS))


def net_upscale_tensor(x: torch.Tensor, factor: int) -> torch.Tensor:
    """`net_upscale` on the render's device: float32 [3, H, W] with uint8 values -> float32 [3, f·H, f·W], the
    network run where `x` lives and the 2×/8× Lanczos resize in torch (render.resize_torch, Pillow's arithmetic to
    rounding), so a face never leaves the GPU (the build's `--sr net` with the torch backend)."""
    from ..render import resize_torch

    if factor == 1:
        return x
    upscaled = shipped_restorer("sr", str(x.device)).restore_tensor(x).to(torch.float32)
    if factor == 4:
        return upscaled
    if factor == 2:
        return resize_torch(upscaled, 2, up=False, filter_name="lanczos", varied_shapes=True)
    if factor % 4 == 0:  # 8, 16, … (tiny faces): Lanczos up from the network's 4×, as the host stage does
        return resize_torch(upscaled, factor // 4, up=True, filter_name="lanczos", varied_shapes=True)
    raise ValueError(f"super-resolution factor {factor}: the network stage supports 1, 2 and multiples of 4")


def photo_files(paths) -> list[Path]:
    """The image files of `paths` (folders, searched recursively in name order, or single files)."""
    files = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += list_image_files(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def restored_names(relatives: list[Path]) -> dict[Path, Path]:
    """Output path of each input (relative paths): the stem with ".png", or the whole name + ".png" where two
    inputs in one folder share a stem."""
    stems = Counter(path.with_suffix("") for path in relatives)
    return {path: path.with_name(path.name + ".png") if stems[path.with_suffix("")] > 1
            else path.with_suffix(".png") for path in relatives}


def restore_folder(restorer: Restorer, in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   progress: bool = True) -> tuple[int, dict[str, str]]:
    """Restore every image under in_dir into out_dir as PNG with the same relative path and stem (`a/x.jpg`
    -> `a/x.png`); sources that share a stem in one folder keep their extension instead (`face.jpg` and
    `face.png` -> `face.jpg.png`, `face.png.png`), so no output overwrites another.

    Writes are atomic (temporary name, then rename); `out_dir` is checked writable before any work (UserError).
    Returns (images written, {unreadable file: reason}).
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise UserError(f"{in_dir}: no such folder")
    check_apart(out_dir, in_dir)
    with output_folder(out_dir):  # marked before the listing (an output inside in_dir is no source)
        files = list_image_files(in_dir)
        return _restore_files(restorer, in_dir, out_dir, files, progress)


def _restore_files(restorer: Restorer, in_dir: Path, out_dir: Path, files: list[Path],
                   progress: bool) -> tuple[int, dict[str, str]]:
    """restore_folder's work on the listed `files`: (images written, {unreadable file: reason})."""
    targets = restored_names([path.relative_to(in_dir) for path in files])
    written, skipped = 0, {}
    with progress_bar(len(files), f"restore {restorer.kind}", progress) as bar:
        for path in files:
            relative = path.relative_to(in_dir)
            try:
                image = decode_image(path)
            except BadImage as error:
                skipped[relative.as_posix()] = str(error)
            else:
                target = out_dir / targets[relative]
                target.parent.mkdir(parents=True, exist_ok=True)
                write_png(target, restorer(image))
                written += 1
            bar.update(1)
    return written, skipped
