"""The stages of `celebahq build` (celebahq/pipeline.py): prepare in the decode workers, render and score on the
device, write by the writer processes."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gancore.errors import UserError
from gancore.imagefiles import list_image_files
from gancore.processes import die_with_parent, helper_pool
from gancore.runtime import DeviceTimer, host_to_device
from gancore.sources import BadImage, decode_image

from .build_options import BuildOptions
from .build_report import PassReport
from .export import DatasetZip, HDF5Pyramid
from .geometry import CropPlan, plan_crop
from .landmarks import LandmarkDetector, implausible_landmarks, read_celeba_landmarks
from .manifest import ManifestWriter
from .png_writers import encode_and_write, pixels_md5
from .quality import quality_score
from .render import DeviceUpscale, lanczos_upscale, render_pil, render_torch_tensor, shrink_and_crop
from .restore.infer import cleanup_image, cleanup_tensor, net_upscale, net_upscale_tensor
from .selection import Pick

LANDMARK_FILE = Path("Anno") / "list_landmarks_celeba.txt"
# "net": the shipped restoration networks (celebahq.restore; loaded lazily, once per process). With the torch
# backend both run in the main process on the device (the decode workers send the whole photo, which is cleaned up,
# shrunk and cropped there: no host round trip on CUDA); with the pil backend the cleanup runs in the decode
# workers on uint8 arrays. "none"/"lanczos": the original release's stand-ins.
CLEANUP_STAGES = {"none": None, "net": cleanup_image}  # uint8 HWC arrays (the pil backend)
CLEANUP_DEVICE_STAGES = {"none": None, "net": cleanup_tensor}  # [3, H, W] tensors on the device (torch)
SR_STAGES = {"lanczos": lanczos_upscale, "net": net_upscale}  # uint8 HWC arrays (the pil backend)
SR_DEVICE_STAGES = {"lanczos": None, "net": DeviceUpscale(net_upscale_tensor)}  # tensors on the device (torch)


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


def prepared_sources(items: list[SourceItem], table, options: BuildOptions) -> Iterator[Prepared | Skipped]:
    """The workers' results in source order (decoded here when there are no workers or one source)."""
    dataset = _Prepare(items, table, options)
    if options.num_workers == 0 or len(items) < 2:
        return (dataset[i] for i in range(len(dataset)))
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_as_is,
                                            num_workers=options.num_workers, worker_init_fn=die_with_parent))


# --------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class InFlight:
    """A rendered batch on its way to the host: its device work is queued, and its pixels and scores land in host
    memory once `ready` fires (CUDA: pinned buffers filled by asynchronous copies; elsewhere already there)."""

    batch: list[Prepared]
    images: np.ndarray | torch.Tensor  # uint8 [N, R, R, 3] on the host
    scores: torch.Tensor | None  # float64 [N] on the host (None below 64²: no quality score)
    ready: torch.cuda.Event | None


def render_batch(batch: list[Prepared], options: BuildOptions, timer: DeviceTimer) -> InFlight:
    """Queue a batch's render on the device, score each face there, and start the copy of the pixels and scores
    to the host (`landed` waits for it); `timer` gets the device time of each part (StageSeconds)."""
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
            return InFlight(batch, images, scores, None)
        # HWC made contiguous on the device: the host gets C-ordered images (no strided copy for the md5)
        (images, scores), ready = _copy_to_host(tensors.permute(0, 2, 3, 1).contiguous(), scores)
        return InFlight(batch, images, scores, ready)


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


def landed(flight: InFlight) -> list[Rendered]:
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


def manifest_record(rendered: Rendered, options: BuildOptions, status: str) -> dict:
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



# --------------------------------------------------------------------------------------------------------------
# Writing


class Writer:
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

