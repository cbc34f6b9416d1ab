"""`evaluate_all`: the paper's table (SWD, MS-SSIM of the generated set, FID; optionally IS, KID, PR) from one
decoding pass per set, a thin use of `metric_main.compute_metrics`.

Each set is streamed once, as a seeded random order (generated: `seed`, real: `seed + 1`, like `ganeval swd`);
each metric takes the first images of that stream it needs: SWD the first `swd_images` (so the SWD numbers
equal `ganeval swd` with the same seed), MS-SSIM the first 2·`msssim_pairs` generated images, FID (and IS, KID,
PR) the first `fid_images` of each set. Under torchrun the ranks split the streams like every other command.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metric_main import MetricsResult, compute_metrics
from .registry import MetricSettings, metric_spec
from .swd import SWDLevels, SWDResult

METRICS = ("swd", "msssim", "fid")  # the paper's Table 1; `compute_metrics` runs every registered metric


@dataclass
class AllResult(MetricsResult):
    """`MetricsResult` with the paper's headline numbers as attributes (None for metrics not asked)."""

    @property
    def swd(self) -> SWDResult | None:
        return self.results.get("swd")

    @property
    def swd_baseline(self) -> SWDLevels | None:
        return self.swd.baseline if self.swd is not None else None

    @property
    def msssim(self) -> float | None:
        return self.results["msssim"].value if "msssim" in self.results else None

    @property
    def fid(self) -> float | None:
        return self.results["fid"].value if "fid" in self.results else None


def evaluate_all(gen, real, metrics=METRICS, swd_images: int = 16384, msssim_pairs: int = 10000,
                 fid_images: int = 50000, seed: int = 1000, baseline: bool = False, inception=None,
                 resize: str = "tf", device=None, batch_size: int | None = None, skip_bad: bool = False,
                 num_workers: int | None = None, progress: bool = True, extractor=None,
                 allow_singular: bool = False) -> AllResult:
    """SWD (GEN vs REAL), MS-SSIM (among GEN) and FID (GEN vs REAL), or any registered `metrics`, from one
    decoding pass per set.

    gen, real: image sources (paths, ImageSources or uint8 arrays) of one size. Counts default to the paper's.
    `extractor` (anything with `.features(uint8 NCHW, logits=bool)`) replaces the Inception loaded from
    `inception`. Raises UserError / SourceError when a set has fewer images than a metric needs.
    """
    settings = MetricSettings.from_values(seed, progress, swd_images=swd_images, baseline=baseline,
                                          msssim_pairs=msssim_pairs, fid_images=fid_images,
                                          allow_singular=allow_singular)
    result = compute_metrics(gen, real, metrics, settings, inception=inception, resize=resize, device=device,
                             batch_size=batch_size, skip_bad=skip_bad, num_workers=num_workers,
                             extractor=extractor)
    return AllResult(**vars(result))


def paper_table(result: MetricsResult) -> tuple[list[str], list[float]]:
    """Columns and values shaped like the paper's Table 1: SWD per level and avg (×1e3), MS-SSIM, FID; then
    IS, KID, precision/recall and any other registered metric's columns (`MetricSpec.table_columns`)."""
    pairs = [pair for name, item in result.results.items() for pair in metric_spec(name).table_columns(item)]
    return [column for column, _ in pairs], list(np.asarray([value for _, value in pairs], dtype=float))


__all__ = ["METRICS", "AllResult", "evaluate_all", "paper_table"]
