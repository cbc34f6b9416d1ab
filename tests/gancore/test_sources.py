"""The image-source layer: every kind of source, conversions, order, subsets and every bad input."""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from gancore.errors import SourceError
from gancore.sources import ImageStream, open_source
from toolkit_testing.images import write_images


@pytest.fixture()
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10, 24, 32, 3), dtype=np.uint8)  # NHWC, H=24, W=32


def collect(stream: ImageStream) -> np.ndarray:
    batches = list(stream)
    assert all(b.dtype == torch.uint8 and b.ndim == 4 and b.shape[1] == 3 for b in batches)
    return torch.cat(batches).numpy().transpose(0, 2, 3, 1)


def test_folder_recursive_sorted_and_batched(tmp_path, images):
    write_images(tmp_path / "b", images[5:])
    write_images(tmp_path / "a", images[:5])
    (tmp_path / "notes.txt").write_text("not an image")
    stream = ImageStream(tmp_path, batch_size=3, num_workers=0)
    assert len(stream) == 10
    np.testing.assert_array_equal(collect(stream), images)
    assert [b.shape[0] for b in ImageStream(tmp_path, batch_size=4)] == [4, 4, 2]


def test_workers_give_the_same_stream(tmp_path, images):
    write_images(tmp_path, images)
    serial = collect(ImageStream(tmp_path, batch_size=3, num_workers=0))
    parallel = collect(ImageStream(tmp_path, batch_size=3, num_workers=2))
    np.testing.assert_array_equal(serial, parallel)


def test_seeded_subset_is_deterministic(tmp_path, images):
    write_images(tmp_path, images)
    one = collect(ImageStream(tmp_path, num_images=4, seed=1, num_workers=0))
    two = collect(ImageStream(tmp_path, num_images=4, seed=1, num_workers=0))
    other = collect(ImageStream(tmp_path, num_images=4, seed=2, num_workers=0))
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other)
    assert all(any(np.array_equal(x, y) for y in images) for x in one)
    np.testing.assert_array_equal(collect(ImageStream(tmp_path, num_images=4, num_workers=0)), images[:4])


def test_zip_source(tmp_path, images):
    paths = write_images(tmp_path / "files", images, fmt="png")
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in reversed(paths):
            zf.write(path, f"sub/{path.name}")
        zf.writestr("readme.txt", "x")
    np.testing.assert_array_equal(collect(ImageStream(archive, batch_size=4, num_workers=2)), images)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npy_and_npz(tmp_path, images, layout):
    array = images if layout == "NHWC" else images.transpose(0, 3, 1, 2)
    np.save(tmp_path / "x.npy", array)
    np.savez(tmp_path / "x.npz", images=array, labels=np.arange(10))
    for name in ("x.npy", "x.npz"):
        np.testing.assert_array_equal(collect(ImageStream(tmp_path / name, batch_size=4)), images)


def test_hdf5_levels(tmp_path, images):
    path = tmp_path / "pyramid.h5"
    with h5py.File(path, "w") as file:
        file["data8x8"] = np.zeros((3, 3, 8, 8), np.uint8)
        file["data16x16"] = np.full((3, 3, 16, 16), 7, np.uint8)
    assert open_source(path).shape == (16, 16)
    assert collect(ImageStream(path))[0, 0, 0, 0] == 7
    assert collect(ImageStream(path, resolution=8)).shape == (3, 8, 8, 3)
    with pytest.raises(SourceError, match=r"no 32x32 level; it has \[8, 16\]"):
        open_source(path, resolution=32)


def test_grayscale_rgba_palette_and_16bit_become_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray, "L").save(tmp_path / "0.png")
    rgba = np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 40)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "1.png")
    Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).quantize(8).save(tmp_path / "2.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "3.png")
    out = collect(ImageStream(tmp_path, num_workers=0))
    np.testing.assert_array_equal(out[0], np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(out[1], rgba[:, :, :3])
    assert np.all(out[2] == 50)
    np.testing.assert_array_equal(out[3], np.repeat(gray[:, :, None], 3, 2))
    np.save(tmp_path / "gray.npy", np.stack([gray, gray]))
    assert collect(ImageStream(tmp_path / "gray.npy")).shape == (2, 8, 8, 3)


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_empty_and_unknown(tmp_path):
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty source"):
        open_source(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(SourceError, match="unknown kind of source"):
        open_source(tmp_path / "x.csv")
    (tmp_path / "broken.zip").write_bytes(b"PK no zip")
    with pytest.raises(SourceError, match="not a readable zip"):
        open_source(tmp_path / "broken.zip")
    np.save(tmp_path / "float.npy", np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(SourceError, match="expected uint8"):
        open_source(tmp_path / "float.npy")


def test_fewer_images_than_asked(tmp_path, images):
    write_images(tmp_path, images[:3])
    with pytest.raises(SourceError, match="has 3 images, 5 asked"):
        ImageStream(tmp_path, num_images=5)


def test_unreadable_and_truncated_files_are_named(tmp_path, images):
    paths = write_images(tmp_path, images[:6])
    paths[2].write_bytes(b"definitely not a png")
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as caught:
        collect(ImageStream(tmp_path, num_workers=0))
    assert "0002.png" in str(caught.value) and "--skip-bad" in str(caught.value)
    stream = ImageStream(tmp_path, num_images=4, skip_bad=True, num_workers=2, batch_size=2)
    kept = collect(stream)
    assert len(kept) == 4
    assert sorted(item.name.rsplit("/", 1)[-1] for item in stream.skipped) == ["0002.png", "0004.png"]
    np.testing.assert_array_equal(kept, images[[0, 1, 3, 5]])


def test_mixed_sizes(tmp_path, images):
    write_images(tmp_path, images[:3])
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "0001b.png")
    with pytest.raises(SourceError, match=r"3 of 4 sampled files are 32x24 \(WxH\), these differ: \S*0001b\.png: 10x10"):
        collect(ImageStream(tmp_path, num_workers=0))
    stream = ImageStream(tmp_path, num_images=3, skip_bad=True)
    assert len(collect(stream)) == 3 and len(stream.skipped) == 1


def test_not_enough_good_images_with_skip_bad(tmp_path, images):
    paths = write_images(tmp_path, images[:3])
    paths[0].write_bytes(b"junk")
    with pytest.raises(SourceError, match="only 2 usable images, 3 asked"):
        collect(ImageStream(tmp_path, num_images=3, skip_bad=True))


def test_registered_opener_and_batch_sources(tmp_path):
    """The extension point the trainer uses for generator checkpoints: a suffix opener + load_batch."""
    from gancore.sources import ImageSource, register_source_opener

    class CountingGenerator(ImageSource):
        shape = (4, 4)

        def __init__(self, path, resolution):
            self.path = str(path)

        def __len__(self):
            return 10

        def load_batch(self, indices):
            values = torch.as_tensor(np.asarray(indices), dtype=torch.uint8)
            return values.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()

    register_source_opener(".fakegen", CountingGenerator)
    checkpoint = tmp_path / "network.fakegen"
    checkpoint.write_bytes(b"weights")
    batches = list(ImageStream(checkpoint, num_images=7, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    assert torch.cat(batches)[:, 0, 0, 0].tolist() == list(range(7))


# --------------------------------------------------------------------------------------------------------------
# Two sources at one resolution


def reference_box_chain(image: np.ndarray, steps: int) -> np.ndarray:
    """The original's dataset_tool.py chain written out pixel by pixel (slow): CHW uint8 -> CHW uint8."""
    level = image.astype(np.float32)
    for _ in range(steps):
        channels, height, width = level.shape
        out = np.zeros((channels, height // 2, width // 2), np.float32)
        for c in range(channels):
            for y in range(height // 2):
                for x in range(width // 2):
                    total = (level[c, 2 * y, 2 * x] + level[c, 2 * y, 2 * x + 1]) + level[c, 2 * y + 1, 2 * x]
                    out[c, y, x] = np.float32(total + level[c, 2 * y + 1, 2 * x + 1]) * np.float32(0.25)
        level = out
    return np.clip(np.rint(level), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_box_reduce_equals_the_originals_chain(steps):
    from gancore.sources import box_reduce

    images = np.random.default_rng(steps).integers(0, 256, (3, 3, 16, 24), dtype=np.uint8)
    reduced = box_reduce(torch.from_numpy(images), steps).numpy()
    expected = np.stack([reference_box_chain(image, steps) for image in images])
    assert reduced.shape == (3, 3, 16 >> steps, 24 >> steps)
    np.testing.assert_array_equal(reduced, expected)


def test_pair_reduces_the_larger_folder_with_a_note(tmp_path):
    from gancore.sources import pair_sources

    small = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    large = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    write_images(tmp_path / "small", small)
    write_images(tmp_path / "large", large)
    pair = pair_sources(tmp_path / "small", tmp_path / "large")
    assert pair.size == (8, 8) and len(pair.notes) == 1
    assert "reduced 4x to 8x8" in pair.notes[0] and "box filter" in pair.notes[0]
    batch = next(iter(ImageStream(pair.real, batch_size=8)))
    expected = np.stack([reference_box_chain(image.transpose(2, 0, 1), 2) for image in large])
    np.testing.assert_array_equal(batch.numpy(), expected)
    flipped = pair_sources(tmp_path / "large", tmp_path / "small")  # the generated side may be the larger one
    assert flipped.size == (8, 8) and flipped.gen.shape is None and flipped.gen.image_size(0) == (8, 8)


def test_pair_reads_the_matching_hdf5_level(tmp_path):
    from gancore.sources import pair_sources

    images = np.random.default_rng(2).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as file:
        for steps, side in enumerate((32, 16, 8, 4)):
            file.create_dataset(f"data{side}x{side}", data=np.full((6, 3, side, side), steps, np.uint8))
    gen = images[:, :, :16, :16].copy()
    pair = pair_sources(gen, path)
    assert pair.size == (16, 16) and pair.real.dataset_name == "data16x16"
    assert "data16x16" in pair.notes[0]
    assert int(pair.real.load(0)[0, 0, 0]) == 1  # the 16x16 level itself, not a reduction of the 32x32 one


@pytest.mark.parametrize("sizes", [((16, 16), (24, 24)), ((16, 16), (32, 16)), ((12, 12), (40, 40))])
def test_pair_refuses_sizes_that_are_not_halvings(sizes):
    from gancore.sources import pair_sources

    a, b = (np.zeros((2, h, w, 3), np.uint8) for h, w in sizes)
    with pytest.raises(SourceError) as caught:
        pair_sources(a, b)
    message = str(caught.value)
    assert f"{sizes[0][1]}x{sizes[0][0]}" in message and f"{sizes[1][1]}x{sizes[1][0]}" in message
