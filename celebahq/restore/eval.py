"""`celebahq eval-restorer`: PSNR and SSIM of the networks and of the classical baselines on held-out photographs.

cleanup: each photograph is JPEG-encoded at `quality` (PIL); the baseline is the decoded JPEG.
sr: each photograph (sides cut to multiples of 4) is downscaled 4× with antialiasing (PIL bicubic); baselines are
PIL bicubic and Lanczos 4× upscales. PSNR is over all RGB values of uint8 images (peak 255); SSIM is the Gaussian
11×11, σ 1.5 SSIM of ganeval.msssim averaged over the RGB channels. Figures are means over photographs.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ganeval.msssim import ssim_and_cs

from ..render import lanczos_upscale
from .degrade import SR_SCALE, bicubic_upscale, crop_to_multiple, downscale, jpeg_roundtrip


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of one shape (peak 255); inf for identical images."""
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0 ** 2 / error))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM of two uint8 HWC RGB images of one shape."""
    def nchw(a):
        return torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[None]

    return float(ssim_and_cs(nchw(image), nchw(reference))[0][0])


def evaluate(kind: str, photos: dict[str, np.ndarray], restorer, quality: int = 20) -> dict:
    """PSNR/SSIM of `restorer` (uint8 HWC -> uint8 HWC) and of the baselines on whole photographs.

    photos: name -> uint8 HWC RGB. Returns {"methods": {method: {"psnr", "ssim"}}, "gain_db": {baseline: dB},
    "per_image": {name: {method: {"psnr", "ssim"}}}, "megapixels": output megapixels, "seconds": network time}.
    """
    per_image, seconds, megapixels = {}, 0.0, 0.0
    for name, photo in photos.items():
        if kind == "cleanup":
            clean = photo
            degraded = jpeg_roundtrip(photo, quality)
            outputs = {"jpeg": degraded}
        else:
            clean = crop_to_multiple(photo)
            degraded = downscale(clean)
            outputs = {"bicubic": bicubic_upscale(degraded, SR_SCALE), "lanczos": lanczos_upscale(degraded, SR_SCALE)}
        started = time.perf_counter()
        outputs["net"] = restorer(degraded)
        seconds += time.perf_counter() - started
        megapixels += clean.shape[0] * clean.shape[1] / 1e6
        per_image[name] = {method: {"psnr": round(psnr(out, clean), 4), "ssim": round(ssim(out, clean), 5)}
                           for method, out in outputs.items()}
    methods = {method: {metric: round(float(np.mean([figures[method][metric] for figures in per_image.values()])), 4)
                        for metric in ("psnr", "ssim")} for method in next(iter(per_image.values()))}
    gains = {method: round(methods["net"]["psnr"] - figures["psnr"], 4)
             for method, figures in methods.items() if method != "net"}
    return {"kind": kind, "quality": quality if kind == "cleanup" else None, "images": len(per_image),
            "methods": methods, "gain_db": gains, "per_image": per_image, "megapixels": round(megapixels, 4),
            "seconds": round(seconds, 3)}
