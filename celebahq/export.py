"""Export a build to the formats trainers read.

- `export_hdf5`: the multi-resolution HDF5 of the original (Theano) ProGAN: datasets `data4x4` … `data{R}x{R}`,
  uint8 NCHW, each level the 2×2 box average of the previous one kept in float32 and rounded once (as the
  original exporters do), chunked one image per chunk. `ganeval` and `progan` read it back.
- `export_zip`: a zip of the build's PNGs (copied byte for byte) that stylegan2-ada-pytorch's
  `ImageFolderDataset` reads, with a `dataset.json` without labels.

Both write to a temporary name next to the target and rename it at the end: an interrupted export leaves no
partial file. Images come in manifest order (ranking order once `celebahq rank` has run), optionally only the
first `num_images`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from gancore.errors import UserError
from gancore.runtime import atomic_output, progress_bar
from gancore.sources import ImageStream

from .manifest import latest_records, read_all_manifests


def selected_images(out_dir: str | os.PathLike, num_images: int | None = None) -> list[Path]:
    """The build's finished images in export order: ranked ones first by rank when ranked, else manifest order."""
    out_dir = Path(out_dir)
    done = [r for r in latest_records(read_all_manifests(out_dir)).values() if r.get("status") == "ok"]
    if any(r.get("rank") is not None for r in done):
        unranked = [r["source"] for r in done if "rank" not in r]  # finished after the last `celebahq rank`
        if unranked:
            raise UserError(f"{out_dir}: {len(unranked)} images (e.g. {unranked[0]}) finished after the ranking; "
                               f"run celebahq rank {out_dir} again")
        done = sorted((r for r in done if r.get("selected")), key=lambda r: r["rank"])
    files = [out_dir / r["output"] for r in done]
    if not files:
        raise UserError(f"{out_dir}: no finished images in {out_dir / 'manifest.jsonl'}")
    if num_images is not None:
        if num_images > len(files):
            raise UserError(f"{out_dir}: {len(files)} finished images, {num_images} asked")
        files = files[:num_images]
    return files


def box_pyramid(images: np.ndarray) -> dict[int, np.ndarray]:
    """uint8 NCHW [N, C, R, R] -> {R: …, R/2: …, …, 4: …}, each level the float32 2×2 mean of the previous
    float level, rounded and clipped to uint8 once."""
    level = images.astype(np.float32)
    levels = {images.shape[-1]: images}
    while level.shape[-1] > 4:
        level = 0.25 * (level[..., 0::2, 0::2] + level[..., 0::2, 1::2] + level[..., 1::2, 0::2]
                        + level[..., 1::2, 1::2])
        levels[level.shape[-1]] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
    return levels


def export_hdf5(out_dir: str | os.PathLike, h5_path: str | os.PathLike, num_images: int | None = None,
                batch_size: int = 16, progress: bool = True) -> Path:
    """Write the multi-resolution HDF5 of a build; returns its path."""
    import h5py

    files = selected_images(out_dir, num_images)
    h5_path = Path(h5_path)
    stream = ImageStream(files, batch_size=batch_size)  # the selected files, in export order
    with atomic_output(h5_path) as temporary, h5py.File(temporary, "w") as out, \
            progress_bar(len(files), "export h5", progress) as bar:
        datasets = None
        for position, batch in stream.batches():
            levels = box_pyramid(batch.numpy())
            if datasets is None:
                resolution = batch.shape[-1]
                if batch.shape[-2] != resolution or resolution & (resolution - 1):
                    raise UserError(f"images of {batch.shape[-1]}x{batch.shape[-2]}: the HDF5 pyramid "
                                       "needs square power-of-two images")
                datasets = {size: out.create_dataset(f"data{size}x{size}", (len(files), 3, size, size),
                                                     dtype=np.uint8, chunks=(1, 3, size, size))
                            for size in levels}
            for size, pixels in levels.items():
                datasets[size][position:position + len(pixels)] = pixels
            bar.update(len(batch))
    return h5_path


def export_zip(out_dir: str | os.PathLike, zip_path: str | os.PathLike, num_images: int | None = None,
               progress: bool = True) -> Path:
    """Write a stylegan2-ada-pytorch dataset zip (PNG bytes copied, folders of 1000, dataset.json)."""
    files = selected_images(out_dir, num_images)
    zip_path = Path(zip_path)
    with atomic_output(zip_path) as temporary, \
            zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive, \
            progress_bar(len(files), "export zip", progress) as bar:
        names = []
        for index, file in enumerate(files):
            name = f"{index // 1000:05d}/img{index:08d}.png"
            archive.write(file, name)
            names.append(name)
            bar.update(1)
        archive.writestr("dataset.json", json.dumps({"labels": None}))
    return zip_path
