"""`ganeval all`: one decoding pass per image set feeding SWD, MS-SSIM (generated set) and FID together.

Each set is streamed once, as a seeded random order (generated: `seed`, real: `seed + 1`, like `ganeval swd`);
each metric takes the first images of that stream it needs: SWD the first `swd_images` (so the SWD numbers
equal `ganeval swd` with the same seed), MS-SSIM the first 2·`msssim_pairs` generated images, FID the first
`fid_images` of each set. Under torchrun the ranks split the streams like every other command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from gancore import distributed
from gancore.errors import UserError
from .fid import FeatureStatistics, frechet_distance
from .inception import load_inception
from .msssim import MIN_SIZE as MSSSIM_MIN_SIZE
from .msssim import MSSSIMDiversity
from gancore.runtime import progress_bar, resolve_device
from gancore.sources import ImageStream, open_source, peek_shape
from .swd import (
    SWDAccumulator,
    SWDLevels,
    baseline_count_for,
    check_swd_sources,
    default_batch_size,
    level_key,
)

METRICS = ("swd", "msssim", "fid")


@dataclass
class AllResult:
    """Every metric of one `ganeval all` run (None for metrics not asked)."""

    swd: SWDLevels | None
    swd_baseline: SWDLevels | None
    msssim: float | None
    fid: float | None
    counts: dict[str, int]
    seed: int
    device: str
    seconds: float
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"metric": "all", "seed": self.seed, "num_images": dict(self.counts)}
        if self.swd is not None:
            out["swd"] = {"metric": "swd", "num_images": self.counts["swd"], "levels": self.swd.levels,
                          "avg": self.swd.avg}
            if self.swd_baseline is not None:
                out["swd"]["baseline"] = {"levels": self.swd_baseline.levels, "avg": self.swd_baseline.avg}
        if self.msssim is not None:
            out["msssim"] = {"metric": "msssim", "num_pairs": self.counts["msssim_pairs"], "value": self.msssim}
        if self.fid is not None:
            out["fid"] = {"metric": "fid", "num_images": self.counts["fid"], "value": self.fid}
        out["skipped"] = {name: len(items) for name, items in self.skipped.items()}
        out["device"], out["seconds"] = self.device, round(self.seconds, 3)
        return out


def evaluate_all(gen, real, metrics=METRICS, swd_images: int = 16384, msssim_pairs: int = 10000,
                 fid_images: int = 50000, seed: int = 1000, baseline: bool = False, inception=None,
                 resize: str = "tf", device=None, batch_size: int | None = None, skip_bad: bool = False,
                 num_workers: int | None = None, progress: bool = True, extractor=None,
                 allow_singular: bool = False) -> AllResult:
    """SWD (GEN vs REAL), MS-SSIM (among GEN) and FID (GEN vs REAL) from one decoding pass per set.

    gen, real: image sources (paths, ImageSources or uint8 arrays) of one size. Counts default to the paper's.
    `extractor` (anything with `.features(uint8 NCHW, logits=False)`) replaces the Inception loaded from
    `inception`. Raises UserError / SourceError when a set has fewer images than a metric needs.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise UserError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(METRICS)}")
    started = time.perf_counter()
    device = resolve_device(device)
    gen_source, real_source = open_source(gen), open_source(real)
    gen_needed = {"swd": swd_images, "msssim": 2 * msssim_pairs, "fid": fid_images}
    real_needed = {"swd": swd_images, "fid": fid_images}

    swd_accumulator = None
    sizes = None
    if "swd" in metrics:
        sizes = check_swd_sources(gen_source, real_source, swd_images, skip_bad)
        baseline_count = baseline_count_for(swd_images, len(real_source)) if baseline else 0
        swd_accumulator = SWDAccumulator(swd_images, sizes, seed, device, baseline_count)
        real_needed["swd"] = swd_accumulator.real_needed
    gen_count = max(gen_needed[m] for m in metrics)
    real_count = max([real_needed[m] for m in metrics if m in real_needed], default=0)
    for name, source, count in (("generated", gen_source, gen_count), ("real", real_source, real_count)):
        if len(source) < count:
            raise UserError(f"{source.path}: has {len(source)} images, the {name} set needs {count} for "
                               f"{', '.join(metrics)}; lower --swd-images / --msssim-pairs / --fid-images")

    shape = sizes[0] if sizes else peek_shape(gen_source, skip_bad)
    if "msssim" in metrics and min(shape) < MSSSIM_MIN_SIZE:
        raise UserError(f"images of {shape[1]}x{shape[0]} are too small for MS-SSIM (sides ≥ {MSSSIM_MIN_SIZE})")
    batch_size = batch_size or default_batch_size(*shape, device)
    batch_size += batch_size % 2  # whole MS-SSIM pairs per block

    diversity = MSSSIMDiversity(device) if "msssim" in metrics else None
    if "fid" not in metrics:
        extractor = None
    elif extractor is None:
        extractor = load_inception(inception, device=device, resize=resize)
    features = {"gen": FeatureStatistics(), "real": FeatureStatistics()}

    skipped = {}
    for name, source, count, stream_seed in (("gen", gen_source, gen_count, seed), ("real", real_source,
                                                                                      real_count, seed + 1)):
        if count == 0:
            continue
        stream = ImageStream(source, num_images=count, seed=stream_seed, batch_size=batch_size,
                             skip_bad=skip_bad, num_workers=num_workers)
        with progress_bar(count // distributed.world_size(), f"all: {name}", progress) as bar:
            for position, batch in stream.batches():
                batch = batch.to(device, non_blocking=True)
                if swd_accumulator is not None:
                    (swd_accumulator.add_generated if name == "gen" else swd_accumulator.add_real)(batch, position)
                if diversity is not None and name == "gen" and position < gen_needed["msssim"]:
                    diversity.add(batch[:gen_needed["msssim"] - position])
                if extractor is not None and position < fid_images:
                    pool3, _ = extractor.features(batch[:fid_images - position], logits=False)
                    features[name].add(pool3)
                bar.update(batch.shape[0])
        skipped[name] = [f"{item.name}: {item.reason}" for item in stream.skipped]

    swd_levels = swd_baseline = None
    if swd_accumulator is not None:
        main, base = swd_accumulator.finish(progress)
        keys = [level_key(h, w) for h, w in sizes]
        swd_levels = SWDLevels.from_values(keys, main)
        swd_baseline = SWDLevels.from_values(keys, base) if base is not None else None
    msssim_value = None
    if diversity is not None:
        diversity.combine_ranks()
        msssim_value = diversity.value
    fid_value = None
    if extractor is not None:
        for statistics in features.values():
            statistics.all_reduce()
        gen_stats, real_stats = features["gen"], features["real"]
        if fid_images <= gen_stats.dim and not allow_singular:
            raise UserError(f"only {fid_images} images for {gen_stats.dim}-d features: the covariance is "
                               f"singular and FID strongly biased; use --fid-images > {gen_stats.dim}, or pass "
                               "--allow-singular to compute it anyway")
        fid_value = frechet_distance(gen_stats.mean(), gen_stats.covariance(), real_stats.mean(),
                                     real_stats.covariance(), device=device)
    counts = {"swd": swd_images, "msssim_pairs": msssim_pairs, "fid": fid_images}
    return AllResult(swd=swd_levels, swd_baseline=swd_baseline, msssim=msssim_value, fid=fid_value,
                     counts={k: v for k, v in counts.items() if k.split("_")[0] in metrics}, seed=seed,
                     device=str(device), seconds=time.perf_counter() - started, skipped=skipped)


def paper_table(result: AllResult) -> tuple[list[str], list[float]]:
    """Columns and values shaped like the paper's Table 1: SWD per level and avg (×1e3), MS-SSIM, FID."""
    columns, values = [], []
    if result.swd is not None:
        columns += [f"SWD {key}" for key in result.swd.levels] + ["SWD avg"]
        values += list(result.swd.levels.values()) + [result.swd.avg]
    if result.msssim is not None:
        columns.append("MS-SSIM")
        values.append(result.msssim)
    if result.fid is not None:
        columns.append("FID")
        values.append(result.fid)
    return columns, list(np.asarray(values, dtype=float))


__all__ = ["METRICS", "AllResult", "evaluate_all", "paper_table"]
