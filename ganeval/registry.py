"""The metric registry: one registered `MetricSpec` is one metric (model: stylegan2-ada's metric_main).

A spec owns everything about its metric that the rest of the toolkit reads:

- its settings, a small dataclass whose fields are made with `setting(default, help, ...)`: each field is a
  `--<metric>-<field>` option of `ganeval all` (and of the single-metric commands that name it), a key of
  `MetricSettings.from_values` ("kid_subsets"), and what messages call it;
- the sets it reads ("gen", or "gen" and "real"), whether it needs the feature network, and its image count:
  the settings field holding it (`count`), images per counted item (MS-SSIM: 2 per pair), the paper's count, or
  the metric whose count it shares when unset (`count_default_from`: IS, KID and PR read FID's, so that the
  Inception runs once per image for all four);
- `check(settings, context, problems)`: what would make it fail, found without decoding an image;
- `build(settings, context)`: a fresh `Metric` (the protocol in `metric_utils`);
- its table columns (`columns(result)`; default one column, the title) and its JSON entry (`result.to_dict()`).

Adding a metric is one file: a settings dataclass, a `Metric` class, and `register_metric(MetricSpec(...))`
(see tests/ganeval/test_toy_metric.py). The built-in six are registered in `metric_main`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
import torch

from gancore.errors import UserError
from gancore.sources import ImageSource, peek_shape

from .features import LazyExtractor
from .metric_utils import Metric, MetricResult, Problems, default_count


def setting(default: Any, help: str, type: Any = None, option: str | None = None, flag: bool = False):
    """A field of a metric's settings dataclass: its default, its help text, the click type of its option, and the
    option's name when not `<metric>-<field>` (e.g. "baseline"). `flag`: an on/off switch, default off."""
    return field(default=default, metadata={"help": help, "type": type, "option": option, "flag": flag})


@dataclass(frozen=True)
class NoSettings:
    """The settings of a metric that has none."""


@dataclass(frozen=True)
class MetricOption:
    """One field of a registered metric's settings as the CLIs offer it: `--<name>`, kept under `key` (the name
    with underscores) in `MetricSettings.from_values`, and the field it sets."""

    name: str
    metric: str
    field: str
    type: Any
    default: Any
    help: str
    flag: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def click_option(self) -> click.Option:
        """The option as the commands offer it."""
        if self.flag:
            return click.Option([f"--{self.name}", self.key], is_flag=True, default=False, help=self.help)
        return click.Option([f"--{self.name}", self.key], type=self.type, default=self.default,
                            show_default=self.default is not None, help=self.help)


@dataclass
class MetricContext:
    """What a metric's checks and builder may look at: the opened sources by set name, the compute device, the
    skip policy, the feature network (not loaded) when a feature metric is asked, and the run's seed (generated
    stream: seed, reals: seed + 1) and progress switch."""

    sources: dict[str, ImageSource]
    device: torch.device
    skip_bad: bool = False
    extractor: LazyExtractor | None = None
    seed: int = 1000
    progress: bool = True

    def size(self, set_name: str = "gen") -> tuple[int, int]:
        """(H, W) of a set's images, from file headers (nothing decoded)."""
        return tuple(peek_shape(self.sources[set_name], self.skip_bad))


def _no_check(settings: Any, context: MetricContext, problems: Problems) -> None:
    """A metric with nothing to check beyond its image counts."""


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric (see the module's docstring): `build(settings, context)` and `check(settings,
    context, problems)` get this metric's own settings (an instance of `settings`, counts filled in)."""

    name: str
    description: str
    sets: tuple[str, ...]
    features: bool
    build: Callable[[Any, MetricContext], Metric]
    settings: type = NoSettings
    count: str | None = None  # the settings field holding the count per set (None: the metric reads no images)
    images_per_count: int = 1  # images each counted item reads (MS-SSIM: 2 per pair)
    count_unit: str = "images per set"  # how notes name the count ("pairs")
    paper_count: int | None = None  # an unset count's default (lowered to what the sets hold, with a note)
    count_default_from: str | None = None  # an unset count is this metric's (IS, KID, PR: "fid")
    check: Callable[[Any, MetricContext, Problems], None] = _no_check
    title: str = ""  # how messages and tables name it (default: the name in capitals)
    columns: Callable[[MetricResult], list[tuple[str, float]]] | None = None  # default: [(title, value)]

    @property
    def display_name(self) -> str:
        return self.title or self.name.upper()

    def options(self) -> list[MetricOption]:
        """Its settings' fields as CLI options."""
        return [MetricOption(item.metadata.get("option") or f"{self.name}-{item.name.replace('_', '-')}",
                             self.name, item.name, item.metadata.get("type"), item.default,
                             item.metadata.get("help", ""), item.metadata.get("flag", False))
                for item in dataclasses.fields(self.settings)]

    def count_key(self) -> str:
        """The key (and, with dashes, the option) of its count setting."""
        return next(option.key for option in self.options() if option.field == self.count)

    def table_columns(self, result: MetricResult) -> list[tuple[str, float]]:
        """The paper-style table's columns for this metric's result."""
        if self.columns is not None:
            return self.columns(result)
        return [(self.display_name, float(getattr(result, "value", getattr(result, "mean", float("nan")))))]


_registry: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric under `spec.name`. ValueError for a spec whose count cannot be known: a `count`
    that is not a field of its settings, a `count_default_from` that names no registered metric with a count, or a
    count that may be unset (default None) with neither a paper count nor a metric to share."""
    if spec.count is not None:
        fields = {item.name: item for item in dataclasses.fields(spec.settings)}
        if spec.count not in fields:
            raise ValueError(f"metric {spec.name!r}: count {spec.count!r} is not a field of {spec.settings.__name__}")
        shared = _registry.get(spec.count_default_from) if spec.count_default_from else None
        if spec.count_default_from and (shared is None or shared.count is None):
            raise ValueError(f"metric {spec.name!r}: count_default_from {spec.count_default_from!r} names no "
                             "registered metric with a count")
        if fields[spec.count].default is None and spec.paper_count is None and shared is None:
            raise ValueError(f"metric {spec.name!r}: its count defaults to None; give a paper_count (the default "
                             "count) or a count_default_from")
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


def registered_options() -> list[MetricOption]:
    """Every registered metric's settings as CLI options, in registration order."""
    return [option for spec in _registry.values() for option in spec.options()]


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


@dataclass
class MetricSettings:
    """The settings of one run: the seed (generated stream: seed, reals: seed + 1), the progress switch, and each
    metric's own settings (its spec's dataclass) by name; a metric absent from `metrics` has its defaults."""

    seed: int = 1000
    progress: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, seed: int = 1000, progress: bool = True, **values: Any) -> MetricSettings:
        """Settings from values by key ("swd_images", "kid_subsets", "baseline": the registered options with
        underscores). UserError for a key no registered metric has."""
        return cls(seed, progress).with_values(values)

    def of(self, name: str) -> Any:
        """Metric `name`'s settings (its defaults when none were given)."""
        return self.metrics.get(name) or metric_spec(name).settings()

    def with_values(self, values: Mapping[str, Any]) -> MetricSettings:
        """A copy with the given values (by key, as `from_values`) set."""
        options = {option.key: option for option in registered_options()}
        unknown = sorted(set(values) - set(options))
        if unknown:
            raise UserError(f"no metric setting {', '.join(map(repr, unknown))}; the settings are "
                            f"{', '.join(options)}")
        changes: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            changes.setdefault(options[key].metric, {})[options[key].field] = value
        metrics = dict(self.metrics)
        for name, fields in changes.items():
            metrics[name] = dataclasses.replace(self.of(name), **fields)
        return dataclasses.replace(self, metrics=metrics)

    def values(self) -> dict[str, Any]:
        """Every registered metric's settings by key, with the seed: a flat record (JSON-ready)."""
        return {"seed": self.seed, **{option.key: getattr(self.of(option.metric), option.field)
                                      for option in registered_options()}}


def own_count(settings: MetricSettings, name: str) -> int | None:
    """The count metric `name` reads per set as set (its own, else the metric's it shares), None when unset."""
    spec = metric_spec(name)
    if spec.count is None:
        return None
    value = getattr(settings.of(name), spec.count)
    if value is None and spec.count_default_from is not None:
        return own_count(settings, spec.count_default_from)
    return value


def images_asked(names: Iterable[str], settings: MetricSettings, set_name: str = "gen") -> int:
    """The images of `set_name` that the metrics `names` read at most before the sets are known: set counts, else
    the paper's (which `resolve_counts` may later lower to what the sets hold)."""
    counts = [0]
    for name in names:
        spec = metric_spec(name)
        if spec.count is None or set_name not in spec.sets:
            continue
        count = own_count(settings, name)
        if count is None:
            count = metric_spec(spec.count_default_from or name).paper_count or 0
        counts.append(count * spec.images_per_count)
    return max(counts)


@dataclass
class ResolvedCounts:
    """`resolve_counts`' answer: the settings with every asked metric's count filled in, and by metric the key
    of the setting that holds it (what a message tells the user to change)."""

    settings: MetricSettings
    keys: dict[str, str]

    def images(self, name: str) -> int:
        """The images per set metric `name` reads (0 for a metric that counts none)."""
        spec = metric_spec(name)
        return 0 if spec.count is None else getattr(self.settings.of(name), spec.count) * spec.images_per_count


def _short_name(name: str) -> str:
    """How a count's note names a metric: its title ("MS-SSIM"), or its name in capitals when the title is a
    phrase with a slash ("PR", not "precision/recall", so that "FID/IS/KID/PR images per set" reads)."""
    title = metric_spec(name).display_name
    return name.upper() if "/" in title else title


def resolve_counts(names: list[str], settings: MetricSettings, sources: Mapping[str, ImageSource],
                   problems: Problems) -> ResolvedCounts:
    """Every asked metric's count: as set; else the count of the metric it shares (`count_default_from`); else
    the paper's, or all the sets hold when they hold fewer (a note in `problems` says so)."""
    counted = [name for name in names if metric_spec(name).count is not None]
    roots = {name: metric_spec(name).count_default_from or name for name in counted
             if getattr(settings.of(name), metric_spec(name).count) is None}
    values, keys = {}, {}
    for root in dict.fromkeys(roots.values()):
        spec, sharing = metric_spec(root), [name for name, its_root in roots.items() if its_root == root]
        keys[root] = spec.count_key()
        values[root] = getattr(settings.of(root), spec.count)
        if values[root] is None:
            held = min((len(sources[set_name]) for name in sharing for set_name in metric_spec(name).sets
                        if set_name in sources), default=0) // spec.images_per_count
            what = f"{'/'.join(map(_short_name, sharing))} {spec.count_unit}"
            paper = spec.paper_count if spec.paper_count is not None else held
            values[root] = default_count(None, paper, held, what, keys[root], problems)
    filled = settings
    for name in counted:
        root = roots.get(name, name)
        keys[name] = keys.get(root) or metric_spec(name).count_key()
        if name in roots:
            filled = filled.with_values({metric_spec(name).count_key(): values[root]})
    return ResolvedCounts(filled, {name: keys[name] for name in counted})


__all__ = ["MetricContext", "MetricOption", "MetricSettings", "MetricSpec", "NoSettings", "ResolvedCounts",
           "images_asked", "list_metrics", "metric_spec", "own_count", "parse_metric_names", "register_metric",
           "registered_options", "resolve_counts", "setting"]
