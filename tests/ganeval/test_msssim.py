"""MS-SSIM against a slow NumPy/SciPy reference written from the spec, and against scikit-image's SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from gancore.errors import UserError
from ganeval.msssim import (
    MSSSIMDiversity,
    default_batch_size,
    gaussian_filter_valid,
    gaussian_window,
    ms_ssim,
    ms_ssim_scales,
    msssim_diversity,
    ssim_and_cs,
)
from toolkit_testing.images import write_images
from toolkit_testing.msssim_reference import ref_downsample, ref_fspecial, ref_msssim, ref_scales

TOLERANCE = 1e-5  # asked for; the measured disagreement is ~1e-13

# --------------------------------------------------------------------------------------------------------------
# Test images


def nchw(images_nhwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))


def resized(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS)) for im in images])


def blurred(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


def noisy(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pairs(real_photos):
    """uint8 NHWC (first, second) image sets: other photos, noisy, blurred and shifted versions."""
    photos = real_photos[:4]
    first = np.concatenate([photos, photos, photos, photos, photos])
    second = np.concatenate([real_photos[4:8], noisy(photos, 8), noisy(photos, 40, seed=1), blurred(photos, 1.5),
                             np.roll(photos, 3, axis=2)])
    return first, second


def ours(first_nhwc: np.ndarray, second_nhwc: np.ndarray, dtype=torch.float64, native: bool = True) -> np.ndarray:
    return ms_ssim(torch.from_numpy(nchw(first_nhwc)), torch.from_numpy(nchw(second_nhwc)), dtype=dtype,
                   native=native).numpy()


# --------------------------------------------------------------------------------------------------------------
# Agreement with the reference


def test_gaussian_window_is_fspecial():
    for size in (11, 8, 5, 4, 2, 1):
        sigma = size * 1.5 / 11
        taps = gaussian_window(size, sigma).numpy()
        assert taps.sum() == pytest.approx(1.0, abs=1e-15)
        np.testing.assert_allclose(np.outer(taps, taps), ref_fspecial(size, sigma), rtol=0, atol=1e-16)
    # Even sizes sit on half-integer coordinates: taps symmetric with two equal central values.
    taps = gaussian_window(8, 8 * 1.5 / 11).numpy()
    np.testing.assert_allclose(taps, taps[::-1], rtol=0, atol=0)
    assert taps[3] == taps[4] and taps[3] > taps[2]


@pytest.mark.parametrize("size", [11, 8])
def test_filtering_methods_agree(real_photos, size):
    images = torch.from_numpy(nchw(real_photos[:2, :40, :33])).double()
    by_matmul = gaussian_filter_valid(images, size, size * 1.5 / 11, method="matmul")
    assert by_matmul.shape == (2, 3, 40 - size + 1, 33 - size + 1)
    for method in ("conv", "shift", "opencv"):
        by_method = gaussian_filter_valid(images, size, size * 1.5 / 11, method=method)
        torch.testing.assert_close(by_method, by_matmul, rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="unknown filtering method"):
        gaussian_filter_valid(images, size, 1.5, method="fft")


@pytest.mark.parametrize("size", [256, 128, 64, 32, 16])
def test_ms_ssim_equals_reference(pairs, size):
    first, second = pairs
    if size != 128:
        first, second = resized(first, size), resized(second, size)
    expected = ref_msssim(first, second)
    for native in (True, False):  # the compiled CPU kernel (where a C compiler exists) and the PyTorch path
        got = ours(first, second, native=native)
        assert got.dtype == np.float64 and got.shape == (len(first),)
        assert np.abs(got - expected).max() < 1e-10  # float64 all the way
    fast = ours(first, second, dtype=torch.float32)  # the optional float32 path
    np.testing.assert_allclose(fast, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("size", [128, 16])
def test_per_scale_ssim_and_cs_equal_reference(pairs, size):
    first, second = pairs
    if size != 128:
        first, second = resized(first, size), resized(second, size)
    ssim, cs = ms_ssim_scales(nchw(first), nchw(second))
    ref_ssim, ref_cs = ref_scales(first, second)
    np.testing.assert_allclose(ssim.numpy(), ref_ssim, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cs.numpy(), ref_cs, rtol=0, atol=1e-10)


def test_odd_and_non_square_sizes_crop_like_reference(real_photos):
    # 45×37: the box downsampling drops the odd last row/column (45->22->11->5->2, 37->18->9->4->2).
    first, second = real_photos[:3, :45, :37], noisy(real_photos[:3, 5:50, 9:46], 20)
    np.testing.assert_allclose(ours(first, second), ref_msssim(first, second), rtol=0, atol=1e-10)


def test_float_numpy_and_uint8_torch_inputs_agree(pairs):
    first, second = pairs
    as_uint8 = ms_ssim(torch.from_numpy(nchw(first)), torch.from_numpy(nchw(second)))
    as_float = ms_ssim(nchw(first).astype(np.float32), nchw(second).astype(np.float64))
    torch.testing.assert_close(as_float, as_uint8, rtol=0, atol=1e-13)


def test_float_inputs_out_of_uint8_grid_equal_reference(real_photos):
    photos = real_photos[:3].astype(np.float64)
    other = photos + np.random.default_rng(3).normal(0, 15, photos.shape)  # unclipped, non-integer
    got = ms_ssim(torch.from_numpy(nchw(photos)), torch.from_numpy(nchw(other)), dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, ref_msssim(photos, other), rtol=0, atol=1e-10)


def test_single_scale_ssim_equals_scikit_image(pairs):
    """skimage filters with reflect padding but crops the 5-pixel border before averaging: that is exactly the
    'valid' region of an 11-tap window, so its SSIM equals ours at every scale whose window is 11×11."""
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    first, second = (image.astype(np.float64) for image in pairs)
    ssim, _ = ms_ssim_scales(nchw(first), nchw(second))
    for scale in range(4):  # 128, 64, 32, 16 (the 8×8 scale uses a shrunken even window skimage cannot do)
        theirs = [structural_similarity(x, y, win_size=11, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255, channel_axis=-1)
                  for x, y in zip(first, second)]
        np.testing.assert_allclose(ssim[:, scale].numpy(), theirs, rtol=0, atol=1e-10)
        first, second = ref_downsample(first), ref_downsample(second)


# --------------------------------------------------------------------------------------------------------------
# Properties


def test_identical_images_give_one(real_photos):
    images = torch.from_numpy(nchw(real_photos[:4]))
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        torch.testing.assert_close(ms_ssim(images, images, dtype=dtype), torch.ones(4, dtype=torch.float64),
                                   rtol=0, atol=tolerance)
        flat = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)  # no variance at all: 0/0 must not appear
        torch.testing.assert_close(ms_ssim(flat, flat, dtype=dtype), torch.ones(2, dtype=torch.float64),
                                   rtol=0, atol=tolerance)


def test_decreases_as_noise_increases(real_photos):
    photos = real_photos[:4]
    scores = np.stack([ours(photos, noisy(photos, sigma)) for sigma in (1, 4, 10, 25, 50, 100)])
    assert np.all(np.diff(scores, axis=0) < 0), scores
    assert np.all(scores[0] > 0.99) and np.all(scores[-1] < 0.7)


def test_symmetric(pairs):
    first, second = pairs
    np.testing.assert_allclose(ours(first, second), ours(second, first), rtol=0, atol=1e-14)


def test_anticorrelated_images_clip_to_zero_without_nan(real_photos):
    photos = real_photos[:4]
    inverted = 255 - photos
    _, cs = ms_ssim_scales(nchw(photos), nchw(inverted))
    assert (cs[:, :4] < 0).any(dim=1).all()  # negative bases that would make x**w NaN
    got = ours(photos, inverted)
    assert np.all(np.isfinite(got)) and np.all(got == 0.0)
    np.testing.assert_allclose(got, ref_msssim(photos, inverted), rtol=0, atol=1e-12)


def test_rejects_too_small_and_mismatched_images():
    with pytest.raises(UserError, match="too small"):
        ms_ssim(torch.zeros(1, 3, 15, 64), torch.zeros(1, 3, 15, 64))
    with pytest.raises(ValueError, match="shapes differ"):
        ms_ssim(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 16))
    with pytest.raises(ValueError):
        ssim_and_cs(torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    assert ms_ssim(torch.zeros(0, 3, 32, 32), torch.zeros(0, 3, 32, 32)).shape == (0,)  # no pairs, no error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_equals_cpu(pairs):
    first, second = (torch.from_numpy(nchw(images)) for images in pairs)
    on_gpu = ms_ssim(first.cuda(), second.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), ms_ssim(first, second), rtol=0, atol=1e-12)
    large = torch.from_numpy(nchw(resized(pairs[0][:2], 520))), torch.from_numpy(nchw(resized(pairs[1][:2], 520)))
    on_gpu = ms_ssim(large[0].cuda(), large[1].cuda())  # > 512 pixels: the grouped-convolution path
    torch.testing.assert_close(on_gpu.cpu(), ms_ssim(*large), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Streaming diversity


def test_streaming_accumulator_equals_direct_mean(real_photos):
    images = torch.from_numpy(nchw(resized(real_photos[:15], 32)))
    direct = ms_ssim(images[0:14:2], images[1:14:2])
    accumulator = MSSSIMDiversity()
    assert np.isnan(accumulator.value) and accumulator.num_pairs == 0
    start = 0
    for size in (3, 5, 1, 1, 4, 1):  # odd sizes: pairs (2,3), (8,9), (10,11) straddle batches
        accumulator.add(images[start:start + size])
        start += size
    assert start == 15 and accumulator.num_pairs == 7 and accumulator.pending
    assert accumulator.value == pytest.approx(direct.mean().item(), abs=1e-7)
    whole = MSSSIMDiversity()
    whole.add(images.numpy())
    assert whole.num_pairs == 7 and whole.value == pytest.approx(accumulator.value, abs=1e-7)


def test_msssim_diversity_on_a_folder(tmp_path, real_photos):
    images = resized(real_photos[:10], 32)
    write_images(tmp_path / "set", images)
    result = msssim_diversity(tmp_path / "set", num_pairs=5, seed=None, device="cpu", batch_size=3,
                              progress=False, num_workers=0)
    direct = ours(images[0::2], images[1::2]).mean()
    assert result.value == pytest.approx(direct, abs=1e-13)
    assert result.num_pairs == 5 and result.skipped == [] and result.device == "cpu"
    summary = result.to_dict()
    assert summary["metric"] == "msssim" and summary["num_pairs"] == 5 and summary["value"] == result.value
    assert summary["seed"] is None
    # A seeded random subset: other pairs, same kind of number.
    seeded = msssim_diversity(images.copy(), num_pairs=4, seed=7, device="cpu", progress=False)
    assert seeded.seed == 7 and seeded.num_pairs == 4 and 0.0 <= seeded.value <= 1.0


def test_msssim_diversity_with_too_few_images_raises(tmp_path, real_photos):
    write_images(tmp_path / "few", resized(real_photos[:5], 32))
    with pytest.raises(UserError, match="5 images.*3 pairs needs 6"):
        msssim_diversity(tmp_path / "few", num_pairs=3, progress=False)
    with pytest.raises(UserError):
        msssim_diversity(tmp_path / "few", num_pairs=0, progress=False)


def test_msssim_diversity_rejects_tiny_images(tmp_path):
    write_images(tmp_path / "tiny", np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="too small"):
        msssim_diversity(tmp_path / "tiny", num_pairs=2, progress=False)


def test_result_does_not_depend_on_chunking(pairs):
    first, second = (torch.from_numpy(nchw(images)) for images in pairs)
    whole = ms_ssim(first, second, chunk_pixels=first.numel(), native=False)  # chunks: the PyTorch path's
    for chunk_pixels in (1, 128 * 128 * 3, None):  # one pair per scale, 3 pairs at 128², the CPU default
        torch.testing.assert_close(ms_ssim(first, second, chunk_pixels=chunk_pixels, native=False), whole,
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("use_native", [True, False])  # the compiled kernel (where it builds), the PyTorch path
def test_cpu_workers_give_the_same_numbers_and_restore_thread_counts(pairs, use_native):
    cv2 = pytest.importorskip("cv2")
    first, second = (torch.from_numpy(nchw(images)) for images in pairs)
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(3)  # three workers, uneven shares of the 20 pairs (60 planes)
        shared = ms_ssim(first, second, chunk_pixels=128 * 128, native=use_native)
        assert torch.get_num_threads() == 3 and cv2.getNumThreads() == cv2_threads
        torch.set_num_threads(1)  # no workers: the calling thread, chunk after chunk
        alone = ms_ssim(first, second, chunk_pixels=128 * 128, native=use_native)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-15)
    np.testing.assert_allclose(alone.numpy(), ref_msssim(*pairs), rtol=0, atol=1e-10)


def test_default_cpu_batches_keep_every_worker_busy():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert default_batch_size(1024, 1024, torch.device("cpu")) == 8  # two pairs per worker, not one pair
        assert default_batch_size(128, 128, torch.device("cpu")) == 64  # ~1M pixels
    finally:
        torch.set_num_threads(threads)


def test_diversity_does_not_depend_on_batch_size(real_photos):
    values = [msssim_diversity(real_photos[:24], num_pairs=12, seed=3, batch_size=size, progress=False).value
              for size in (2, 5, 24)]
    assert values[1] == pytest.approx(values[0], rel=1e-5) and values[2] == pytest.approx(values[0], rel=1e-5)
