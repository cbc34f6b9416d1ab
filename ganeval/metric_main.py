"""The metric registry and `compute_metrics`, the one entry point behind `ganeval all`, the single-metric
commands for KID and precision/recall, and the trainer's in-loop evaluation (model: stylegan2-ada's
metric_main).

A metric is registered by name with a `MetricSpec`: which image sets it reads ("gen", or "gen" and "real"),
whether it needs the feature network, and a `build(settings, context)` that makes a fresh `Metric` (the protocol
in `metric_utils`) from the run's `MetricSettings`. `compute_metrics` builds the asked metrics, opens one stream
per set (generated: seed, real: seed + 1, as `ganeval swd`), runs one pass (each image decoded once, the
Inception run once per image for all feature metrics) and returns every metric's result.

Adding a metric: write a class with `name`, `needs`, `add`, `combine_ranks`, `result` (see `kid.KIDMetric`),
then `register_metric(MetricSpec("name", "what it is", ("gen", "real"), True, build))`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from gancore.errors import UserError
from gancore.runtime import resolve_device
from gancore.sources import ImageSource, open_source, pair_sources, peek_shape

from .features import LazyExtractor
from .fid import FIDMetric
from .isc import ISMetric
from .kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, KIDMetric
from .metric_utils import ImageSet, Metric, MetricResult, PassOptions, run_pass, share_feature_rows
from .msssim import MIN_SIZE as MSSSIM_MIN_SIZE
from .msssim import MSSSIMMetric
from .precision_recall import DEFAULT_K, PRMetric
from .swd import SWDMetric, baseline_count_for, check_swd_sources, default_batch_size


@dataclass
class MetricSettings:
    """Every metric's settings for one run (the paper's counts by default). `is_images`, `kid_images` and
    `pr_images` default to `fid_images`, so that the Inception runs once per image for all four."""

    seed: int = 1000
    swd_images: int = 16384
    baseline: bool = False
    msssim_pairs: int = 10000
    fid_images: int = 50000
    allow_singular: bool = False
    is_images: int | None = None
    is_splits: int = 10
    kid_images: int | None = None
    kid_subsets: int = DEFAULT_SUBSETS
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    pr_images: int | None = None
    pr_k: int = DEFAULT_K
    progress: bool = True

    def images_for(self, metric: str) -> int:
        """The image count per set of an Inception metric ("fid", "is", "kid", "pr")."""
        own = getattr(self, f"{metric}_images", None)
        return self.fid_images if own is None else own


@dataclass
class MetricContext:
    """What a metric's builder may look at: the opened sources by set name, the compute device, skip policy."""

    sources: dict[str, ImageSource]
    device: torch.device
    skip_bad: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its name, a one-line description, the sets it reads, whether it needs the feature
    network, and the builder of a fresh `Metric`."""

    name: str
    description: str
    sets: tuple[str, ...]
    features: bool
    build: Callable[[MetricSettings, MetricContext], Metric]


_registry: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric under `spec.name`."""
    _registry[spec.name] = spec
    return spec


def list_metrics() -> list[str]:
    """The registered metric names, in registration order."""
    return list(_registry)


def metric_spec(name: str) -> MetricSpec:
    """The spec of a registered metric; UserError naming the choices otherwise."""
    if name not in _registry:
        raise UserError(f"unknown metric {name!r}; choose from {', '.join(_registry)}")
    return _registry[name]


def _build_swd(settings: MetricSettings, context: MetricContext) -> Metric:
    gen, real = context.sources["gen"], context.sources["real"]
    sizes = check_swd_sources(gen, real, settings.swd_images, context.skip_bad)
    baseline = baseline_count_for(settings.swd_images, len(real)) if settings.baseline else 0
    return SWDMetric(settings.swd_images, sizes, settings.seed, context.device, baseline, settings.progress)


def _build_msssim(settings: MetricSettings, context: MetricContext) -> Metric:
    height, width = peek_shape(context.sources["gen"], context.skip_bad)
    if min(height, width) < MSSSIM_MIN_SIZE:
        raise UserError(f"images of {width}x{height} are too small for MS-SSIM (sides ≥ {MSSSIM_MIN_SIZE})")
    return MSSSIMMetric(settings.msssim_pairs, context.device, settings.seed)


register_metric(MetricSpec("swd", "sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN)",
                           ("gen", "real"), False, _build_swd))
register_metric(MetricSpec("msssim", "MS-SSIM diversity of the generated images (ProGAN)", ("gen",), False,
                           _build_msssim))
register_metric(MetricSpec("fid", "Fréchet Inception distance", ("gen", "real"), True,
                           lambda s, c: FIDMetric(s.images_for("fid"), s.allow_singular, c.device)))
register_metric(MetricSpec("is", "Inception score of the generated images", ("gen",), True,
                           lambda s, c: ISMetric(s.images_for("is"), s.is_splits, s.seed)))
register_metric(MetricSpec("kid", "kernel Inception distance (unbiased MMD², cubic kernel)", ("gen", "real"),
                           True, lambda s, c: KIDMetric(s.images_for("kid"), s.kid_subsets, s.kid_subset_size,
                                                        s.seed, c.device)))
register_metric(MetricSpec("pr", "precision and recall with k-NN manifolds of the Inception features",
                           ("gen", "real"), True, lambda s, c: PRMetric(s.images_for("pr"), s.pr_k, c.device)))


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

    def to_dict(self) -> dict:
        """The JSON object of `ganeval all --json`: one entry per metric plus the run's facts."""
        out = {"metric": "all", "seed": self.seed, "num_images": dict(self.counts)}
        out.update({name: result.to_dict() for name, result in self.results.items()})
        out["skipped"] = {name: len(items) for name, items in self.skipped.items()}
        out["device"], out["seconds"] = self.device, round(self.seconds, 3)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def parse_metric_names(metrics: str | Iterable[str] | None, with_real: bool = True) -> list[str]:
    """Names from "a,b" or a list, checked against the registry; None: every registered metric that applies
    (those reading "real" only when a real set is given)."""
    if metrics is None:
        return [name for name, spec in _registry.items() if with_real or "real" not in spec.sets]
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = list(dict.fromkeys(name for name in names if name))
    unknown = [name for name in names if name not in _registry]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {unknown or '(none given)'}; choose from {', '.join(_registry)}")
    return names


def _metric_counts(names: list[str], settings: MetricSettings) -> dict[str, int]:
    counts = {}
    for name in names:
        if name == "swd":
            counts["swd"] = settings.swd_images
        elif name == "msssim":
            counts["msssim_pairs"] = settings.msssim_pairs
        elif name in ("fid", "is", "kid", "pr"):
            counts[name] = settings.images_for(name)
    return counts


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
                    extractor=None) -> MetricsResult:
    """The asked metrics (names or "a,b"; None: all that apply) from one pass over GEN (and REAL).

    gen, real: image sources (paths, ImageSources, uint8 arrays); of two sizes, the larger is matched to the
    smaller (an HDF5 file's level, else the box filter chain; said in `notes`). `extractor` (anything with
    `.features(uint8 NCHW, logits=bool)`) replaces the Inception found from `inception` and loaded with
    `resize` on `device`; it is loaded only when a feature metric is asked. Raises UserError / SourceError
    when a set has fewer images than a metric needs or a metric does not apply.
    """
    settings = settings or MetricSettings()
    names = parse_metric_names(metrics, with_real=real is not None)
    started = time.perf_counter()
    device = resolve_device(device)
    sources, notes = open_sets(gen, real, skip_bad)
    context = MetricContext(sources, device, skip_bad)
    for name in names:
        if "real" in metric_spec(name).sets and real is None:
            raise UserError(f"{name} compares two sets: give a real image source too")
    built = [metric_spec(name).build(settings, context) for name in names]
    share_feature_rows(built)  # KID and PR keep one copy of the same features
    lazy = LazyExtractor(extractor, inception, resize, device) if any(
        metric_spec(name).features for name in names) else None
    if batch_size is None:
        batch_size = default_batch_size(*peek_shape(sources["gen"], skip_bad), device)
    options = PassOptions(device=device, batch_size=batch_size + batch_size % 2,  # whole MS-SSIM pairs per block
                          skip_bad=skip_bad, num_workers=num_workers, progress=settings.progress,
                          description="metrics")
    seeds = {"gen": settings.seed, "real": settings.seed + 1}
    report = run_pass(built, {name: ImageSet(source, seeds[name]) for name, source in sources.items()}, options,
                      extractor=lazy)
    results = {metric.name: metric.result() for metric in built}
    return MetricsResult(results=results, seed=settings.seed, device=str(device),
                         seconds=time.perf_counter() - started, counts=_metric_counts(names, settings),
                         skipped=report.skipped, notes=notes)


__all__ = ["MetricContext", "MetricSettings", "MetricSpec", "MetricsResult", "compute_metrics", "list_metrics",
           "metric_spec", "parse_metric_names", "register_metric"]
