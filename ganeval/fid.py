"""Fréchet Inception Distance: streaming statistics, the distance, statistics files and an on-disk cache.

FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr √(Σ₁Σ₂) between the Gaussians fitted to the Inception pool3 features
(2048-d) of two image sets; μ is the mean and Σ the unbiased (N − 1) covariance, as np.cov in the original code.

The trace term is computed without a matrix square root (scipy's `sqrtm` is slow, gives complex results for
singular covariances and changed behaviour across SciPy versions). Two methods, both float64 torch, CPU or GPU:

- "symmetric" (default): factor Σ₁ = BᵀB from `eigh` (B = diag(√w)Vᵀ, keeping the eigenvalues above the
  numerical-rank tolerance D·ε·max w), then tr √(Σ₁Σ₂) = tr √(B Σ₂ Bᵀ) = Σ √λ over the eigenvalues λ of the
  symmetric PSD matrix B Σ₂ Bᵀ (`eigvalsh`; those below r·ε·max are rounding noise and count as 0). Symmetric
  eigenproblems are well conditioned and never complex, so the result is stable when N ≤ D (singular
  covariances): the tests check it against the exact small-N formula to 1e-11 relative, where the eigvals form
  and scipy's sqrtm are off by ~1e-7. A full-rank Σ₁ (N > D) is factored by Cholesky instead of eigh (same
  result to rounding, far cheaper). D = 2048, N = 5000: ~0.9 s on 2 CPU cores (one Cholesky, one eigvalsh, two products).
- "eigvals": Σ real(√λ) over λ = eigvals(Σ₁Σ₂) taken as complex128 — torch-fidelity's and torchmetrics' formula,
  kept for comparison. It agrees with "symmetric" to ~1e-7 relative; general eigensolvers are slower (up to
  tens of seconds for singular 2048² products on a CPU).

Either way rounding can leave the value a few ulps below zero for identical statistics; it is clamped to 0.

`extract` streams a source through the Inception once (pool3 statistics, optionally the logits for the
Inception Score); `compute_statistics` adds the on-disk cache; `fid` compares two sources or statistics files
(pytorch-fid compatible `.npz` with `mu` and `sigma`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gancore import distributed
from gancore.errors import UserError
from .inception import FID_WEIGHTS_FILENAME, RESIZE_MODES, find_inception_weights, load_inception
from gancore.runtime import CACHE_ENV_VAR, atomic_output, cache_root, progress_bar, resolve_device
from gancore.sources import ArraySource, FolderSource, HDF5Source, ImageSource, ImageStream, ZipSource, open_source

DEFAULT_NUM_IMAGES = 50000
CACHE_FORMAT_VERSION = 1
FID_METHODS = ("symmetric", "eigvals")


# --------------------------------------------------------------------------------------------------------------
# Streaming statistics


class FeatureStatistics:
    """Streaming mean and covariance of D-dim features, accumulated in float64 on the features' device.

    Sums are taken around a shift (the first batch's mean), Σ(x − c) and Σ(x − c)ᵀ(x − c), which keeps the
    covariance exact to rounding even for features far from zero. `covariance()` divides by N − 1 (np.cov);
    with N ≤ D it is singular, which `frechet_distance` handles.
    """

    def __init__(self):
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    @property
    def dim(self) -> int | None:
        return None if self.shift is None else int(self.shift.shape[0])

    @property
    def device(self) -> torch.device | None:
        return None if self.shift is None else self.shift.device

    def add(self, features) -> None:
        """Add a batch of features [N, D] (tensor on any device, or array)."""
        features = torch.as_tensor(features)
        if features.dim() != 2:
            raise UserError(f"features must be N×D, got shape {tuple(features.shape)}")
        if features.shape[0] == 0:
            return
        if self.shift is None:
            x = features.to(torch.float64)
            self.shift = x.mean(dim=0)
            dim = x.shape[1]
            self.sum = torch.zeros(dim, dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=x.device)
        elif features.shape[1] != self.dim:
            raise UserError(f"features of dimension {features.shape[1]} added to statistics of dimension "
                               f"{self.dim}")
        centred = features.to(self.device, torch.float64) - self.shift
        self.sum += centred.sum(dim=0)
        self.outer.addmm_(centred.T, centred)
        self.count += int(features.shape[0])

    def _check(self) -> None:
        if self.count < 2:
            raise UserError(f"FID statistics need at least 2 images, got {self.count} (a covariance is "
                               "undefined for fewer; papers use 50000)")

    def mean(self) -> torch.Tensor:
        """μ, float64 [D] on the accumulation device."""
        self._check()
        return self.shift + self.sum / self.count

    def covariance(self) -> torch.Tensor:
        """Σ with the unbiased N − 1 divisor (np.cov(rowvar=False)), float64 [D, D], exactly symmetric."""
        self._check()
        centred_mean = self.sum / self.count
        sigma = (self.outer - self.count * torch.outer(centred_mean, centred_mean)) / (self.count - 1)
        return (sigma + sigma.T) / 2

    def _rebased(self, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ(x − shift), Σ(x − shift)ᵀ(x − shift)) from the sums around the own shift c (d = c − shift):
        Σ(x − c) + n·d and O + S·dᵀ + d·Sᵀ + n·d·dᵀ."""
        d = self.shift - shift.to(self.shift)
        sums = self.sum + self.count * d
        outer = self.outer + torch.outer(self.sum, d) + torch.outer(d, self.sum) + self.count * torch.outer(d, d)
        return sums, outer

    def merge(self, other: FeatureStatistics) -> None:
        """Add another accumulator's images to this one (e.g. statistics of disjoint parts of a set)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.shift, self.sum, self.outer = other.shift.clone(), other.sum.clone(), other.outer.clone()
            self.count = other.count
            return
        if other.dim != self.dim:
            raise UserError(f"cannot merge statistics of dimensions {self.dim} and {other.dim}")
        sums, outer = other._rebased(self.shift)
        self.sum += sums.to(self.sum)
        self.outer += outer.to(self.outer)
        self.count += other.count

    def all_reduce(self) -> None:
        """Under torchrun: combine every rank's statistics so that each rank holds the totals (no-op alone).

        The ranks' sums are re-centred on the global mean before they are summed.
        """
        if not distributed.is_distributed():
            return
        header = distributed.all_reduce_sum(torch.tensor(
            [float(self.count), float(self.count > 0), float(self.dim or 0)], dtype=torch.float64))
        total, holders, dims = (float(v) for v in header)
        if holders == 0:
            return
        dim = round(dims / holders)
        if self.count == 0:
            self.shift = torch.zeros(dim, dtype=torch.float64)
            self.sum, self.outer = torch.zeros_like(self.shift), torch.zeros(dim, dim, dtype=torch.float64)
        elif self.dim != dim:
            raise UserError(f"ranks accumulated features of different dimensions ({self.dim} here)")
        mean = distributed.all_reduce_sum(self.sum + self.count * self.shift) / total
        sums, outer = self._rebased(mean)
        self.shift, self.sum = mean, distributed.all_reduce_sum(sums)
        self.outer = distributed.all_reduce_sum(outer)
        self.count = round(total)


# --------------------------------------------------------------------------------------------------------------
# The distance


def _as_float64(value, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).to(
        device, torch.float64)


def _psd_factor(sigma: torch.Tensor) -> torch.Tensor:
    """B [r, D] with BᵀB = Σ, from eigh, keeping the r eigenvalues above D·ε·max(w) (the numerical rank)."""
    eigenvalues, vectors = torch.linalg.eigh(sigma)
    top = eigenvalues.max().clamp(min=0)
    keep = eigenvalues > top * sigma.shape[0] * torch.finfo(torch.float64).eps
    return (vectors[:, keep] * eigenvalues[keep].sqrt()).T


def _cholesky_factor(sigma: torch.Tensor) -> torch.Tensor | None:
    """B = Lᵀ with Σ = BᵀB from a Cholesky factorisation, or None when Σ is not clearly full rank (a pivot at the
    rank tolerance D·ε·max diag Σ or below): then the eigh factor handles the singular case exactly. Cholesky
    costs a twelfth of an eigendecomposition with vectors and is as backward-stable."""
    lower, info = torch.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        return None
    tolerance = sigma.shape[0] * torch.finfo(torch.float64).eps * sigma.diagonal().max()
    if not bool((lower.diagonal() ** 2 > tolerance).all()):
        return None
    return lower.T


def trace_sqrt_product(sigma1, sigma2, method: str = "symmetric", device=None) -> float:
    """tr √(Σ₁Σ₂) for symmetric PSD Σ₁, Σ₂ [D, D]; float64 on `device` (default: sigma1's, else CPU)."""
    if method not in FID_METHODS:
        raise UserError(f"unknown FID method {method!r}; choose one of {', '.join(FID_METHODS)}")
    if device is None:
        device = sigma1.device if isinstance(sigma1, torch.Tensor) else torch.device("cpu")
    s1, s2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    if method == "eigvals":
        eigenvalues = torch.linalg.eigvals(s1 @ s2).to(torch.complex128)
        return float(eigenvalues.sqrt().real.sum())
    # Σ₁ = BᵀB (numerical rank r), so tr √(Σ₁Σ₂) = tr √(B Σ₂ Bᵀ) with B Σ₂ Bᵀ [r, r] symmetric PSD: a Cholesky
    # factor (Bᵀ = L) when Σ₁ is clearly full rank, else one eigh; then one eigvalsh. Eigenvalues below r·ε·max
    # are rounding noise of a singular product and count as 0.
    b1 = _cholesky_factor((s1 + s1.T) / 2)
    if b1 is None:
        b1 = _psd_factor((s1 + s1.T) / 2)
    if b1.shape[0] == 0:
        return 0.0
    product = b1 @ ((s2 + s2.T) / 2) @ b1.T
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    floor = eigenvalues.max().clamp(min=0) * product.shape[0] * torch.finfo(torch.float64).eps
    return float(torch.where(eigenvalues > floor, eigenvalues, 0.0).sqrt().sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "symmetric", device=None) -> float:
    """FID between N(μ₁, Σ₁) and N(μ₂, Σ₂): ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr √(Σ₁Σ₂), as a float ≥ 0.

    mu [D], sigma [D, D]: numpy arrays or tensors; computed in float64 on `device` (default: sigma1's device
    for a tensor, else the CPU). `method`: "symmetric" (default) or "eigvals", see the module docstring.
    Singular covariances (N ≤ D) give a finite value. Raises UserError on mismatched or bad shapes.
    """
    if device is None:
        device = sigma1.device if isinstance(sigma1, torch.Tensor) else torch.device("cpu")
    device = resolve_device(device)
    m1, m2 = _as_float64(mu1, device), _as_float64(mu2, device)
    s1, s2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    dim = m1.shape[0] if m1.dim() == 1 else None
    if dim is None or m2.shape != (dim,) or s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise UserError(f"FID statistics do not match: mu {tuple(m1.shape)} / {tuple(m2.shape)}, sigma "
                           f"{tuple(s1.shape)} / {tuple(s2.shape)} (both sets need the same feature dimension)")
    for name, value in (("mu", m1), ("mu", m2), ("sigma", s1), ("sigma", s2)):
        if not bool(torch.isfinite(value).all()):
            raise UserError(f"FID statistics contain non-finite values in {name}")
    difference = m1 - m2
    value = (float(difference @ difference) + float(torch.trace(s1)) + float(torch.trace(s2))
             - 2 * trace_sqrt_product(s1, s2, method=method, device=device))
    return max(value, 0.0)


# --------------------------------------------------------------------------------------------------------------
# Statistics files (pytorch-fid compatible .npz: mu, sigma)


def _with_npz_suffix(path) -> Path:
    path = Path(path).expanduser()
    return path if path.suffix.lower() == ".npz" else path.with_name(path.name + ".npz")


def _to_numpy64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def save_statistics(path, mu, sigma, **extra) -> Path:
    """Write `mu` [D] and `sigma` [D, D] (float64) plus metadata arrays (`num_images=…`) to an .npz, atomically.

    The file is what pytorch-fid's `--save-stats` writes (keys `mu`, `sigma`), so either tool reads the other's.
    '.npz' is appended when missing (as numpy does). Returns the path written.
    """
    path = _with_npz_suffix(path)
    arrays = {"mu": _to_numpy64(mu), "sigma": _to_numpy64(sigma)}
    for key, value in extra.items():
        if value is None:
            continue
        arrays[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arrays[key].dtype == object:
            raise UserError(f"statistics metadata {key!r} must be numbers or strings, not {type(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise UserError(f"{path}: not an .npz archive of statistics")
            return {key: archive[key] for key in archive.files}
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to parse means: not a statistics file
        raise UserError(f"{path}: not a readable statistics file ({error})") from None


def is_statistics_file(path) -> bool:
    """True for an existing `.npz` holding arrays `mu` and `sigma` (an `.npz` of images is not one)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {"mu", "sigma"} <= set(getattr(archive, "files", []))
    except Exception:  # noqa: BLE001 - unreadable: not a statistics file
        return False


def _validated(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    missing = [key for key in ("mu", "sigma") if key not in arrays]
    if missing:
        raise UserError(f"{path}: no {' and '.join(repr(k) for k in missing)} array; a statistics file "
                           f"holds 'mu' [D] and 'sigma' [D, D] (it has {sorted(arrays)})")
    mu, sigma = np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path}: statistics contain non-finite values")
    return mu, sigma


def load_statistics(path) -> tuple[np.ndarray, np.ndarray]:
    """(mu float64 [D], sigma float64 [D, D]) of a statistics .npz; UserError for a missing or bad file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such statistics file")
    return _validated(path, _read_npz(path))


@dataclass
class StatsResult:
    """FID statistics of one image set: mu float64 [D], sigma float64 [D, D]."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int | None
    skipped: list[str] = field(default_factory=list)
    cache_path: Path | None = None
    cached: bool = False
    source: str = ""

    def save(self, path) -> Path:
        """Write a pytorch-fid compatible statistics file (with `num_images` metadata)."""
        return save_statistics(path, self.mu, self.sigma, num_images=self.num_images)

    def to_dict(self) -> dict:
        return {"metric": "fid-stats", "source": self.source, "num_images": self.num_images,
                "dim": int(self.mu.shape[0]), "skipped": len(self.skipped), "cached": self.cached,
                "cache_path": None if self.cache_path is None else str(self.cache_path)}


def read_statistics(path) -> StatsResult:
    """A statistics file as a StatsResult (num_images from its metadata when present, else None)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such statistics file")
    arrays = _read_npz(path)
    mu, sigma = _validated(path, arrays)
    count = arrays.get("num_images")
    num_images = int(count) if count is not None and count.size == 1 else None
    return StatsResult(mu=mu, sigma=sigma, num_images=num_images, source=str(path))


# --------------------------------------------------------------------------------------------------------------
# One pass through the Inception


@dataclass
class Extraction:
    """What one pass over a source gives: pool3 statistics, optionally logits float64 [N, 1008] (CPU)."""

    statistics: FeatureStatistics
    logits: torch.Tensor | None
    num_images: int
    skipped: list[str]
    device: str
    resize: str


def _extractor_resize(extractor, resize: str) -> str:
    return getattr(extractor, "resize", resize)


def _positioned_batches(stream: ImageStream):
    """(stream position, batch) pairs; under torchrun only this rank's share (ImageStream.batches)."""
    if callable(getattr(stream, "batches", None)):
        yield from stream.batches()
        return
    position = 0
    for batch in stream:
        yield position, batch
        position += batch.shape[0]


def _stack_logits(pieces: list[tuple[int, torch.Tensor]], count: int) -> torch.Tensor:
    """The logits in stream order, float64 [count, C] on the CPU; under torchrun gathered from all ranks."""
    if not distributed.is_distributed():
        return torch.cat([piece for _, piece in pieces])
    classes = pieces[0][1].shape[1] if pieces else 0
    header = distributed.all_reduce_sum(torch.tensor([float(classes), float(bool(pieces))],
                                                     dtype=torch.float64))
    classes = round(float(header[0]) / max(float(header[1]), 1.0))
    stacked = torch.zeros(count, classes, dtype=torch.float64)
    for position, piece in pieces:
        stacked[position:position + piece.shape[0]] = piece
    return distributed.all_reduce_sum(stacked)


def extract(source, num_images: int | None = None, seed: int | None = None, extractor=None, inception=None,
            resize: str = "tf", device=None, batch_size: int = 64, skip_bad: bool = False,
            num_workers: int | None = None, progress: bool = True, want_logits: bool = False,
            description: str = "Inception") -> Extraction:
    """Stream `num_images` images of a source (None: all) through the Inception once.

    `extractor`: an `InceptionFeatureExtractor` (or anything with `.features(uint8 NCHW, logits=bool)` and
    `.device`); None loads one from `inception` (weights path, see `load_inception`) with `resize` on `device`.
    Returns pool3 statistics and, with `want_logits`, the logits stacked as float64 [N, 1008] on the CPU
    (N·8 kB: 400 MB for 50k) for the Inception Score. Raises SourceError when the source has fewer images.
    """
    stream = source if isinstance(source, ImageStream) else ImageStream(
        source, num_images=num_images, seed=seed, batch_size=batch_size, skip_bad=skip_bad,
        num_workers=num_workers)
    if extractor is None:
        extractor = load_inception(inception, device=device, resize=resize)
    target = getattr(extractor, "device", None)
    statistics = FeatureStatistics()
    logits = [] if want_logits else None
    with progress_bar(len(stream) // distributed.world_size(), description, progress) as bar:
        for position, batch in _positioned_batches(stream):
            if target is not None:
                batch = batch.to(target, non_blocking=True)
            features, batch_logits = extractor.features(batch, logits=want_logits)
            statistics.add(features)
            if want_logits:
                logits.append((position, batch_logits.to("cpu", torch.float64)))
            bar.update(batch.shape[0])
    statistics.all_reduce()
    stacked = _stack_logits(logits, statistics.count) if want_logits else None
    return Extraction(statistics=statistics, logits=stacked,
                      num_images=statistics.count, skipped=[f"{s.name}: {s.reason}" for s in stream.skipped],
                      device=str(target if target is not None else "cpu"),
                      resize=_extractor_resize(extractor, resize))


# --------------------------------------------------------------------------------------------------------------
# The cache


def default_cache_dir() -> Path:
    """$GANEVAL_CACHE/fid, else $XDG_CACHE_HOME/ganeval/fid, else ~/.cache/ganeval/fid."""
    return cache_root() / "fid"


def _file_identity(path: Path) -> list:
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def source_fingerprint(source: ImageSource) -> list | None:
    """What identifies a source's content for the cache; None for in-memory or unknown kinds (not cached).

    Folders: every image's relative name, size and mtime_ns (not the folder's own path, so a copy made with
    its times kept shares the entry). Zips: every member's name, size and CRC-32. Arrays and HDF5: the file's
    resolved path, size and mtime_ns (and the HDF5 level).
    """
    if isinstance(source, FolderSource):
        root = Path(source.path)
        listing = []
        for file in source.files:
            info = file.stat()
            listing.append([file.relative_to(root).as_posix(), info.st_size, info.st_mtime_ns])
        return ["folder", listing]
    if isinstance(source, ZipSource):
        with zipfile.ZipFile(source.path) as archive:
            members = {info.filename: info for info in archive.infolist()}
        return ["zip", [[name, members[name].file_size, members[name].CRC] for name in source.members]]
    if isinstance(source, HDF5Source):
        return ["hdf5", _file_identity(Path(source.path)), source.dataset_name]
    if type(source) is ArraySource:
        return ["array", _file_identity(Path(source.path))]
    return None


def _weights_identity(extractor, inception) -> list:
    weights = getattr(extractor, "source", None) if extractor is not None else inception
    if weights is not None and Path(weights).is_file():
        if Path(weights).name == FID_WEIGHTS_FILENAME:  # the hash-named standard file: its name is its identity
            return [FID_WEIGHTS_FILENAME]
        return [Path(weights).name, Path(weights).stat().st_size]
    return [f"{type(extractor).__module__}.{type(extractor).__qualname__}"]


def cache_key(source: ImageSource, num_images: int, seed: int | None, resize: str,
              weights_identity: list) -> str | None:
    """sha256 hex of the source's fingerprint and the settings, or None when the source cannot be cached."""
    try:
        fingerprint = source_fingerprint(source)
    except (OSError, zipfile.BadZipFile):  # a file vanished or changed while listing: just do not cache
        fingerprint = None
    if fingerprint is None:
        return None
    material = {"version": CACHE_FORMAT_VERSION, "source": fingerprint, "num_images": int(num_images),
                "seed": seed, "resize": resize, "weights": weights_identity}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _cache_file(directory: Path, source: ImageSource, key: str) -> Path:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source.path).name)[:40] or "source"
    return directory / f"{stem}-{key[:24]}.npz"


def _read_cache(path: Path, key: str, skip_bad: bool) -> StatsResult | None:
    """The cached statistics, or None when absent, corrupt, for another key, or made by skipping bad images
    while this call does not allow skipping (so that the bad images are reported again)."""
    if not path.is_file():
        return None
    try:
        arrays = _read_npz(path)
        mu, sigma = _validated(path, arrays)
        if str(arrays["key"]) != key or int(arrays["version"]) != CACHE_FORMAT_VERSION:
            return None
        skipped = [str(item) for item in arrays.get("skipped", np.array([], dtype=str))]
        num_images = int(arrays["num_images"])
    except (UserError, KeyError, ValueError, TypeError):
        return None
    if skipped and not skip_bad:
        return None
    return StatsResult(mu=mu, sigma=sigma, num_images=num_images, skipped=skipped, cache_path=path, cached=True)


def _write_cache(path: Path, key: str, result: StatsResult) -> Path | None:
    try:
        return save_statistics(path, result.mu, result.sigma, num_images=result.num_images, key=key,
                               version=CACHE_FORMAT_VERSION,
                               skipped=np.array(result.skipped, dtype=str), source=result.source)
    except OSError as error:
        warnings.warn(f"could not write the FID statistics cache {path}: {error}", stacklevel=3)
        return None


# --------------------------------------------------------------------------------------------------------------
# Statistics of a source, and the metric


class _LazyExtractor:
    """Loads the Inception on first use, so cache hits and statistics files need no network at all."""

    def __init__(self, extractor, inception, resize: str, device):
        if extractor is None and resize not in RESIZE_MODES:
            raise UserError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        self.extractor, self.inception, self.resize, self.device = extractor, inception, resize, device
        self.weights_path = None

    def weights_identity(self) -> list:
        """What the cache key says about the weights. Looked up without downloading: with no weights on this
        machine and no explicit file, the key is the standard file's (what a download would fetch), so cached
        statistics still serve an offline machine."""
        if self.extractor is None and self.weights_path is None:
            try:
                self.weights_path = find_inception_weights(self.inception, download=False)
            except UserError:
                if self.inception is not None:
                    raise
                return [FID_WEIGHTS_FILENAME]
        return _weights_identity(self.extractor, self.weights_path)

    @property
    def resize_mode(self) -> str:
        return _extractor_resize(self.extractor, self.resize)

    def get(self):
        if self.extractor is None:
            path = self.weights_path if self.weights_path is not None else self.inception
            self.extractor = load_inception(path, device=self.device, resize=self.resize)
        return self.extractor


def _check_count(source: ImageSource, num_images: int | None) -> int:
    count = len(source) if num_images is None else int(num_images)
    if count < 2:
        raise UserError(f"{source.path}: FID statistics need at least 2 images, {count} "
                           f"{'available' if num_images is None else 'asked'} (papers use 50000)")
    return count


def _compute(source, num_images, seed, lazy: _LazyExtractor, batch_size, skip_bad, num_workers, progress,
             cache, cache_dir, description) -> StatsResult:
    opened = open_source(source)
    count = _check_count(opened, num_images)
    stream = ImageStream(opened, num_images=count, seed=seed, batch_size=batch_size, skip_bad=skip_bad,
                         num_workers=num_workers)  # raises SourceError when the source is too small
    key = path = None
    if cache:
        key = cache_key(opened, count, seed, lazy.resize_mode, lazy.weights_identity())
        if key is not None:
            path = _cache_file(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), opened, key)
            hit = _read_cache(path, key, skip_bad)
            if distributed.is_distributed():  # all ranks take the same branch, or the collectives would hang
                hits = distributed.all_reduce_sum(torch.tensor([int(hit is not None)], dtype=torch.int64))
                hit = hit if int(hits) == distributed.world_size() else None
            if hit is not None:
                hit.source = opened.path
                return hit
    extraction = extract(stream, extractor=lazy.get(), progress=progress, description=description)
    statistics = extraction.statistics
    result = StatsResult(mu=_to_numpy64(statistics.mean()), sigma=_to_numpy64(statistics.covariance()),
                         num_images=statistics.count, skipped=extraction.skipped, source=opened.path)
    if path is not None:
        result.cache_path = _write_cache(path, key, result) if distributed.is_main_process() else path
        if distributed.is_distributed():  # a barrier: no rank looks for the entry before it is written
            distributed.all_reduce_sum(torch.zeros(1))
    return result


def compute_statistics(source, num_images: int | None = None, seed: int | None = None, extractor=None,
                       inception=None, resize: str = "tf", device=None, batch_size: int = 64,
                       skip_bad: bool = False, num_workers: int | None = None, progress: bool = True,
                       cache: bool = True, cache_dir=None) -> StatsResult:
    """FID statistics (μ, Σ of pool3) of `num_images` images of a source (None: all), cached on disk.

    source: a folder, .zip, .npy/.npz of images, .h5, an ImageSource or a uint8 array. With `seed` a random
    subset is drawn. The cache (`cache_dir`, else $GANEVAL_CACHE/fid, else ~/.cache/ganeval/fid) is keyed by
    the source's content listing and the settings (count, seed, resize, weights file); in-memory sources are
    not cached. `extractor` overrides `inception`/`resize`/`device`. Raises SourceError when the source has
    fewer images than asked, UserError for fewer than 2.
    """
    lazy = _LazyExtractor(extractor, inception, resize, device)
    return _compute(source, num_images, seed, lazy, batch_size, skip_bad, num_workers, progress, cache,
                    cache_dir, "Inception")


@dataclass
class FIDResult:
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


def fid(source_a, source_b, num_images: int | None = DEFAULT_NUM_IMAGES, seed: int | None = None,
        inception=None, resize: str = "tf", device=None, batch_size: int = 64, skip_bad: bool = False,
        num_workers: int | None = None, progress: bool = True, cache: bool = True, cache_dir=None,
        extractor=None, method: str = "symmetric", allow_singular: bool = False) -> FIDResult:
    """FID between two image sets; either side may be a statistics `.npz` (keys `mu`, `sigma`).

    A set of N ≤ D images (D = 2048 for pool3) has a singular covariance and a strongly biased FID: that is a
    UserError unless `allow_singular`, which computes it anyway (exactly) and adds a note.

    Image sides use `num_images` images each (None: all; a seeded random subset with `seed`) and go through
    one shared Inception (loaded only if some side is not a statistics file or a cache hit). Raises
    SourceError when a source has fewer images than asked, UserError for fewer than 2 or mismatched
    feature dimensions.
    """
    started = time.perf_counter()
    lazy = _LazyExtractor(extractor, inception, resize, device)
    sides = {}
    for name, source in (("a", source_a), ("b", source_b)):
        if is_statistics_file(source):
            sides[name] = read_statistics(source)
        else:
            sides[name] = _compute(source, num_images, seed, lazy, batch_size, skip_bad, num_workers, progress,
                                   cache, cache_dir, f"Inception {name}")
    a, b = sides["a"], sides["b"]
    if a.mu.shape != b.mu.shape:
        raise UserError(f"the two sets' statistics have different feature dimensions ({a.mu.shape[0]} and "
                           f"{b.mu.shape[0]}); both must come from the same Inception layer")
    notes = []
    counts = [n for n in (a.num_images, b.num_images) if n is not None]
    if counts and min(counts) <= a.mu.shape[0]:
        problem = (f"only {min(counts)} images for {a.mu.shape[0]}-d features: the covariance is singular and "
                   "FID is strongly biased upwards")
        if not allow_singular:
            raise UserError(f"{problem}; use more than {a.mu.shape[0]} images per set (papers: 50000), or "
                               "pass --allow-singular to compute it anyway")
        notes.append(f"{problem}; compare only numbers made with the same count (papers: 50000)")
    loaded = lazy.extractor
    math_device = resolve_device(device) if loaded is None else getattr(loaded, "device", torch.device("cpu"))
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=method, device=math_device)
    return FIDResult(value=value, num_images={"a": a.num_images, "b": b.num_images},
                     resize=lazy.resize_mode, device=str(math_device), seed=seed,
                     seconds=time.perf_counter() - started, skipped={"a": a.skipped, "b": b.skipped},
                     cached={"a": a.cached, "b": b.cached}, notes=notes)


__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_NUM_IMAGES",
    "FID_METHODS",
    "Extraction",
    "FIDResult",
    "FeatureStatistics",
    "StatsResult",
    "cache_key",
    "compute_statistics",
    "default_cache_dir",
    "extract",
    "fid",
    "frechet_distance",
    "is_statistics_file",
    "load_statistics",
    "read_statistics",
    "save_statistics",
    "source_fingerprint",
    "trace_sqrt_product",
]
