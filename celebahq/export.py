"""Export a build to the formats trainers read.

- `export_hdf5`: the multi-resolution HDF5 of the original (Theano) ProGAN: datasets `data4x4` … `data{R}x{R}`,
  uint8 NCHW, each level the 2×2 box average of the previous one kept in float32 and rounded once (as the
  original exporters do), chunked one image per chunk. `ganeval` and `progan` read it back.
- `export_zip`: a zip of the build's PNGs (copied byte for byte) that stylegan2-ada-pytorch's
  `ImageFolderDataset` reads, with a `dataset.json` without labels.

`HDF5Pyramid` and `DatasetZip` are the writers both use; `celebahq build --h5/--zip` feeds them rendered images
directly. Both write to a temporary name next to the target and rename it at the end: an interrupted export
leaves no partial file, and the temporary of a killed one (its pid no longer running) is removed by the next
export to that target. The target's folder is checked writable before any work. HDF5 writes go through a guard
that stops at the first OS error (e.g. a full disk) and lets the HDF5 library close cleanly before the error is
raised: an HDF5 library that sees a failed write keeps the file's metadata dirty and crashes the interpreter at
exit when it tries to flush it again (exit 139, reproduced with h5py 3 on a full tmpfs). Images come in manifest
order (ranking order once ranked or selected), optionally only the first `num_images`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gancore.errors import UserError
from gancore.locking import FolderLock, pid_alive
from gancore.outputs import atomic_output, check_output_path
from gancore.runtime import progress_bar
from gancore.sources import ImageStream, box_levels, to_uint8

from .manifest import latest_records, load_all_manifests

if TYPE_CHECKING:  # typing.Self is Python ≥ 3.11; we support 3.10
    from typing import Self


@dataclass
class ExportResult:
    """What an export wrote: the file, how many images, and what was read from the build's manifests."""

    path: Path
    images: int
    manifest: str  # "read N manifest records, skipped K damaged lines"


def selected_files(out_dir: Path, num_images: int | None) -> tuple[list[Path], str]:
    """The build's finished images in export order (ranked ones first by rank when ranked, else manifest order;
    the first `num_images`) and what was read from its manifests (UserError when none or too few)."""
    summary = load_all_manifests(out_dir)
    done = [r for r in latest_records(summary.records).values() if r.get("status") == "ok"]
    if any(r.get("rank") is not None for r in done):
        unranked = [r["source"] for r in done if "rank" not in r]  # finished after the last `celebahq rank`
        if unranked:
            raise UserError(f"{out_dir}: {len(unranked)} images (e.g. {unranked[0]}) finished after the ranking; "
                            f"run celebahq rank {out_dir} again")
        done = sorted((r for r in done if r.get("selected")), key=lambda r: r["rank"])
    files = [out_dir / r["output"] for r in done]
    if not files:
        raise UserError(f"{out_dir}: no finished images in {out_dir / 'manifest.jsonl'} ({summary.describe()})")
    if num_images is not None:
        if num_images > len(files):
            raise UserError(f"{out_dir}: {len(files)} finished images, {num_images} asked")
        files = files[:num_images]
    return files, summary.describe()


def box_pyramid(images: np.ndarray) -> dict[int, np.ndarray]:
    """uint8 NCHW [N, C, R, R] -> {R: …, R/2: …, …, 4: …}, each level the float32 2×2 mean of the previous
    float level, rounded and clipped to uint8 once."""
    import torch

    steps = max(images.shape[-1] // 4, 1).bit_length() - 1  # down to 4×4
    levels = {images.shape[-1]: images}
    for level in box_levels(torch.from_numpy(images), steps):  # the chain ganeval also pairs sources with
        levels[level.shape[-1]] = to_uint8(level).numpy()
    return levels


def remove_stale_partials(target: Path) -> int:
    """Remove temporaries `.<name>.<pid>.<tag>.partial` beside `target` left by exports that no longer run."""
    removed = 0
    for leftover in target.parent.glob(f".{target.name}.*.partial"):
        pid = leftover.name[len(target.name) + 2:].split(".")[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def prepare_target(path: str | os.PathLike) -> Path:
    """Check that an export target can be written (UserError before any work) and clear stale temporaries."""
    path = check_output_path(path)
    remove_stale_partials(path)
    return path


class _StopAtFirstError(io.RawIOBase):
    """A file for h5py's fileobj driver that records the first OSError and then pretends to succeed, so that the
    HDF5 library never holds a file it failed to write (it crashes at exit flushing one); `error` says what
    happened and the caller raises it once the file is closed."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.error = raw, None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer) -> int:
        return self.raw.readinto(buffer)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        written = 0
        while self.error is None and written < len(view):
            try:
                written += self.raw.write(view[written:]) or 0
            except OSError as error:
                self.error = error
        self.raw.seek(len(view) - written, 1)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        try:
            return self.raw.truncate(size)
        except OSError as error:
            self.error = self.error or error
            return size if size is not None else self.raw.tell()

    def flush(self) -> None:
        if self.error is None:
            try:
                self.raw.flush()
            except OSError as error:
                self.error = error


class HDF5Pyramid:
    """Context manager writing the multi-resolution HDF5 of `count` images of `resolution`² atomically:
    `put(position, images)` stores uint8 NCHW images at positions position … position + n - 1 (any order)."""

    def __init__(self, path: str | os.PathLike, count: int, resolution: int):
        if resolution < 4 or resolution & (resolution - 1):
            raise UserError(f"images of {resolution}x{resolution}: the HDF5 pyramid needs square power-of-two images")
        self.path, self.count, self.resolution = Path(path), count, resolution
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        import h5py

        temporary = self._stack.enter_context(atomic_output(self.path))
        raw = self._stack.enter_context(open(temporary, "w+b", buffering=0))
        self._guard = _StopAtFirstError(raw)
        self._file = h5py.File(self._guard, "w")
        sizes = [self.resolution >> k for k in range(self.resolution.bit_length()) if self.resolution >> k >= 4]
        self._datasets = {size: self._file.create_dataset(f"data{size}x{size}", (self.count, 3, size, size),
                                                          dtype=np.uint8, chunks=(1, 3, size, size))
                          for size in sizes}
        return self

    def put(self, position: int, images: np.ndarray) -> None:
        if images.shape[1:] != (3, self.resolution, self.resolution):
            raise UserError(f"images of {images.shape[-1]}x{images.shape[-2]}: the HDF5 file holds "
                            f"{self.resolution}x{self.resolution}")
        for size, pixels in box_pyramid(images).items():
            self._datasets[size][position:position + len(pixels)] = pixels
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._guard.error is not None:
            error = self._guard.error
            raise OSError(error.errno, error.strerror, str(self.path))

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self._file.close()
            if kind is None:
                self._raise_if_failed()
        except BaseException as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        self._stack.__exit__(kind, value, traceback)  # renames on success, removes the temporary otherwise


def zip_member_name(index: int) -> str:
    """Member name of image `index` (0-based) in a stylegan2-ada-pytorch dataset zip: folders of 1000."""
    return f"{index // 1000:05d}/img{index:08d}.png"


class DatasetZip:
    """Context manager writing a stylegan2-ada-pytorch dataset zip atomically: `put(index, png_bytes)` in any
    order; `dataset.json` (no labels) is added at the end."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        temporary = self._stack.enter_context(atomic_output(self.path))
        self._archive = self._stack.enter_context(zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED))
        return self

    def put(self, index: int, png: bytes) -> None:
        with _naming(self.path):
            self._archive.writestr(zip_member_name(index), png)

    def __exit__(self, kind, value, traceback) -> None:
        with _naming(self.path):
            if kind is None:
                self._archive.writestr("dataset.json", json.dumps({"labels": None}))
            self._stack.__exit__(kind, value, traceback)


@contextmanager
def _naming(path: Path):
    """Give an OSError that names no file (zipfile's writes) the target's name, for the one-line CLI error."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None


def _build_lock(out_dir: Path, command: str):
    """The build folder's writer lock while an export reads it (nobody appends meanwhile); a folder this process
    cannot write is read without it (no one else can write there either)."""
    if os.access(out_dir, os.W_OK):
        return FolderLock(out_dir, command)
    return ExitStack()


def export_hdf5(out_dir: str | os.PathLike, h5_path: str | os.PathLike, num_images: int | None = None,
                batch_size: int = 16, progress: bool = True) -> ExportResult:
    """Write the multi-resolution HDF5 of a build."""
    out_dir, h5_path = Path(out_dir), prepare_target(h5_path)
    with _build_lock(out_dir, "celebahq export"):
        files, manifest = selected_files(out_dir, num_images)
        stream = ImageStream(files, batch_size=batch_size)  # the selected files, in export order
        with ExitStack() as stack, progress_bar(len(files), "export h5", progress) as bar:
            pyramid = None
            for position, batch in stream.batches():
                if pyramid is None:
                    if batch.shape[-2] != batch.shape[-1]:
                        raise UserError(f"images of {batch.shape[-1]}x{batch.shape[-2]}: the HDF5 pyramid needs "
                                        "square power-of-two images")
                    pyramid = stack.enter_context(HDF5Pyramid(h5_path, len(files), batch.shape[-1]))
                pyramid.put(position, batch.numpy())
                bar.update(len(batch))
    return ExportResult(h5_path, len(files), manifest)


def export_zip(out_dir: str | os.PathLike, zip_path: str | os.PathLike, num_images: int | None = None,
               progress: bool = True) -> ExportResult:
    """Write a stylegan2-ada-pytorch dataset zip (PNG bytes copied, folders of 1000, dataset.json)."""
    out_dir, zip_path = Path(out_dir), prepare_target(zip_path)
    with _build_lock(out_dir, "celebahq export"):
        files, manifest = selected_files(out_dir, num_images)
        with DatasetZip(zip_path) as archive, progress_bar(len(files), "export zip", progress) as bar:
            for index, file in enumerate(files):
                archive.put(index, file.read_bytes())
                bar.update(1)
    return ExportResult(zip_path, len(files), manifest)
