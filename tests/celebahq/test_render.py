"""Rendering: the Pillow conventions the fast path emulates, its building blocks against Pillow / numpy / scipy, and
the whole fast path against the PIL reference on real photographs (every branch: shrink, super-resolution, padding,
rotation, box downscale).

Measured (CPU: torch 2.13, Pillow 13; CUDA H100: torch 2.11, Pillow 12.3), fast vs reference, per case at
R = 128 … 1024: mean absolute difference 0.001–0.02 grey levels, 99th percentile 0–1, max 1–2 (limits: 0.5 and
4); the torch Lanczos / box resize vs Pillow: max 1 grey level, < 0.02 % of values differ.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image
from skimage import data

from celebahq.geometry import plan_crop, source_to_output
from celebahq.render import (
    gaussian_blur_torch,
    lanczos_upscale,
    pad_with_blur,
    pad_with_blur_torch,
    render_pil,
    render_torch,
    render_torch_tensor,
    resize_pillow_torch,
    resize_torch,
    shrink_and_crop,
    shrink_and_crop_tensor,
)
from celebahq.render.torch_backend import _banded_rows, _resample_last_dim, _round_clip

MAD_LIMIT = 0.5
P99_LIMIT = 4.0

# Hand-picked 5-point landmarks (left eye, right eye, nose, left and right mouth corners), checked by drawing them.
ASTRONAUT_LANDMARKS = np.array([(202, 101), (248, 103), (222, 127), (206, 143), (242, 144)], dtype=np.float64)
GRACE_LANDMARKS = np.array([(223, 190), (304, 187), (262, 240), (232, 278), (295, 276)], dtype=np.float64)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def rotate_about(image: np.ndarray, landmarks: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """PIL-rotate an image counter-clockwise by `angle` degrees about its centre; landmarks follow."""
    height, width = image.shape[:2]
    centre = np.array([width / 2, height / 2])
    rotated = np.asarray(Image.fromarray(image).rotate(angle, resample=Image.Resampling.BICUBIC))
    theta = math.radians(angle)
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    return rotated, (landmarks + 0.5 - centre) @ rot.T + centre - 0.5


def difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99)), int(d.max())


# --------------------------------------------------------------------------------------------------------------
# The Pillow conventions the fast path relies on (fails loudly if a future Pillow changes them)


def test_pillow_quad_bilinear_conventions():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    identity = np.asarray(pil.transform((30, 20), Image.Transform.QUAD, (0, 0, 0, 20, 30, 20, 30, 0),
                                        Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(identity, image)  # output pixel centres at i + 0.5, source centres at k + 0.5
    shifted = np.asarray(pil.transform((30, 20), Image.Transform.QUAD, (0.25, 0, 0.25, 20, 30.25, 20, 30.25, 0),
                                       Image.Resampling.BILINEAR)).astype(np.float64)
    exact = image[:, :-1] * 0.75 + image[:, 1:] * 0.25
    np.testing.assert_array_equal(shifted[:, :-1], np.floor(exact + 1e-9))  # truncated, not rounded
    np.testing.assert_array_equal(shifted[:, -1], image[:, -1])  # clamped to the edge pixel inside the image
    outside = np.asarray(pil.transform((30, 20), Image.Transform.QUAD, (-5, 0, -5, 20, 25, 20, 25, 0),
                                       Image.Resampling.BILINEAR))
    assert not outside[:, :5].any()  # black outside [0, W)
    np.testing.assert_array_equal(outside[:, 5:], image[:, :25])


# --------------------------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize("factor, up, filter_name", [
    (4, False, "lanczos"), (4, False, "box"), (2, True, "lanczos"), (3, True, "lanczos"), (8, True, "lanczos"),
])
def test_resize_torch_matches_pillow(astronaut, real_photos, factor, up, filter_name):
    sources = [astronaut, real_photos[5]] if not up else [astronaut[90:150, 190:260], real_photos[7][:50, :41]]
    pil_filter = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}[filter_name]
    for source in sources:
        height, width = source.shape[:2]
        size = (width * factor, height * factor) if up else (width // factor, height // factor)
        expected = np.asarray(Image.fromarray(source).resize(size, pil_filter))
        x = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1).float()
        got = resize_torch(x, factor, up=up, filter_name=filter_name).permute(1, 2, 0).to(torch.uint8).numpy()
        assert got.shape == expected.shape
        d = np.abs(got.astype(np.int16) - expected)
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, (d.max(), (d > 0).mean())
        # the matrix form a GPU uses for per-photo sizes (resize_torch(varied_shapes=True) off the CPU)
        dense = _round_clip(_resample_last_dim(x, factor, up, filter_name, dense=True))
        dense = _round_clip(_resample_last_dim(dense.transpose(-1, -2), factor, up, filter_name, dense=True))
        assert np.abs(dense.transpose(-1, -2).permute(1, 2, 0).numpy() - got).max() <= 1


@pytest.mark.parametrize("n, phases, taps, first, step, n_out", [
    (1000, 1, 81, 0, 1, 920),     # the padding blur: 'valid' correlation, blocks of 256 with a ragged last one
    (300, 4, 8, -3, 1, 1200),     # Lanczos up 4: four phases
    (1001, 1, 24, -10, 4, 250),   # Lanczos down 4: stride 4
    (5, 2, 7, -3, 1, 10),         # a row shorter than the taps: one block, inputs outside the row are zeros
])
def test_banded_rows_sum_each_outputs_taps(n, phases, taps, first, step, n_out):
    """_banded_rows (blocks of the row times one banded matrix) == the sums written out tap by tap."""
    generator = torch.Generator().manual_seed(n)
    rows = torch.rand(3, n, dtype=torch.float64, generator=generator)
    weight = torch.rand(phases, taps, dtype=torch.float64, generator=generator)
    expected = torch.zeros(3, n_out, dtype=torch.float64)
    for o in range(n_out):
        i, p = divmod(o, phases)
        for k in range(taps):
            if 0 <= step * i + first + k < n:
                expected[:, o] += rows[:, step * i + first + k] * weight[p, k]
    torch.testing.assert_close(_banded_rows(rows, weight, first, step, n_out), expected, rtol=1e-12, atol=1e-12)


def slow_pillow_pass(image: np.ndarray, n_out: int) -> np.ndarray:
    """Independent reference, loop by loop from upstream Pillow's libImaging/Resample.c (precompute_coeffs,
    normalize_coeffs_8bpc, ImagingResampleHorizontal_8bpc): one 8-bit Lanczos pass along axis 1 of uint8 [H, W, C]."""
    n_in = image.shape[1]
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    out = np.empty((image.shape[0], n_out, image.shape[2]), np.uint8)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        k = []
        for x in range(xmax):
            t = (x + xmin - center + 0.5) / filterscale
            w = 0.0
            if -3.0 <= t < 3.0:
                w = 1.0 if t == 0 else (math.sin(math.pi * t) / (math.pi * t)) * (
                    math.sin(math.pi * t / 3) / (math.pi * t / 3))
            k.append(w)
        total = sum(k)
        k = [w / total for w in k] if total != 0 else k
        fixed = [int(-0.5 + w * (1 << 22)) if w < 0 else int(0.5 + w * (1 << 22)) for w in k]
        sums = (1 << 21) + sum(int(c) * image[:, xmin + x].astype(np.int64) for x, c in enumerate(fixed))
        out[:, xx] = np.clip(sums >> 22, 0, 255)
    return out


def slow_pillow_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upstream Pillow's `resize(size, LANCZOS)`: the horizontal pass, then the vertical one."""
    if size[0] != image.shape[1]:
        image = slow_pillow_pass(image, size[0])
    if size[1] != image.shape[0]:
        image = slow_pillow_pass(image.transpose(1, 0, 2), size[1]).transpose(1, 0, 2)
    return image


def as_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


def as_hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).to(torch.uint8).numpy()


def test_resize_pillow_torch_is_upstream_pillow_bit_for_bit():
    generator = np.random.default_rng(7)
    for _ in range(12):
        height, width = generator.integers(6, 90, size=2)
        image = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        size = tuple(int(v) for v in generator.integers(1, 2 * np.array([width, height]) + 1))
        np.testing.assert_array_equal(as_hwc(resize_pillow_torch(as_chw(image), size)),
                                      slow_pillow_resize(image, size))


def test_resize_pillow_torch_matches_the_installed_pillow(astronaut, grace):
    """Each pass alone is Pillow's, bit for bit; a two-axis shrink too wherever this Pillow runs the horizontal pass
    first (upstream's order; the CI wheel runs the vertical one first for some tall images: a few grey levels)."""
    for image in (astronaut, grace, astronaut[:, 100:300]):
        height, width = image.shape[:2]
        for shrink in (2, 3, 5):
            sizes = [(round(width / shrink), height), (width, round(height / shrink)),
                     (round(width / shrink), round(height / shrink))]
            for size in sizes:
                expected = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.LANCZOS))
                got = as_hwc(resize_pillow_torch(as_chw(image), size))
                d = np.abs(got.astype(np.int16) - expected)
                if height <= width * 1.5 or size[1] == height or size[0] == width:
                    assert d.max() == 0, (image.shape, size)
                else:
                    assert d.mean() < 0.3 and d.max() <= 16, (image.shape, size, d.mean(), d.max())


def test_a_photo_tensor_renders_like_its_array(astronaut, grace):
    """The device path of a cleaned-up photo (whole photo as a tensor: shrink and crop in torch) renders the pixels
    of the host path (shrink with PIL, crop, then the tensor render), shrinking or not."""
    big = np.asarray(Image.fromarray(grace).resize((grace.shape[1] * 3, grace.shape[0] * 3)))
    cases = [(big, GRACE_LANDMARKS * 3 + 1.0), (astronaut[40:, 150:], ASTRONAUT_LANDMARKS - [150, 40]),
             (astronaut, ASTRONAUT_LANDMARKS)]
    for image, landmarks in cases:
        plan = plan_crop(landmarks, (image.shape[1], image.shape[0]), 64)
        cropped, _ = shrink_and_crop_tensor(as_chw(image), plan)
        assert tuple(cropped.shape[1:]) == plan.cropped_size[::-1]
        from_array = render_torch([image], [plan], 64, device="cpu")[0]
        from_tensor = render_torch_tensor([as_chw(image).to(torch.uint8)], [plan], 64, device="cpu")
        np.testing.assert_array_equal(as_hwc(from_tensor[0]), from_array)
    assert plan_crop(cases[0][1], big.shape[1::-1], 64).shrink > 1  # the shrink branch ran


def test_lanczos_upscale_is_pillow(real_photos):
    out = lanczos_upscale(real_photos[0][:20, :30], 4)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8


def test_gaussian_blur_torch_matches_scipy(real_photos):
    image = real_photos[3][:40, :50].astype(np.float32)
    for sigma in (0.7, 3.0, 17.0):  # 17: the window is longer than the image (periodic mirror)
        expected = scipy.ndimage.gaussian_filter(image, [sigma, sigma, 0])
        for use_opencv in (True, False):  # the CPU's OpenCV filter; the FFT sums every other device uses
            got = gaussian_blur_torch(torch.from_numpy(image).permute(2, 0, 1), sigma, use_opencv)
            np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), expected, atol=1e-3)
    big = real_photos[0][:300, :280].astype(np.float32)  # ~120 taps over rows of ~400: the blur the render does
    expected = scipy.ndimage.gaussian_filter(big, [15.0, 15.0, 0])
    got = gaussian_blur_torch(torch.from_numpy(big).permute(2, 0, 1), 15.0, use_opencv=False)
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), expected, atol=1e-3)


@pytest.mark.parametrize("pad", [(5, 7, 9, 3), (60, 0, 100, 45), (0, 0, 0, 0), (30, 30, 30, 30)])
def test_pad_with_blur_torch_matches_numpy(real_photos, pad):
    image = real_photos[10][:48, :64].astype(np.float32)  # pads up to twice the image: reflected repeatedly
    expected = pad_with_blur(image, pad, 4.5)
    got = pad_with_blur_torch(torch.from_numpy(image).permute(2, 0, 1), pad, 4.5).permute(1, 2, 0).numpy()
    assert got.shape == expected.shape == (48 + pad[1] + pad[3], 64 + pad[0] + pad[2], 3)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_pad_with_blur_properties(real_photos):
    image = real_photos[20].astype(np.float32)
    pad = (40, 40, 40, 40)
    out = pad_with_blur(image, pad, 3.0)
    median = np.median(out, axis=(0, 1))
    np.testing.assert_allclose(out[0, 0], median, atol=1e-4)  # flat median colour at the outer edge
    np.testing.assert_allclose(out[-1, -1], median, atol=1e-4)
    # deeper than pad/3 inside the photo: untouched
    inner = out[40 + 14:-40 - 14, 40 + 14:-40 - 14]
    np.testing.assert_array_equal(inner, image[14:-14, 14:-14])
    # a side without padding is not part of the mask (no division by zero) and a zero pad is a copy
    with np.errstate(all="raise"):
        one_sided = pad_with_blur(image, (0, 0, 30, 0), 3.0)
    assert one_sided.shape == (128, 158, 3) and np.isfinite(one_sided).all()
    np.testing.assert_array_equal(one_sided[:, :80], image[:, :80])
    np.testing.assert_array_equal(pad_with_blur(image, (0, 0, 0, 0), 3.0), image)
    with pytest.raises(ValueError, match="non-negative"):
        pad_with_blur(image, (-1, 0, 0, 0), 3.0)


# --------------------------------------------------------------------------------------------------------------
# The fast path against the reference


def test_render_torch_matches_pil_on_photographs(astronaut, grace, real_photos):
    rotated, rotated_lm = rotate_about(astronaut, ASTRONAUT_LANDMARKS, 30.0)
    big = np.asarray(Image.fromarray(astronaut).resize((512 * 6, 512 * 6), Image.Resampling.LANCZOS))
    small = np.asarray(Image.fromarray(astronaut).resize((80, 80), Image.Resampling.LANCZOS))
    cases = {
        "astronaut": (astronaut, ASTRONAUT_LANDMARKS, 128),
        "grace": (grace, GRACE_LANDMARKS, 128),
        "rotated": (rotated, rotated_lm, 128),
        "padded": (astronaut[60:300, 190:420], ASTRONAUT_LANDMARKS - [190, 60], 128),
        "shrink": (big, (ASTRONAUT_LANDMARKS + 0.5) * 6 - 0.5, 128),
        "superres": (small, (ASTRONAUT_LANDMARKS + 0.5) * 80 / 512 - 0.5, 128),
    }
    plans = {name: plan_crop(lm, img.shape[1::-1], r) for name, (img, lm, r) in cases.items()}
    assert plans["shrink"].shrink > 1 and plans["superres"].superres > 1 and plans["padded"].padded
    assert not plans["astronaut"].padded and plans["astronaut"].shrink == 1 and plans["astronaut"].superres == 1
    # real 128×128 crops with faces of varied size and rotation: padding and super-resolution on real texture
    rng = np.random.default_rng(7)
    for index in (0, 1, 9, 14, 30, 61):
        lm = np.array([(-12, 0), (12, 0), (0, 14), (-9, 27), (9, 27)], dtype=np.float64)
        theta = rng.uniform(-0.6, 0.6)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        lm = lm @ rot.T * rng.uniform(0.4, 1.6) + rng.uniform(30, 98, size=2)
        cases[f"real{index}"] = (real_photos[index], lm, 128)
        plans[f"real{index}"] = plan_crop(lm, (128, 128), 128)
    assert any(p.superres > 1 for p in plans.values() if p.padded)

    names = list(cases)
    fast = render_torch([cases[n][0] for n in names], [plans[n] for n in names], device="cpu")
    for name, got in zip(names, fast):
        expected = render_pil(cases[name][0], plans[name])
        assert got.shape == expected.shape == (128, 128, 3) and got.dtype == np.uint8
        mad, p99, _ = difference(got, expected)
        assert mad <= MAD_LIMIT and p99 <= P99_LIMIT, (name, mad, p99)
        assert mad <= 0.05, (name, mad)  # measured ≤ 0.01: a regression guard well inside the limit


def test_render_torch_box_and_r256(astronaut, grace):
    images = [astronaut, grace[150:, 180:]]
    landmarks = [ASTRONAUT_LANDMARKS, GRACE_LANDMARKS - [180, 150]]
    fast = render_torch(images, landmarks, resolution=256, downscale="box", device="cpu")
    for image, lm, got in zip(images, landmarks, fast):
        expected = render_pil(image, lm, resolution=256, downscale="box")
        mad, p99, _ = difference(got, expected)
        assert got.shape == (256, 256, 3) and mad <= MAD_LIMIT and p99 <= P99_LIMIT
    lanczos = render_pil(astronaut, ASTRONAUT_LANDMARKS, resolution=256)
    assert 0 < difference(lanczos, fast[0])[0] < 3  # the two downscale filters differ, but not by much


def test_cropping_ahead_renders_the_same_pixels(astronaut, grace):
    """What a decode worker hands over (cropped pixels + plan.after_crop()) renders exactly like the whole photo."""
    big = np.asarray(Image.fromarray(grace).resize((grace.shape[1] * 3, grace.shape[0] * 3)))
    cases = [(big, GRACE_LANDMARKS * 3 + 1.0), (astronaut[40:, 150:], ASTRONAUT_LANDMARKS - [150, 40])]
    for image, landmarks in cases:
        plan = plan_crop(landmarks, (image.shape[1], image.shape[0]), 128)
        cropped, cropped_plan = shrink_and_crop(image, plan)
        assert cropped.shape[:2] == plan.cropped_size[::-1] and cropped_plan.shrink == 1
        np.testing.assert_array_equal(render_pil(cropped, cropped_plan, 128), render_pil(image, plan, 128))
        np.testing.assert_array_equal(render_torch([cropped], [cropped_plan], 128, device="cpu")[0],
                                      render_torch([image], [plan], 128, device="cpu")[0])
    assert plan_crop(cases[0][1], big.shape[1::-1], 128).shrink > 1  # the shrink branch ran
    assert plan_crop(cases[1][1], cases[1][0].shape[1::-1], 128).padded  # and the padding branch


def test_custom_upscale_stage(astronaut):
    calls = []

    def nearest(image: np.ndarray, factor: int) -> np.ndarray:
        calls.append((image.shape, factor))
        return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)

    small = np.asarray(Image.fromarray(astronaut).resize((96, 96), Image.Resampling.LANCZOS))
    lm = (ASTRONAUT_LANDMARKS + 0.5) * 96 / 512 - 0.5
    plan = plan_crop(lm, (96, 96), 128)
    assert plan.superres > 1
    reference = render_pil(small, plan, upscale=nearest)
    fast = render_torch([small], [plan], upscale=nearest, device="cpu")[0]
    assert len(calls) == 2 and calls[0][1] == plan.superres
    mad, p99, _ = difference(reference, fast)
    assert mad <= MAD_LIMIT and p99 <= P99_LIMIT
    assert difference(reference, render_pil(small, plan))[0] > 0.1  # the stage really changed the result

    def wrong_size(image, factor):
        return image

    with pytest.raises(ValueError, match="upscale must return"):
        render_pil(small, plan, upscale=wrong_size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_torch_cuda_matches_pil(astronaut, grace):
    images = [astronaut, grace, astronaut[60:300, 190:420]]
    landmarks = [ASTRONAUT_LANDMARKS, GRACE_LANDMARKS, ASTRONAUT_LANDMARKS - [190, 60]]
    for resolution in (256, 1024):
        fast = render_torch(images, landmarks, resolution=resolution, device="cuda")
        for image, lm, got in zip(images, landmarks, fast):
            mad, p99, _ = difference(got, render_pil(image, lm, resolution=resolution))
            assert mad <= MAD_LIMIT and p99 <= P99_LIMIT, (resolution, mad, p99)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_device_shrink_is_the_same_on_cuda(astronaut, grace):
    """resize_pillow_torch is exact arithmetic (float64 sums of integers): CUDA equals the CPU bit for bit, and a
    photo tensor on CUDA renders like on the CPU to rounding."""
    for image, size in ((astronaut, (171, 171)), (grace, (170, 200)), (astronaut[:, 100:300], (40, 171))):
        np.testing.assert_array_equal(as_hwc(resize_pillow_torch(as_chw(image).cuda(), size).cpu()),
                                      as_hwc(resize_pillow_torch(as_chw(image), size)))
    big = np.asarray(Image.fromarray(grace).resize((grace.shape[1] * 3, grace.shape[0] * 3)))
    plan = plan_crop(GRACE_LANDMARKS * 3 + 1.0, (big.shape[1], big.shape[0]), 64)
    assert plan.shrink > 1
    on_cuda = render_torch_tensor([as_chw(big).cuda()], [plan], 64, device="cuda")[0].cpu()
    mad, p99, _ = difference(as_hwc(on_cuda), render_pil(big, plan, 64))
    assert mad <= MAD_LIMIT and p99 <= P99_LIMIT, (mad, p99)


# --------------------------------------------------------------------------------------------------------------
# Geometry seen in pixels: rendered landmarks land where the plan says, upright


def blob_image(size: tuple[int, int], points: np.ndarray, sigma: float) -> np.ndarray:
    """Grey image with a red blob at points[0] and a blue blob at points[1] (pixel indices)."""
    width, height = size
    y, x = np.mgrid[:height, :width].astype(np.float64)
    image = np.full((height, width, 3), 60.0)
    for point, channel in zip(points[:2], (0, 2)):
        image[..., channel] += 190.0 * np.exp(-((x - point[0]) ** 2 + (y - point[1]) ** 2) / (2 * sigma ** 2))
    return np.uint8(np.clip(np.round(image), 0, 255))


def centroid(channel: np.ndarray, near: np.ndarray, radius: int = 12) -> np.ndarray:
    """Centroid of the bright blob within `radius` px of `near` (mirrored copies in the padding lie farther)."""
    y, x = np.mgrid[:channel.shape[0], :channel.shape[1]]
    weight = np.clip(channel.astype(np.float64) - 60.0, 0, None)
    weight[np.hypot(x - near[0], y - near[1]) > radius] = 0
    weight[weight < weight.max() * 0.2] = 0
    return np.array([(weight * x).sum(), (weight * y).sum()]) / weight.sum()


def test_rendered_eyes_land_at_the_same_pixel_upright():
    face = np.array([(-20.0, 0.0), (20.0, 0.0), (0.0, 22.0), (-15.0, 45.0), (15.0, 45.0)])
    variants = [(0.0, 1.0, (150, 150), (300, 300)), (35.0, 1.0, (160, 140), (320, 300)),
                (-120.0, 0.3, (45, 40), (90, 80)),   # small face: super-resolution
                (10.0, 4.5, (650, 620), (1300, 1250)),  # large face: shrink
                (15.0, 1.0, (40, 150), (300, 300))]  # at the border: padding
    images, plans, expected = [], [], []
    for angle, scale, shift, size in variants:
        theta = math.radians(angle)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        lm = face @ rot.T * scale + shift
        images.append(blob_image(size, lm, 4.0 * scale))
        plans.append(plan_crop(lm, size, 128))
        expected.append(source_to_output(plans[-1], lm[:2]))
    assert plans[2].superres > 1 and plans[3].shrink > 1 and plans[4].padded
    outputs = render_torch(images, plans, device="cpu")
    Image.fromarray(np.concatenate(outputs, axis=1)).save(Path("/tmp") / "celebahq_blob_render.png")
    midpoints = []
    for out, want in zip(outputs, expected):
        left, right = centroid(out[..., 0], want[0]), centroid(out[..., 2], want[1])
        np.testing.assert_allclose(left, want[0], atol=0.5)  # the plan's mapping is what the pixels do
        np.testing.assert_allclose(right, want[1], atol=0.5)
        assert abs(left[1] - right[1]) < 0.5 and right[0] - left[0] > 30  # upright, left eye on the left
        midpoints.append((left + right) / 2)
    target = np.array([63.5, 63.5 - 0.1 * 45 * 128 / (2 * 81)])
    assert np.hypot(*(np.array(midpoints) - target).T).max() <= 1.0


# --------------------------------------------------------------------------------------------------------------
# Bad input


def test_render_rejects_bad_input(astronaut):
    with pytest.raises(ValueError, match="uint8 HWC RGB"):
        render_pil(astronaut.astype(np.float32), ASTRONAUT_LANDMARKS)
    with pytest.raises(ValueError, match="uint8 HWC RGB"):
        render_torch([astronaut[..., 0]], [ASTRONAUT_LANDMARKS], device="cpu")
    with pytest.raises(ValueError, match="downscale"):
        render_pil(astronaut, ASTRONAUT_LANDMARKS, downscale="bicubic")
    with pytest.raises(ValueError, match="2 images but 1"):
        render_torch([astronaut, astronaut], [ASTRONAUT_LANDMARKS], device="cpu")
    with pytest.raises(ValueError, match="plan is for"):
        render_pil(astronaut[:300], plan_crop(ASTRONAUT_LANDMARKS, (512, 512), 128))
    with pytest.raises(ValueError, match="eyes coincide"):
        render_torch([astronaut], [np.full((5, 2), 100.0)], device="cpu")
    assert render_torch([], [], device="cpu") == []


def test_the_device_sr_stage_matches_the_host_stage():
    """`--sr net` on the torch backend runs on the face tensor (no host round trip): the 4× network gives the
    host stage's exact pixels, the 2×, 8× and 16× Lanczos around it agree to rounding (16×: the tiny faces of
    a real build, found on the H100)."""
    from celebahq.restore.infer import default_device, net_upscale, net_upscale_tensor, shipped_weights

    if not shipped_weights("sr").is_file():
        pytest.skip("no shipped SR weights in this checkout")
    rng = np.random.default_rng(0)
    face = cv2.GaussianBlur(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), (3, 3), 0)
    x = torch.from_numpy(face).permute(2, 0, 1).float().to(default_device())  # where the host stage runs its net
    for factor, limit in ((1, 0), (4, 0), (2, 1), (8, 1), (16, 1)):
        host = net_upscale(face, factor).astype(np.int16)
        device = net_upscale_tensor(x, factor).permute(1, 2, 0).cpu().numpy().astype(np.int16)
        assert device.shape == host.shape and np.abs(device - host).max() <= limit, factor
