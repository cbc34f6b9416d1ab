"""The metric protocol and the one streaming loop that feeds every metric (model: stylegan2-ada's metric_utils).

A metric says what it reads (`Needs`: the first N images of which image sets, and whether it wants the pixels,
the Inception pool features or the logits), takes `Batch`es as they stream past (`add`), combines its state
across torchrun ranks (`combine_ranks`) and gives one result with `to_dict()` (`result`). `run_pass` streams
each image set once (decoding every image once), computes the Inception features and logits once per batch for
all the metrics that want them, and hands every metric the part of each batch it asked for.

Image sets are named ("gen", "real", or any name): each is one `ImageStream` (a seeded random order of one
source); a metric reading 100 images of "real" gets stream positions 0…99, whatever other metrics read. Under
torchrun each rank streams its blocks of every set (ImageStream.batches) and the metrics combine their sums
or rows in `combine_ranks`; `gather_rows` is the helper for metrics that keep per-image rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from gancore import distributed
from gancore.errors import UserError
from gancore.runtime import progress_bar
from gancore.sources import ImageSource, ImageStream

if TYPE_CHECKING:
    from .fid_files import FeatureCache


@dataclass(frozen=True)
class Needs:
    """What a metric reads: `images[set]` = the first N images of that set's stream (sets not named: none);
    `pixels`: the uint8 NCHW batches; `features`: Inception pool features [B, D]; `logits`: Inception logits."""

    images: Mapping[str, int]
    pixels: bool = False
    features: bool = False
    logits: bool = False


@dataclass
class Batch:
    """Consecutive images of one set's stream at positions position…position+B−1.

    pixels: uint8 [B, 3, H, W] on the compute device; features: float [B, D] and logits: float [B, C] on the
    extractor's device, or None when no metric asked for them (or beyond the images any feature metric reads).
    """

    set_name: str
    position: int
    pixels: torch.Tensor
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def head(self, count: int) -> Batch | None:
        """This batch cut to stream positions < count (None when it starts at or after `count`)."""
        keep = count - self.position
        if keep <= 0:
            return None
        if keep >= self.pixels.shape[0]:
            return self
        cut = {name: None if value is None else value[:keep]
               for name, value in (("features", self.features), ("logits", self.logits))}
        return replace(self, pixels=self.pixels[:keep], **cut)


class MetricResult(Protocol):
    def to_dict(self) -> dict:
        """The metric's JSON object (numbers, counts, settings)."""


class Metric(Protocol):
    """One metric fed by `run_pass`. `name` is its registry name; `needs` what it reads."""

    name: str
    needs: Needs

    def add(self, batch: Batch) -> None:
        """Take one batch (any set; the metric ignores sets and positions it does not read)."""

    def combine_ranks(self) -> None:
        """Under torchrun: combine every rank's state so that `result` gives the single-process numbers."""

    def result(self) -> MetricResult:
        """The finished metric (after every batch and `combine_ranks`)."""


@dataclass(frozen=True)
class ImageSet:
    """One image set of a pass: a source and the seed of its stream order (None: the source's first images)."""

    source: ImageSource
    seed: int | None


@dataclass
class PassOptions:
    """How `run_pass` streams: compute device, images per batch, bad-file policy, decoding workers, progress."""

    device: torch.device
    batch_size: int = 64
    skip_bad: bool = False
    num_workers: int | None = None
    progress: bool = True
    description: str = ""
    cache: FeatureCache | None = None  # where features and logits are read from and written to (None: nowhere)


@dataclass
class PassReport:
    """What a pass saw: per set the images streamed and the skipped files ("name: reason")."""

    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    cache_paths: dict[str, Path] = field(default_factory=dict)  # sets whose features the cache holds
    cache_hits: set[str] = field(default_factory=set)  # sets whose features came from it


SET_SEED_OFFSETS = {"gen": 0, "real": 1}


def stream_seed(seed: int | None, set_name: str) -> int | None:
    """The one sampling rule of every command: a set's stream is the permutation drawn from `seed` plus the
    set's offset (GEN: seed, REAL: seed + 1; other names: seed), and a metric reading N images of a set
    takes the first N of that stream. None: the source's own order (Python API only)."""
    return None if seed is None else seed + SET_SEED_OFFSETS.get(set_name, 0)


class Problems:
    """Everything wrong with a call, found before any image is decoded, reported together in one UserError.

    `options` maps a setting's name (e.g. "fid_images") to what the calling command calls it ("--num-images");
    unmapped names read as options ("--fid-images"). `notes` collects what is worth saying but not wrong."""

    def __init__(self, options: Mapping[str, str] | None = None):
        self.options = dict(options or {})
        self.items: list[str] = []
        self.notes: list[str] = []
        self._short: dict[tuple[str, int, int, str], list[str]] = {}  # (source, has, needs, option) -> metrics

    def option(self, setting: str) -> str:
        """The command's name for a setting."""
        return self.options.get(setting, "--" + setting.replace("_", "-"))

    def add(self, problem: str) -> None:
        self.items.append(problem)

    def source_count(self, source: ImageSource, needed: int, what: str, setting: str) -> None:
        """A problem when `source` holds fewer images than `needed` (by `what`, under `setting`); metrics short
        of the same images read as one problem."""
        whats = self._short.setdefault((source.path, len(source), needed, self.option(setting)), [])
        if needed > len(source) and what not in whats:
            whats.append(what)

    def all(self) -> list[str]:
        """Every problem: the short sources first."""
        short = [f"{path} has {have} images, {_listing(whats)} need{'s' if len(whats) == 1 else ''} {needed} "
                 f"(lower {option})" for (path, have, needed, option), whats in self._short.items() if whats]
        return short + self.items

    def raise_if_any(self) -> None:
        """UserError listing every problem (nothing has been computed)."""
        items = self.all()
        if len(items) == 1:
            raise UserError(items[0])
        if items:
            listed = "; ".join(f"({number}) {item}" for number, item in enumerate(items, 1))
            raise UserError(f"{len(items)} problems, nothing computed: {listed}")


def _listing(names: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def default_count(asked: int | None, paper: int, available: int, what: str, setting: str,
                  problems: Problems) -> int:
    """`asked`, else the paper's count, else (a source holds fewer) all `available`, with a note saying so."""
    if asked is not None:
        return asked
    if available >= paper:
        return paper
    problems.notes.append(f"{what}: {available} (all there are; the paper used {paper}; "
                          f"set {problems.option(setting)} to choose)")
    return available


def images_needed(metrics: list[Metric], set_name: str, *, features: bool = False) -> int:
    """The longest prefix of `set_name`'s stream that `metrics` read (only feature/logit readers if `features`)."""
    counts = [m.needs.images.get(set_name, 0) for m in metrics
              if not features or m.needs.features or m.needs.logits]
    return max(counts, default=0)


def check_counts(metrics: list[Metric], sets: Mapping[str, ImageSet]) -> None:
    """UserError when a set is missing or has fewer images than some metric reads."""
    for metric in metrics:
        for set_name, count in metric.needs.images.items():
            if count and set_name not in sets:
                raise UserError(f"{metric.name} needs the image set {set_name!r}, which was not given")
    for set_name, image_set in sets.items():
        for metric in metrics:
            count = metric.needs.images.get(set_name, 0)
            if count > len(image_set.source):
                raise UserError(f"{image_set.source.path}: has {len(image_set.source)} images, {metric.name} needs "
                                f"{count} of the {set_name} set; lower the count or add images")


def run_pass(metrics: list[Metric], sets: Mapping[str, ImageSet], options: PassOptions,
             extractor=None) -> PassReport:
    """Stream each set once and feed every metric; then combine the metrics across ranks.

    `extractor`: anything with `.features(uint8 NCHW, logits=bool) -> (features [B, D], logits [B, C] | None)`
    and optionally `.device` (required when a metric needs features or logits; `features.LazyExtractor` loads
    the Inception only when a batch needs it). Each set's stream holds the longest prefix any metric reads;
    features are computed only for the prefix the feature metrics read. With `options.cache`, a set's features
    and logits come from the cache when it holds them (no image decoded when no metric reads pixels), and are
    written to it otherwise.
    """
    check_counts(metrics, sets)
    report = PassReport()
    for set_name, image_set in sets.items():
        readers = [m for m in metrics if m.needs.images.get(set_name, 0) > 0]
        count = images_needed(readers, set_name)
        if count == 0:
            continue
        feature_count = images_needed(readers, set_name, features=True)
        cached = _cache_hit(options, image_set, feature_count, any(m.needs.logits for m in readers))
        recorder = _FeatureRecorder(set_name, feature_count) if options.cache is not None and cached is None \
            and feature_count and options.cache.entry(image_set.source, feature_count, image_set.seed) else None
        stream = None
        if cached is not None and count == feature_count and not any(m.needs.pixels for m in readers):
            batches = _cached_batches(cached, set_name, options.batch_size)
        else:
            stream = ImageStream(image_set.source, num_images=count, seed=image_set.seed,
                                 batch_size=options.batch_size, skip_bad=options.skip_bad,
                                 num_workers=options.num_workers)
            batches = _set_batches(stream, set_name, readers, options.device, extractor, cached, recorder)
        label = options.description if len(sets) == 1 else f"{options.description} {set_name}".strip()
        with progress_bar(count // distributed.world_size(), label, options.progress) as bar:
            for batch in batches:
                for metric in readers:
                    metric.add(batch)
                bar.update(batch.pixels.shape[0])
        report.counts[set_name] = count
        skipped = [f"{item.name}: {item.reason}" for item in stream.skipped] if stream is not None else []
        report.skipped[set_name] = skipped if stream is not None else cached.skipped  # what this pass met
        if cached is not None:
            report.cache_hits.add(set_name)
            report.cache_paths[set_name] = cached.path
        elif recorder is not None:  # the entry holds the first `feature_count` images: the skips among them
            prefix_skips = [f"{item.name}: {item.reason}" for item in stream.skipped if item.position < feature_count]
            path = recorder.write(options.cache, image_set, prefix_skips)
            if path is not None:
                report.cache_paths[set_name] = path
    for metric in metrics:
        metric.combine_ranks()
    return report


def _cache_hit(options: PassOptions, image_set: ImageSet, count: int, want_logits: bool):
    """The cached features of a set's first `count` images, or None; under torchrun only when every rank has
    them (all ranks take the same branch, or the collectives would hang)."""
    if options.cache is None or count == 0:
        return None
    hit = options.cache.read(image_set.source, count, image_set.seed, want_logits, options.skip_bad)
    if distributed.is_distributed():
        hits = distributed.all_reduce_sum(torch.tensor([int(hit is not None)], dtype=torch.int64))
        hit = hit if int(hits) == distributed.world_size() else None
    return hit


def _cached_batches(cached, set_name: str, batch_size: int):
    """Batches of cached features and logits (no pixels: an empty [B, 0, 0, 0]), this rank's blocks only."""
    total = cached.features.shape[0]
    for start in range(0, total, batch_size):
        if distributed.owns_block(start // batch_size):
            stop = min(start + batch_size, total)
            yield Batch(set_name, start, torch.empty((stop - start, 0, 0, 0), dtype=torch.uint8),
                        cached.features[start:stop],
                        None if cached.logits is None else cached.logits[start:stop])


class _FeatureRecorder:
    """Keeps a set's features and logits as they are computed, to write them to the cache after the pass."""

    def __init__(self, set_name: str, count: int):
        self.count = count
        self.features = RowCollector(set_name, count, "features")
        self.logits = RowCollector(set_name, count, "logits")

    def add(self, batch: Batch) -> None:
        self.features.add(batch)
        if batch.logits is not None:
            self.logits.add(batch)

    def write(self, cache: FeatureCache, image_set: ImageSet, skipped: list[str]) -> Path | None:
        """Gather every rank's rows and write the entry (the main process; the others wait for it)."""
        features, logits = self.features.combine_ranks(), self.logits.combine_ranks()
        logits = logits if logits.shape[0] == self.count and logits.numel() else None
        path = cache.write(image_set.source, self.count, image_set.seed, features, logits, skipped) \
            if distributed.is_main_process() else None
        if distributed.is_distributed():  # a barrier: no rank looks for the entry before it is written
            distributed.all_reduce_sum(torch.zeros(1))
        return path


def _set_batches(stream: ImageStream, set_name: str, readers: list[Metric], device: torch.device, extractor,
                 cached=None, recorder: _FeatureRecorder | None = None):
    """The stream's batches as `Batch`es, with features/logits for the prefix the feature metrics read: from
    `cached` features, else from the extractor (with the logits too when `recorder` keeps them for the cache)."""
    feature_count = images_needed(readers, set_name, features=True)
    want_logits = any(m.needs.logits for m in readers) or (recorder is not None and _gives_logits(extractor))
    for position, pixels in stream.batches():
        pixels = pixels.to(device, non_blocking=True)
        batch = Batch(set_name, position, pixels)
        if position < feature_count:
            stop = min(position + pixels.shape[0], feature_count)
            if cached is not None:
                batch.features = cached.features[position:stop]
                batch.logits = None if cached.logits is None else cached.logits[position:stop]
            else:
                batch.features, batch.logits = batch_features(extractor, pixels[:stop - position], want_logits)
                if recorder is not None:
                    recorder.add(batch)
        yield batch


def _gives_logits(extractor) -> bool:
    """Whether the extractor can give logits (the Inception's classifier); loads a lazy one's network."""
    network = extractor.get() if hasattr(extractor, "get") else extractor
    return bool(getattr(network, "logits_available", True))


def batch_features(extractor, pixels: torch.Tensor, want_logits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch through the feature network: (features [B, D], logits [B, C] or None), on its device.

    pixels: uint8 NCHW; `extractor` as in `run_pass`. This is the one place every feature metric's images go
    through the network."""
    if extractor is None:
        raise UserError("a feature metric was asked for, but no feature extractor was given")
    target = getattr(extractor, "device", None)
    if target is not None:
        pixels = pixels.to(target, non_blocking=True)
    return extractor.features(pixels, logits=want_logits)


def gather_rows(pieces: list[tuple[int, torch.Tensor]], count: int, dtype=torch.float32) -> torch.Tensor:
    """Per-image rows kept by stream position -> [count, C] on the CPU in stream order (`dtype`).

    pieces: (stream position, rows [B, C]) as added on this rank. Under torchrun every rank gets the rows of all
    ranks (each position filled by exactly one rank, so the sum is exact). Alone: the pieces concatenated.
    """
    if not distributed.is_distributed():
        if not pieces:
            return torch.zeros(0, 0, dtype=dtype)
        return torch.cat([piece.to("cpu", dtype) for _, piece in sorted(pieces, key=lambda p: p[0])])
    width = pieces[0][1].shape[1] if pieces else 0
    header = distributed.all_reduce_sum(torch.tensor([float(width), float(bool(pieces))], dtype=torch.float64))
    width = round(float(header[0]) / max(float(header[1]), 1.0))
    stacked = torch.zeros(count, width, dtype=dtype)
    for position, piece in pieces:
        stacked[position:position + piece.shape[0]] = piece.to("cpu", dtype)
    return distributed.all_reduce_sum(stacked)


class RowCollector:
    """Keeps one set's per-image rows (features or logits) of the first `count` images, in stream order."""

    def __init__(self, set_name: str, count: int, kind: str = "features", dtype=torch.float32):
        if kind not in ("features", "logits"):
            raise ValueError(f"kind must be 'features' or 'logits', got {kind!r}")
        self.set_name, self.count, self.kind, self.dtype = set_name, count, kind, dtype
        self.pieces: list[tuple[int, torch.Tensor]] = []
        self.rows: torch.Tensor | None = None

    def add(self, batch: Batch) -> None:
        if batch.set_name != self.set_name or (batch := batch.head(self.count)) is None:
            return
        rows = getattr(batch, self.kind)
        if rows is None:
            raise UserError(f"the feature extractor gave no {self.kind}")
        self.pieces.append((batch.position, rows.detach().to("cpu", self.dtype)))

    def combine_ranks(self) -> torch.Tensor:
        """All rows [count, C] (every rank's, under torchrun); also kept in `rows`."""
        self.rows = gather_rows(self.pieces, self.count, self.dtype)
        self.pieces = []
        return self.rows


class TwoSetFeatures:
    """Base of metrics that keep the pool features of the first `num_images` of "gen" and "real" (float32 on
    the CPU, 8 kB per image per set at d = 2048, in stream order, gathered across ranks)."""

    name = "features"

    def __init__(self, num_images: int):
        self.num_images = num_images
        self.needs = Needs({"gen": num_images, "real": num_images}, features=True)
        self.rows = {set_name: RowCollector(set_name, num_images) for set_name in ("gen", "real")}
        self.owns_rows = True

    def share_rows(self, other: TwoSetFeatures) -> None:
        """Read `other`'s rows (the same features of the same images) instead of keeping a second copy."""
        if other.num_images != self.num_images:
            raise ValueError(f"{self.name} reads {self.num_images} images, {other.name} {other.num_images}")
        self.rows, self.owns_rows = other.rows, False

    def add(self, batch: Batch) -> None:
        if self.owns_rows and batch.set_name in self.rows:
            self.rows[batch.set_name].add(batch)

    def combine_ranks(self) -> None:
        if self.owns_rows:
            for rows in self.rows.values():
                rows.combine_ranks()


def share_feature_rows(metrics: list) -> None:
    """Let every `TwoSetFeatures` metric that reads as many images as an earlier one share that one's rows."""
    first: dict[int, TwoSetFeatures] = {}
    for metric in metrics:
        if isinstance(metric, TwoSetFeatures):
            if metric.num_images in first:
                metric.share_rows(first[metric.num_images])
            else:
                first[metric.num_images] = metric


def feature_pair(gen, real, device, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature sets [N₁, d], [N₂, d] (tensors or arrays) as float64 on `device` (default: gen's device);
    UserError naming `what` unless both are 2-D with one d."""
    gen, real = (value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
                 for value in (gen, real))
    device = gen.device if device is None else torch.device(device)
    gen, real = gen.to(device, torch.float64), real.to(device, torch.float64)
    if gen.dim() != 2 or real.dim() != 2 or gen.shape[1] != real.shape[1]:
        raise UserError(f"{what} needs two feature sets N×d of one d, got {tuple(gen.shape)} and "
                        f"{tuple(real.shape)}")
    return gen, real


__all__ = [
    "Batch",
    "ImageSet",
    "Metric",
    "MetricResult",
    "Needs",
    "PassOptions",
    "PassReport",
    "Problems",
    "RowCollector",
    "TwoSetFeatures",
    "batch_features",
    "check_counts",
    "default_count",
    "feature_pair",
    "gather_rows",
    "images_needed",
    "run_pass",
    "share_feature_rows",
    "stream_seed",
]
