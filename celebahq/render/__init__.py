"""Render a CelebA-HQ crop from a photo and a `CropPlan` (spec section 4.3 steps 4–8), two backends, one module
each (`--backend pil|torch` of `celebahq build`) over what they share (`common`).

* `render_pil` (`pil_backend`): the slow reference, step by step as the original with PIL, numpy and scipy.
* `render_torch` (`torch_backend`): the fast path. The cheap per-image steps run per image (shrink with PIL on
  the host for host arrays, or in torch for device tensors, e.g. a photo the cleanup network restored on the GPU; crop by slicing;
  then super-resolution and padding in torch on `device`); then the bilinear sampling at 4R × 4R and the
  downscale to R × R, one image at a time (a 4R canvas is 200 MB at R = 1024). It emulates Pillow's arithmetic
  (QUAD pixel centres, truncation of the bilinear result to uint8, the two-pass Lanczos/box resampling with
  8-bit rounding between the passes), so the two backends agree to within rounding. Measured on real photographs
  (astronaut, Grace Hopper, rotated, padded, shrunk, super-resolved, the bundled crops), R = 128 … 1024, CPU and
  CUDA (H100): mean absolute difference 0.001–0.02 grey levels, 99th percentile 0–1, max 1–2 (limits 0.5 and 4);
  see tests/celebahq/test_render.py.

Note on the original's `quad + 0.5` in the QUAD call (kept, as the spec asks): with Pillow ≥ 4's pixel-centre
convention it moves the picture by half a pixel of the rendered image along the source axes, i.e. ≤ 0.71 output
pixels in a direction that turns with the face (`geometry.source_to_output` accounts for it).

Pillow conventions the fast path reproduces (checked by the tests against the installed Pillow):
  - `transform(QUAD, BILINEAR)`: output pixel (i, j) samples the source at the bilinear interpolation of the four
    corners at X = i + 0.5, Y = j + 0.5; the bilinear filter reads pixel centres at k + 0.5, clamps to the edge
    pixel inside the image, returns 0 (black) for samples outside [0, W) × [0, H), and truncates to uint8.
  - `resize(LANCZOS | BOX)`: separable, horizontal pass first, each output's window = the filter support scaled
    by max(in/out, 1) and normalised to sum 1 (also where the image edge truncates it), uint8 rounding after each
    pass. For the shrink by a non-integer ratio (`resize_pillow_torch`) also Pillow's 22-bit fixed-point weights
    (upstream `libImaging/Resample.c`), so a pass equals Pillow's bit for bit. One caveat: the Pillow 13.0.0 wheel
    on our CI machine sometimes runs the vertical pass first (tall images; its rule is not upstream's), which moves
    a shrunk pixel by up to 14 grey levels there (mean ≤ 0.24; benchmarks/pillow_shrink.py); after the 4× sampling and downscale that follow, rendered
    crops still agree to within the limits below (tests/celebahq/test_render.py).
"""

from .common import DOWNSCALE_FILTERS, Upscale, lanczos_upscale, shrink_and_crop
from .pil_backend import pad_with_blur, render_pil
from .torch_backend import (
    DeviceUpscale,
    gaussian_blur_torch,
    pad_with_blur_torch,
    pillow_weights,
    render_torch,
    render_torch_tensor,
    resize_pillow_torch,
    resize_torch,
    shrink_and_crop_tensor,
)

__all__ = ["DOWNSCALE_FILTERS", "DeviceUpscale", "Upscale", "gaussian_blur_torch", "lanczos_upscale", "pad_with_blur",
           "pad_with_blur_torch", "pillow_weights", "render_pil", "render_torch", "render_torch_tensor",
           "resize_pillow_torch", "resize_torch", "shrink_and_crop", "shrink_and_crop_tensor"]
