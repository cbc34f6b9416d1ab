"""Fréchet Inception Distance: statistics of a source (cached), FID of two sources or statistics files, and the
registry's FID metric.

The pieces live beside this module: the distance and the streaming statistics in `frechet` (pure math), the
statistics files and the cache in `fid_files`, the Inception pass in `features`. Here: `compute_statistics`
(μ, Σ of pool3 of one source, through the cache), `compute_fid` (two sides, each a source or a pytorch-fid
compatible `.npz` with `mu` and `sigma`) and `FIDMetric`, the form `ganeval all` and the trainer run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gancore.errors import UserError
from gancore.sources import ImageSource, ImageStream, open_source, pair_sources

from .features import LazyExtractor, extract, feature_cache
from .fid_files import (
    CACHE_ENV_VAR,
    StatsResult,
    default_cache_dir,
    is_statistics_file,
    read_statistics,
    settings_problems,
    to_numpy64,
    weights_identity,
)
from .frechet import FeatureStatistics, frechet_distance
from .metric_utils import Batch, Needs, Problems, default_count, stream_seed

DEFAULT_NUM_IMAGES = 50000
DEFAULT_SEED = 1000


def singular_note(count: int, dim: int, allow_singular: bool, option: str = "--num-images") -> str | None:
    """None when `count` images give a full-rank covariance for `dim`-d features; else a note (with
    `allow_singular`) or UserError: with count ≤ dim the covariance is singular and FID strongly biased."""
    if count > dim:
        return None
    problem = (f"only {count} images for {dim}-d features: the covariance is singular and FID is strongly "
               "biased upwards")
    if not allow_singular:
        raise UserError(f"{problem}; use more than {dim} images per set ({option}; papers: 50000), or pass "
                        "--allow-singular to compute it anyway")
    return f"{problem}; compare only numbers made with the same count (papers: 50000)"


def singular_problem(count: int, dim: int, allow_singular: bool, problems, setting: str = "fid_images") -> None:
    """Add to `problems` (a `metric_utils.Problems`) that `count` images per set give a singular covariance
    for `dim`-d features, before anything is computed; with `allow_singular` a note instead."""
    if count > dim:
        return
    problem = (f"only {count} images per set for {dim}-d features: the covariance is singular and FID is "
               "strongly biased upwards")
    if not allow_singular:  # allowed: `singular_note` says so with the result
        problems.add(f"{problem}; use more than {dim} images per set ({problems.option(setting)}; papers: "
                     f"50000), or pass {problems.option('allow_singular')} to compute it anyway")


def feature_identity(lazy: LazyExtractor, cache_dir=None) -> str:
    """The feature network's identity as statistics files record it (`weights_identity` as JSON)."""
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return json.dumps(weights_identity(lazy.weights_file(), lazy.given, directory))


def _compute(source, num_images, seed, lazy: LazyExtractor, batch_size, skip_bad, num_workers, progress,
             cache, cache_dir, description) -> StatsResult:
    """Statistics of the first `num_images` of a source's stream (`seed`), through the feature cache."""
    opened = open_source(source)
    count = len(opened) if num_images is None else int(num_images)
    stream = ImageStream(opened, num_images=count, seed=seed, batch_size=batch_size, skip_bad=skip_bad,
                         num_workers=num_workers)  # raises SourceError when the source is too small
    features = feature_cache(lazy, cache, cache_dir)
    identity = feature_identity(lazy, cache_dir)  # before loading: what a check before work compares with
    extraction = extract(stream, extractor=lazy, progress=progress, description=description, cache=features)
    statistics = extraction.statistics
    return StatsResult(mu=to_numpy64(statistics.mean()), sigma=to_numpy64(statistics.covariance()),
                       num_images=statistics.count, skipped=extraction.skipped, source=opened.path,
                       resize=lazy.resize_mode, features=identity, seed=seed,
                       cache_path=extraction.cache_path, cached=extraction.cached, device=extraction.device,
                       notes=features.notes if features is not None else [])


def compute_statistics(source, num_images: int | None = None, seed: int | None = DEFAULT_SEED, extractor=None,
                       inception=None, resize: str = "tf", device=None, batch_size: int = 64,
                       skip_bad: bool = False, num_workers: int | None = None, progress: bool = True,
                       cache: bool = True, cache_dir=None) -> StatsResult:
    """FID statistics (μ float64 [D], Σ float64 [D, D] of pool3) of `num_images` images of a source (None: the
    paper's 50000, or all when it holds fewer, with a note), cached on disk.

    source: a folder, .zip, .npy/.npz of images, .h5, an ImageSource or a uint8 array, streamed as the REAL set
    of the sampling rule (`stream_seed(seed, "real")`), so that `compute_fid(gen, file)` equals
    `compute_fid(gen, source)`. The result records what `settings_problems` compares. The cache (`cache_dir`, else $GANEVAL_CACHE/fid, else ~/.cache/ganeval/fid) is keyed by
    the source's content listing and the settings (count, seed, resize, weights content); in-memory sources are
    not cached. `extractor` overrides `inception`/`resize`/`device`. Raises SourceError when the source has
    fewer images than asked, UserError for fewer than 2.
    """
    started = time.perf_counter()
    lazy = LazyExtractor(extractor, inception, resize, device)
    problems = Problems({"fid_images": "--num-images"})
    opened = open_source(source)
    count = _side_count(num_images, {"source": opened}, {}, problems)
    problems.raise_if_any()
    result = _compute(opened, count, stream_seed(seed, "real"), lazy, batch_size, skip_bad, num_workers, progress,
                      cache, cache_dir, "Inception")
    result.notes, result.seconds = problems.notes + result.notes, time.perf_counter() - started
    return result


@dataclass
class FIDResult:
    """FID of two sides (`compute_fid`): value ≥ 0, images per side ("a", "b"; None for a file without the
    count), resize mode, the device of the distance, seconds, skipped files and cache hits per side."""

    value: float
    num_images: dict[str, int | None]
    resize: str
    device: str
    seed: int | None = None
    seconds: float = 0.0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON object of `ganeval fid --json` (skipped images as counts per set)."""
        out = {"metric": "fid", "value": self.value, "num_images": dict(self.num_images), "seed": self.seed,
               "resize": self.resize, "device": self.device, "seconds": round(self.seconds, 3),
               "skipped": {name: len(items) for name, items in self.skipped.items()}}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def compute_fid(source_a, source_b, num_images: int | None = None, seed: int | None = DEFAULT_SEED,
                inception=None, resize: str = "tf", device=None, batch_size: int = 64, skip_bad: bool = False,
                num_workers: int | None = None, progress: bool = True, cache: bool = True, cache_dir=None,
                extractor=None, method: str = "symmetric", allow_singular: bool = False,
                option_names: Mapping[str, str] | None = None) -> FIDResult:
    """FID between two image sets; either side may be a statistics `.npz` (keys `mu`, `sigma`).

    Image sides use `num_images` images each (None: the paper's 50000, or all when a side holds fewer, with a
    note), sampled by the rule of every command (`metric_utils.stream_seed`: A is the GEN stream, B the REAL
    one), so the value equals `ganeval all`'s FID for the same seed and count. Two image sides of different
    sizes are compared at the smaller (`pair_sources`). One shared Inception, loaded only if some side is not
    a statistics file or a cache hit.

    Before any image is decoded, every problem is raised together as one UserError (naming the settings as
    `option_names` maps them; default: the CLI's `--num-images`): too few images, a statistics file made with
    other settings (`fid_files.settings_problems`), and N ≤ D images (D = 2048 for pool3), whose covariance is
    singular and FID strongly biased, unless `allow_singular` (then computed exactly, with a note).
    """
    started = time.perf_counter()
    lazy = LazyExtractor(extractor, inception, resize, device)
    problems = Problems({"fid_images": "--num-images", **(option_names or {})})
    files = {name: read_statistics(source) for name, source in (("a", source_a), ("b", source_b))
             if is_statistics_file(source)}
    images, notes = _image_sides(source_a, source_b, files, skip_bad)
    count = _side_count(num_images, images, files, problems)
    reference = (lazy.resize_mode, feature_identity(lazy, cache_dir)) if images else \
        (files["a"].resize, files["a"].features)  # two files: each other's settings
    for statistics in files.values():
        problems.items.extend(settings_problems(statistics, *reference))
        notes += statistics.notes
    known = [n for n in [count] + [f.num_images for f in files.values()] if n is not None]
    dim = next((f.mu.shape[0] for f in files.values()), lazy.feature_dim)
    if known and dim is not None:
        singular_problem(min(known), dim, allow_singular, problems, "fid_images")
    problems.raise_if_any()
    sides = dict(files)
    for name, opened in images.items():
        sides[name] = _compute(opened, count, stream_seed(seed, FID_SIDE_SETS[name]), lazy, batch_size, skip_bad,
                               num_workers, progress, cache, cache_dir, f"Inception {name}")
    a, b = sides["a"], sides["b"]
    if a.mu.shape != b.mu.shape:
        raise UserError(f"the two sets' statistics have different feature dimensions ({a.mu.shape[0]} and "
                        f"{b.mu.shape[0]}); both must come from the same Inception layer")
    counts = [n for n in (a.num_images, b.num_images) if n is not None]
    note = singular_note(min(counts), a.mu.shape[0], allow_singular) if counts else None
    math_device = lazy.math_device()
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=method, device=math_device)
    notes += problems.notes + [text for name in images for text in sides[name].notes] + ([note] if note else [])
    return FIDResult(value=value, num_images={"a": a.num_images, "b": b.num_images},
                     resize=lazy.resize_mode, device=str(math_device), seed=seed,
                     seconds=time.perf_counter() - started, skipped={"a": a.skipped, "b": b.skipped},
                     cached={"a": a.cached, "b": b.cached}, notes=notes)


FID_SIDE_SETS = {"a": "gen", "b": "real"}


def _side_count(num_images: int | None, images: dict[str, ImageSource], files: dict[str, StatsResult],
                problems: Problems) -> int | None:
    """The images per image side: `num_images`, else the paper's, or what the smallest side holds (a
    statistics file: its recorded count); problems for sides holding fewer or a count below 2."""
    if not images:
        return None
    held = [len(opened) for opened in images.values()] + [f.num_images for f in files.values() if f.num_images]
    count = default_count(num_images, DEFAULT_NUM_IMAGES, min(held), "FID images per set", "fid_images", problems)
    if count < 2:
        problems.add(f"FID needs at least 2 images per set, {count} {'asked' if num_images else 'available'}")
    for opened in images.values():
        problems.source_count(opened, count, "FID", "fid_images")
    return count  # `compute_fid`'s sides in the sampling rule


def _image_sides(source_a, source_b, files: dict, skip_bad: bool) -> tuple[dict[str, ImageSource], list[str]]:
    """The opened image sides of `compute_fid` (not statistics files), paired when both are images."""
    if not files:
        pair = pair_sources(source_a, source_b, skip_bad)
        return {"a": pair.gen, "b": pair.real}, list(pair.notes)
    return {name: open_source(source) for name, source in (("a", source_a), ("b", source_b))
            if name not in files}, []


@dataclass
class FIDScore:
    """FID as one metric of a pass (`ganeval all`, the trainer): both sets' first `num_images` images."""

    value: float
    num_images: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"metric": "fid", "num_images": self.num_images, "value": self.value}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class FIDMetric:
    """The registry's FID: pool3 statistics of the first `num_images` of "gen" and "real", then the distance
    (on `device`). Under torchrun the ranks' statistics are combined exactly (`FeatureStatistics.all_reduce`)."""

    name = "fid"

    def __init__(self, num_images: int, allow_singular: bool = False, device=None, method: str = "symmetric"):
        if num_images < 2:
            raise UserError(f"FID needs at least 2 images per set, {num_images} asked")
        self.num_images, self.allow_singular, self.device, self.method = num_images, allow_singular, device, method
        self.needs = Needs({"gen": num_images, "real": num_images}, features=True)
        self.statistics = {"gen": FeatureStatistics(), "real": FeatureStatistics()}

    def add(self, batch: Batch) -> None:
        if batch.set_name in self.statistics and (part := batch.head(self.num_images)) is not None:
            self.statistics[batch.set_name].add(part.features)

    def combine_ranks(self) -> None:
        for statistics in self.statistics.values():
            statistics.all_reduce()

    def result(self) -> FIDScore:
        gen, real = self.statistics["gen"], self.statistics["real"]
        note = singular_note(self.num_images, gen.dim, self.allow_singular, "--fid-images")
        value = frechet_distance(gen.mean(), gen.covariance(), real.mean(), real.covariance(), method=self.method,
                                 device=self.device)
        return FIDScore(value=value, num_images=self.num_images, notes=[note] if note else [])


__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_NUM_IMAGES",
    "FIDMetric",
    "FIDResult",
    "FIDScore",
    "compute_fid",
    "compute_statistics",
    "singular_note",
]
