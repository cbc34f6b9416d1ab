"""The metrics' section of benchmarks/device_suite.py: SWD, FID features and MS-SSIM at the paper's sizes.

- SWD of 16384 against 16384 images at 128² (`compute_swd`, uint8 images in host memory, as from a decoded
  set: the host-to-device copy is included), seconds for the whole metric.
- FID features at 128² and 1024²: images/s of `InceptionFeatureExtractor.features` (uint8 host batches of 64
  in, TF1 resize to 299² and pool3 out; random FIDInceptionV3 weights, the speed of the real ones) in both
  memory formats of the folded network, and the seconds that 50000 images would take at that rate.
- MS-SSIM: pairs/s of `ms_ssim` (float64, the metric's default) at 128² and 1024², pairs resident on the device.

`--smoke` sizes: a few images at 64² / 128², to check on a CPU that everything runs (seconds).
"""

from __future__ import annotations

import torch
from device_common import Deadline, Row, SuiteContext, peak_memory_gib, photo_crops, timed

from ganeval.inception import FIDInceptionV3, InceptionFeatureExtractor
from ganeval.msssim import ms_ssim
from ganeval.swd import compute_swd

FID_REFERENCE_COUNT = 50_000


def _note(device: torch.device, extra: str = "") -> str:
    memory = peak_memory_gib(device)
    parts = [extra] if extra else []
    if memory is not None:
        parts.append(f"peak {memory:.1f} GiB")
    return "; ".join(parts)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def swd_row(context: SuiteContext, count: int, resolution: int) -> Row:
    device = context.device
    _reset_peak(device)
    gen = photo_crops(count, resolution, seed=1, device=torch.device("cpu"))
    real = photo_crops(count, resolution, seed=2, device=torch.device("cpu"))
    result, seconds = timed(lambda: compute_swd(gen, real, num_images=count, device=device, progress=False),
                            device)
    return Row(f"SWD {count} vs {count} images at {resolution}²", count / seconds, "images/s",
               _note(device, f"avg {result.avg:.3f} (x1e3)"), seconds)


def fid_feature_rows(context: SuiteContext, count: int, resolution: int, batch: int,
                     formats=(torch.channels_last, torch.contiguous_format)) -> list[Row]:
    """One row per memory format of the folded network; uint8 host batches, warm-up batch excluded."""
    device = context.device
    torch.manual_seed(0)
    network = FIDInceptionV3()
    images = photo_crops(count, resolution, seed=3, device=torch.device("cpu"))
    rows = []
    for memory_format in formats:
        label = "channels_last" if memory_format == torch.channels_last else "NCHW"
        _reset_peak(device)
        extractor = InceptionFeatureExtractor(network, device=device)
        extractor.memory_format = memory_format
        extractor.inference_network = extractor.inference_network.to(memory_format=memory_format)
        extractor.features(images[:batch], logits=False)  # warm-up: kernels chosen, memory allocated

        def run(extractor=extractor):
            for start in range(0, count, batch):
                extractor.features(images[start:start + batch], logits=False)

        _, seconds = timed(run, device)
        rate = count / seconds
        rows.append(Row(f"FID features at {resolution}², {label}", rate, "images/s",
                        _note(device, f"{FID_REFERENCE_COUNT} images: {FID_REFERENCE_COUNT / rate:.0f} s; "
                                      f"batch {batch}"), seconds))
    return rows


def msssim_row(context: SuiteContext, pairs: int, resolution: int) -> Row:
    device = context.device
    _reset_peak(device)
    a = photo_crops(pairs, resolution, seed=4, device=device)
    b = photo_crops(pairs, resolution, seed=5, device=device)
    ms_ssim(a[:2], b[:2])  # warm-up
    values, seconds = timed(lambda: ms_ssim(a, b), device)
    return Row(f"MS-SSIM {pairs} pairs at {resolution}²", pairs / seconds, "pairs/s",
               _note(device, f"mean {float(values.mean()):.4f}"), seconds)


def plan(smoke: bool) -> list[tuple[str, object]]:
    """(label, call(context) -> Row or [Row]) in order of importance: the budget cuts from the end."""
    if smoke:
        return [("swd", lambda c: swd_row(c, 16, 32)),
                ("fid 128", lambda c: fid_feature_rows(c, 2, 128, 2, formats=(torch.channels_last,))),
                ("msssim 128", lambda c: msssim_row(c, 2, 128))]
    return [("swd", lambda c: swd_row(c, 16384, 128)),
            ("fid 128", lambda c: fid_feature_rows(c, 4096, 128, 64)),
            ("fid 1024", lambda c: fid_feature_rows(c, 1024, 1024, 64)),
            ("msssim 128", lambda c: msssim_row(c, 10000, 128)),
            ("msssim 1024", lambda c: msssim_row(c, 500, 1024))]


def run(budget_seconds: float) -> list[Row]:
    context = SuiteContext.from_environment()
    deadline = Deadline(budget_seconds)
    rows: list[Row] = []
    for label, measure in plan(context.smoke):
        if deadline.expired() and not context.smoke:  # a smoke run checks every step, however slow the CPU
            rows.append(Row(label, float("nan"), "", "skipped: the section's budget is spent"))
            continue
        try:
            produced = measure(context)
        except Exception as error:  # noqa: BLE001 - one failed figure must not cost the section's other rows
            produced = Row(label, float("nan"), "", f"failed: {type(error).__name__}: {str(error)[:200]}")
            if context.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.extend(produced if isinstance(produced, list) else [produced])
    return rows
