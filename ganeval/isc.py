"""Inception Score (Salimans et al. 2016) as in the original code (openai/improved-gan, used by Progressive GAN).

p(y|x) = softmax of the 1008 unbiased Inception logits (pool3 · Wᵀ, no bias, as the TF reference); the N images
are cut into `splits` consecutive parts, part k = rows [k·N//splits, (k+1)·N//splits); per part the score is
exp(mean over x of KL(p(y|x) ‖ p̄(y))) with p̄ the part's mean distribution; reported: mean and population std
(np.std) of the part scores. Computed in float64. 1 ≤ IS ≤ number of classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gancore.errors import UserError
from gancore.sources import ImageStream, open_source

from .features import LazyExtractor, extract, feature_cache
from .metric_utils import Batch, Needs, Problems, RowCollector, default_count, stream_seed

DEFAULT_NUM_IMAGES = 50000
DEFAULT_SPLITS = 10
DEFAULT_SEED = 1000


def inception_score(logits, splits: int = DEFAULT_SPLITS) -> tuple[float, float]:
    """(mean, std) of the Inception Score from logits [N, C] (tensor on any device, or array), N ≥ splits."""
    logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    if logits.dim() != 2:
        raise UserError(f"logits must be N×C, got shape {tuple(logits.shape)}")
    if splits < 1:
        raise UserError(f"splits must be at least 1, got {splits}")
    count = logits.shape[0]
    if count < splits:
        raise UserError(f"the Inception Score with {splits} splits needs at least {splits} images, got {count}")
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)
    p = log_p.exp()
    scores = []
    for k in range(splits):
        part_p = p[k * count // splits:(k + 1) * count // splits]
        part_log_p = log_p[k * count // splits:(k + 1) * count // splits]
        log_marginal = part_p.mean(dim=0).log()
        # p·(log p − log p̄), with 0 where p underflowed to 0 (its limit), never 0·∞
        terms = torch.where(part_p > 0, part_p * (part_log_p - log_marginal), torch.zeros_like(part_p))
        scores.append(float(terms.sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass
class ISResult:
    mean: float
    std: float
    num_images: int
    splits: int
    seed: int | None = None
    resize: str = "tf"
    device: str = "cpu"
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON object of `ganeval is --json` (skipped images as a count)."""
        return {"metric": "is", "mean": self.mean, "std": self.std, "num_images": self.num_images,
                "splits": self.splits, "seed": self.seed, "resize": self.resize, "device": self.device,
                "seconds": round(self.seconds, 3), "skipped": len(self.skipped)}


def inception_score_source(source, num_images: int | None = None, splits: int = DEFAULT_SPLITS,
                           seed: int | None = DEFAULT_SEED, inception=None, resize: str = "tf", device=None,
                           batch_size: int = 64, skip_bad: bool = False, num_workers: int | None = None,
                           progress: bool = True, extractor=None, cache: bool = False,
                           cache_dir=None) -> ISResult:
    """Inception Score of `num_images` images of a source (None: the paper's 50000, or all when it holds fewer,
    with a note), streamed as the GEN set of the sampling rule (`stream_seed(seed, "gen")`), so it equals
    `ganeval all`'s IS for the same seed and count.

    One pass through the Inception (`ganeval.features.extract`, logits kept as float64 [N, 1008] on the CPU).
    Every problem (too few images for the count or the splits, weights without logits) is raised together as
    one UserError before any image is decoded. With `cache`, the logits come from / go to the feature cache
    (`fid_files.FeatureCache`, in `cache_dir`), shared with FID, KID and PR.
    """
    started = time.perf_counter()
    problems = Problems({"is_images": "--num-images"})
    opened = open_source(source)
    count = default_count(num_images, DEFAULT_NUM_IMAGES, len(opened), "IS images", "is_images", problems)
    problems.source_count(opened, count, "IS", "is_images")
    if count < splits:
        problems.add(f"the Inception Score with {splits} splits needs at least {splits} images, {count} asked "
                     f"(lower --splits)")
    lazy = extractor if isinstance(extractor, LazyExtractor) else LazyExtractor(extractor, inception, resize,
                                                                                 device)
    if not problems.all() and (reason := lazy.logits_problem()):
        problems.add(reason)
    problems.raise_if_any()
    stream = ImageStream(opened, num_images=count, seed=stream_seed(seed, "gen"), batch_size=batch_size,
                         skip_bad=skip_bad, num_workers=num_workers)
    features = feature_cache(lazy, cache, cache_dir)
    extraction = extract(stream, extractor=lazy, progress=progress, want_logits=True, description="Inception",
                         cache=features)
    mean, std = inception_score(extraction.logits, splits)
    return ISResult(mean=mean, std=std, num_images=extraction.num_images, splits=splits, seed=seed,
                    resize=extraction.resize, device=extraction.device, seconds=time.perf_counter() - started,
                    skipped=extraction.skipped, notes=problems.notes + (features.notes if features else []))


class ISMetric:
    """The registry's Inception Score: logits of the first `num_images` of "gen", cut into `splits` parts in
    stream order (so it equals `inception_score_source` with the same seed and count)."""

    name = "is"

    def __init__(self, num_images: int, splits: int = DEFAULT_SPLITS, seed: int | None = None):
        if splits < 1:
            raise UserError(f"splits must be at least 1, got {splits}")
        if num_images < splits:
            raise UserError(f"the Inception Score with {splits} splits needs at least {splits} images, "
                            f"{num_images} asked (lower --is-splits)")
        self.num_images, self.splits, self.seed = num_images, splits, seed
        self.needs = Needs({"gen": num_images}, logits=True)
        self.logits = RowCollector("gen", num_images, "logits", torch.float64)

    def add(self, batch: Batch) -> None:
        self.logits.add(batch)

    def combine_ranks(self) -> None:
        self.logits.combine_ranks()

    def result(self) -> ISResult:
        mean, std = inception_score(self.logits.rows, self.splits)
        return ISResult(mean=mean, std=std, num_images=self.num_images, splits=self.splits, seed=self.seed)


__all__ = ["DEFAULT_NUM_IMAGES", "DEFAULT_SPLITS", "ISMetric", "ISResult", "inception_score",
           "inception_score_source"]
