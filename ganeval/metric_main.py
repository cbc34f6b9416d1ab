"""The six built-in metrics' registered specs, and `compute_metrics`: the one entry point behind `ganeval all`,
the single-metric commands for KID and precision/recall, `progan evaluate` and the trainer's snapshot metrics
(model: stylegan2-ada's metric_main).

Each spec (see `registry`) owns its settings (a small dataclass), counts, checks, table columns and CLI
options. `compute_metrics` builds the asked metrics, opens one stream per set (generated: seed, real: seed + 1,
as `ganeval swd`), runs one pass (each image decoded once, the Inception run once per image for all feature
metrics) and returns every metric's result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import click

from gancore.runtime import resolve_device
from gancore.sources import ImageSource, open_source, pair_sources

from .features import LazyExtractor, feature_cache
from .fid import FIDMetric, singular_problem
from .isc import ISMetric
from .kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, KIDMetric
from .metric_utils import (
    ImageSet,
    MetricResult,
    PassOptions,
    Problems,
    run_pass,
    share_feature_rows,
    stream_seed,
)
from .msssim import MIN_SIZE as MSSSIM_MIN_SIZE
from .msssim import MSSSIMMetric
from .precision_recall import DEFAULT_K, PRMetric
from .registry import (
    MetricContext,
    MetricSettings,
    MetricSpec,
    ResolvedCounts,
    metric_spec,
    parse_metric_names,
    register_metric,
    resolve_counts,
    setting,
)
from .report import command_report
from .swd import SWDMetric, baseline_count_for, check_swd_sources, default_batch_size, swd_problems


@dataclass(frozen=True)
class SWDSettings:
    images: int | None = setting(None, "SWD: images per set [the paper's 16384, or all when a set holds fewer].",
                                 click.IntRange(1))
    baseline: bool = setting(False, "Also the SWD real-vs-real floor.", option="baseline", flag=True)


@dataclass(frozen=True)
class MSSSIMSettings:
    pairs: int | None = setting(None, "MS-SSIM: pairs of generated images [the paper's 10000, or all pairs there "
                                      "are].", click.IntRange(1))


@dataclass(frozen=True)
class FIDSettings:
    images: int | None = setting(None, "Images per set for FID, and for IS, KID and PR unless set apart (one "
                                       "Inception pass) [the paper's 50000, or all when a set holds fewer].",
                                 click.IntRange(2))
    allow_singular: bool = setting(False, "Compute FID even with no more images than feature dimensions "
                                          "(singular covariance, biased value).", option="allow-singular", flag=True)


@dataclass(frozen=True)
class ISSettings:
    images: int | None = setting(None, "IS: generated images [--fid-images].", click.IntRange(1))
    splits: int = setting(10, "IS: splits the images are cut into (mean ± std over them).", click.IntRange(1))


@dataclass(frozen=True)
class KIDSettings:
    images: int | None = setting(None, "KID: images per set [--fid-images].", click.IntRange(2))
    subsets: int = setting(DEFAULT_SUBSETS, "KID: subsets averaged (mean ± std).", click.IntRange(1))
    subset_size: int = setting(DEFAULT_SUBSET_SIZE, "KID: features per subset (shrinks to the set size, with a "
                                                    "note).", click.IntRange(2))


@dataclass(frozen=True)
class PRSettings:
    images: int | None = setting(None, "Precision/recall: images per set [--fid-images].", click.IntRange(2))
    k: int = setting(DEFAULT_K, "Precision/recall: the k of the k-NN manifold radii.", click.IntRange(1))


def _build_swd(settings: SWDSettings, context: MetricContext) -> SWDMetric:
    gen, real = context.sources["gen"], context.sources["real"]
    sizes = check_swd_sources(gen, real, settings.images, context.skip_bad)
    baseline = baseline_count_for(settings.images, len(real)) if settings.baseline else 0
    return SWDMetric(settings.images, sizes, context.seed, context.device, baseline, context.progress)


def _check_swd(settings: SWDSettings, context: MetricContext, problems: Problems) -> None:
    problems.items.extend(swd_problems(context.size("gen"), len(context.sources["real"]), settings.baseline))


def _check_msssim(settings: MSSSIMSettings, context: MetricContext, problems: Problems) -> None:
    height, width = context.size("gen")
    if min(height, width) < MSSSIM_MIN_SIZE:
        problems.add(f"images of {width}x{height} are too small for MS-SSIM (sides ≥ {MSSSIM_MIN_SIZE})")


def _check_fid(settings: FIDSettings, context: MetricContext, problems: Problems) -> None:
    dim = context.extractor.feature_dim if context.extractor is not None else None
    if dim is not None:
        singular_problem(settings.images, dim, settings.allow_singular, problems, "fid_images")


def _check_is(settings: ISSettings, context: MetricContext, problems: Problems) -> None:
    if settings.images < settings.splits:
        problems.add(f"the Inception Score with {settings.splits} splits needs at least {settings.splits} "
                     f"images, {settings.images} asked (lower {problems.option('is_splits')})")
    if context.extractor is not None and (reason := context.extractor.logits_problem()):
        problems.add(reason)


def _check_pr(settings: PRSettings, context: MetricContext, problems: Problems) -> None:
    if settings.images <= settings.k:
        problems.add(f"precision/recall with k = {settings.k} needs more than {settings.k} images per set, "
                     f"{settings.images} asked (lower {problems.option('pr_k')})")


register_metric(MetricSpec(
    "swd", "sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN)", ("gen", "real"), False, _build_swd,
    SWDSettings, "images", paper_count=16384, check=_check_swd,
    columns=lambda r: [(f"SWD {key}", value) for key, value in r.levels.items()] + [("SWD avg", r.avg)]))
register_metric(MetricSpec(
    "msssim", "MS-SSIM diversity of the generated images (ProGAN)", ("gen",), False,
    lambda s, c: MSSSIMMetric(s.pairs, c.device, c.seed), MSSSIMSettings, "pairs", images_per_count=2,
    count_unit="pairs", paper_count=10000, check=_check_msssim, title="MS-SSIM"))
register_metric(MetricSpec(
    "fid", "Fréchet Inception distance", ("gen", "real"), True,
    lambda s, c: FIDMetric(s.images, s.allow_singular, c.device), FIDSettings, "images", paper_count=50000,
    check=_check_fid))
register_metric(MetricSpec(
    "is", "Inception score of the generated images", ("gen",), True,
    lambda s, c: ISMetric(s.images, s.splits, c.seed), ISSettings, "images", count_default_from="fid",
    check=_check_is))
register_metric(MetricSpec(
    "kid", "kernel Inception distance (unbiased MMD², cubic kernel)", ("gen", "real"), True,
    lambda s, c: KIDMetric(s.images, s.subsets, s.subset_size, c.seed, c.device), KIDSettings, "images",
    count_default_from="fid"))
register_metric(MetricSpec(
    "pr", "precision and recall with k-NN manifolds of the Inception features", ("gen", "real"), True,
    lambda s, c: PRMetric(s.images, s.k, c.device), PRSettings, "images", count_default_from="fid",
    check=_check_pr, title="precision/recall",
    columns=lambda r: [("precision", r.precision), ("recall", r.recall)]))


@dataclass
class MetricsResult:
    """Every asked metric's result (by name, in the asked order) of one pass, with what the pass saw."""

    results: dict[str, MetricResult]
    seed: int
    device: str
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # the path of each set's source

    def all_notes(self) -> list[str]:
        """The pass's notes, then each metric's ("kid: ...")."""
        return self.notes + [f"{name}: {note}" for name, result in self.results.items()
                             for note in getattr(result, "notes", [])]

    def to_dict(self, command: str = "all") -> dict:
        """The JSON object of `ganeval all --json` (and `kid`, `pr`): `report.command_report`'s shape."""
        return command_report(command, self.results, num_images=self.counts, seed=self.seed, sources=self.sources,
                              notes=self.all_notes(), skipped=self.skipped, device=self.device,
                              seconds=self.seconds)


def check_before_work(names: list[str], counts: ResolvedCounts, context: MetricContext,
                      problems: Problems) -> None:
    """Every problem of the asked metrics that shows without decoding (counts against the sets, sizes, a
    singular FID, weights without logits), raised together as one UserError."""
    for name in names:
        spec = metric_spec(name)
        if "real" in spec.sets and "real" not in context.sources:
            problems.add(f"{name} compares two sets: give a real image source too")
            continue
        if spec.count is not None:
            for set_name in spec.sets:
                problems.source_count(context.sources[set_name], counts.images(name), spec.display_name,
                                      counts.keys[name])
        spec.check(counts.settings.of(name), context, problems)
    problems.raise_if_any()


def open_sets(gen, real=None, skip_bad: bool = False) -> tuple[dict[str, ImageSource], list[str]]:
    """The image sets of a pass by name ("gen", and "real" when given) and the notes of their pairing: two
    sources of different sizes are compared at the smaller one (`gancore.sources.pair_sources`)."""
    if real is None:
        return {"gen": open_source(gen)}, []
    pair = pair_sources(gen, real, skip_bad)
    return {"gen": pair.gen, "real": pair.real}, pair.notes


def compute_metrics(gen, real=None, metrics: str | Iterable[str] | None = None,
                    settings: MetricSettings | None = None, inception=None, resize: str = "tf", device=None,
                    batch_size: int | None = None, skip_bad: bool = False, num_workers: int | None = None,
                    extractor=None, option_names: Mapping[str, str] | None = None, cache: bool = False,
                    cache_dir=None) -> MetricsResult:
    """The asked metrics (names or "a,b"; None: all that apply) from one pass over GEN (and REAL).

    gen, real: image sources (paths, ImageSources, uint8 arrays); of two sizes, the larger is matched to the
    smaller (an HDF5 file's level, else the box filter chain; said in `notes`). `extractor` (anything with
    `.features(uint8 NCHW, logits=bool)`) replaces the Inception found from `inception` and loaded with
    `resize` on `device`; it is loaded only when a feature metric is asked (a `features.LazyExtractor` is used as
    is: passes sharing one load the network once). Unset counts of `settings` are
    the paper's or all a set holds (a note). Every problem that shows without decoding (counts, sizes, a
    singular FID, weights without logits) is raised together, before any work, as one UserError naming the
    settings as `option_names` maps them (default: "--fid-images" for `fid_images`).

    With `cache`, each set's Inception features and logits are read from / written to the feature cache
    (`cache_dir`, else $GANEVAL_CACHE/fid; `fid_files.FeatureCache`), shared with `compute_fid` and
    `inception_score_source`; off by default in the Python API, on in the CLI.

    Sampling (every command): GEN is streamed in the order `stream_seed(seed, "gen")` draws, REAL in
    `stream_seed(seed, "real")`'s; a metric reading N images of a set takes the first N of that stream.
    """
    settings = settings or MetricSettings()
    names = parse_metric_names(metrics, with_real=real is not None)
    started = time.perf_counter()
    device = resolve_device(device)
    sources, notes = open_sets(gen, real, skip_bad)
    problems = Problems(option_names)
    counts = resolve_counts(names, settings, sources, problems)
    lazy = None
    if any(metric_spec(name).features for name in names):  # a LazyExtractor is shared as is (loaded once)
        lazy = extractor if isinstance(extractor, LazyExtractor) else LazyExtractor(extractor, inception, resize,
                                                                                     device)
    context = MetricContext(sources, device, skip_bad, lazy, settings.seed, settings.progress)
    check_before_work(names, counts, context, problems)
    built = [metric_spec(name).build(counts.settings.of(name), context) for name in names]
    share_feature_rows(built)  # KID and PR keep one copy of the same features
    if batch_size is None:
        batch_size = default_batch_size(*context.size("gen"), device)
    features = feature_cache(lazy, cache, cache_dir) if lazy is not None else None
    options = PassOptions(device=device, batch_size=batch_size + batch_size % 2,  # whole MS-SSIM pairs per block
                          skip_bad=skip_bad, num_workers=num_workers, progress=settings.progress,
                          description="metrics", cache=features)
    report = run_pass(built, {name: ImageSet(source, stream_seed(settings.seed, name))
                              for name, source in sources.items()}, options, extractor=lazy)
    results = {metric.name: metric.result() for metric in built}
    return MetricsResult(results=results, seed=settings.seed, device=str(device),
                         seconds=time.perf_counter() - started,
                         counts={name: counts.images(name) for name in names if metric_spec(name).count},
                         skipped=report.skipped, sources={name: source.path for name, source in sources.items()},
                         notes=notes + problems.notes + (features.notes if features is not None else []))


__all__ = ["FIDSettings", "ISSettings", "KIDSettings", "MSSSIMSettings", "MetricsResult", "PRSettings", "SWDSettings",
           "check_before_work", "compute_metrics", "open_sets"]
