"""`celebahq build`: CelebA in-the-wild photos -> R×R crops, with a manifest and a report.

Flow per source image (paper Appendix C, original `create_celebahq`):

    decode (worker) -> landmarks (CelebA file or dlib, worker) -> plan (pure geometry, worker)
    -> cleanup stage + shrink + crop (worker; with the torch backend in the main process on the device instead)
    -> [super-resolution, padding, 4R bilinear, downscale] (render on the device, a batch per call) -> quality
    score and md5 of the rendered pixels -> PNG encoded by a writer process (temp + rename) and/or the HDF5 / zip
    exports -> one manifest line

Two passes when a selection is asked (`num_images`: the best N by quality): pass 1 ("score") renders every source
and records its landmarks, plan, score and md5 with status "scored", writing no image; pass 2 ("write")
re-renders only the selected sources and writes them. Rendering is deterministic (each photo's pixels do not
depend on its batch, nor does its score: celebahq/quality.py), so the result is pixel-identical to rendering
everything and ranking afterwards; pass 2 checks each md5 against pass 1's. `select` (a list of sources, or the
official `image_list.txt`) writes exactly the listed sources in one pass. Without either, every source is
written in one pass, as `celebahq rank` expects.

One writer per output folder (gancore.locking.FolderLock): `build`, `rank` and `export` take the folder's lock.
Resumable: a source whose latest record says it is done for the pass at hand is not redone. `shard=(i, N)`
processes every N-th source starting at i, each shard appending to its own manifest; a sharded `num_images`
build scores only (the selection needs every shard's scores). Bad input is skipped with its reason. Child
processes die with the build (gancore/processes.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gancore import distributed
from gancore.errors import UserError
from gancore.imagefiles import list_image_files
from gancore.locking import FolderLock
from gancore.outputs import atomic_output, check_output_path
from gancore.processes import die_with_parent, helper_pool
from gancore.runtime import DeviceTimer, host_to_device, progress_bar, resolve_device
from gancore.sources import BadImage, decode_image

from .export import DatasetZip, HDF5Pyramid, prepare_target
from .geometry import CropPlan, plan_crop
from .landmarks import LandmarkDetector, implausible_landmarks, read_celeba_landmarks
from .manifest import ManifestWriter, latest_records, load_all_manifests
from .png_writers import encode_and_write, pixels_md5
from .quality import quality_score
from .rank import RANKING_NAME, RankReport
from .render import DeviceUpscale, lanczos_upscale, render_pil, render_torch_tensor, shrink_and_crop
from .restore.infer import cleanup_image, cleanup_tensor, net_upscale, net_upscale_tensor, shipped_weights
from .selection import Pick, best_picks, output_name, read_selection

LANDMARK_FILE = Path("Anno") / "list_landmarks_celeba.txt"
# "net": the shipped restoration networks (celebahq.restore; loaded lazily, once per process). With the torch
# backend both run in the main process on the device (the decode workers send the whole photo, which is cleaned up,
# shrunk and cropped there: no host round trip on CUDA); with the pil backend the cleanup runs in the decode
# workers on uint8 arrays. "none"/"lanczos": the original release's stand-ins.
CLEANUP_STAGES = {"none": None, "net": cleanup_image}  # uint8 HWC arrays (the pil backend)
CLEANUP_DEVICE_STAGES = {"none": None, "net": cleanup_tensor}  # [3, H, W] tensors on the device (torch)
SR_STAGES = {"lanczos": lanczos_upscale, "net": net_upscale}  # uint8 HWC arrays (the pil backend)
SR_DEVICE_STAGES = {"lanczos": None, "net": DeviceUpscale(net_upscale_tensor)}  # tensors on the device (torch)


def default_stages(device: str | None = None) -> tuple[str, str]:
    """(cleanup, sr) that `celebahq build` uses unless told: the networks when their weights are installed and the
    build runs on CUDA; on a CPU the stand-ins (the networks would make the bundled example ~5× slower there)."""
    on_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if on_cuda and shipped_weights("cleanup").is_file() and shipped_weights("sr").is_file():
        return "net", "net"
    return "none", "lanczos"


@dataclass(frozen=True)
class BuildOptions:
    """Settings of one build (the flags of `celebahq build`). None means "the default", filled in by `resolved`
    (the CLI and `build()` share it, so they agree); an instance is never changed."""

    resolution: int = 1024
    backend: str = "auto"  # "torch" (batched), "pil" (the reference) or "auto": torch on CUDA, else pil
    # (on a CPU the PIL path is faster: benchmarks/celebahq_speed.py)
    sr: str | None = None  # super-resolution stage for small faces; None: default_stages(device)
    cleanup: str | None = None  # JPEG cleanup stage on each decoded photo; None: default_stages(device)
    downscale: str = "lanczos"  # 4R -> R filter: "lanczos" (original code) or "box" (paper text)
    batch_size: int = 8
    num_workers: int | None = None  # decoding processes (None: min(4, CPUs))
    num_writers: int | None = None  # PNG-encoding processes (None: min(8, CPUs))
    device: str | None = None
    shard: tuple[int, int] | None = None  # None: this torchrun rank of the world, else (0, 1)
    limit: int | None = None  # only the first N sources (quick trials)
    num_images: int | None = None  # two passes: score everything, write the best N
    select: str | None = None  # a selection file: write exactly these sources (celebahq/selection.py)
    png: bool = True  # write OUT/images/*.png
    h5: str | None = None  # also write the multi-resolution HDF5 of the selection here (needs a selection)
    zip: str | None = None  # also write a dataset zip of the selection here (needs a selection)
    accept_odd_landmarks: bool = False  # render points whose geometry cannot be a face's (swapped eyes, …)
    progress: bool = True

    def resolved(self) -> BuildOptions:
        """A copy with every default filled in and every value checked (UserError for a bad one)."""
        device = resolve_device(self.device, share_gpus=True)  # torchrun: more ranks than GPUs take turns
        default_cleanup, default_sr = default_stages(str(device))
        cpus = os.cpu_count() or 1
        shard = self.shard or ((distributed.rank(), distributed.world_size()) if distributed.is_distributed()
                               else (0, 1))
        options = dataclasses.replace(
            self, device=str(device), backend=("torch" if device.type == "cuda" else "pil") if self.backend == "auto"
            else self.backend, sr=self.sr or default_sr, cleanup=self.cleanup or default_cleanup, shard=shard,
            num_workers=min(4, cpus) if self.num_workers is None else self.num_workers,
            num_writers=self.num_writers or min(8, cpus))
        options._check()
        return options

    @property
    def cleanup_on_device(self) -> bool:
        """Whether the cleanup (and so the shrink and crop) runs in the main process on the device: the torch
        backend with a cleanup stage. The workers then send the whole decoded photo."""
        return self.backend == "torch" and self.cleanup != "none"

    def _check(self) -> None:
        for name, value, choices in (("backend", self.backend, ("torch", "pil")), ("sr", self.sr, SR_STAGES),
                                     ("cleanup", self.cleanup, CLEANUP_STAGES),
                                     ("downscale", self.downscale, ("lanczos", "box"))):
            if value not in choices:
                raise UserError(f"--{name} {value!r}: choose one of {', '.join(choices)}")
        for kind, stage in (("cleanup", self.cleanup), ("sr", self.sr)):
            if stage == "net" and not shipped_weights(kind).is_file():
                raise UserError(f"--{kind} net: no shipped weights at {shipped_weights(kind)}")
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise UserError(f"--resolution {self.resolution}: must be a power of two ≥ 4")
        if self.num_images is not None and self.num_images < 1:
            raise UserError(f"--num-images {self.num_images}: must be at least 1")
        if self.num_images is not None and self.resolution < 64:
            raise UserError(f"--num-images ranks by quality, which needs --resolution ≥ 64 (got {self.resolution})")
        if self.num_images is not None and self.select is not None:
            raise UserError("give --num-images or --select, not both")
        if (self.h5 or self.zip) and self.num_images is None and self.select is None:
            raise UserError("--h5/--zip in a build need a selection: --num-images N or --select FILE")
        if (self.h5 or self.zip) and self.shard[1] > 1:
            raise UserError("--h5/--zip cannot be written by the shards of a build (each holds part of the "
                            "images): build, then run `celebahq export OUT --h5 FILE` (or --zip)")
        if not (self.png or self.h5 or self.zip):
            raise UserError("--no-png needs --h5 or --zip: nothing would be written")


@dataclass(frozen=True)
class SourceItem:
    name: str  # file path relative to the source folder (POSIX), the manifest key
    path: Path


@dataclass
class Prepared:
    """A source ready to render (the worker's result): the cropped face and the plans."""

    source: str
    pixels: np.ndarray  # uint8 HWC, `render_plan`'s image: the (cleaned) photo shrunk and cropped to the plan's crop
    # box, or the whole decoded photo when the cleanup runs on the device (BuildOptions.cleanup_on_device)
    plan: CropPlan  # for the whole photo (the manifest's quad and zoom)
    render_plan: CropPlan  # for `pixels`: plan.after_crop(), or `plan` itself for a whole photo
    landmarks: dict  # {"points": 5×2 source pixels, "landmark_source": "celeba" | "dlib", …}
    seconds: float  # worker time spent on it

    def __reduce__(self):
        """Pickled (from a decode worker to the main process) with the pixels as a torch tensor, which the
        DataLoader's queue passes through shared memory instead of copying the bytes through a pipe: the main
        process (which bounds a GPU build) receives a 3 MP photo in 3–4 ms instead of 16–21
        (benchmarks/process_overheads.py, 2-core CPU; no difference at 0.33 MP)."""
        fields = {entry.name: getattr(self, entry.name) for entry in dataclasses.fields(self)}
        fields["pixels"] = torch.from_numpy(np.require(self.pixels, requirements=("C", "W")))
        return _prepared_from_pickle, (fields,)


def _prepared_from_pickle(fields: dict) -> Prepared:
    """Prepared.__reduce__'s inverse: the pixels back as a numpy array (sharing the tensor's memory)."""
    return Prepared(**(fields | {"pixels": fields["pixels"].numpy()}))


@dataclass
class Skipped:
    """A source that cannot be used, and why."""

    source: str
    reason: str
    seconds: float = 0.0

    def to_record(self) -> dict:
        return {"source": self.source, "status": "skipped", "reason": self.reason}


@dataclass
class Rendered:
    """A rendered face: the host pixels (for the md5 and the writers) and its quality score."""

    prepared: Prepared
    image: np.ndarray  # uint8 [R, R, 3]
    md5: str  # of `image`'s bytes
    quality: float  # celebahq.quality.quality_score of the rendered tensor, computed where it was rendered


@dataclass
class StageSeconds:
    prepare: float = 0.0  # in the workers (thread time summed over them)
    render: float = 0.0  # main process, wall: everything from a prepared batch to its host pixels and scores
    write: float = 0.0  # in the writers (summed over them)
    # Parts of `render`, as the device spent them (gancore.runtime.DeviceTimer: CUDA events, or the wall clock):
    cleanup: float = 0.0  # the cleanup net on the device (torch backend)
    draw: float = 0.0  # the render proper: shrink/crop, super-resolution, padding, 4R sampling, downscale
    sr: float = 0.0  # of which the super-resolution stage
    score: float = 0.0  # the quality score
    host: float = 0.0  # queueing the copy to the host (the md5s follow in `render`, beside the next batch)


@dataclass
class PassReport:
    """One pass over sources: how many it rendered and how fast."""

    name: str  # "score" or "write"
    sources: int = 0  # sources this pass had to do
    rendered: int = 0
    skipped: int = 0
    written: int = 0
    wall_seconds: float = 0.0
    stage_seconds: StageSeconds = field(default_factory=StageSeconds)

    @property
    def sources_per_second(self) -> float:
        return self.sources / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass
class BuildReport:
    sources: int
    processed: int  # sources rendered or skipped in this run (over all passes)
    already_done: int  # sources whose work an earlier run had finished
    ok: int  # images written in this run
    skipped: dict[str, str] = field(default_factory=dict)
    passes: list[PassReport] = field(default_factory=list)
    images_per_second: float = 0.0  # processed / wall time
    md5_mismatches: list[str] = field(default_factory=list)  # write pass != score pass (should never happen)
    options: dict = field(default_factory=dict)
    ranking: dict = field(default_factory=dict)  # celebahq.rank.RankReport of the selection, or {"deferred": …}
    manifest: str = ""  # what was read from the existing manifests (damaged lines included)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage, summed over the passes."""
        total = StageSeconds()
        for report in self.passes:
            for name in (f.name for f in dataclasses.fields(StageSeconds)):
                setattr(total, name, getattr(total, name) + getattr(report.stage_seconds, name))
        return {name: round(value, 3) for name, value in asdict(total).items()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seconds"] = self.seconds
        for report, saved in zip(self.passes, data["passes"]):
            saved["sources_per_second"] = round(report.sources_per_second, 3)
        return data


# --------------------------------------------------------------------------------------------------------------
# Sources


def discover_sources(src: str | os.PathLike) -> tuple[list[SourceItem], dict[str, np.ndarray] | None]:
    """CelebA layout (img_celeba/*.jpg + Anno/list_landmarks_celeba.txt) or any folder of face photos.

    Returns the sources (gancore.imagefiles.list_image_files: recursive, sorted by relative path) and the landmark
    table (None: landmarks are detected with dlib).
    """
    root = Path(src)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give CelebA's folder with img_celeba/ and Anno/)")
    images_dir = root / "img_celeba" if (root / "img_celeba").is_dir() else root
    files = list_image_files(images_dir)
    if not files:
        raise UserError(f"{images_dir}: no images found")
    items = [SourceItem(p.relative_to(images_dir).as_posix(), p) for p in files]
    table = read_celeba_landmarks(root / LANDMARK_FILE) if (root / LANDMARK_FILE).is_file() else None
    return items, table


class _Prepare(torch.utils.data.Dataset):
    """Worker-side steps for one source: decode, landmarks, plan, cleanup, shrink + crop. Never raises for bad
    input: returns `Prepared` or `Skipped`."""

    def __init__(self, items: list[SourceItem], table, options: BuildOptions):
        self.items, self.table, self.options = items, table, options
        self.detector = LandmarkDetector() if table is None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Prepared | Skipped:
        started = time.perf_counter()
        result = self._prepare(self.items[index])
        result.seconds = time.perf_counter() - started
        return result

    def _prepare(self, item: SourceItem) -> Prepared | Skipped:
        try:
            image = decode_image(item.path)
        except BadImage as error:
            return Skipped(item.name, f"unreadable image ({error})")
        found = self._landmarks(item, image)
        if isinstance(found, Skipped):
            return found
        points, landmarks = found
        odd = None if self.options.accept_odd_landmarks else implausible_landmarks(points)
        if odd is not None:
            return Skipped(item.name, f"{odd}; pass --accept-odd-landmarks to render it anyway")
        try:
            plan = plan_crop(points, (image.shape[1], image.shape[0]), self.options.resolution)
        except ValueError as error:
            return Skipped(item.name, f"unusable landmarks ({error})")
        if self.options.cleanup_on_device:  # the main process cleans up, shrinks and crops on the device
            return Prepared(item.name, image, plan, plan, landmarks, 0.0)
        cleanup = CLEANUP_STAGES[self.options.cleanup]
        if cleanup is not None:
            image = cleanup(image)
        # Shrink and crop here, in the worker: the main process receives only the face's pixels.
        pixels, render_plan = shrink_and_crop(image, plan)
        return Prepared(item.name, pixels, plan, render_plan, landmarks, 0.0)

    def _landmarks(self, item: SourceItem, image: np.ndarray) -> tuple[np.ndarray, dict] | Skipped:
        if self.table is not None:
            points = self.table.get(Path(item.name).name)
            if points is None:
                return Skipped(item.name, "no landmark row")
            return points, {"points": points.tolist(), "landmark_source": "celeba"}
        detection = self.detector.detect(image)
        if detection is None:
            return Skipped(item.name, "no face found")
        record = detection.to_record()  # landmark_source "dlib", detection_score, face_box, …
        record.pop("landmarks", None)
        return detection.points5, dict(record, points=detection.points5.tolist())


def _as_is(item):
    return item


def _prepared(items: list[SourceItem], table, options: BuildOptions) -> Iterator[Prepared | Skipped]:
    """The workers' results in source order (decoded here when there are no workers or one source)."""
    dataset = _Prepare(items, table, options)
    if options.num_workers == 0 or len(items) < 2:
        return (dataset[i] for i in range(len(dataset)))
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_as_is,
                                            num_workers=options.num_workers, worker_init_fn=die_with_parent))


# --------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class _InFlight:
    """A rendered batch on its way to the host: its device work is queued, and its pixels and scores land in host
    memory once `ready` fires (CUDA: pinned buffers filled by asynchronous copies; elsewhere already there)."""

    batch: list[Prepared]
    images: np.ndarray | torch.Tensor  # uint8 [N, R, R, 3] on the host
    scores: torch.Tensor | None  # float64 [N] on the host (None below 64²: no quality score)
    ready: torch.cuda.Event | None


def _render(batch: list[Prepared], options: BuildOptions, timer: DeviceTimer) -> _InFlight:
    """Queue a batch's render on the device, score each face there, and start the copy of the pixels and scores
    to the host (`_landed` waits for it); `timer` gets the device time of each part (StageSeconds)."""
    if options.backend == "pil":
        with timer.span("draw"):
            upscale = timer.wrap("sr", SR_STAGES[options.sr])
            images = np.stack([render_pil(p.pixels, p.render_plan, options.resolution, upscale, options.downscale)
                               for p in batch])
            tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
    else:
        with timer.span("cleanup"):
            inputs = _device_inputs(batch, options)
        upscale = SR_DEVICE_STAGES[options.sr]
        upscale = upscale if upscale is None else DeviceUpscale(timer.wrap("sr", upscale.function))
        with timer.span("draw"):
            tensors = render_torch_tensor(inputs, [p.render_plan for p in batch], options.resolution, upscale,
                                          options.downscale, options.device)
    with timer.span("score"):
        scores = quality_score(tensors) if options.resolution >= 64 else None
    with timer.span("host"):
        if options.backend == "pil":
            return _InFlight(batch, images, scores, None)
        # HWC made contiguous on the device: the host gets C-ordered images (no strided copy for the md5)
        (images, scores), ready = _copy_to_host(tensors.permute(0, 2, 3, 1).contiguous(), scores)
        return _InFlight(batch, images, scores, ready)


def _copy_to_host(*tensors: torch.Tensor | None) -> tuple[list[torch.Tensor | None], torch.cuda.Event | None]:
    """Host copies of device tensors (None stays None) and the event after which they hold the data: on CUDA
    pinned buffers filled asynchronously, so the host can queue the next batch while these travel; elsewhere
    plain copies (or the tensors themselves), no event."""
    if not any(t is not None and t.is_cuda for t in tensors):
        return [t if t is None else t.cpu() for t in tensors], None
    copies = []
    for tensor in tensors:
        if tensor is not None:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            tensor = host.copy_(tensor, non_blocking=True)
        copies.append(tensor)
    ready = torch.cuda.Event()
    ready.record()
    return copies, ready


def _landed(flight: _InFlight) -> list[Rendered]:
    """The batch's rendered faces once its copies reached the host, with the md5 of each image."""
    if flight.ready is not None:
        flight.ready.synchronize()
    images = list(flight.images if isinstance(flight.images, np.ndarray) else flight.images.numpy())
    scores = flight.scores.tolist() if flight.scores is not None else [None] * len(flight.batch)
    digests = list(_hashing_threads().map(pixels_md5, images))  # hashlib releases the GIL: in parallel
    return [Rendered(p, image, md5, score) for p, image, md5, score in zip(flight.batch, images, digests, scores)]


def _device_inputs(batch: list[Prepared], options: BuildOptions) -> list[np.ndarray | torch.Tensor]:
    """What the torch render gets: the workers' crops, or (cleanup on the device) each whole photo moved to the
    device once and cleaned up there, as a uint8 [3, H, W] tensor that the render shrinks and crops in place."""
    cleanup = CLEANUP_DEVICE_STAGES[options.cleanup] if options.cleanup_on_device else None
    if cleanup is None:
        return [p.pixels for p in batch]
    photos = (host_to_device(np.require(p.pixels, requirements=("C", "W")), options.device) for p in batch)
    return [cleanup(photo.permute(2, 0, 1)) for photo in photos]


@functools.lru_cache(maxsize=1)
def _hashing_threads() -> ThreadPoolExecutor:
    """Threads for the md5 of rendered images (3 MB each at 1024²: ~4 ms apiece on one core): one per image of a
    default batch where the cores allow, so a batch's md5s take about one image's time."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="celebahq-md5")


def _record(rendered: Rendered, options: BuildOptions, status: str) -> dict:
    """The manifest record of a rendered source (status "scored" or "ok"; the writer adds output and rank)."""
    plan = rendered.prepared.plan
    stages = [] if options.cleanup == "none" else [f"cleanup:{options.cleanup}"]
    stages += [f"shrink:{plan.shrink}"] if plan.shrink > 1 else []
    stages += [f"sr:{options.sr}x{plan.superres}"] if plan.superres > 1 else []
    stages += ["pad"] if plan.padded else []
    stages += [f"render:{options.backend}", f"downscale:{options.downscale}"]
    return {"source": rendered.prepared.source, "status": status, "landmarks": rendered.prepared.landmarks,
            "quad": plan.source_quad.round(3).tolist(), "zoom": round(float(plan.zoom), 6), "stages": stages,
            "md5": rendered.md5, "resolution": options.resolution, "quality": rendered.quality}


def _run_pass(report: PassReport, items: list[SourceItem], table, options: BuildOptions, manifest: ManifestWriter,
              handle: Callable[[list[Rendered]], None], skipped: dict[str, str]) -> None:
    """Prepare, render and score `items`, batch by batch; `handle` gets each rendered batch; skipped sources are
    recorded in the manifest and `skipped`."""
    report.sources = len(items)
    started = time.perf_counter()
    batch: list[Prepared] = []
    timer = DeviceTimer(options.device)
    in_flight: _InFlight | None = None  # the batch the device renders while the host lands its predecessor (md5,
    # manifest, writers), so neither waits for the other between batches

    def land() -> None:
        nonlocal in_flight
        landed_started = time.perf_counter()
        rendered, in_flight = _landed(in_flight), None
        timer.collect(wait=False)  # fold in the spans whose device work is done
        report.stage_seconds.render += time.perf_counter() - landed_started
        report.rendered += len(rendered)
        handle(rendered)

    def flush() -> None:
        nonlocal in_flight
        render_started = time.perf_counter()
        launched = _render(list(batch), options, timer)
        report.stage_seconds.render += time.perf_counter() - render_started
        batch.clear()
        if in_flight is not None:
            land()
        in_flight = launched

    with progress_bar(len(items), f"celebahq build ({report.name})", options.progress) as bar:
        for result in _prepared(items, table, options):
            report.stage_seconds.prepare += result.seconds
            bar.update(1)
            if isinstance(result, Skipped):
                skipped[result.source] = result.reason
                manifest.append(result.to_record())
                report.skipped += 1
                continue
            batch.append(result)
            if len(batch) == options.batch_size:
                flush()
        if batch:
            flush()
        if in_flight is not None:
            land()
    for name, seconds in timer.collect().items():
        setattr(report.stage_seconds, name, seconds)
    report.wall_seconds = time.perf_counter() - started


# --------------------------------------------------------------------------------------------------------------
# Writing


class _Writer:
    """Pass 2's outputs: PNGs encoded and written by writer processes, and/or the HDF5 / zip exports fed in
    the main process. Bounded memory: at most `4 · batch_size` images wait for the writers."""

    def __init__(self, out: Path, options: BuildOptions, count: int, stack: ExitStack):
        self.out, self.options = out, options
        encode = options.png or options.zip
        self.pool = stack.enter_context(helper_pool(options.num_writers)) if encode else None
        self.h5 = stack.enter_context(HDF5Pyramid(options.h5, count, options.resolution)) if options.h5 else None
        self.zip = stack.enter_context(DatasetZip(options.zip)) if options.zip else None
        self.in_flight: list[tuple[Future, dict, Pick]] = []

    def submit(self, image: np.ndarray, record: dict, pick: Pick) -> None:
        """Queue one image for writing; `record` goes to the manifest once it is written."""
        target = str(self.out / pick.output) if self.options.png else None
        if target is not None:
            (self.out / pick.output).parent.mkdir(parents=True, exist_ok=True)
        if self.h5 is not None:
            self.h5.put(pick.rank - 1, image.transpose(2, 0, 1)[None])
        if self.pool is None:  # only the HDF5 export: nothing to encode
            future = Future()
            future.set_result((None, 0.0))
        else:
            future = self.pool.submit(encode_and_write, image, target, self.zip is not None)
        self.in_flight.append((future, record, pick))

    def drain(self, manifest: ManifestWriter, report: PassReport, block: bool) -> None:
        """Collect finished writes (all of them when `block`, or while too many wait) and record them."""
        limit = 4 * self.options.batch_size
        while self.in_flight and (block or self.in_flight[0][0].done() or len(self.in_flight) > limit):
            future, record, pick = self.in_flight.pop(0)
            data, seconds = future.result()
            report.stage_seconds.write += seconds
            if self.zip is not None:
                self.zip.put(pick.rank - 1, data)
            if self.options.png:
                manifest.append(record)
            report.written += 1

    def add_existing(self, pick: Pick) -> None:
        """Feed the exports an image an earlier run already wrote as PNG."""
        path = self.out / pick.output
        if self.h5 is not None:
            self.h5.put(pick.rank - 1, decode_image(path).transpose(2, 0, 1)[None])
        if self.zip is not None:
            self.zip.put(pick.rank - 1, path.read_bytes())


# --------------------------------------------------------------------------------------------------------------
# The build


def build(src: str | os.PathLike, out: str | os.PathLike, options: BuildOptions | None = None) -> BuildReport:
    """Build (or resume) CelebA-HQ-style crops of the face photos in `src` into `out`; returns the report.

    Holds `out`'s writer lock throughout (UserError when another process writes there): exclusively, or for a
    shard of a sharded build (`shard`, torchrun ranks) shared with the other shards plus the shard's own lock."""
    options = (options or BuildOptions()).resolved()
    out = check_output_path(out, folder=True)
    for target in (options.h5, options.zip):
        if target:
            prepare_target(target)
    with ExitStack() as locks:
        index, count = options.shard
        if count == 1:
            locks.enter_context(FolderLock(out, "celebahq build"))
        else:
            command = f"celebahq build --shard {index}/{count}"
            locks.enter_context(FolderLock(out, command, shared=True))
            locks.enter_context(FolderLock(out, command, name=f".lock-shard-{index}-of-{count}"))
        return _build_locked(Path(src), out, options)


def _build_locked(src: Path, out: Path, options: BuildOptions) -> BuildReport:
    started = time.perf_counter()
    shard_index, shard_count = options.shard
    if shard_count == 1:  # temporaries of a killed run (only we write here); shards leave them to an unsharded run
        for leftover in out.rglob(".*.partial"):
            leftover.unlink(missing_ok=True)
    items, table = discover_sources(src)
    items = items[:options.limit] if options.limit else items
    picks = _read_picks(options, items)
    every_source = [item.name for item in items]
    items = items[shard_index::shard_count]
    summary = load_all_manifests(out)
    latest = latest_records(summary.records)
    manifest_name = "manifest.jsonl" if shard_count == 1 else f"manifest-{shard_index}-of-{shard_count}.jsonl"
    report = BuildReport(sources=len(items), processed=0, already_done=0, ok=0, manifest=summary.describe(),
                         options={k: v for k, v in asdict(options).items() if k != "progress"})
    with ManifestWriter(out, manifest_name) as manifest:
        if options.num_images is not None:
            _score_pass(items, table, options, out, latest, manifest, report)
            if shard_count > 1 and not _shards_in_step(options):
                report.ranking = {"deferred": f"shards started one by one (--shard without torchrun) score only: "
                                              f"once every shard has finished, run the same build without --shard "
                                              f"to write the best {options.num_images}"}
            else:  # torchrun ranks wait for each other, then each writes its share of the same best N
                distributed.barrier()
                latest = latest_records(load_all_manifests(out).records)
                picks = best_picks([latest[name] for name in every_source if name in latest], options.num_images)
        if "deferred" not in report.ranking:
            mine = {item.name for item in items}
            mine_picked = None if picks is None else [p for p in picks if p.source in mine]
            _write_pass(mine_picked, items, table, options, out, latest, manifest, report)
    elapsed = time.perf_counter() - started
    report.images_per_second = round(report.processed / elapsed, 3) if elapsed > 0 else 0.0
    report_name = "report.json" if shard_count == 1 else f"report-{shard_index}-of-{shard_count}.json"
    with atomic_output(out / report_name) as temporary:
        temporary.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _shards_in_step(options: BuildOptions) -> bool:
    """Whether this shard is a torchrun rank of a build whose ranks are the shards (they can wait for each other)."""
    return distributed.is_distributed() and options.shard == (distributed.rank(), distributed.world_size())


def _read_picks(options: BuildOptions, items: list[SourceItem]) -> list[Pick] | None:
    """The picks of `--select` (UserError when it names sources that are not in the source folder)."""
    if options.select is None:
        return None
    picks = read_selection(options.select)
    known = {item.name for item in items}
    missing = [pick.source for pick in picks if pick.source not in known]
    if missing:
        raise UserError(f"--select {options.select}: {len(missing)} listed sources are not in the source folder "
                        f"(e.g. {', '.join(missing[:3])})")
    return picks


def _score_pass(items, table, options, out: Path, latest: dict, manifest: ManifestWriter,
                report: BuildReport) -> None:
    """Pass 1: render and score every source not scored yet; record "scored" (no image written)."""
    pending = [item for item in items if _needs_score(latest.get(item.name), out)]
    report.already_done += len(items) - len(pending)
    scored = PassReport("score")

    def handle(rendered: list[Rendered]) -> None:
        manifest.extend([_record(one, options, "scored") for one in rendered])

    _run_pass(scored, pending, table, options, manifest, handle, report.skipped)
    report.processed += scored.rendered + scored.skipped
    report.passes.append(scored)


def _needs_score(record: dict | None, out: Path) -> bool:
    if record is None:
        return True
    if record["status"] == "ok":
        return record.get("quality") is None or not (out / record["output"]).is_file()
    return record["status"] not in ("scored", "skipped")


def _write_pass(picks: list[Pick] | None, items, table, options, out: Path, latest: dict,
                manifest: ManifestWriter, report: BuildReport) -> None:
    """Pass 2: render and write the picked sources (every source when `picks` is None) not written yet."""
    by_name = {item.name: item for item in items}
    everything = picks is None
    picks = picks if picks is not None else [Pick(i.name, 0, output_name(i.name)) for i in items]
    fresh_exports = bool(options.h5 or options.zip)
    todo, existing = [], []
    for pick in picks:
        record = latest.get(pick.source)
        if record is not None and record["status"] == "skipped":
            continue
        done = (record is not None and record["status"] == "ok" and record.get("output") == pick.output
                and (out / pick.output).is_file())
        (existing if done and options.png else todo).append(pick)
    if not report.passes:  # the only pass: everything it need not do was done before
        report.already_done += len(picks) - len(todo)
    written = PassReport("write")
    with ExitStack() as stack:
        writer = _Writer(out, options, len(picks), stack)
        for pick in existing if fresh_exports else []:
            writer.add_existing(pick)
        by_source = {pick.source: pick for pick in todo}

        def handle(rendered: list[Rendered]) -> None:
            for one in rendered:
                pick = by_source[one.prepared.source]
                before = latest.get(pick.source)
                if before is not None and before.get("md5") and before["md5"] != one.md5 \
                        and before.get("resolution") == options.resolution:
                    report.md5_mismatches.append(pick.source)
                record = _record(one, options, "ok") | {"output": pick.output}
                if not everything:
                    record |= {"rank": pick.rank, "selected": True}
                writer.submit(one.image, record, pick)
            writer.drain(manifest, written, block=False)

        _run_pass(written, [by_name[p.source] for p in todo], table, options, manifest, handle, report.skipped)
        writer.drain(manifest, written, block=True)
    report.ok += written.written
    report.processed += 0 if report.passes else written.rendered + written.skipped
    report.passes.append(written)
    if not everything:
        _record_selection(picks, {p.source for p in todo}, [i.name for i in items], options, out, latest, manifest,
                          report)


def _record_selection(picks: list[Pick], rewritten: set[str], sources: list[str], options: BuildOptions, out: Path,
                      latest: dict, manifest: ManifestWriter, report: BuildReport) -> None:
    """Bring the rank/selected of this shard's images written by earlier runs up to date (a resumed build may
    select differently; export takes only the selected ones) and write OUT/ranking.json."""
    wanted = {pick.source: pick for pick in picks}
    for source in sources:
        record = latest.get(source)
        if record is None or record["status"] != "ok" or source in rewritten:
            continue
        pick = wanted.get(source)
        rank, selected = (pick.rank, True) if pick is not None and pick.output == record["output"] else (None, False)
        if (record.get("rank"), record.get("selected")) != (rank, selected):
            manifest.append(record | {"rank": rank, "selected": selected})
    scored = [r for r in latest_records(load_all_manifests(out).records).values() if r.get("quality") is not None]
    best = [{"source": p.source, "output": p.output, "quality": latest.get(p.source, {}).get("quality")}
            for p in picks[:5]]
    keep = options.num_images if options.num_images is not None else len(picks)
    ranking = RankReport(ranked=len(scored), selected=len(picks), scored=sum(p.rendered for p in report.passes[:1])
                         if options.num_images is not None else 0, keep=keep, best=best)
    report.ranking = asdict(ranking)
    with atomic_output(out / RANKING_NAME) as temporary:
        temporary.write_text(json.dumps(report.ranking, indent=1))
