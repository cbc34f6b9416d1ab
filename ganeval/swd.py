"""Sliced Wasserstein distance on Laplacian-pyramid patches, as in Karras et al. 2018 (ProGAN), section 5.

The algorithm is the original implementation's (tkarras/progressive_growing_of_gans, metrics/sliced_wasserstein.py):

1. Laplacian pyramid of each image in float32 [0, 255]: 5×5 binomial kernel [1,4,6,4,1]ᵀ[1,4,6,4,1]/256,
   reflect-101 borders, pyrDown = blur then keep even rows/columns, pyrUp = zero-stuffing then blur with 4× the
   kernel (both equal OpenCV's). Levels from full resolution down to 16×16; the last level is the low-pass residual.
2. At each level, 128 patches of 7×7×3 per image at random positions (centres drawn so the patch fits), flattened
   in (channel, row, column) order to 147-d descriptors.
3. Each image set's descriptors of a level are normalised per colour channel with the set's own mean and
   population standard deviation.
4. Sliced W1 between the two sets: 4 repeats × 128 random unit directions, projections sorted, mean absolute
   difference. Reported ×1e3 per level, and the mean of the levels.

Math is in pure functions (`laplacian_pyramid`, `patch_descriptors`, `sliced_wasserstein`); `DescriptorSet` accumulates a streamed image set, `SWDMetric` is the registry's metric and `compute_swd`
runs the whole metric (with repeats).

Memory: one set stores num_images × 128 × 147 float32 per level (75 kB per image per level), e.g. 16384 images
at 128² (4 levels) take 4.9 GB per set, at 1024² (7 levels) 8.6 GB. Descriptors live on the GPU when they fit
in half of its free memory, else in host RAM. Working memory on top is one level of both sets plus one
projection chunk (≤ 64 MB per set). See `docs/metrics.md` for measured figures.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from gancore import distributed
from gancore.errors import UserError
from gancore.runtime import exact_float32, progress_bar, resolve_device
from gancore.sources import pair_sources, peek_shape

from .metric_utils import Batch, ImageSet, Needs, PassOptions, Problems, default_count, run_pass, stream_seed

PATCH_SIZE = 7
PATCHES_PER_IMAGE = 128
DIRECTION_REPEATS = 4
DIRECTIONS_PER_REPEAT = 128
MIN_RESOLUTION = 16
DEFAULT_NUM_IMAGES = 16384
DEFAULT_SEED = 1000


# --------------------------------------------------------------------------------------------------------------
# Pure math


def _axis_slice(ndim: int, axis: int, start: int, stop: int, step: int = 1) -> tuple:
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop, step)
    return tuple(index)


def _reflect101_pad(x: torch.Tensor, axis: int, width: int = 2) -> torch.Tensor:
    """Pad `width` samples on both ends of `axis` with reflect-101 (d c b | a b c d | c b a)."""
    n = x.shape[axis]
    left = x[_axis_slice(x.ndim, axis, 1, width + 1)].flip(axis)
    right = x[_axis_slice(x.ndim, axis, n - 1 - width, n - 1)].flip(axis)
    return torch.cat([left, x, right], dim=axis)


def _binomial_down_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """[1,4,6,4,1]/16 along `axis` with reflect-101 borders, keeping even samples: n -> ceil(n/2)."""
    padded = _reflect101_pad(x, axis)
    count = (x.shape[axis] + 1) // 2
    taps = [padded[_axis_slice(x.ndim, axis, t, t + 2 * count - 1, 2)] for t in range(5)]
    out = torch.add(taps[0], taps[4])
    return out.add_(taps[1], alpha=4.0).add_(taps[3], alpha=4.0).add_(taps[2], alpha=6.0).mul_(1.0 / 16.0)


def _binomial_up_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Zero-stuff ×2 along `axis`, then [1,4,6,4,1]/8 with reflect-101 borders on the stuffed signal: n -> 2n.

    Written in polyphase form: even outputs (x[i-1] + 6x[i] + x[i+1])/8, odd outputs (x[i] + x[i+1])/2.
    Reflect-101 on the stuffed signal means x[-1] = x[1] on the left and x[n] = x[n-1] on the right.
    """
    n = x.shape[axis]
    padded = torch.cat([x[_axis_slice(x.ndim, axis, 1, 2)], x, x[_axis_slice(x.ndim, axis, n - 1, n)]], dim=axis)
    before, centre, after = (padded[_axis_slice(x.ndim, axis, t, t + n)] for t in range(3))
    even = torch.add(before, after).add_(centre, alpha=6.0).mul_(0.125)
    odd = torch.add(centre, after).mul_(0.5)
    return torch.stack([even, odd], dim=axis + 1).flatten(axis, axis + 1)


def pyr_down(images: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: 5×5 binomial blur (reflect-101), keep even rows and columns.

    float32 NCHW (H, W) -> (ceil(H/2), ceil(W/2)). Separable and written as shifted adds: on CPU this is
    several times faster than a 1-channel conv2d.
    """
    return _binomial_down_axis(_binomial_down_axis(images, 3), 2)


def pyr_up(images: torch.Tensor) -> torch.Tensor:
    """cv2.pyrUp: zero-stuff to (2H, 2W), blur with 4× the 5×5 binomial kernel (reflect-101). float32 NCHW."""
    return _binomial_up_axis(_binomial_up_axis(images, 3), 2)


def pyramid_resolutions(height: int, width: int, min_resolution: int = MIN_RESOLUTION) -> list[tuple[int, int]]:
    """Level sizes, finest first: halve while the smaller side stays ≥ min_resolution (1024² -> 1024…16)."""
    if min(height, width) < min_resolution:
        raise UserError(f"images of {width}x{height} are too small for SWD (the smallest level is "
                           f"{min_resolution}x{min_resolution})")
    sizes = [(height, width)]
    while min(sizes[-1]) // 2 >= min_resolution:
        h, w = sizes[-1]
        if h % 2 or w % 2:
            raise UserError(f"images of {width}x{height}: every pyramid level above {min_resolution} must have "
                               f"even sides (level {w}x{h} does not)")
        sizes.append((h // 2, w // 2))
    return sizes


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid, finest first. images: NCHW in [0, 255] (uint8 or float) -> float32 NCHW levels.

    Levels 0 … num_levels-2 are band-pass (level − pyrUp(pyrDown(level))); the last is the low-pass residual.
    """
    # a contiguous float copy: the bands are formed in place, and batches may arrive channels-last
    levels = [images.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)]
    for _ in range(num_levels - 1):
        coarser = pyr_down(levels[-1])
        levels[-1].sub_(pyr_up(coarser))
        levels.append(coarser)
    return levels


def patch_descriptors(level: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Patches of one pyramid level flattened to descriptors.

    level: float32 [B, C, H, W]; rows, cols: int64 [B, P] top-left corners (0 ≤ row ≤ H − patch_size).
    Returns float32 [B·P, C·patch²], each row in (channel, row, column) order, image-major.
    """
    batch, channels, height, width = level.shape
    offsets = torch.arange(patch_size, device=level.device)
    window = (offsets[:, None] * width + offsets[None, :]).reshape(-1)  # [p²] flat offsets in row-major order
    corners = rows.to(level.device) * width + cols.to(level.device)  # [B, P]
    flat_index = (corners[:, :, None] + window).reshape(batch, 1, -1).expand(batch, channels, -1)
    patches = torch.gather(level.reshape(batch, channels, height * width), 2, flat_index)  # [B, C, P·p²]
    patches = patches.view(batch, channels, rows.shape[1], patch_size * patch_size).transpose(1, 2)
    return patches.reshape(-1, channels * patch_size * patch_size)


def random_directions(dimension: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` isotropic random unit vectors as the columns of a float32 [dimension, count] matrix."""
    directions = torch.randn(dimension, count, dtype=torch.float64, generator=generator)
    return (directions / directions.norm(dim=0, keepdim=True)).float()


def _sort_rows(projections: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending. torch on GPU; on CPU numpy's SIMD sort, rows split over threads (far faster)."""
    if projections.device.type != "cpu":
        return torch.sort(projections, dim=1).values
    array = projections.numpy()
    threads = max(1, min(torch.get_num_threads(), array.shape[0]))
    if threads == 1:
        array.sort(axis=1)
    else:
        bounds = np.linspace(0, array.shape[0], threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL while sorting
            list(pool.map(lambda i: array[bounds[i]:bounds[i + 1]].sort(axis=1), range(threads)))
    return projections


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor,
                       chunk_bytes: int = 1 << 26, normalization: tuple | None = None) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance between the projected sets.

    a, b: float32 [N, D] (normalised descriptors, same N); directions: float32 [D, K] unit columns.
    Equals mean_k mean_n |sort(a·d_k)_n − sort(b·d_k)_n| (no ×1e3 here).

    `normalization=((mean_a, std_a), (mean_b, std_b))` (float64 [D] each) lets a, b be raw descriptors: the
    standardisation (x − mean)/std is folded into the directions (d/std) and a per-direction constant
    (mean/std)·d removed after sorting, which saves a full pass over both sets.
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    directions = directions.to(device=a.device, dtype=torch.float64)
    if normalization is None:
        dims = directions.shape[0]
        normalization = ((torch.zeros(dims, dtype=torch.float64), torch.ones(dims, dtype=torch.float64)),) * 2
    scaled, offsets = [], []
    for mean, std in normalization:
        mean, std = mean.to(directions), std.to(directions)
        scaled.append((directions / std[:, None]).to(a.dtype))
        offsets.append(((mean / std) @ directions).to(a.dtype))
    per_chunk = max(1, min(directions.shape[1], chunk_bytes // (4 * max(1, a.shape[0]))))
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    with exact_float32():
        for start in range(0, directions.shape[1], per_chunk):
            stop = start + per_chunk
            sorted_a = _sort_rows((scaled[0][:, start:stop].T @ a.T).contiguous())  # [k, N], rows contiguous
            sorted_b = _sort_rows((scaled[1][:, start:stop].T @ b.T).contiguous())
            shift = (offsets[0][start:stop] - offsets[1][start:stop])[:, None]
            # per-row float32 sums (cascade summation, exact enough) accumulated in float64
            total += sorted_a.sub_(sorted_b).sub_(shift).abs_().sum(dim=1).double().sum()
    return float(total) / (a.shape[0] * directions.shape[1])


# --------------------------------------------------------------------------------------------------------------
# Streaming accumulation


def _generator(*key: int) -> torch.Generator:
    """A CPU torch generator seeded from a tuple of ints (same numbers on every device)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class DescriptorSet:
    """Patch descriptors of one image set at every pyramid level, filled batch by batch.

    Patch positions for all images are drawn up front from (seed, stream), so results do not depend on the
    batch size. `add(levels, start)` takes the pyramid of images start…start+B−1 of this set.
    """

    def __init__(self, num_images: int, sizes: list[tuple[int, int]], seed: int, stream: int,
                 storage: torch.device, patches_per_image: int = PATCHES_PER_IMAGE, channels: int = 3):
        self.num_images, self.sizes, self.patches = num_images, sizes, patches_per_image
        dimension = channels * PATCH_SIZE * PATCH_SIZE
        self.rows, self.cols, self.descriptors = [], [], []
        for level, (height, width) in enumerate(sizes):
            generator = _generator(seed, stream, level)
            self.rows.append(torch.randint(0, height - PATCH_SIZE + 1, (num_images, patches_per_image),
                                           generator=generator))
            self.cols.append(torch.randint(0, width - PATCH_SIZE + 1, (num_images, patches_per_image),
                                           generator=generator))
            # zeros: under torchrun each rank fills its rows and the sets are summed across ranks
            allocate = torch.zeros if distributed.is_distributed() else torch.empty
            self.descriptors.append(allocate(num_images * patches_per_image, dimension, device=storage))
        self.channels = channels
        # Per level and channel: float64 sums of (x − shift) and (x − shift)². A fixed shift (the middle of
        # [0, 255] for the low-pass residual, 0 for the zero-mean band-pass levels) keeps E[x²] − E[x]²
        # well conditioned and is the same on every rank.
        self.shift = [0.0] * (len(sizes) - 1) + [127.5]
        self.sums = [torch.zeros(2, channels, dtype=torch.float64) for _ in sizes]
        self.filled = 0

    def add(self, levels: list[torch.Tensor], start: int) -> None:
        count = levels[0].shape[0]
        for level, image_levels in enumerate(levels):
            rows = self.rows[level][start:start + count]
            cols = self.cols[level][start:start + count]
            block = patch_descriptors(image_levels, rows, cols)
            self.descriptors[level][start * self.patches:(start + count) * self.patches] = block
            self._accumulate(level, block.view(block.shape[0], self.channels, -1))
        self.filled += count

    def _accumulate(self, level: int, block: torch.Tensor) -> None:
        centred = block - self.shift[level]
        sums = torch.stack([centred.sum(dim=(0, 2)), centred.square_().sum(dim=(0, 2))]).double()
        self.sums[level] += sums.cpu()

    def combine_ranks(self) -> None:
        """Under torchrun: sum descriptors, statistics and counts over ranks (each rank filled its rows)."""
        if not distributed.is_distributed():
            return
        for level in range(len(self.sizes)):
            self.descriptors[level] = distributed.all_reduce_sum(self.descriptors[level])
            self.sums[level] = distributed.all_reduce_sum(self.sums[level])
        self.filled = int(distributed.all_reduce_sum(torch.tensor([self.filled], dtype=torch.int64)).item())

    def level_statistics(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-descriptor-dimension mean and population std of level `level` (float64 [C·49] each).

        Each colour channel's statistics are taken over all its patches and pixels, then repeated for the
        channel's 49 dimensions (the original's per-channel normalisation).
        """
        if self.filled != self.num_images:
            raise RuntimeError(f"descriptor set holds {self.filled} of {self.num_images} images")
        count = self.num_images * self.patches * PATCH_SIZE * PATCH_SIZE
        mean_shifted = self.sums[level][0] / count
        variance = self.sums[level][1] / count - mean_shifted.square()
        if torch.any(variance <= 0):
            raise UserError("a colour channel is constant at one pyramid level: SWD is undefined for flat images")
        per_dim = PATCH_SIZE * PATCH_SIZE
        mean = (mean_shifted + self.shift[level]).repeat_interleave(per_dim)
        return mean, variance.sqrt().repeat_interleave(per_dim)

    def normalized_level(self, level: int, device: torch.device) -> torch.Tensor:
        """Level `level`'s descriptors standardised per channel, on `device` (a new tensor)."""
        mean, std = self.level_statistics(level)
        raw = self.descriptors[level].to(device)
        return (raw - mean.to(raw)) / std.to(raw)

    def raw_level(self, level: int, device: torch.device) -> tuple[torch.Tensor, tuple]:
        """Level `level`'s raw descriptors on `device` and their (mean, std) for `sliced_wasserstein`."""
        return self.descriptors[level].to(device), self.level_statistics(level)

    @staticmethod
    def bytes_needed(num_images: int, sizes: list[tuple[int, int]], patches_per_image: int = PATCHES_PER_IMAGE) -> int:
        return num_images * patches_per_image * 3 * PATCH_SIZE * PATCH_SIZE * 4 * len(sizes)


# --------------------------------------------------------------------------------------------------------------
# The metric


@dataclass
class SWDLevels:
    """SWD ×1e3 per pyramid level (keyed by resolution, finest first) and their mean."""

    levels: dict[str, float]
    avg: float

    @classmethod
    def from_values(cls, keys: list[str], values: list[float]) -> SWDLevels:
        return cls({key: float(v) for key, v in zip(keys, values)}, float(np.mean(values)))


@dataclass
class SWDResult:
    num_images: int
    seed: int
    levels: dict[str, float]
    avg: float
    repeats: int = 1
    std: SWDLevels | None = None
    baseline: SWDLevels | None = None
    baseline_num_images: int | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON object of `ganeval swd --json`."""
        out = {"metric": "swd", "num_images": self.num_images, "seed": self.seed,
               "levels": self.levels, "avg": self.avg, "repeats": self.repeats}
        if self.std is not None:
            out["std"] = asdict(self.std)
        if self.baseline is not None:
            out["baseline"] = dict(asdict(self.baseline), num_images=self.baseline_num_images)
        out["skipped"] = {name: len(items) for name, items in self.skipped.items()}
        out["device"], out["seconds"] = self.device, round(self.seconds, 3)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def level_key(height: int, width: int) -> str:
    return str(height) if height == width else f"{height}x{width}"


def default_batch_size(height: int, width: int, device: torch.device) -> int:
    pixels = (64 if device.type == "cuda" else 16) * 256 * 256
    return int(max(1, min(256, pixels // (height * width))))


def _storage_device(device: torch.device, total_bytes: int) -> torch.device:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if total_bytes < 0.5 * free:
            return device
    return torch.device("cpu")


class SWDAccumulator:
    """One SWD evaluation fed by two image streams (generated, real), for `swd` and `ganeval all`.

    `add_generated(batch, position)` / `add_real(batch, position)` take uint8 NCHW batches (on the compute
    device) with their stream positions; positions ≥ the counts asked are ignored, so a longer stream (shared
    with other metrics) can feed it. The real stream also feeds the baseline's two disjoint sets:
    positions [0, n_b) and [n_b, 2·n_b), n_b = min(num_images, real images / 2). `finish()` returns SWD ×1e3
    per level for the main comparison and the baseline (or None).
    """

    def __init__(self, num_images: int, sizes: list[tuple[int, int]], seed: int, device: torch.device,
                 baseline_count: int = 0):
        self.num_images, self.sizes, self.seed, self.device = num_images, sizes, seed, device
        self.baseline_count = baseline_count
        storage_bytes = DescriptorSet.bytes_needed(num_images, sizes) * 2
        if baseline_count:
            copies = 1 if baseline_count == num_images else 2
            storage_bytes += DescriptorSet.bytes_needed(baseline_count, sizes) * copies
        storage = _storage_device(device, storage_bytes)
        self.generated = DescriptorSet(num_images, sizes, seed, 0, storage)
        self.real = DescriptorSet(num_images, sizes, seed, 1, storage)
        self.real_routes = [(self.real, 0, num_images)]
        self.baseline_sets = None
        if baseline_count:
            first = self.real if baseline_count == num_images else \
                DescriptorSet(baseline_count, sizes, seed, 2, storage)
            second = DescriptorSet(baseline_count, sizes, seed, 3, storage)
            if first is not self.real:
                self.real_routes.append((first, 0, baseline_count))
            self.real_routes.append((second, baseline_count, baseline_count))
            self.baseline_sets = (first, second)

    @property
    def real_needed(self) -> int:
        return max(self.num_images, 2 * self.baseline_count)

    def add_generated(self, batch: torch.Tensor, position: int) -> None:
        self._route(batch, position, [(self.generated, 0, self.num_images)])

    def add_real(self, batch: torch.Tensor, position: int) -> None:
        self._route(batch, position, self.real_routes)

    def _route(self, batch: torch.Tensor, position: int, routes) -> None:
        wanted = [(target, first, length) for target, first, length in routes
                  if max(position, first) < min(position + batch.shape[0], first + length)]
        if not wanted:
            return
        levels = laplacian_pyramid(batch.to(self.device), len(self.sizes))
        for target, first, length in wanted:
            lo, hi = max(position, first), min(position + batch.shape[0], first + length)
            target.add([level[lo - position:hi - position] for level in levels], lo - first)

    def combine_ranks(self) -> None:
        """Under torchrun: every rank gets all descriptors (each filled its own images' rows)."""
        sets = [self.generated, self.real] + [s for s in (self.baseline_sets or ()) if s is not self.real]
        for descriptor_set in sets:
            descriptor_set.combine_ranks()

    def finish(self, progress: bool = True) -> tuple[list[float], list[float] | None]:
        """SWD ×1e3 per level (finest first) and the baseline's (or None), after `combine_ranks`."""
        dimension = 3 * PATCH_SIZE * PATCH_SIZE
        count = DIRECTION_REPEATS * DIRECTIONS_PER_REPEAT
        main, base = [], []
        with progress_bar(len(self.sizes), "SWD levels", progress, unit="level") as bar:
            for level in range(len(self.sizes)):
                directions = random_directions(dimension, count, _generator(self.seed, 99, level))
                main.append(1e3 * self._distance(self.generated, self.real, level, directions))
                if self.baseline_sets is not None:
                    directions = random_directions(dimension, count, _generator(self.seed, 98, level))
                    base.append(1e3 * self._distance(*self.baseline_sets, level, directions))
                bar.update(1)
        return main, (base if self.baseline_sets is not None else None)

    def _distance(self, set_a: DescriptorSet, set_b: DescriptorSet, level: int, directions) -> float:
        (desc_a, stats_a), (desc_b, stats_b) = set_a.raw_level(level, self.device), set_b.raw_level(level, self.device)
        return sliced_wasserstein(desc_a, desc_b, directions, normalization=(stats_a, stats_b))


def check_swd_sources(gen_source, real_source, num_images: int, skip_bad: bool) -> list[tuple[int, int]]:
    """Pyramid level sizes for two sources, or UserError (sizes differ, too small, too few images)."""
    for source in (gen_source, real_source):
        if len(source) < num_images:
            raise UserError(f"{source.path}: has {len(source)} images, SWD asked for {num_images} "
                               f"(pass --num-images {len(source)} or fewer; SWD depends on the count, so "
                               f"compare only numbers made with the same count)")
    sizes = pyramid_resolutions(*peek_shape(real_source, skip_bad))
    gen_sizes = pyramid_resolutions(*peek_shape(gen_source, skip_bad))
    if gen_sizes != sizes:
        raise UserError(f"the two sources have different image sizes: {gen_sizes[0][1]}x{gen_sizes[0][0]} "
                           f"and {sizes[0][1]}x{sizes[0][0]}")
    return sizes


def swd_problems(size: tuple[int, int], real_count: int, baseline: bool) -> list[str]:
    """What keeps SWD from running on images of `size` (H, W) (with the real-vs-real `baseline` over
    `real_count` reals): found from sizes and counts alone."""
    problems = []
    try:
        pyramid_resolutions(*size)
    except UserError as error:
        problems.append(str(error))
    if baseline and real_count < 4:
        problems.append(f"--baseline needs at least 4 real images, the real source has {real_count}")
    return problems


def baseline_count_for(num_images: int, real_count: int) -> int:
    count = min(num_images, real_count // 2)
    if count < 2:
        raise UserError(f"--baseline needs at least 4 real images, the real source has {real_count}")
    return count


class SWDMetric:
    """The registry's SWD: Laplacian-pyramid patches of the first `num_images` of "gen" and of "real" (plus the
    baseline's real sets), in the pass's stream order; `result()` is one evaluation (`repeats` = 1)."""

    name = "swd"

    def __init__(self, num_images: int, sizes: list[tuple[int, int]], seed: int, device: torch.device,
                 baseline_count: int = 0, progress: bool = True):
        self.accumulator = SWDAccumulator(num_images, sizes, seed, device, baseline_count)
        self.num_images, self.seed, self.device, self.progress = num_images, seed, device, progress
        self.needs = Needs({"gen": num_images, "real": self.accumulator.real_needed}, pixels=True)

    def add(self, batch: Batch) -> None:
        if batch.set_name == "gen":
            self.accumulator.add_generated(batch.pixels, batch.position)
        elif batch.set_name == "real":
            self.accumulator.add_real(batch.pixels, batch.position)

    def combine_ranks(self) -> None:
        self.accumulator.combine_ranks()

    def result(self) -> SWDResult:
        main, base = self.accumulator.finish(self.progress)
        keys = [level_key(h, w) for h, w in self.accumulator.sizes]
        levels = SWDLevels.from_values(keys, main)
        baseline = SWDLevels.from_values(keys, base) if base is not None else None
        return SWDResult(num_images=self.num_images, seed=self.seed, levels=levels.levels, avg=levels.avg,
                         baseline=baseline, baseline_num_images=self.accumulator.baseline_count or None,
                         device=str(self.device))


def _evaluate_once(gen_source, real_source, num_images: int, seed: int, device: torch.device,
                   batch_size: int | None, baseline: bool, skip_bad: bool, num_workers: int | None,
                   progress: bool) -> SWDResult:
    """One SWD evaluation through the metric loop (generated stream seed `seed`, real `seed + 1`)."""
    sizes = check_swd_sources(gen_source, real_source, num_images, skip_bad)
    baseline_count = baseline_count_for(num_images, len(real_source)) if baseline else 0
    metric = SWDMetric(num_images, sizes, seed, device, baseline_count, progress)
    options = PassOptions(device=device, batch_size=batch_size or default_batch_size(*sizes[0], device),
                          skip_bad=skip_bad, num_workers=num_workers, progress=progress, description="SWD")
    report = run_pass([metric], {name: ImageSet(source, stream_seed(seed, name))
                                 for name, source in (("gen", gen_source), ("real", real_source))}, options)
    result = metric.result()
    result.skipped = report.skipped
    return result


def compute_swd(source_a, source_b, num_images: int | None = None, seed: int = DEFAULT_SEED,
                device: str | torch.device | None = None, batch_size: int | None = None, repeats: int = 1,
                baseline: bool = False, skip_bad: bool = False, num_workers: int | None = None,
                progress: bool = True) -> SWDResult:
    """Sliced Wasserstein distance (×1e3 per level and average) between two image sources.

    source_a: generated images, source_b: real images — paths, ImageSources or uint8 NCHW/NHWC arrays (≥ 16²,
    even sides down the pyramid); of two sizes, the larger is matched to the smaller (`pair_sources`: an HDF5
    level or the box filter chain, said in `notes`). `num_images` of each are used (None: the paper's 16384, or
    all when a source holds fewer, with a note), sampled by the rule of every command (`stream_seed`). `repeats` > 1 re-runs with seeds seed, seed+1, … and reports the mean and the sample
    std. `baseline` adds the real-vs-real floor: SWD between two disjoint sets of min(num_images, |b|/2) reals.
    """
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    device = resolve_device(device)
    pair = pair_sources(source_a, source_b, skip_bad)
    gen_source, real_source = pair.gen, pair.real
    problems = Problems({"swd_images": "--num-images"})
    num_images = default_count(num_images, DEFAULT_NUM_IMAGES, min(len(gen_source), len(real_source)),
                               "SWD images per set", "swd_images", problems)
    for source in (gen_source, real_source):
        problems.source_count(source, num_images, "SWD", "swd_images")
    problems.items.extend(swd_problems(pair.size, len(real_source), baseline))
    problems.raise_if_any()
    started = time.perf_counter()
    runs = []
    for repeat in range(repeats):
        runs.append(_evaluate_once(gen_source, real_source, num_images, seed + repeat, device, batch_size,
                                   baseline, skip_bad, num_workers, progress))
    result = _combine_repeats(runs, seed, str(device), time.perf_counter() - started)
    result.notes = pair.notes + problems.notes
    return result


def _combine_repeats(runs: list[SWDResult], seed: int, device: str, seconds: float) -> SWDResult:
    """Mean over the runs (and the sample std across runs when there are several)."""
    keys = list(runs[0].levels)
    values = np.array([list(run.levels.values()) for run in runs])
    mean = SWDLevels.from_values(keys, list(values.mean(axis=0)))
    std = None
    if len(runs) > 1:
        per_run_avg = values.mean(axis=1)
        std = SWDLevels({k: float(v) for k, v in zip(keys, values.std(axis=0, ddof=1))},
                        float(per_run_avg.std(ddof=1)))
    base = None
    if runs[0].baseline is not None:
        base = SWDLevels.from_values(keys, list(np.mean([list(run.baseline.levels.values()) for run in runs],
                                                        axis=0)))
    skipped = {}
    for run in runs:
        for name, items in run.skipped.items():
            skipped.setdefault(name, [])
            skipped[name].extend(item for item in items if item not in skipped[name])
    return SWDResult(num_images=runs[0].num_images, seed=seed, levels=mean.levels, avg=mean.avg,
                     repeats=len(runs), std=std, baseline=base, baseline_num_images=runs[0].baseline_num_images,
                     skipped=skipped, device=device, seconds=seconds)


def swd_memory_bytes(num_images: int, height: int, width: int, baseline: bool = False) -> int:
    """Descriptor storage of one `swd` call (both sets; with the baseline's extra set(s))."""
    sizes = pyramid_resolutions(height, width)
    sets = 3 if baseline else 2
    return sets * DescriptorSet.bytes_needed(num_images, sizes)


__all__ = [
    "DescriptorSet",
    "SWDLevels",
    "SWDMetric",
    "SWDResult",
    "compute_swd",
    "laplacian_pyramid",
    "patch_descriptors",
    "pyr_down",
    "pyr_up",
    "pyramid_resolutions",
    "random_directions",
    "sliced_wasserstein",
    "swd_memory_bytes",
    "swd_problems",
]
