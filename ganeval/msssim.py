"""MS-SSIM diversity, as in Karras et al. 2018 (ProGAN), section 5 / table 1 ("10000 pairs").

The algorithm is the original implementation's (tkarras/progressive_growing_of_gans, metrics/ms_ssim.py, itself
adapted from the tensorflow/models compression msssim.py), re-implemented in batched PyTorch:

1. Per scale, SSIM and contrast-structure (cs) of every image pair in [0, 255] (max value 255, K1 0.01,
   K2 0.03 -> C1 = 6.5025, C2 = 58.5225). Local statistics use a Gaussian window of size min(11, H, W) and
   sigma = size·1.5/11 (MATLAB fspecial-like: integer coordinates for odd sizes, half-integer ones for even
   sizes, normalised to sum 1), applied in 'valid' mode (no padding; the borders are dropped) to each colour
   channel independently. σ1² = E[x²] − μ1², σ2² and σ12 likewise;
   cs_map = (2σ12 + C2) / (σ1² + σ2² + C2), ssim_map = (2μ1μ2 + C1) / (μ1² + μ2² + C1) · cs_map;
   per image, ssim and cs are the means of the maps over (C, H, W) (colour channels averaged, no luma).
2. Five scales. After each scale both images are downsampled by a 2×2 box average (non-overlapping mean of 4
   pixels, no pre-blur, like the original's ``_HoxDownsample``). The original only ever sees even sizes (it
   fails on odd ones); here an odd height or width is first cropped by its last row/column, so a side s
   becomes floor(s/2). Images need min(H, W) ≥ 16 so that the fifth scale has at least one pixel
   (128² -> 128, 64, 32, 16, 8, the window shrinking to 8 at the last scale; 16² -> 16, 8, 4, 2, 1).
3. ssim_j and cs_j are clipped at 0 (no NaN from a negative base), and
   MS-SSIM = Π_{j=0..3} cs_j^{w_j} · ssim_4^{w_4}, w = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333] (sum 1.0001,
   kept as in the original).
4. Diversity of an image set = mean MS-SSIM over the pairs (0, 1), (2, 3), … of consecutive images of its
   stream (lower = more diverse). The original pairs images inside each evaluation minibatch; with even batch
   sizes that is the same thing.

Precision and speed: `ms_ssim` computes in float64 by default (~1e-14 from a float64 NumPy/SciPy FFT
reference); `dtype=torch.float32` is not recommended: a contrast term near 0 raised to the power 0.0448
amplifies float32 rounding to ~1e-5 on some photographs. The four filtered maps per channel are those of
s = x + y − 256 and d = x − y and their squares (see _ssim_and_cs_of_moments; s centred so that
E[s²] − E[s]² cancels less). On a CPU, float64 runs in a compiled kernel (ganeval/_native/msssim.c, built on
first use by ganeval.native) that fuses the filtering and the arithmetic per colour plane, the planes shared out
between one worker thread per core. Without it (no C compiler, GANEVAL_NATIVE=0, native=False, float32) the
separable Gaussian is one OpenCV sepFilter2D call per chunk (all maps stacked into one tall image), each scale
in cache-sized chunks of ~32k image pixels, the pairs shared out between the same workers. On CUDA it is two
matrix products with banded 'valid' filter matrices (two 1-D F.conv2d passes with groups=C for sides > 512).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from gancore import distributed
from gancore.errors import UserError
from gancore.runtime import resolve_device
from gancore.sources import open_source, peek_shape

from . import native
from .metric_utils import Batch, ImageSet, Needs, PassOptions, Problems, default_count, run_pass, stream_seed

FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
MAX_VALUE = 255.0
WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
CENTRE = 128.0  # s = x + y − 2·CENTRE is centred on mid-grey (see _ssim_and_cs_of_moments)
NUM_SCALES = len(WEIGHTS)
MIN_SIZE = 2 ** (NUM_SCALES - 1)  # 16: the fifth scale still has one pixel
DEFAULT_NUM_PAIRS = 10000
CPU_CHUNK_PIXELS = 32768  # image pixels × pairs per chunk on the CPU: 2 pairs at 128², 1 at 256², 8 at 64²
# image pixels × pairs per chunk on a GPU: 512 pairs at 128², 8 at 1024²; a chunk's float64 working set is a few
# GiB (all 10,000 pairs of the paper's 128² sample at once needed 47 GiB more than an H100 had free; chunking each
# scale alone still kept every pair's next-scale moments: 19 GiB for 500 pairs at 1024²)
GPU_CHUNK_PIXELS = 1 << 23
CPU_TASK_PIXELS = 262144  # at most this many image pixels per CPU worker task (16 pairs, or planes, at 128²)
DEFAULT_SEED = 1000


# --------------------------------------------------------------------------------------------------------------
# Pure math


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """1-D Gaussian taps [size] summing to 1; coordinates −r..r (odd size) or −r+½..r−½ (even size).

    The outer product of this window with itself is MATLAB's fspecial('gaussian', size, sigma).
    """
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    taps = torch.exp(-(coords * coords) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def _as_images(images, device: torch.device | None = None) -> torch.Tensor:
    """uint8/float NCHW tensor or array in [0, 255] -> NCHW tensor of its dtype (on `device`, else its own)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a torch tensor or numpy array of images, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
    return images.to(device=device if device is not None else images.device)


def valid_filter_matrix(size: int, length: int, window: torch.Tensor) -> torch.Tensor:
    """Banded [length − size + 1, length] matrix whose product with a signal is its 'valid' correlation
    with `window` [size] (the window is symmetric, so correlation = convolution)."""
    out = length - size + 1
    rows = torch.arange(out, device=window.device)[:, None] + torch.arange(size, device=window.device)[None, :]
    matrix = torch.zeros(out, length, dtype=window.dtype, device=window.device)
    return matrix.scatter_(1, rows, window.expand(out, size))


def gaussian_filter_valid(images: torch.Tensor, size: int, sigma: float, method: str = "auto") -> torch.Tensor:
    """Separable Gaussian 'valid' filtering of every channel: NCHW (H, W) -> NCHW (H − size + 1, W − size + 1).

    method 'opencv' (CPU, float32/float64): one cv2.sepFilter2D call over all maps stacked into one tall image
    (a map's 'valid' outputs never see its neighbours, so the zero-padded 'same' result is cropped); 'matmul':
    each 1-D pass is a product with a banded matrix (valid_filter_matrix); 'conv': two 1-D F.conv2d passes with
    groups=C; 'shift': each 1-D pass is a weighted sum of `size` shifted views. All give the same numbers (to
    rounding, ~1e-13 at [0, 255] scale). 'auto' picks the fastest: opencv on the CPU (compiled, one cache-friendly
    pass; float64 convolutions have no optimised torch CPU kernels), on CUDA matmul up to 512 pixels a side and
    conv beyond (measured on an H100). The 'opencv' result is a cropped view of a padded buffer.
    """
    window = gaussian_window(size, sigma, images.dtype, images.device)
    if method == "auto":
        if images.device.type == "cpu":
            method = "opencv" if images.dtype in (torch.float32, torch.float64) else "shift"
        else:
            method = "conv" if max(images.shape[-2:]) > 512 else "matmul"
    if method == "opencv":
        return _opencv_filter_valid(images, window)
    if method == "shift":
        taps = window.tolist()
        return _shifted_sum(_shifted_sum(images, taps, -1), taps, -2)
    if method == "conv":
        maps = images.shape[1]
        images = F.conv2d(images, window.view(1, 1, size, 1).expand(maps, 1, size, 1), groups=maps)
        return F.conv2d(images, window.view(1, 1, 1, size).expand(maps, 1, 1, size), groups=maps)
    if method != "matmul":
        raise ValueError(f"unknown filtering method {method!r} (auto, opencv, matmul, conv or shift)")
    n, c, h, w = images.shape
    rows = valid_filter_matrix(size, h, window)
    cols = valid_filter_matrix(size, w, window)
    # Two plain matrix products (far faster than batched ones): filter the rows of every map, transpose
    # (one copy), filter the columns; the result is returned as a transposed view.
    across = (images.reshape(-1, w) @ cols.T).view(n, c, h, -1).transpose(-1, -2).reshape(-1, h)
    return (across @ rows.T).view(n, c, w - size + 1, h - size + 1).transpose(-1, -2)


def _opencv_filter_valid(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """'valid' filtering of a CPU float32/float64 NCHW tensor with cv2.sepFilter2D (see gaussian_filter_valid)."""
    import cv2  # a dependency of the toolkit; imported here so that `import ganeval` stays light

    if images.device.type != "cpu" or images.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the opencv filter takes CPU float32/float64 tensors, got {images.dtype} on "
                         f"{images.device}")
    *lead, h, w = images.shape
    size = window.numel()
    taps = window.numpy()
    depth = cv2.CV_64F if images.dtype == torch.float64 else cv2.CV_32F
    tall = images.contiguous().numpy().reshape(-1, w)
    same = cv2.sepFilter2D(tall, depth, taps, taps, borderType=cv2.BORDER_CONSTANT)
    start = size // 2  # OpenCV centres a kernel of size k on tap k // 2 (the later of the two for even sizes)
    stop = start - size + 1
    same = torch.from_numpy(same).view(*lead, h, w)
    return same[..., start:h + stop, start:w + stop]


def _shifted_sum(images: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """'Valid' correlation along `dim` as a weighted sum of len(taps) shifted views (one fused pass each)."""
    out = images.shape[dim] - len(taps) + 1
    total = images.narrow(dim, 0, out) * taps[0]
    for offset, tap in enumerate(taps[1:], start=1):
        total.add_(images.narrow(dim, offset, out), alpha=tap)
    return total


def ssim_and_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-scale SSIM and contrast-structure of image pairs.

    x, y: float NCHW tensors in [0, 255] of one shape (computed in their dtype; use float64).
    Returns (ssim [N], cs [N]): means of the 'valid' ssim and cs maps over (C, H', W').
    """
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return _ssim_and_cs_of_moments(_moment_stack(x, y))


def _moment_stack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, 4, C, H, W] buffer of NCHW pairs x, y whose slots 0 and 1 hold s = x + y − 2·128 (centred on
    mid-grey) and d = x − y; slots 2 and 3 (for s², d²) are left to _ssim_and_cs_of_moments."""
    stack = x.new_empty(x.shape[0], 4, *x.shape[1:])
    torch.add(x, y, out=stack[:, 0]).sub_(2.0 * CENTRE)
    torch.sub(x, y, out=stack[:, 1])
    return stack


def _ssim_and_cs_of_moments(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ssim [N], cs [N]) of the pairs whose s and d fill slots 0 and 1 of stack [N, 4, C, H, W] (_moment_stack).

    SSIM in terms of s and d: with A = μs², B = μd² (μ: the local means, s uncentred) and the local variances
    Vs = E[s²] − E[s]², Vd = E[d²] − E[d]², we have 2μxμy = (A − B)/2, μx² + μy² = (A + B)/2,
    2σxy = (Vs − Vd)/2 and σx² + σy² = (Vs + Vd)/2, so
        cs_map  = (2σxy + C2)/(σx² + σy² + C2) = 1 − 2Vd/(Vs + Vd + 2C2),
        lum_map = (2μxμy + C1)/(μx² + μy² + C1) = 1 − 2B/(A + B + 2C1),   ssim_map = lum_map · cs_map:
    four filtered maps instead of five, and fewer operations after the filter. Centring s makes E[s²] − E[s]²
    cancel less (it matters in float32).
    """
    n, _, c, h, w = stack.shape
    size = min(FILTER_SIZE, h, w)
    torch.mul(stack[:, :2], stack[:, :2], out=stack[:, 2:])
    stats = gaussian_filter_valid(stack.view(n, 4 * c, h, w), size, size * FILTER_SIGMA / FILTER_SIZE)
    # A fresh buffer: everything below is computed in place in it.
    mean_s, mean_d, mean_s2, mean_d2 = stats.view(n, 4, c, *stats.shape[-2:]).unbind(1)
    c1, c2 = (K1 * MAX_VALUE) ** 2, (K2 * MAX_VALUE) ** 2
    var_s = mean_s2.addcmul_(mean_s, mean_s, value=-1.0)
    var_d = mean_d2.addcmul_(mean_d, mean_d, value=-1.0)
    r = var_d.div_(var_s.add_(var_d).add_(2.0 * c2))  # cs_map = 1 − 2r
    a = mean_s.add_(2.0 * CENTRE).square_()
    b = mean_d.square_()
    q = b.div_(a.add_(b).add_(2.0 * c1))  # lum_map = 1 − 2q
    mean_r, mean_q = r.mean(dim=(1, 2, 3)), q.mean(dim=(1, 2, 3))
    return _ssim_and_cs_of_means(mean_r, mean_q, q.mul_(r).mean(dim=(1, 2, 3)))


def _ssim_and_cs_of_means(mean_r: torch.Tensor, mean_q: torch.Tensor,
                          mean_qr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ssim, cs) from the map means of r, q and q·r (cs_map = 1 − 2r, lum_map = 1 − 2q): the means of the maps
    without writing them, E[cs] = 1 − 2E[r] and E[lum·cs] = 1 − 2E[q] − 2E[r] + 4E[qr]."""
    return 1.0 - 2.0 * (mean_q + mean_r) + 4.0 * mean_qr, 1.0 - 2.0 * mean_r


_THREAD_SETTINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _cpu_workers(share_out: bool):
    """Yields run(function, argument_tuples) -> results in order.

    share_out (CPU tasks, several of them): one worker thread per torch thread, each running single-threaded
    torch and OpenCV kernels (set for the duration, then restored), so that a chunk stays in its core's cache
    and torch's OpenMP threads do not spin against OpenCV's pool between operations (letting both libraries
    thread each operation was slower in a one-off trial on 2 cores). Otherwise (a GPU, one task, one thread):
    the calling thread runs the tasks in turn, the libraries threading each operation.
    """
    if not share_out or torch.get_num_threads() == 1:
        yield lambda function, arguments: [function(*args) for args in arguments]
        return
    import cv2

    # The thread counts are process-wide: concurrent calls take turns (each uses every core anyway), so that
    # one call cannot save another's temporary setting as the value to restore.
    with _THREAD_SETTINGS_LOCK:
        threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="msssim") as pool:
                yield lambda function, arguments: list(pool.map(lambda args: function(*args), arguments))
        finally:
            torch.set_num_threads(threads)
            cv2.setNumThreads(cv2_threads)


def box_downsample(images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Non-overlapping 2×2 mean: (…, H, W) -> (…, H//2, W//2); an odd last row/column is dropped first.

    Three strided adds (faster than F.avg_pool2d on float64 CPU tensors; same numbers to rounding), written
    into `out` when given.
    """
    height, width = images.shape[-2] // 2 * 2, images.shape[-1] // 2 * 2
    images = images[..., :height, :width]
    rows = images[..., 0::2, :] + images[..., 1::2, :]
    return torch.add(rows[..., 0::2], rows[..., 1::2], out=out).mul_(0.25)


def ms_ssim_scales(a, b, dtype: torch.dtype = torch.float64, chunk_pixels: int | None = None,
                   native: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scale SSIM and cs, unclipped: (ssim [N, 5], cs [N, 5]) float64, scale 0 = full resolution.

    a, b: uint8 or float NCHW tensors (or numpy arrays) in [0, 255], one shape, min(H, W) ≥ 16. Computed on
    a's device (b is moved there) in `dtype`. float64 on a CPU uses the compiled kernel (ganeval.native, built
    on first use) unless `native` is False or it cannot be built; otherwise each scale runs in chunks of about
    `chunk_pixels` image pixels (default: CPU_CHUNK_PIXELS on the CPU, where cache-sized chunks run faster;
    GPU_CHUNK_PIXELS on a GPU, which bounds the working set to a few GiB whatever the number of pairs). On a
    multi-core CPU the work is shared out between one worker per core (see _cpu_workers). The result does not
    depend on any of this beyond rounding (~1e-15).
    """
    x = _as_images(a)
    y = _as_images(b, x.device)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < MIN_SIZE:
        raise UserError(f"images of {x.shape[-1]}x{x.shape[-2]} are too small for MS-SSIM "
                           f"({NUM_SCALES} scales need sides of at least {MIN_SIZE} pixels)")
    if len(x) == 0:
        return (torch.empty(0, NUM_SCALES, dtype=torch.float64, device=x.device),) * 2
    on_cpu = x.device.type == "cpu"
    pixels = x.shape[-2] * x.shape[-1]
    kernel = _msssim_kernel() if native and on_cpu and dtype == torch.float64 else None
    if kernel is not None:
        return _native_scales(kernel, x, y)
    if chunk_pixels is None:
        chunk_pixels = CPU_CHUNK_PIXELS if on_cpu else GPU_CHUNK_PIXELS
    # a GPU task holds ≤ chunk_pixels image pixels through all scales (its next-scale moments included)
    per_task = _per_task(len(x), pixels) if on_cpu else max(1, chunk_pixels // pixels)
    tasks = [(x[i:i + per_task], y[i:i + per_task], dtype, chunk_pixels) for i in range(0, len(x), per_task)]
    with _cpu_workers(on_cpu and len(tasks) > 1) as run:
        parts = run(_pair_scales, tasks)
    return torch.cat([ssim for ssim, _ in parts]), torch.cat([cs for _, cs in parts])


def _per_task(count: int, pixels: int) -> int:
    """Items (pairs or planes of `pixels` pixels) per CPU worker task: an even share of `count` among the torch
    threads, at most CPU_TASK_PIXELS pixels."""
    return max(1, min(CPU_TASK_PIXELS // pixels, -(-count // torch.get_num_threads())))


_KERNEL_LOCK = threading.Lock()
_kernel_function = {}  # "function": the checked ctypes function, or None once it is known to be unusable


def _msssim_kernel():
    """The compiled kernel's msssim_planes (ganeval/_native/msssim.c) as a ctypes function, or None.

    On first use it is built (ganeval.native) and checked against the PyTorch path on a few random pairs;
    a disagreement above 1e-12 turns it off for the process (reason in ganeval.native.status("msssim")).
    """
    with _KERNEL_LOCK:
        if "function" not in _kernel_function:
            library = native.load("msssim")
            function = None if library is None else library.msssim_planes
            if function is not None:
                pointer, int64 = ctypes.c_void_p, ctypes.c_int64
                function.argtypes = [pointer, pointer, int64, int64, int64, int64, int64, pointer, pointer,
                                     ctypes.c_double, ctypes.c_double, ctypes.c_double, pointer]
                function.restype = ctypes.c_int
                generator = torch.Generator().manual_seed(0)
                x = torch.randint(0, 256, (3, 3, 37, 29), generator=generator, dtype=torch.uint8)
                y = torch.randint(0, 256, (3, 3, 37, 29), generator=generator, dtype=torch.uint8)
                y[0] = x[0] // 2 + y[0] // 2  # correlated as well as independent pairs
                compiled, reference = _native_scales(function, x, y), ms_ssim_scales(x, y, native=False)
                difference = max(float((c - r).abs().max()) for c, r in zip(compiled, reference))
                if not difference <= 1e-12:
                    native.disable("msssim", f"self-check failed: {difference:.1e} from the PyTorch path")
                    function = None
            _kernel_function["function"] = function
        return _kernel_function["function"]


def _native_scales(kernel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ssim [N, 5], cs [N, 5]) of CPU NCHW pairs by the compiled kernel, the colour planes shared out between
    one worker thread per core (ctypes releases the GIL)."""
    n, c, h, w = x.shape
    windows = torch.zeros(NUM_SCALES, FILTER_SIZE, dtype=torch.float64)
    sizes = torch.zeros(NUM_SCALES, dtype=torch.int64)
    counts = torch.zeros(NUM_SCALES, dtype=torch.float64)  # valid outputs per pair and scale, channels included
    height, width = h, w
    for scale in range(NUM_SCALES):
        size = min(FILTER_SIZE, height, width)
        windows[scale, :size] = gaussian_window(size, size * FILTER_SIGMA / FILTER_SIZE)
        sizes[scale] = size
        counts[scale] = c * (height - size + 1) * (width - size + 1)
        height, width = height // 2, width // 2
    planes_x, planes_y = x.reshape(n * c, h, w), y.reshape(n * c, h, w)
    per_task = _per_task(len(planes_x), h * w)
    tasks = [(planes_x[i:i + per_task], planes_y[i:i + per_task]) for i in range(0, len(planes_x), per_task)]

    def plane_sums(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """[P, 5, 3] float64: Σ r, Σ q, Σ q·r over the valid outputs of each plane and scale."""
        dtype = torch.uint8 if first.dtype == second.dtype == torch.uint8 else torch.float64  # bytes: no copy
        first, second = first.to(dtype).contiguous(), second.to(dtype).contiguous()
        sums = torch.empty(len(first), NUM_SCALES, 3, dtype=torch.float64)
        failed = kernel(first.data_ptr(), second.data_ptr(), int(dtype == torch.uint8), len(first), h, w,
                        NUM_SCALES, windows.data_ptr(), sizes.data_ptr(), CENTRE, (K1 * MAX_VALUE) ** 2,
                        (K2 * MAX_VALUE) ** 2, sums.data_ptr())
        if failed:
            raise MemoryError("the MS-SSIM kernel could not allocate its working buffers")
        return sums

    with _cpu_workers(len(tasks) > 1) as run:
        sums = torch.cat(run(plane_sums, tasks))
    means = sums.view(n, c, NUM_SCALES, 3).sum(dim=1) / counts[None, :, None]
    return _ssim_and_cs_of_means(*means.unbind(-1))


def _pair_scales(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype,
                 chunk_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ssim [n, 5], cs [n, 5]) float64 of NCHW image pairs in [0, 255], computed in `dtype`, each scale in
    chunks of about `chunk_pixels` image pixels."""
    n, c, h, w = x.shape
    ssims, css = [], []
    moments = None  # [n, 4, C, H, W] stacks (_moment_stack) of the current scale, after the first
    for scale in range(NUM_SCALES):
        step = max(1, chunk_pixels // (h * w))
        # s and d are linear in x and y: their 2×2 box averages are those of the downsampled images.
        downsampled = x.new_empty(n, 4, c, h // 2, w // 2, dtype=dtype) if scale + 1 < NUM_SCALES else None
        parts = []
        for i in range(0, n, step):
            if moments is None:
                stack = _moment_stack(x[i:i + step].to(dtype), y[i:i + step].to(dtype))
            else:
                stack = moments[i:i + step]
            parts.append(_ssim_and_cs_of_moments(stack))
            if downsampled is not None:
                box_downsample(stack[:, :2], out=downsampled[i:i + step, :2])
        ssims.append(torch.cat([ssim for ssim, _ in parts]))
        css.append(torch.cat([cs for _, cs in parts]))
        moments, h, w = downsampled, h // 2, w // 2
    return torch.stack(ssims, dim=1).double(), torch.stack(css, dim=1).double()


def ms_ssim(a, b, dtype: torch.dtype = torch.float64, chunk_pixels: int | None = None,
            native: bool = True) -> torch.Tensor:
    """MS-SSIM of each image pair (a[i], b[i]): float64 tensor [N] in [0, 1], on a's device.

    a, b: uint8 or float NCHW tensors (or numpy arrays) in [0, 255] (not [0, 1]), same shape, min(H, W) ≥ 16.
    Identical images give 1 (up to rounding; the weights sum to 1.0001). `dtype` of the filtering and local
    statistics: float64 (default; ~1e-14 from a float64 reference) or float32 (faster on the fallback path, but a
    contrast term near 0 raised to the power 0.0448 amplifies its rounding: up to ~1e-5 off on photographs).
    `chunk_pixels`, `native` (the compiled CPU kernel): see ms_ssim_scales (the result does not depend on them).
    """
    ssim, cs = ms_ssim_scales(a, b, dtype, chunk_pixels, native)
    ssim, cs = ssim.clamp_min(0.0), cs.clamp_min(0.0)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64, device=ssim.device)
    return torch.prod(cs[:, :-1] ** weights[:-1], dim=1) * ssim[:, -1] ** weights[-1]


# --------------------------------------------------------------------------------------------------------------
# Streaming diversity


class MSSSIMDiversity:
    """Streaming mean MS-SSIM over consecutive pairs (0, 1), (2, 3), … of a stream of image batches.

    `add` takes uint8/float NCHW batches in [0, 255] of any size; a pair may straddle two batches (an odd
    image is kept until the next batch). `value` is the mean over complete pairs (NaN before the first),
    `num_pairs` their count, `pending` whether one unpaired image is waiting. Runs on `device` (default: the
    device of the first batch).
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self._leftover: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0

    def add(self, batch) -> None:
        """Feed one NCHW batch (images continue the stream of the previous batches)."""
        images = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        if images.ndim != 4:
            raise ValueError(f"expected an NCHW batch, got shape {tuple(images.shape)}")
        if self.device is None:
            self.device = images.device
        images = images.to(self.device)
        if self._leftover is not None:
            if self._leftover.shape[1:] != images.shape[1:]:
                raise ValueError(f"image shape changed within the stream: {tuple(self._leftover.shape[1:])} "
                                 f"then {tuple(images.shape[1:])}")
            images = torch.cat([self._leftover.to(images.dtype), images])
            self._leftover = None
        paired = images.shape[0] // 2 * 2
        if paired < images.shape[0]:
            self._leftover = images[paired:].clone()
        if paired == 0:
            return
        scores = ms_ssim(images[0:paired:2], images[1:paired:2])
        total = scores.sum()
        self._sum = total if self._sum is None else self._sum + total
        self._count += paired // 2

    def combine_ranks(self) -> None:
        """Under torchrun: add up the pair sums and counts of all ranks (each fed whole pairs)."""
        if not distributed.is_distributed():
            return
        total = self._sum.double().cpu() if self._sum is not None else torch.zeros((), dtype=torch.float64)
        combined = distributed.all_reduce_sum(torch.stack([total, torch.tensor(float(self._count),
                                                                                dtype=torch.float64)]))
        self._sum, self._count = combined[0], int(combined[1].item())

    @property
    def num_pairs(self) -> int:
        return self._count

    @property
    def pending(self) -> bool:
        return self._leftover is not None

    @property
    def value(self) -> float:
        if self._count == 0:
            return float("nan")
        return float(self._sum.item()) / self._count


@dataclass
class MSSSIMResult:
    value: float
    num_pairs: int
    seed: int | None
    device: str = "cpu"
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON object of `ganeval msssim --json` (skipped images as a count)."""
        return {"metric": "msssim", "num_pairs": self.num_pairs, "value": self.value, "seed": self.seed,
                "skipped": len(self.skipped), "device": self.device, "seconds": round(self.seconds, 3)}


def default_batch_size(height: int, width: int, device: torch.device) -> int:
    """Images per batch: an even number, about 1M pixels (CPU) or 4M pixels (CUDA) per batch, at least 2 (on a
    CPU at least two pairs per worker thread, up to 64 images, so that large images keep every core busy)."""
    pixels = (64 if device.type == "cuda" else 16) * 256 * 256
    least = 2 if device.type == "cuda" else min(64, 4 * torch.get_num_threads())
    return int(max(least, min(256, pixels // (height * width))) // 2 * 2)


class MSSSIMMetric:
    """The registry's MS-SSIM diversity: pairs (0, 1), (2, 3), … of the first 2·`num_pairs` images of "gen"."""

    name = "msssim"

    def __init__(self, num_pairs: int, device: torch.device, seed: int | None = None):
        if num_pairs < 1:
            raise UserError(f"num_pairs must be at least 1, got {num_pairs}")
        self.num_pairs, self.device, self.seed = num_pairs, device, seed
        self.needs = Needs({"gen": 2 * num_pairs}, pixels=True)
        self.diversity = MSSSIMDiversity(device)

    def add(self, batch: Batch) -> None:
        if batch.set_name == "gen" and (part := batch.head(2 * self.num_pairs)) is not None:
            self.diversity.add(part.pixels)

    def combine_ranks(self) -> None:
        self.diversity.combine_ranks()

    def result(self) -> MSSSIMResult:
        return MSSSIMResult(value=self.diversity.value, num_pairs=self.diversity.num_pairs, seed=self.seed,
                            device=str(self.device))


def msssim_diversity(source, num_pairs: int | None = None, seed: int | None = DEFAULT_SEED,
                     device: str | torch.device | None = None, batch_size: int | None = None,
                     skip_bad: bool = False, progress: bool = True,
                     num_workers: int | None = None) -> MSSSIMResult:
    """MS-SSIM diversity of one image set: mean MS-SSIM over `num_pairs` pairs of consecutive images.

    source: a path (folder, .zip, .npy/.npz, .h5), an ImageSource or a uint8 NCHW/NHWC array; images of one
    size ≥ 16². `num_pairs` None: the paper's 10000, or all pairs a source holds when fewer (a note). The
    2·num_pairs images are the first of the GEN stream of the sampling rule (`stream_seed`; seed None: the
    source's first images in order). Every problem (count, size) is raised together before decoding.
    """
    device = resolve_device(device)
    opened = open_source(source)
    problems = Problems({"msssim_pairs": "--num-pairs"})
    num_pairs = default_count(num_pairs, DEFAULT_NUM_PAIRS, len(opened) // 2, "MS-SSIM pairs", "msssim_pairs",
                              problems)
    problems.source_count(opened, 2 * num_pairs, f"MS-SSIM with {num_pairs} pairs", "msssim_pairs")
    if num_pairs < 1:
        problems.add(f"{opened.path}: MS-SSIM needs at least one pair of images")
    started = time.perf_counter()
    height, width = peek_shape(opened, skip_bad)
    if min(height, width) < MIN_SIZE:
        problems.add(f"{opened.path}: images of {width}x{height} are too small for MS-SSIM "
                     f"({NUM_SCALES} scales need sides of at least {MIN_SIZE} pixels)")
    problems.raise_if_any()
    batch_size = batch_size or default_batch_size(height, width, device)
    if distributed.is_distributed():
        batch_size += batch_size % 2  # blocks of whole pairs on every rank
    metric = MSSSIMMetric(num_pairs, device, seed)
    options = PassOptions(device=device, batch_size=batch_size, skip_bad=skip_bad, num_workers=num_workers,
                          progress=progress, description="MS-SSIM")
    report = run_pass([metric], {"gen": ImageSet(opened, stream_seed(seed, "gen"))}, options)
    result = metric.result()
    result.seconds, result.skipped = time.perf_counter() - started, report.skipped["gen"]
    result.notes = problems.notes
    return result


__all__ = [
    "MSSSIMDiversity",
    "MSSSIMMetric",
    "MSSSIMResult",
    "box_downsample",
    "default_batch_size",
    "gaussian_filter_valid",
    "gaussian_window",
    "ms_ssim",
    "ms_ssim_scales",
    "msssim_diversity",
    "ssim_and_cs",
    "valid_filter_matrix",
]
