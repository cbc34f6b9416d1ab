"""The Inception feature pass: load the network when a batch first needs it, stream a source through it once.

`LazyExtractor` stands for the feature network until a batch needs it (so cache hits and statistics files need
no weights and no network at all); it is what every feature metric's images go through in
`metric_utils.run_pass` (`batch_features`). `extract` is the single-set pass used by `ganeval stats`, `fid` and
`is`: pool3 statistics (float64 μ, Σ) and, when asked, the logits in stream order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gancore.errors import UserError
from gancore.runtime import resolve_device
from gancore.sources import ImageStream, open_source

from .fid_files import FeatureCache, default_cache_dir, weights_identity
from .frechet import FeatureStatistics
from .inception import FEATURE_DIM, FID_WEIGHTS_FILENAME, RESIZE_MODES, find_inception_weights, load_inception
from .metric_utils import Batch, ImageSet, Needs, PassOptions, RowCollector, run_pass

SET_NAME = "images"


class LazyExtractor:
    """The Inception feature extractor, loaded on first use.

    `extractor` (anything with `.features(uint8 NCHW, logits=bool)`) is used as is; otherwise the weights are
    found from `inception` (path, $GANEVAL_INCEPTION, the torch hub cache, else a download at load time) and
    loaded with `resize` on `device`. `weights_file()` looks the weights up without downloading.
    """

    def __init__(self, extractor=None, inception=None, resize: str = "tf", device=None):
        if extractor is None and resize not in RESIZE_MODES:
            raise UserError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        self.extractor, self.inception, self.resize, self.requested_device = extractor, inception, resize, device
        self.given = extractor  # the extractor passed in (None: the Inception, loaded or not)
        self._weights_path: Path | None = None

    def weights_file(self) -> Path | None:
        """The weights file that loading would use, found without downloading; None when there is none on this
        machine and none was named (UserError when a named file is missing), or for a given extractor."""
        if self.given is not None:
            source = getattr(self.given, "source", None)
            return Path(source) if source is not None else None
        if self._weights_path is None:
            try:
                self._weights_path = find_inception_weights(self.inception, download=False)
            except UserError:
                if self.inception is not None:
                    raise
                return None
        return self._weights_path

    def fetch_weights(self) -> None:
        """Make sure the weights are on this machine now (found, else downloaded), without loading them: a command
        about to spend long on other work first calls this, so that an offline machine is told before that work,
        not after it. UserError when they cannot be had; nothing to do for a given extractor."""
        if self.given is None and self.weights_file() is None:
            self._weights_path = find_inception_weights(self.inception, download=True)

    @property
    def resize_mode(self) -> str:
        return getattr(self.extractor, "resize", self.resize)

    @property
    def feature_dim(self) -> int | None:
        """D of the pool features: 2048 for the Inception, a given extractor's `feature_dim` (None: unknown)."""
        if self.given is None:
            return FEATURE_DIM
        return getattr(self.given, "feature_dim", None)

    def logits_problem(self) -> str | None:
        """Why these weights cannot give logits (the Inception Score's input), or None. Another weights file than
        the standard one is loaded to see; the standard one (found or still to be downloaded) has them."""
        weights = self.weights_file() if self.given is None else None
        if self.given is None and (weights is None or weights.name == FID_WEIGHTS_FILENAME):
            return None  # the standard weights (found or still to be downloaded) have the classifier
        if getattr(self.get(), "logits_available", True):
            return None
        named = self.weights_file()
        return (f"{f'the Inception weights {named}' if named else 'the feature extractor'} has no 1008-way "
                f"classifier, so it gives no logits for the Inception Score; use {FID_WEIGHTS_FILENAME}")

    @property
    def loaded(self) -> bool:
        return self.extractor is not None

    def get(self):
        """The extractor, loading the Inception now if needed."""
        if self.extractor is None:
            path = self._weights_path if self._weights_path is not None else self.inception
            self.extractor = load_inception(path, device=self.requested_device, resize=self.resize)
        return self.extractor

    @property
    def device(self) -> torch.device:
        return getattr(self.get(), "device", torch.device("cpu"))

    def features(self, images: torch.Tensor, logits: bool = True):
        """(pool features [B, D], logits [B, C] or None) of uint8 NCHW images, on the extractor's device."""
        return self.get().features(images, logits=logits)

    def math_device(self) -> torch.device:
        """Where to compute with the features: the loaded extractor's device, else the requested one."""
        if self.extractor is not None:
            return getattr(self.extractor, "device", torch.device("cpu"))
        return resolve_device(self.requested_device)


@dataclass
class Extraction:
    """What one pass over a source gives: pool3 statistics, optionally logits float64 [N, C] (CPU)."""

    statistics: FeatureStatistics
    logits: torch.Tensor | None
    num_images: int
    skipped: list[str]
    device: str
    resize: str
    cache_path: Path | None = None  # the cache entry holding these features (None: not cached)
    cached: bool = False  # whether they came from it


class _FeaturePass:
    """The single-set feature 'metric' of `extract`: streaming statistics and, optionally, the logits."""

    name = "features"

    def __init__(self, count: int, want_logits: bool):
        self.needs = Needs({SET_NAME: count}, features=True, logits=want_logits)
        self.statistics = FeatureStatistics()
        self.logits = RowCollector(SET_NAME, count, "logits", torch.float64) if want_logits else None

    def add(self, batch: Batch) -> None:
        self.statistics.add(batch.features)
        if self.logits is not None:
            self.logits.add(batch)

    def combine_ranks(self) -> None:
        self.statistics.all_reduce()
        if self.logits is not None:
            self.logits.combine_ranks()

    def result(self) -> _FeaturePass:
        return self


def feature_cache(lazy: LazyExtractor, cache: bool = True, cache_dir=None):
    """The `fid_files.FeatureCache` for features made by `lazy` (in `cache_dir`, else $GANEVAL_CACHE/fid, else
    ~/.cache/ganeval/fid), or None when `cache` is off."""
    if not cache:
        return None
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return FeatureCache(directory, lazy.resize_mode, weights_identity(lazy.weights_file(), lazy.given, directory))


def extract(source, num_images: int | None = None, seed: int | None = None, extractor=None, inception=None,
            resize: str = "tf", device=None, batch_size: int = 64, skip_bad: bool = False,
            num_workers: int | None = None, progress: bool = True, want_logits: bool = False,
            description: str = "Inception", cache=None) -> Extraction:
    """Stream `num_images` images of a source (None: all) through the Inception once (`run_pass`).

    `source`: a path, ImageSource, uint8 array or an `ImageStream` (its count, seed, batch size, skip_bad and
    workers are used). `extractor`: an `InceptionFeatureExtractor`, a `LazyExtractor` or anything with
    `.features(uint8 NCHW, logits=bool)` and `.device`; None loads one from `inception` with `resize` on
    `device`. Returns pool3 statistics and, with `want_logits`, the logits stacked as float64 [N, C] on the CPU
    (N·8 kB: 400 MB for 50k) for the Inception Score. `cache`: a `fid_files.FeatureCache` to read the features
    from or write them to. Raises SourceError when the source has fewer images.
    """
    if isinstance(source, ImageStream):
        opened, num_images, seed = source.source, source.num_images, source.seed
        batch_size, skip_bad, num_workers = source.batch_size, source.skip_bad, source.num_workers
    else:
        opened = open_source(source)
    ImageStream(opened, num_images=num_images, seed=seed)  # SourceError now when the source is too small
    count = len(opened) if num_images is None else int(num_images)
    lazy = extractor if isinstance(extractor, LazyExtractor) else LazyExtractor(extractor, inception, resize,
                                                                                 device)
    feature_pass = _FeaturePass(count, want_logits)
    options = PassOptions(device=lazy.math_device(), batch_size=batch_size, skip_bad=skip_bad,
                          num_workers=num_workers, progress=progress, description=description, cache=cache)
    report = run_pass([feature_pass], {SET_NAME: ImageSet(opened, seed)}, options, extractor=lazy)
    logits = feature_pass.logits.rows if feature_pass.logits is not None else None
    return Extraction(statistics=feature_pass.statistics, logits=logits, num_images=feature_pass.statistics.count,
                      skipped=report.skipped.get(SET_NAME, []), device=str(lazy.math_device()),
                      resize=lazy.resize_mode, cache_path=report.cache_paths.get(SET_NAME),
                      cached=SET_NAME in report.cache_hits)


__all__ = ["Extraction", "LazyExtractor", "extract", "feature_cache"]
