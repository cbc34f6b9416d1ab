"""SWD against the slow NumPy/SciPy reference (toolkit_testing/swd_reference.py) and OpenCV."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from ganeval.swd import (
    DescriptorSet,
    _generator,
    laplacian_pyramid,
    patch_descriptors,
    pyr_down,
    pyr_up,
    pyramid_resolutions,
    random_directions,
    sliced_wasserstein,
    swd_memory_bytes,
)
from ganeval.swd import compute_swd as swd
from toolkit_testing import swd_reference as ref


def nchw(images_nhwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def photos64(real_photos) -> np.ndarray:
    """12 real photographs downscaled to 64×64, uint8 NCHW (3 pyramid levels)."""
    small = [np.asarray(Image.fromarray(im).resize((64, 64), Image.LANCZOS)) for im in real_photos[:24]]
    return nchw(np.stack(small))


def test_pyramid_levels_sizes():
    assert pyramid_resolutions(1024, 1024) == [(1024 >> i, 1024 >> i) for i in range(7)]
    assert pyramid_resolutions(128, 128) == [(128, 128), (64, 64), (32, 32), (16, 16)]
    assert pyramid_resolutions(32, 64) == [(32, 64), (16, 32)]


def test_pyramid_equals_numpy_reference_and_opencv(real_photos):
    images = nchw(real_photos[:4]).astype(np.float32)
    ours = [level.numpy() for level in laplacian_pyramid(torch.from_numpy(images), 4)]
    reference = ref.laplacian_pyramid(images, 4)
    for mine, theirs in zip(ours, reference):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-4, rtol=0)
    # OpenCV's pyrDown / pyrUp, one channel image at a time.
    down = pyr_down(torch.from_numpy(images)).numpy()
    up = pyr_up(torch.from_numpy(down)).numpy()
    for b in range(images.shape[0]):
        for c in range(3):
            np.testing.assert_allclose(down[b, c], cv2.pyrDown(images[b, c]), atol=1e-4, rtol=0)
            np.testing.assert_allclose(up[b, c], cv2.pyrUp(down[b, c]), atol=1e-4, rtol=0)


def test_pyramid_reconstructs_the_image(real_photos):
    images = torch.from_numpy(nchw(real_photos[:2])).float()
    levels = laplacian_pyramid(images, 4)
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + pyr_up(rebuilt)
    assert torch.allclose(rebuilt, images, atol=1e-3)


def test_descriptors_and_normalisation_equal_reference(photos64):
    level = laplacian_pyramid(torch.from_numpy(photos64[:3]), 2)[0]
    generator = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 64 - 6, (3, 20), generator=generator)
    cols = torch.randint(0, 64 - 6, (3, 20), generator=generator)
    ours = patch_descriptors(level, rows, cols)
    theirs = ref.descriptors(level.numpy(), rows.numpy(), cols.numpy())
    np.testing.assert_array_equal(ours.numpy(), theirs)
    # centres stay inside the image: rows ∈ [0, H-7] means centres ∈ [3, H-4]
    assert int(rows.max()) <= 64 - 7 and int(rows.min()) >= 0
    # streamed per-channel statistics (several batches) equal the reference normalisation of all descriptors
    sizes = pyramid_resolutions(64, 64)
    streamed = DescriptorSet(12, sizes, 4, 0, torch.device("cpu"))
    pyramid = laplacian_pyramid(torch.from_numpy(photos64[:12]), len(sizes))
    for start in range(0, 12, 5):
        streamed.add([band[start:start + 5] for band in pyramid], start)
    for index in range(len(sizes)):
        raw = streamed.descriptors[index].numpy()
        normalised = streamed.normalized_level(index, torch.device("cpu")).numpy()
        np.testing.assert_allclose(normalised, ref.normalize(raw), atol=2e-5)


def test_sliced_wasserstein_equals_reference_and_is_zero_on_itself():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 147, generator=generator)
    b = torch.randn(3000, 147, generator=generator) * 1.3 + 0.2
    directions = random_directions(147, 512, generator)
    assert torch.allclose(directions.norm(dim=0), torch.ones(512), atol=1e-6)
    ours = sliced_wasserstein(a, b, directions)
    theirs = ref.sliced_wasserstein(a.numpy(), b.numpy(), directions.numpy())
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert sliced_wasserstein(a, a, directions) == 0.0
    # chunking over directions must not change the value
    assert sliced_wasserstein(a, b, directions, chunk_bytes=4 * 3000 * 7) == pytest.approx(ours, rel=1e-6)


def _our_levels_with_fixed_patches(images_a, images_b, seed, batch_size):
    """Run the streaming accumulators and the metric loop, returning the positions and directions used."""
    sizes = pyramid_resolutions(*images_a.shape[2:])
    sets = [DescriptorSet(len(images_a), sizes, seed, 0, torch.device("cpu")),
            DescriptorSet(len(images_b), sizes, seed, 1, torch.device("cpu"))]
    for images, target in zip((images_a, images_b), sets):
        for start in range(0, len(images), batch_size):
            target.add(laplacian_pyramid(torch.from_numpy(images[start:start + batch_size]), len(sizes)), start)
    directions = [random_directions(147, 512, _generator(seed, 99, level)) for level in range(len(sizes))]
    cpu = torch.device("cpu")
    values = []
    for i in range(len(sizes)):  # the production path: raw descriptors, normalisation folded into directions
        (raw_a, stats_a), (raw_b, stats_b) = sets[0].raw_level(i, cpu), sets[1].raw_level(i, cpu)
        values.append(1e3 * sliced_wasserstein(raw_a, raw_b, directions[i], normalization=(stats_a, stats_b)))
        explicit = sliced_wasserstein(sets[0].normalized_level(i, cpu), sets[1].normalized_level(i, cpu),
                                      directions[i])
        assert 1e3 * explicit == pytest.approx(values[-1], rel=2e-6)
    return values, sets, directions


def test_swd_equals_reference_given_same_patches_and_directions(photos64):
    images_a, images_b = photos64[:12], photos64[12:24]
    blurred = nchw(np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1)))
                             for im in images_a.transpose(0, 2, 3, 1)]))
    ours, sets, directions = _our_levels_with_fixed_patches(blurred, images_b, seed=5, batch_size=5)
    positions = [[(s.rows[i].numpy(), s.cols[i].numpy()) for i in range(len(s.sizes))] for s in sets]
    theirs = ref.swd_levels(blurred, images_b, positions[0], positions[1], [d.numpy() for d in directions])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert all(value > 0 for value in ours)


def test_swd_against_itself_with_same_patches_is_zero(photos64):
    sizes = pyramid_resolutions(64, 64)
    one = DescriptorSet(12, sizes, 1, 0, torch.device("cpu"))
    two = DescriptorSet(12, sizes, 1, 0, torch.device("cpu"))
    pyramid = laplacian_pyramid(torch.from_numpy(photos64[:12]), len(sizes))
    one.add(pyramid, 0)
    two.add(pyramid, 0)
    directions = random_directions(147, 512, torch.Generator().manual_seed(0))
    for level in range(len(sizes)):
        cpu = torch.device("cpu")
        assert sliced_wasserstein(one.normalized_level(level, cpu), two.normalized_level(level, cpu),
                                  directions) == 0.0


def test_result_independent_of_batch_size_and_seeded(photos64):
    first = swd(photos64[:12], photos64[12:], num_images=12, seed=7, batch_size=12, progress=False)
    second = swd(photos64[:12], photos64[12:], num_images=12, seed=7, batch_size=5, progress=False)
    other = swd(photos64[:12], photos64[12:], num_images=12, seed=8, batch_size=5, progress=False)
    assert first.levels == pytest.approx(second.levels, rel=1e-5)
    assert first.avg == pytest.approx(np.mean(list(first.levels.values())))
    assert list(first.levels) == ["64", "32", "16"]
    assert other.levels != first.levels


def test_finest_level_grows_with_blur(real_photos):
    reals = nchw(real_photos[:48])
    sharp = nchw(real_photos[48:96])
    values = []
    for sigma in (0, 0.5, 1, 2, 4):
        if sigma:
            gen = nchw(np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma)))
                                 for im in sharp.transpose(0, 2, 3, 1)]))
        else:
            gen = sharp
        values.append(swd(gen, reals, num_images=48, seed=1, progress=False).levels["128"])
    assert all(b > a for a, b in itertools.pairwise(values)), values


def test_repeats_and_baseline(photos64):
    result = swd(photos64[:8], photos64[8:], num_images=8, seed=3, repeats=3, baseline=True, progress=False)
    assert result.repeats == 3 and result.std is not None
    assert set(result.std.levels) == set(result.levels)
    assert result.baseline is not None and result.baseline_num_images == 8
    payload = result.to_dict()
    assert payload["metric"] == "swd" and set(payload["baseline"]["levels"]) == {"64", "32", "16"}


def test_memory_estimate():
    # 16384 images at 1024²: 7 levels × 16384 × 128 × 147 × 4 bytes per set
    assert swd_memory_bytes(16384, 1024, 1024) == 2 * 7 * 16384 * 128 * 147 * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu(photos64):
    cpu = swd(photos64[:12], photos64[12:], num_images=12, seed=2, device="cpu", progress=False)
    gpu = swd(photos64[:12], photos64[12:], num_images=12, seed=2, device="cuda", progress=False)
    assert gpu.levels == pytest.approx(cpu.levels, rel=1e-4)
