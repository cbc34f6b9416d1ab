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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import click
import torch

from gancore.errors import UserError
from gancore.runtime import resolve_device
from gancore.sources import ImageSource, open_source, pair_sources, peek_shape

from .features import LazyExtractor, feature_cache
from .fid import FIDMetric, singular_problem
from .isc import ISMetric
from .kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, KIDMetric
from .metric_utils import (
    ImageSet,
    Metric,
    MetricResult,
    PassOptions,
    Problems,
    default_count,
    run_pass,
    share_feature_rows,
    stream_seed,
)
from .msssim import MIN_SIZE as MSSSIM_MIN_SIZE
from .msssim import MSSSIMMetric
from .precision_recall import DEFAULT_K, PRMetric
from .report import command_report
from .swd import SWDMetric, baseline_count_for, check_swd_sources, default_batch_size, swd_problems

PAPER_COUNTS = {"swd_images": 16384, "msssim_pairs": 10000, "fid_images": 50000}  # the paper's (Appendix F)


@dataclass
class MetricSettings:
    """Every metric's settings for one run. A count left None is the paper's (`PAPER_COUNTS`), or all a source
    holds when it holds fewer (said in a note). `is_images`, `kid_images` and `pr_images` default to
    `fid_images`, so that the Inception runs once per image for all four."""

    seed: int = 1000
    swd_images: int | None = None
    baseline: bool = False
    msssim_pairs: int | None = None
    fid_images: int | None = None
    allow_singular: bool = False
    is_images: int | None = None
    is_splits: int = 10
    kid_images: int | None = None
    kid_subsets: int = DEFAULT_SUBSETS
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    pr_images: int | None = None
    pr_k: int = DEFAULT_K
    progress: bool = True
    extra: dict[str, object] = field(default_factory=dict)  # settings of metrics registered from outside

    @classmethod
    def from_options(cls, seed: int, progress: bool, values: dict[str, object]) -> MetricSettings:
        """Settings from `ganeval all`'s metric options (by setting name): the built-in fields, and the rest in
        `extra`."""
        own = {name: value for name, value in values.items() if name in cls.__dataclass_fields__}
        return cls(seed=seed, progress=progress, **own,
                   extra={name: value for name, value in values.items() if name not in own})

    def value(self, setting: str):
        """A setting by name: a field of these settings, else a registered metric's option (`extra`, falling
        back to the option's default)."""
        if setting in self.extra:
            return self.extra[setting]
        if hasattr(self, setting):
            return getattr(self, setting)
        defaults = {option.setting: option.default for spec in _registry.values() for option in spec.options}
        if setting not in defaults:
            raise UserError(f"no metric setting {setting!r}")
        return defaults[setting]

    def images_for(self, metric: str) -> int:
        """The image count per set of an Inception metric ("fid", "is", "kid", "pr")."""
        own = getattr(self, f"{metric}_images", None)
        return self.fid_images if own is None else own

    def count_setting(self, metric: str) -> str:
        """The setting that holds `images_for(metric)` ("kid_images", or "fid_images" when that is unset)."""
        return "fid_images" if getattr(self, f"{metric}_images", None) is None else f"{metric}_images"


@dataclass
class MetricContext:
    """What a metric's checks and builder may look at: the opened sources by set name, the compute device,
    the skip policy, and the feature network (not loaded) when a feature metric is asked."""

    sources: dict[str, ImageSource]
    device: torch.device
    skip_bad: bool = False
    extractor: LazyExtractor | None = None

    def size(self, set_name: str = "gen") -> tuple[int, int]:
        """(H, W) of a set's images, from file headers (nothing decoded)."""
        return tuple(peek_shape(self.sources[set_name], self.skip_bad))


def _no_check(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    """A metric with nothing to check beyond its image counts."""


@dataclass(frozen=True)
class MetricOption:
    """A setting a metric registered from outside the package brings: `--<name>` in `ganeval all` (and its
    `--help`), kept in `MetricSettings.extra` under `setting` (the name with underscores)."""

    name: str
    type: object
    default: object
    help: str
    flag: bool = False  # an on/off switch (`--name`), default off

    @property
    def setting(self) -> str:
        return self.name.replace("-", "_")

    def click_option(self) -> click.Option:
        """The option as `ganeval all` offers it."""
        if self.flag:
            return click.Option([f"--{self.name}"], is_flag=True, default=False, help=self.help)
        return click.Option([f"--{self.name}"], type=self.type, default=self.default,
                            show_default=self.default is not None, help=self.help)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its name, a one-line description, the sets it reads, whether it needs the feature
    network, the builder of a fresh `Metric`, the images it reads per set (`counts(settings)` -> {set: (count,
    the setting that holds it)}) and `check(settings, context, problems)`, which adds to `problems` whatever
    would make it fail, without decoding an image; its table `columns(result)` -> [(column, value)] and the
    CLI `options` it adds to `ganeval all` (its JSON entry is `result.to_dict()`)."""

    name: str
    description: str
    sets: tuple[str, ...]
    features: bool
    build: Callable[[MetricSettings, MetricContext], Metric]
    counts: Callable[[MetricSettings], dict[str, tuple[int, str]]] | None = None
    check: Callable[[MetricSettings, MetricContext, Problems], None] = _no_check
    title: str = ""  # how messages and tables name it (default: the name in capitals)
    columns: Callable[[MetricResult], list[tuple[str, float]]] | None = None  # default: [(title, value)]
    options: tuple[MetricOption, ...] = ()

    def table_columns(self, result: MetricResult) -> list[tuple[str, float]]:
        """The paper-style table's columns for this metric's result."""
        if self.columns is not None:
            return self.columns(result)
        return [(self.display_name, float(getattr(result, "value", getattr(result, "mean", float("nan")))))]

    @property
    def display_name(self) -> str:
        return self.title or self.name.upper()


_registry: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric under `spec.name`."""
    _registry[spec.name] = spec
    return spec


def registered_options() -> list[MetricOption]:
    """Every registered metric's own CLI options, in registration order."""
    return [option for spec in _registry.values() for option in spec.options]


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


def _check_swd(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    problems.items.extend(swd_problems(context.size("gen"), len(context.sources["real"]), settings.baseline))


def _check_msssim(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    height, width = context.size("gen")
    if min(height, width) < MSSSIM_MIN_SIZE:
        problems.add(f"images of {width}x{height} are too small for MS-SSIM (sides ≥ {MSSSIM_MIN_SIZE})")


def _check_fid(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    count, setting = settings.images_for("fid"), settings.count_setting("fid")
    dim = context.extractor.feature_dim if context.extractor is not None else None
    if dim is not None:
        singular_problem(count, dim, settings.allow_singular, problems, setting)


def _check_is(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    count = settings.images_for("is")
    if count < settings.is_splits:
        problems.add(f"the Inception Score with {settings.is_splits} splits needs at least {settings.is_splits} "
                     f"images, {count} asked (lower {problems.option('is_splits')})")
    if context.extractor is not None and (reason := context.extractor.logits_problem()):
        problems.add(reason)


def _check_pr(settings: MetricSettings, context: MetricContext, problems: Problems) -> None:
    count = settings.images_for("pr")
    if count <= settings.pr_k:
        problems.add(f"precision/recall with k = {settings.pr_k} needs more than {settings.pr_k} images per set, "
                     f"{count} asked (lower {problems.option('pr_k')})")


def _feature_counts(metric: str, sets: tuple[str, ...]):
    def counts(settings: MetricSettings) -> dict[str, tuple[int, str]]:
        return {name: (settings.images_for(metric), settings.count_setting(metric)) for name in sets}
    return counts


register_metric(MetricSpec("swd", "sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN)",
                           ("gen", "real"), False, _build_swd,
                           lambda s: {"gen": (s.swd_images, "swd_images"),
                                      "real": (s.swd_images, "swd_images")}, _check_swd,
                           columns=lambda r: [(f"SWD {key}", value) for key, value in r.levels.items()]
                           + [("SWD avg", r.avg)],
                           options=(MetricOption("swd-images", click.IntRange(1), None,
                                                 "SWD: images per set [the paper's 16384, or all when a set holds "
                                                 "fewer]."),
                                    MetricOption("baseline", None, False, "Also the SWD real-vs-real floor.",
                                                 flag=True))))
register_metric(MetricSpec("msssim", "MS-SSIM diversity of the generated images (ProGAN)", ("gen",), False,
                           lambda s, c: MSSSIMMetric(s.msssim_pairs, c.device, s.seed),
                           lambda s: {"gen": (2 * s.msssim_pairs, "msssim_pairs")}, _check_msssim, "MS-SSIM",
                           options=(MetricOption("msssim-pairs", click.IntRange(1), None,
                                                 "MS-SSIM: pairs of generated images [the paper's 10000, or all "
                                                 "pairs there are]."),)))
register_metric(MetricSpec("fid", "Fréchet Inception distance", ("gen", "real"), True,
                           lambda s, c: FIDMetric(s.images_for("fid"), s.allow_singular, c.device),
                           _feature_counts("fid", ("gen", "real")), _check_fid,
                           options=(MetricOption("fid-images", click.IntRange(2), None,
                                                 "Images per set for FID, and for IS, KID and PR unless set apart "
                                                 "(one Inception pass) [the paper's 50000, or all when a set holds "
                                                 "fewer]."),
                                    MetricOption("allow-singular", None, False,
                                                 "Compute FID even with no more images than feature dimensions "
                                                 "(singular covariance, biased value).", flag=True))))
register_metric(MetricSpec("is", "Inception score of the generated images", ("gen",), True,
                           lambda s, c: ISMetric(s.images_for("is"), s.is_splits, s.seed),
                           _feature_counts("is", ("gen",)), _check_is,
                           options=(MetricOption("is-images", click.IntRange(1), None,
                                                 "IS: generated images [--fid-images]."),
                                    MetricOption("is-splits", click.IntRange(1), 10,
                                                 "IS: splits the images are cut into (mean ± std over them)."))))
register_metric(MetricSpec("kid", "kernel Inception distance (unbiased MMD², cubic kernel)", ("gen", "real"),
                           True, lambda s, c: KIDMetric(s.images_for("kid"), s.kid_subsets, s.kid_subset_size,
                                                        s.seed, c.device),
                           _feature_counts("kid", ("gen", "real")),
                           options=(MetricOption("kid-images", click.IntRange(2), None,
                                                 "KID: images per set [--fid-images]."),
                                    MetricOption("kid-subsets", click.IntRange(1), DEFAULT_SUBSETS,
                                                 "KID: subsets averaged (mean ± std)."),
                                    MetricOption("kid-subset-size", click.IntRange(2), DEFAULT_SUBSET_SIZE,
                                                 "KID: features per subset (shrinks to the set size, with a "
                                                 "note)."))))
register_metric(MetricSpec("pr", "precision and recall with k-NN manifolds of the Inception features",
                           ("gen", "real"), True, lambda s, c: PRMetric(s.images_for("pr"), s.pr_k, c.device),
                           _feature_counts("pr", ("gen", "real")), _check_pr, "precision/recall",
                           columns=lambda r: [("precision", r.precision), ("recall", r.recall)],
                           options=(MetricOption("pr-images", click.IntRange(2), None,
                                                 "Precision/recall: images per set [--fid-images]."),
                                    MetricOption("pr-k", click.IntRange(1), DEFAULT_K,
                                                 "Precision/recall: the k of the k-NN manifold radii."))))


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


def resolve_counts(names: list[str], settings: MetricSettings, sources: dict[str, ImageSource],
                   problems: Problems) -> MetricSettings:
    """`settings` with every unset count of the asked metrics filled in: the paper's, or all the sets hold
    when they hold fewer (a note in `problems` says so)."""
    def available(sets) -> int:
        return min(len(sources[name]) for name in sets if name in sources)

    filled = replace(settings)
    if "swd" in names:
        filled.swd_images = default_count(settings.swd_images, PAPER_COUNTS["swd_images"],
                                          available(("gen", "real")), "SWD images per set", "swd_images", problems)
    if "msssim" in names:
        filled.msssim_pairs = default_count(settings.msssim_pairs, PAPER_COUNTS["msssim_pairs"],
                                            len(sources["gen"]) // 2, "MS-SSIM pairs", "msssim_pairs", problems)
    feature_sets = {set_name for name in names if metric_spec(name).features for set_name in metric_spec(name).sets}
    if feature_sets and settings.fid_images is None:
        unset = [name for name in names if metric_spec(name).features and getattr(settings, f"{name}_images", None) is None]
        if unset:
            sets = {set_name for name in unset for set_name in metric_spec(name).sets}
            filled.fid_images = default_count(None, PAPER_COUNTS["fid_images"], available(sets),
                                              f"{'/'.join(n.upper() for n in unset)} images per set",
                                              "fid_images", problems)
    return filled


def check_before_work(names: list[str], settings: MetricSettings, context: MetricContext,
                      problems: Problems) -> None:
    """Every problem of the asked metrics that shows without decoding (counts against the sets, sizes, a
    singular FID, weights without logits), raised together as one UserError."""
    for name in names:
        spec = metric_spec(name)
        if "real" in spec.sets and "real" not in context.sources:
            problems.add(f"{name} compares two sets: give a real image source too")
            continue
        for set_name, (count, setting) in (spec.counts(settings) if spec.counts else {}).items():
            problems.source_count(context.sources[set_name], count, spec.display_name, setting)
        spec.check(settings, context, problems)
    problems.raise_if_any()


def _count_record(names: list[str], settings: MetricSettings) -> dict[str, int]:
    """The images each metric reads per set (MS-SSIM: 2 per pair), as JSON records them."""
    return {name: max(count for count, _ in metric_spec(name).counts(settings).values()) for name in names
            if metric_spec(name).counts is not None}


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
    `resize` on `device`; it is loaded only when a feature metric is asked. Unset counts of `settings` are
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
    settings = resolve_counts(names, settings, sources, problems)
    lazy = LazyExtractor(extractor, inception, resize, device) if any(
        metric_spec(name).features for name in names) else None
    context = MetricContext(sources, device, skip_bad, lazy)
    check_before_work(names, settings, context, problems)
    built = [metric_spec(name).build(settings, context) for name in names]
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
                         seconds=time.perf_counter() - started, counts=_count_record(names, settings),
                         skipped=report.skipped, sources={name: source.path for name, source in sources.items()},
                         notes=notes + problems.notes + (features.notes if features is not None else []))


__all__ = ["MetricContext", "MetricOption", "MetricSettings", "MetricSpec", "MetricsResult", "compute_metrics", "list_metrics",
           "metric_spec", "parse_metric_names", "register_metric", "registered_options"]
