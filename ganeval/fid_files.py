"""FID statistics files (pytorch-fid compatible .npz: mu, sigma) and the on-disk feature cache.

A statistics file holds `mu` float64 [D] and `sigma` float64 [D, D] (what pytorch-fid's `--save-stats` writes)
plus optional metadata arrays (`num_images`). Reading refuses files whose arrays are not a Gaussian's
(non-finite, or a sigma that is not symmetric positive semi-definite: `frechet.check_gaussian`).

The cache (`FeatureCache`) keeps the Inception features and logits of image sources under `cache_root()/fid`
(FID statistics, IS, KID and PR all derive from them), keyed (sha256) by the source's
content listing, the image count, the seed, the resize mode and the weights' identity. The weights are
identified by a sha256 of their content, computed once per file and remembered by (path, size, mtime) in
`weights-sha256.json` beside the cached features; the standard hash-named file
(`pt_inception-2015-12-05-6726825d.pth`, whose name carries its hash prefix as torch hub names do) is identified
by its name, so that statistics made with it still serve an offline machine without the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gancore.errors import UserError
from gancore.outputs import atomic_output
from gancore.runtime import CACHE_ENV_VAR, cache_root
from gancore.sources import ArraySource, FolderSource, HDF5Source, ImageSource, ReducedSource, ZipSource

from .frechet import check_gaussian
from .inception import FID_WEIGHTS_FILENAME

CACHE_FORMAT_VERSION = 3  # 3: features and logits (2: statistics, weights by content hash; 1: by name and size)


# --------------------------------------------------------------------------------------------------------------
# Statistics files (pytorch-fid compatible .npz: mu, sigma)


def statistics_path(path) -> Path:
    """The path a statistics file is written to: `path`, with '.npz' appended when missing (as numpy does)."""
    path = Path(path).expanduser()
    return path if path.suffix.lower() == ".npz" else path.with_name(path.name + ".npz")


def to_numpy64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def save_statistics(path, mu, sigma, **extra) -> Path:
    """Write `mu` [D] and `sigma` [D, D] (float64) plus metadata arrays (`num_images=…`) to an .npz, atomically.

    The file is what pytorch-fid's `--save-stats` writes (keys `mu`, `sigma`), so either tool reads the other's.
    '.npz' is appended when missing (as numpy does). Returns the path written.
    """
    path = statistics_path(path)
    arrays = {"mu": to_numpy64(mu), "sigma": to_numpy64(sigma)}
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
    check_gaussian(torch.from_numpy(mu), torch.from_numpy(sigma), str(path))
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
    resize: str | None = None  # how the images were resized to 299 (None: not recorded)
    features: str | None = None  # the feature network's identity (`weights_identity` as JSON; None: not recorded)
    seed: int | None = None
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"  # where the features were computed
    seconds: float = 0.0  # how long making these statistics took

    def save(self, path) -> Path:
        """Write a pytorch-fid compatible statistics file with metadata: image count, resize mode, feature network
        and weights hash, seed and source (what `settings_problems` compares)."""
        return save_statistics(path, self.mu, self.sigma, num_images=self.num_images, resize=self.resize,
                               features=self.features, seed=self.seed, source=self.source)

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
    seed = arrays.get("seed")
    return StatsResult(mu=mu, sigma=sigma, num_images=num_images, source=str(path), resize=_text(arrays, "resize"),
                       features=_text(arrays, "features"), seed=int(seed) if seed is not None else None)


def _text(arrays: dict[str, np.ndarray], key: str) -> str | None:
    value = arrays.get(key)
    return str(value) if value is not None and value.size == 1 else None


def settings_problems(statistics: StatsResult, resize: str, features: str | None) -> list[str]:
    """Why a statistics file cannot be compared with features made with `resize` and the network `features`
    (its identity, None: unknown), as problems; a file that records neither gets a note in its `notes`."""
    problems = []
    if statistics.resize is None and statistics.features is None:
        statistics.notes.append(f"{statistics.source} records neither its resize mode nor its feature network "
                                "(made by pytorch-fid or an older ganeval): the value is only meaningful if "
                                "both match this call's")
        return problems
    if statistics.resize is not None and resize is not None and statistics.resize != resize:
        problems.append(f"{statistics.source} was made with --resize {statistics.resize}, this call uses "
                        f"--resize {resize}; FID compares only statistics made the same way (pass --resize "
                        f"{statistics.resize} or remake the file)")
    if statistics.features is not None and features is not None and statistics.features != features:
        problems.append(f"{statistics.source} was made with the feature network {statistics.features}, this call "
                        f"uses {features}; pass the same --inception weights or remake the file")
    return problems


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
    resolved path, size and mtime_ns (and the HDF5 level). A reduced source: its source's and the steps.
    """
    if isinstance(source, ReducedSource):
        inner = source_fingerprint(source.inner)
        return None if inner is None else ["reduced", source.steps, inner]
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


WEIGHTS_HASHES_FILE = "weights-sha256.json"
_known_hashes: dict[str, list] = {}  # resolved path -> [size, mtime_ns, sha256], this process


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_hash_records(record_file: Path) -> dict:
    try:
        records = json.loads(record_file.read_text())
        return records if isinstance(records, dict) else {}
    except (OSError, ValueError):
        return {}


def weights_sha256(path, cache_dir=None) -> str:
    """sha256 hex of a weights file, computed once per (path, size, mtime): remembered in this process and in
    `cache_dir/weights-sha256.json` (default: the FID cache folder); hashing 100 MB takes ~0.2 s."""
    path = Path(path).resolve()
    info = path.stat()
    stamp = [info.st_size, info.st_mtime_ns]
    key = str(path)
    if key in _known_hashes and _known_hashes[key][:2] == stamp:
        return _known_hashes[key][2]
    record_file = Path(cache_dir).expanduser() / WEIGHTS_HASHES_FILE if cache_dir else \
        default_cache_dir() / WEIGHTS_HASHES_FILE
    records = _load_hash_records(record_file)
    record = records.get(key)
    if not (isinstance(record, list) and len(record) == 3 and record[:2] == stamp):
        record = stamp + [_sha256_of_file(path)]
        records[key] = record
        try:
            record_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(record_file) as temporary:
                temporary.write_text(json.dumps(records, indent=0, sort_keys=True))
        except OSError as error:  # a read-only cache: hash again next time
            warnings.warn(f"could not record the weights hash in {record_file}: {error}", stacklevel=2)
    _known_hashes[key] = record
    return record[2]


def weights_identity(weights: Path | None, extractor=None, cache_dir=None) -> list:
    """What the cache key says about the feature network: the standard hash-named file by its name, any other
    weights file by the sha256 of its content; no file: the standard file's name (what a download would
    fetch) for the Inception, else the extractor's class."""
    if weights is not None and Path(weights).is_file():
        if Path(weights).name == FID_WEIGHTS_FILENAME:
            return [FID_WEIGHTS_FILENAME]
        return ["sha256", weights_sha256(weights, cache_dir)]
    if extractor is not None:
        return [f"{type(extractor).__module__}.{type(extractor).__qualname__}"]
    return [FID_WEIGHTS_FILENAME]


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


def cache_file_for(directory: Path, source: ImageSource, key: str) -> Path:
    """The cache entry's path: `directory/<source name>-<key prefix>.npz`."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source.path).name)[:40] or "source"
    return directory / f"{stem}-{key[:24]}.npz"


@dataclass
class CachedFeatures:
    """One cache entry: the Inception pool features float32 [N, D] and logits float32 [N, C] (None when the
    weights give none) of the first N images of a source's stream, and the files skipped to get them."""

    features: torch.Tensor
    logits: torch.Tensor | None
    skipped: list[str]
    path: Path


class FeatureCache:
    """The on-disk cache of Inception features (like torch-fidelity's), shared by FID, IS, KID and PR and by
    every command: an entry is keyed by the source's content (`source_fingerprint`), the image count, the
    stream's seed, the resize mode and the weights' identity. Entries are written atomically; one that cannot
    be written is a note in `notes`, not an error."""

    def __init__(self, directory, resize: str, weights: list):
        self.directory, self.resize, self.weights = Path(directory), resize, weights
        self.notes: list[str] = []
        self._keys: dict[tuple[int, int, int | None], tuple[ImageSource, str | None]] = {}

    def entry(self, source: ImageSource, count: int, seed: int | None) -> tuple[Path, str] | None:
        """(entry path, key), or None for a source that cannot be cached (in memory, a generator). The key is
        computed once per source, count and seed for the life of this cache object (a folder's fingerprint stats
        every file): the entry written after a pass is keyed by the content the pass started from."""
        known = self._keys.get((id(source), count, seed))
        if known is None or known[0] is not source:
            known = (source, cache_key(source, count, seed, self.resize, self.weights))
            self._keys[(id(source), count, seed)] = known
        key = known[1]
        return None if key is None else (cache_file_for(self.directory, source, key), key)

    def read(self, source: ImageSource, count: int, seed: int | None, want_logits: bool,
             skip_bad: bool) -> CachedFeatures | None:
        """The entry, or None when absent, corrupt, for another key, without the logits asked for, or made by
        skipping bad images while this call does not allow skipping (so that they are reported again)."""
        found = self.entry(source, count, seed)
        if found is None or not found[0].is_file():
            return None
        path, key = found
        try:
            arrays = _read_npz(path)
            if str(arrays["key"]) != key or int(arrays["version"]) != CACHE_FORMAT_VERSION:
                return None
            features = torch.from_numpy(np.asarray(arrays["features"], np.float32))
            logits = torch.from_numpy(np.asarray(arrays["logits"], np.float32)) if "logits" in arrays else None
            skipped = [str(item) for item in arrays.get("skipped", np.array([], dtype=str))]
        except (UserError, KeyError, ValueError, TypeError):
            return None
        if features.shape[0] != count or (want_logits and logits is None) or (skipped and not skip_bad):
            return None
        return CachedFeatures(features, logits, skipped, path)

    def write(self, source: ImageSource, count: int, seed: int | None, features: torch.Tensor,
              logits: torch.Tensor | None, skipped: list[str]) -> Path | None:
        """Store an entry (atomically); None, with a note, when it cannot be written."""
        found = self.entry(source, count, seed)
        if found is None:
            return None
        path, key = found
        arrays = {"features": features.to("cpu", torch.float32).numpy(), "key": np.array(key),
                  "version": np.array(CACHE_FORMAT_VERSION), "skipped": np.array(skipped, dtype=str),
                  "source": np.array(source.path)}
        if logits is not None:
            arrays["logits"] = logits.to("cpu", torch.float32).numpy()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as temporary, open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
        except OSError as error:
            self.notes.append(f"the feature cache {path} could not be written ({error}); the next run computes "
                              "these features again (--no-cache skips the cache)")
            return None
        return path


__all__ = ["CACHE_ENV_VAR", "CACHE_FORMAT_VERSION", "CachedFeatures", "FeatureCache", "StatsResult",
           "cache_file_for", "cache_key", "default_cache_dir", "is_statistics_file", "load_statistics",
           "read_statistics", "save_statistics", "settings_problems", "source_fingerprint", "statistics_path",
           "to_numpy64", "weights_identity", "weights_sha256"]
