"""The Pillow 3.1.1 / numpy 1.x emulation of `celebahq.legacy_pillow`.

Three references: md5s recorded from Pillow 3.1.1 itself (built from its PyPI sdist under Python 3.6 with numpy
1.19.5 and scipy 1.5.4, 2026-11-26; `_PILLOW311_SCRIPT` is the recording script), slow per-pixel
transliterations of the C code written here independently of the vectorised module, and the original
`process_func` arithmetic on hand-worked landmarks. With `PILLOW311_PYTHON=/path/to/python3.6` (that environment)
the tests also run Pillow 3.1.1 live on fresh cases. The md5 checks run through both paths, the compiled kernels
(celebahq/_native/legacy_pillow.c) and numpy, and further cases compare the two byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

import celebahq.legacy_pillow as legacy_module
import gancore.native
from celebahq.legacy_pillow import (
    gaussian_half_kernel,
    kernel_status,
    legacy_plan,
    pad_blur_legacy,
    quad_data,
    render_legacy,
    resample_coefficients,
    resize_antialias,
    transform_quad_bilinear,
)

F32 = np.float32
KERNEL_EXPECTED = gancore.native.find_compiler() is not None and not gancore.native.turned_off()
# both paths: the compiled kernels (where they build: test_the_kernel_builds_here says whether they should) and numpy
BOTH_PATHS = pytest.mark.parametrize("native", [
    pytest.param(True, id="compiled", marks=pytest.mark.skipif(not KERNEL_EXPECTED, reason="no compiled kernel")),
    pytest.param(False, id="numpy")])


def _md5(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


def _random_image(height=29, width=37, seed=0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


QUAD = np.float32([[3.2, -2.7], [1.1, 30.3], [35.9, 27.4], [36.6, 0.4]])

# Recorded with Pillow 3.1.1: Image.fromarray(_random_image()).resize(size, Image.ANTIALIAS) and
# .transform((64, 48), Image.QUAD, (QUAD + 0.5).flatten(), Image.BILINEAR), md5 of np.asarray(result).
PILLOW311_RESIZE = {
    (13, 11): "a07c59e3a41283d2f2b6ba8cc36a0118",
    (80, 61): "7daaf2d32f32a0b3e879ceb533951ed0",
    (148, 87): "872f4462b7d99f95dc9a1719d88d7feb",
    (37, 10): "27be565efb729d0e7f54b00b4de4d103",
    (5, 29): "622eaf22db79fc7aea92ff70d34f52d1",
}
PILLOW311_TRANSFORM = "36d54d7bc04e4578e6f8e7462c3d96fa"

_PILLOW311_SCRIPT = """
import hashlib, json, sys, numpy as np, PIL, PIL.Image
assert PIL.PILLOW_VERSION == '3.1.1'
case = json.loads(sys.argv[1])
a = np.random.RandomState(case['seed']).randint(0, 256, (case['h'], case['w'], 3)).astype(np.uint8)
im = PIL.Image.fromarray(a)
if case['op'] == 'resize':
    out = im.resize(tuple(case['size']), PIL.Image.ANTIALIAS)
else:
    q = np.float32(case['quad'])
    out = im.transform(tuple(case['size']), PIL.Image.QUAD, (q + 0.5).flatten(), PIL.Image.BILINEAR)
print(hashlib.md5(np.asarray(out).tobytes()).hexdigest())
"""


# --------------------------------------------------------------------------------------------------------------
# Slow references: the C code, pixel by pixel, with float32 scalars


def slow_resize_pass(image: np.ndarray, out_width: int) -> np.ndarray:
    """Resample.c ImagingResampleHorizontal for one uint8 [H, W, C] image, one output value at a time."""
    height, width, channels = image.shape
    scale = F32(width) / F32(out_width)
    filterscale = max(scale, F32(1.0))
    support = F32(3.0) * filterscale
    ss_inv = F32(1.0 / float(filterscale))

    def sinc(x):
        if x == 0.0:
            return F32(1.0)
        x = F32(float(x) * math.pi)
        return F32(math.sin(float(x)) / float(x))

    def lanczos(x):
        return sinc(x) * sinc(x / F32(3)) if -3.0 <= x < 3.0 else F32(0.0)

    out = np.zeros((height, out_width, channels), dtype=np.uint8)
    for xx in range(out_width):
        center = F32((xx + 0.5) * float(scale))
        xmin = max(math.floor(center - support), 0)
        xmax = min(math.ceil(center + support), width)
        k = [lanczos(F32((float(F32(x) - center) + 0.5) * float(ss_inv))) * ss_inv for x in range(xmin, xmax)]
        total = F32(0.0)
        for w in k:
            total = total + w
        k = [w / total for w in k]
        for yy in range(height):
            for c in range(channels):
                acc = F32(0.5)
                for x in range(xmin, xmax):
                    acc = acc + F32(image[yy, x, c]) * k[x - xmin]
                out[yy, xx, c] = min(max(int(acc), 0), 255)
    return out


def slow_resize(image: np.ndarray, size) -> np.ndarray:
    first = slow_resize_pass(image, size[0])
    return slow_resize_pass(first.transpose(1, 0, 2), size[1]).transpose(1, 0, 2)


def slow_transform(image: np.ndarray, size, a) -> np.ndarray:
    """Geometry.c ImagingTransform + quad_transform + bilinear_filter32RGB, pixel by pixel, in double."""
    height, width, channels = image.shape
    out = np.zeros((size[1], size[0], channels), dtype=np.uint8)
    for y in range(size[1]):
        for x in range(size[0]):
            xin = a[0] + a[1] * x + a[2] * y + a[3] * x * y
            yin = a[4] + a[5] * x + a[6] * y + a[7] * x * y
            if xin < 0.0 or xin >= width or yin < 0.0 or yin >= height:
                continue
            xin, yin = xin - 0.5, yin - 0.5
            xi, yi = math.floor(xin), math.floor(yin)
            dx, dy = xin - xi, yin - yi
            x0, x1 = min(max(xi, 0), width - 1), min(max(xi + 1, 0), width - 1)
            row = image[min(max(yi, 0), height - 1)]
            for c in range(channels):
                v1 = int(row[x0, c]) + (int(row[x1, c]) - int(row[x0, c])) * dx
                if 0 <= yi + 1 < height:
                    nxt = image[yi + 1]
                    v2 = int(nxt[x0, c]) + (int(nxt[x1, c]) - int(nxt[x0, c])) * dx
                else:
                    v2 = v1
                out[y, x, c] = int(v1 + (v2 - v1) * dy)
    return out


# --------------------------------------------------------------------------------------------------------------
# ANTIALIAS resize


@BOTH_PATHS
@pytest.mark.parametrize("size", list(PILLOW311_RESIZE))
def test_resize_matches_pillow_311(size, native):
    assert _md5(resize_antialias(_random_image(), size, native)) == PILLOW311_RESIZE[size]


@pytest.mark.parametrize("size", [(13, 11), (80, 61), (37, 10)])
def test_resize_matches_the_slow_transliteration(size):
    image = _random_image()
    assert np.array_equal(resize_antialias(image, size), slow_resize(image, size))


def test_integer_downscale_uses_the_same_arithmetic_at_the_edges():
    """The 4:1 downscale runs interior outputs as strided slices, the edges by gathering: both must agree with the
    slow code (a 96 -> 24 resize has 3 edge outputs on each side)."""
    image = _random_image(8, 96, seed=3)
    assert np.array_equal(resize_antialias(image, (24, 2)), slow_resize(image, (24, 2)))


def test_resize_weights():
    first, weights = resample_coefficients(2, 1)  # scale 2: centre 1.0, both pixels at distance 0.5: ½ each
    assert first.tolist() == [0] and weights[0, :2].tolist() == [0.5, 0.5] and not weights[0, 2:].any()
    assert resize_antialias(np.array([[[10, 0, 255], [21, 255, 255]]], np.uint8), (1, 1)).tolist() == [[[16, 128, 255]]]
    first, weights = resample_coefficients(4096, 1024)
    assert weights.shape == (1024, 25) and first[3] == 2 and first[500] == 1990
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)


def test_resize_differs_from_current_pillow_by_rounding_only():
    image = _random_image(64, 80, seed=5)
    ours = resize_antialias(image, (23, 17)).astype(int)
    now = np.asarray(Image.fromarray(image).resize((23, 17), Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(ours - now).max() <= 1


# --------------------------------------------------------------------------------------------------------------
# QUAD + BILINEAR transform


@BOTH_PATHS
def test_transform_matches_pillow_311_and_the_slow_transliteration(native):
    image = _random_image()
    data = quad_data(QUAD + F32(0.5), 64, 48)
    out = transform_quad_bilinear(image, (64, 48), data, rows_per_block=7, native=native)
    assert _md5(out) == PILLOW311_TRANSFORM
    assert np.array_equal(out, slow_transform(image, (64, 48), data))
    assert out[0, 0].tolist() == [0, 0, 0]  # above the image: the fill


def test_quad_data_is_float32_differences_times_doubles():
    corners = np.float32([[0.1, 0.2], [0.3, 100.7], [100.9, 100.3], [100.2, 0.6]])
    data = quad_data(corners, 4096, 4096)
    assert data[0] == float(F32(0.1)) and data[4] == float(F32(0.2))
    assert data[1] == float(F32(100.2) - F32(0.1)) / 4096  # float32 difference, then the double product
    assert data[3] == float(F32(100.9) - F32(0.3) - F32(100.2) + F32(0.1)) / 4096 / 4096


def test_transform_hand_worked_pixel():
    """Output (1, 0) of an axis-aligned quad starting at (0.5, 0.5) with unit steps samples xin = 1.5, yin = 0.5:
    after the -0.5 shift, exactly pixel (1, 0) (Pillow ≥ 4 would sample half a pixel further)."""
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    out = transform_quad_bilinear(image, (3, 2), (0.5, 1.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0))
    assert np.array_equal(out, image)
    half = transform_quad_bilinear(image, (2, 1), (0.75, 1.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0))
    assert half[0, 0].tolist() == [int(0 + 30 * 0.25), int(10 + 30 * 0.25), int(20 + 30 * 0.25)]


# --------------------------------------------------------------------------------------------------------------
# The plan (numpy 1.x float32 arithmetic) and the whole render


def test_plan_hand_worked():
    lm = np.array([(100, 100), (140, 100), (120, 125), (105, 150), (135, 150)])
    plan = legacy_plan(lm, (400, 400))
    # as tests/celebahq/test_geometry.py's hand-worked example: s = 90, c = (120.5, 105.5), crop (12, 0, 229, 214)
    assert plan.crop == (12, 0, 229, 214) and plan.superres == 8 and plan.shrink == 1 and plan.pad is None
    assert plan.quad.dtype == np.float32
    np.testing.assert_array_equal(plan.quad, (np.float32([(30.5, 15.5), (30.5, 195.5), (210.5, 195.5),
                                                          (210.5, 15.5)]) - [12, 0]) * 8)
    assert plan.blur_sigma == 1024 * 0.02 / (1024 / 180 / 8)


def test_plan_rounds_landmarks_and_products_to_float32():
    """The half-side is max(2|e2e|, 1.8|e2m|) in double from float32 hypots, then applied in float32."""
    lm = np.array([(101.3, 99.7), (139.1, 103.9), (120.0, 125.0), (104.2, 151.3), (136.8, 149.9)])
    plan = legacy_plan(lm, (400, 400), 256)
    l32 = lm.astype(np.float32)
    e2e = l32[1] - l32[0]
    e2m = ((l32[3] + l32[4]) * F32(0.5) + F32(0.5)) - ((l32[0] + l32[1]) * F32(0.5) + F32(0.5))
    x = e2e - np.array([-e2m[1], e2m[0]], np.float32)
    x = x / np.hypot(x[0], x[1]) * F32(max(float(np.hypot(*e2e)) * 2.0, float(np.hypot(*e2m)) * 1.8))
    zoom = 256 / (float(np.hypot(*x)) * 2)
    superres = int(2 ** math.ceil(math.log2(zoom)))
    assert plan.superres == superres and plan.blur_sigma == 256 * 0.02 / (zoom / superres)


def test_shrink_branch():
    """A face with a half-side over 2R px is shrunk by an integer factor first (the examples never are)."""
    lm = np.array([(300, 400), (700, 400), (500, 650), (350, 900), (650, 900)])
    plan = legacy_plan(lm, (1000, 1100), 128)
    assert plan.shrink == int(np.floor(0.5 / (128 / (2 * 900))))
    assert plan.shrunk_size == (int(np.round(1000 / plan.shrink)), int(np.round(1100 / plan.shrink)))
    out = render_legacy(_random_image(1100, 1000, seed=2), lm, 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "celeba_wild_mini")

# md5 of the original process_func's CHW pre-delta bytes under Pillow 3.1.1 / numpy 1.19.5 / scipy 1.5.4, the photo
# decoded by this repository's Pillow: at R = 128 with the original's 1024 and 4096 replaced by R and 4R, and the
# unmodified original at 1024 (all 15 example photos matched at 1024 when recorded; one is checked here, opt-in).
PILLOW311_RENDER = {
    ("000003.jpg", 128): "ba408510467a86dbdac888b70203fb0b",  # 4x super-resolution, padded on all sides
    ("000006.jpg", 128): "4be9c1a255a0ee99e9d3c9384098228b",  # 8x, the whole photo (no crop), padded
    ("000008.jpg", 128): "f3754ff085d83f0861de5c30fb5f2d96",  # no super-resolution, padded
    ("000006.jpg", 1024): "57e6286eb147c3b8c776d0c5c1c4e51e",
}


@BOTH_PATHS
@pytest.mark.parametrize("name, resolution", list(PILLOW311_RENDER))
def test_render_matches_pillow_311(name, resolution, native):
    from celebahq.landmarks import read_celeba_landmarks
    from gancore.sources import decode_image

    lm = read_celeba_landmarks(os.path.join(EXAMPLE, "Anno", "list_landmarks_celeba.txt"))[name]
    out = render_legacy(decode_image(os.path.join(EXAMPLE, "img_celeba", name)), lm, resolution, native)
    assert _md5(out.transpose(2, 0, 1)) == PILLOW311_RENDER[name, resolution]


# --------------------------------------------------------------------------------------------------------------
# Live Pillow 3.1.1 (only where that environment exists)


@pytest.mark.skipif(not os.environ.get("PILLOW311_PYTHON"), reason="set PILLOW311_PYTHON to a Python with Pillow 3.1.1")
@pytest.mark.parametrize("case", [
    {"op": "resize", "seed": 11, "h": 40, "w": 31, "size": [97, 13]},
    {"op": "resize", "seed": 12, "h": 200, "w": 160, "size": [50, 40]},
    {"op": "transform", "seed": 13, "h": 30, "w": 30, "size": [50, 50],
     "quad": [[-3.7, 2.2], [5.1, 33.9], [36.4, 25.3], [27.6, -6.4]]},
])
def test_live_pillow_311(case):
    expected = subprocess.run([os.environ["PILLOW311_PYTHON"], "-c", _PILLOW311_SCRIPT, json.dumps(case)],
                              capture_output=True, text=True, check=True).stdout.strip()
    image = _random_image(case["h"], case["w"], case["seed"])
    if case["op"] == "resize":
        out = resize_antialias(image, case["size"])
    else:
        corners = np.float32(case["quad"]) + F32(0.5)
        out = transform_quad_bilinear(image, case["size"], quad_data(corners, *case["size"]))
    assert _md5(out) == expected


# --------------------------------------------------------------------------------------------------------------
# The compiled kernels against the numpy path, byte for byte


def test_the_kernel_builds_here():
    """Where a C compiler exists (and GANEVAL_NATIVE does not turn it off) the kernel builds and passes its
    self-check, so the compiled cases above are not silently numpy."""
    status = kernel_status()
    assert ("compiled kernel" in status) == KERNEL_EXPECTED, status
    assert "-ffp-contract=off" in status or not KERNEL_EXPECTED


needs_kernel = pytest.mark.skipif(not KERNEL_EXPECTED, reason="no C compiler, or GANEVAL_NATIVE=0")


@needs_kernel
@pytest.mark.parametrize("shape, size", [
    ((29, 37), (148, 87)), ((96, 8), (2, 24)), ((1, 1), (5, 3)), ((64, 257), (63, 64)), ((200, 160), (50, 40)),
    ((31, 17), (17, 31)), ((5, 300), (300, 5))])
def test_resize_kernel_equals_numpy(shape, size):
    image = _random_image(*shape, seed=sum(shape))
    assert np.array_equal(resize_antialias(image, size, True), resize_antialias(image, size, False))


@needs_kernel
@pytest.mark.parametrize("seed", range(4))
def test_transform_kernel_equals_numpy(seed):
    rng = np.random.RandomState(seed)
    image = _random_image(23 + seed, 41 - seed, seed)
    corners = (np.float32([[0, 0], [0, 25], [40, 25], [40, 0]]) + rng.uniform(-9, 9, (4, 2))).astype(np.float32)
    size = (57 + seed, 33)
    data = quad_data(corners + F32(0.5), *size)
    assert np.array_equal(transform_quad_bilinear(image, size, data, native=True),
                          transform_quad_bilinear(image, size, data, native=False))


@needs_kernel
@pytest.mark.parametrize("shape, pad, sigma", [
    ((29, 37), (9, 9, 9, 9), 3.3),  # the recipe's case: every side padded
    ((20, 24), (30, 5, 0, 41), 7.9),  # one side 0, pads over the image's size (repeated reflection)
    ((6, 5), (3, 2, 4, 1), 20.0),  # a blur radius of 80 over a 9-row image: scipy's reflection repeats
    ((40, 3), (1, 1, 1, 1), 0.4),  # radius 2
    ((17, 19), (4, 4, 4, 4), 0.1),  # radius 0
])
def test_pad_blur_kernel_equals_numpy(shape, pad, sigma):
    image = _random_image(*shape, seed=sum(pad))
    assert np.array_equal(pad_blur_legacy(image, pad, sigma, True), pad_blur_legacy(image, pad, sigma, False))


@needs_kernel
def test_pad_blur_kernel_equals_numpy_on_a_photo():
    """A real photo, where the blended values land near .5 (round half to even) and the median is a mean of two."""
    from gancore.sources import decode_image

    photo = decode_image(os.path.join(EXAMPLE, "img_celeba", "000006.jpg"))[:40, :50]
    assert np.array_equal(pad_blur_legacy(photo, (21, 20, 21, 20), 6.5, True),
                          pad_blur_legacy(photo, (21, 20, 21, 20), 6.5, False))


@pytest.mark.parametrize("sigma", [0.4, 3.3, 27.70542236328125])
def test_gaussian_weights_are_scipys(sigma):
    """scipy's own weights: its filter of a unit impulse gives each weight exactly (the other terms add 0)."""
    weights = gaussian_half_kernel(sigma)
    radius = len(weights) - 1
    impulse = np.zeros(4 * radius + 3)
    impulse[2 * radius + 1] = 1.0
    response = scipy.ndimage.gaussian_filter1d(impulse, sigma)
    assert radius == int(4.0 * sigma + 0.5)
    assert np.array_equal(response[2 * radius + 1:3 * radius + 2], weights)


@needs_kernel
@pytest.mark.parametrize("pixels", [1, 2, 7, 10, 1001])
def test_median_kernel_equals_numpy(pixels):
    import ctypes

    kernel = legacy_module._kernel()
    rng = np.random.default_rng(pixels)
    values = rng.normal(0, 60, (pixels, 3)).astype(np.float32)
    values[::3] = np.round(values[::3])  # ties
    values[1::5, 0] = -0.0
    median = np.empty(3, dtype=np.float32)
    assert kernel.legacy_channel_median(values.ctypes.data, pixels, 3, median.ctypes.data) == 0
    np.testing.assert_array_equal(median, np.median(values.reshape(pixels, 1, 3), axis=(0, 1)))
    assert isinstance(kernel, ctypes.CDLL)


@needs_kernel
def test_a_kernel_that_disagrees_is_not_used(monkeypatch):
    """The self-check on first use compares every stage with numpy: a kernel giving other bytes is reported."""
    import ctypes

    real = legacy_module._kernel()

    class Broken:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def legacy_quad_bilinear(image, height, width, channels, coefficients, out_height, out_width, transposed,
                                 out):
            ctypes.memset(out, 7, out_height * out_width * channels)
            return 0

    assert legacy_module._self_check(real) is None
    assert legacy_module._self_check(Broken()) == "quad transform"


@needs_kernel
@pytest.mark.skipif(not shutil.which("objdump") or platform.machine() != "x86_64", reason="needs objdump on x86-64")
def test_the_kernel_has_no_fused_multiply_add():
    """Built with -ffp-contract=off: no product fused into a sum (an FMA rounds once where the C code and numpy
    round twice; the same source built with -ffp-contract=fast holds such instructions on an FMA CPU)."""
    library = kernel_status().split("compiled kernel ", 1)[1].split(" (", 1)[0]
    disassembly = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
    assert "legacy_resample_rows" in disassembly
    assert not re.search(r"\bv?f(n)?m(add|sub)\d{3}[ps][sd]\b", disassembly)
