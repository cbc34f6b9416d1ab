"""Latent interpolation videos, as the original's `generate_interpolation_video` (util_scripts.py) makes them.

One N(0, I) latent per frame and grid cell, drawn as numpy's RandomState(seed).randn(frames, cells, latent_size)
(the original's draw: the same seed gives the original's latents), blurred over time by a Gaussian of
`smoothing_sec × fps` frames that wraps around (the video loops), then divided by their overall RMS. Each frame
is the EMA generator's images of its latents, tiled `columns` wide and zoomed by nearest-neighbour repetition.
The mp4 is written by imageio with imageio-ffmpeg (which ships its own ffmpeg): the `[video]` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gancore.errors import UserError
from gancore.outputs import atomic_output

from .checkpoint import images_to_uint8

VIDEO_EXTRA = "pip install 'progan-toolkit[video]'"
VIDEO_CODEC, VIDEO_BITRATE = "libx264", "16M"  # the original's write_videofile(codec='libx264', bitrate='16M')
SHEET_BYTES_LIMIT = 1 << 31  # a sheet is built in memory and written as one PNG


@dataclass(frozen=True)
class InterpolationOptions:
    """What `write_interpolation` makes (the options of `progan interpolate`)."""

    duration: float = 60.0  # seconds; frames = rint(duration × fps) unless `frames`
    fps: float = 30.0
    frames: int | None = None
    smoothing: float = 1.0  # standard deviation of the latents' Gaussian blur over time, seconds
    grid: tuple[int, int] = (1, 1)  # columns × rows of images per frame, each with its own latent path
    zoom: int = 1  # each pixel repeated zoom × zoom times
    seed: int = 1000  # numpy RandomState seed of the latents, as the original
    columns: int = 16  # frames per row of a .png sheet
    allow_many: bool = False  # more than FILE_COUNT_LIMIT frames

    @property
    def frame_total(self) -> int:
        return self.frames or frame_count(self.duration, self.fps)


def frame_count(duration_sec: float, fps: float) -> int:
    """The original's num_frames = rint(duration_sec × fps), at least 1."""
    return max(1, int(np.rint(duration_sec * fps)))


def smooth_latents(frames: int, cells: int, latent_size: int, sigma_frames: float, seed: int) -> torch.Tensor:
    """The interpolation latents: RandomState(seed).randn(frames, cells, latent_size) as float32, Gaussian-blurred
    along the frames with standard deviation `sigma_frames` (scipy's gaussian_filter, mode 'wrap', truncated at
    4 σ), then divided by the root mean square of all values. float32 [frames, cells, latent_size]."""
    from scipy.ndimage import gaussian_filter

    latents = np.random.RandomState(seed).randn(frames, cells, latent_size).astype(np.float32)
    latents = gaussian_filter(latents, [sigma_frames, 0, 0], mode="wrap")
    latents /= np.sqrt(np.mean(np.square(latents)))
    return torch.from_numpy(latents)


def tile(images: torch.Tensor, columns: int, zoom: int = 1) -> np.ndarray:
    """uint8 NCHW images -> one uint8 HWC grid, `columns` per row (empty cells black), each pixel repeated
    `zoom` × `zoom` times."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.zeros(rows * columns, c, h, w, dtype=torch.uint8)
    canvas[:n] = images
    grid = canvas.reshape(rows, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    if zoom > 1:
        grid = grid.repeat_interleave(zoom, dim=0).repeat_interleave(zoom, dim=1)
    return grid.numpy()


def interpolation_frames(G, latents: torch.Tensor, columns: int, zoom: int = 1,
                         batch_size: int = 32) -> Iterator[np.ndarray]:
    """The frames of `latents` [frames, cells, latent_size] through G (its device, its lod, its resolution): one
    uint8 HWC grid per frame, made `batch_size` images at a time."""
    device = next(G.parameters()).device
    frames, cells, _ = latents.shape
    per_batch = max(1, batch_size // cells)
    with torch.no_grad():
        for start in range(0, frames, per_batch):
            chunk = latents[start:start + per_batch]
            images = images_to_uint8(G(chunk.flatten(0, 1).to(device)), G.resolution).cpu()
            for frame in images.reshape(len(chunk), cells, *images.shape[1:]):
                yield tile(frame, columns, zoom)


def check_video_support() -> None:
    """UserError (before any work) when imageio or imageio-ffmpeg, which write the mp4, are not installed."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UserError(f"--video needs imageio and imageio-ffmpeg: {VIDEO_EXTRA}") from None


def write_video(frames: Iterator[np.ndarray], path, fps: float) -> int:
    """Encode uint8 HWC frames as an H.264 mp4 at `fps` (the original's codec and bitrate), written under a
    temporary name and renamed at the end. Returns the frame count."""
    import imageio.v2 as imageio

    count = 0
    with atomic_output(Path(path)) as temporary:
        encoded = temporary.with_name(temporary.name + ".mp4")   # imageio picks its writer by the suffix
        try:
            writer = imageio.get_writer(str(encoded), format="FFMPEG", mode="I", fps=fps, codec=VIDEO_CODEC,
                                        bitrate=VIDEO_BITRATE, macro_block_size=1, ffmpeg_log_level="error")
            try:
                for frame in frames:
                    writer.append_data(frame)
                    count += 1
            finally:
                writer.close()
            encoded.replace(temporary)
        finally:
            encoded.unlink(missing_ok=True)
    return count


def write_interpolation(G, video=None, out=None, options: InterpolationOptions | None = None) -> int:
    """Make the interpolation of `options` through G (its device, lod and resolution) and write it as an mp4
    (`video`) and/or frames (`out`: a folder of frameNNNNN.png, or a .png file for one sheet of them); each frame is
    generated once. Checked before any work or any folder is made: the frame count (at most FILE_COUNT_LIMIT
    unless `allow_many`), a sheet's size in memory, a folder's room on its disk. Returns the frame count."""
    from gancore.imagefiles import write_png
    from gancore.locking import FolderLock
    from gancore.outputs import check_output_path

    options = options or InterpolationOptions()
    columns, rows = options.grid
    count, sheet = options.frame_total, out is not None and Path(out).suffix.lower() == ".png"
    _check_frames(count, (columns * G.resolution * options.zoom, rows * G.resolution * options.zoom), out, sheet,
                  options.allow_many)
    if video is not None:
        check_output_path(video)
    out = check_output_path(out, folder=not sheet) if out is not None else None
    latents = smooth_latents(count, columns * rows, G.latent_size, options.smoothing * options.fps, options.seed)
    kept: list[np.ndarray] = []  # the frames of a sheet

    def frames_once() -> Iterator[np.ndarray]:
        for index, frame in enumerate(interpolation_frames(G, latents, columns, options.zoom)):
            if sheet:
                kept.append(frame)
            elif out is not None:
                write_png(out / f"frame{index:05d}.png", frame)
            yield frame

    with FolderLock(out, "progan interpolate") if out is not None and not sheet else contextlib.nullcontext():
        if video is not None:
            write_video(frames_once(), video, options.fps)
        else:
            for _ in frames_once():
                pass
    if sheet:
        write_png(out, tile(torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2), min(options.columns, count)))
    return count


def _check_frames(count: int, size: tuple[int, int], out, sheet: bool, allow_many: bool) -> None:
    """Before any work: at most FILE_COUNT_LIMIT frames unless `allow_many`; a folder of PNG frames must fit its
    disk; a sheet (held in memory) at most 2 GiB of pixels. UserError naming what is needed."""
    from gancore.imagefiles import png_size_bound
    from gancore.outputs import FILE_COUNT_LIMIT, check_room_for_files

    width, height = size
    if count > FILE_COUNT_LIMIT and not allow_many:
        raise UserError(f"{count:,} frames asked, more than {FILE_COUNT_LIMIT:,}; lower --frames or --duration, "
                        "or pass --allow-many")
    if sheet and count * width * height * 3 > SHEET_BYTES_LIMIT:
        raise UserError(f"a sheet of {count:,} frames of {width}x{height} would hold more than 2 GiB of pixels; "
                        "give --out a folder, or fewer frames")
    if out is not None and not sheet:
        check_room_for_files(out, count, png_size_bound(width, height), f"PNG frames of {width}x{height}",
                             allow_many)
