"""The stages of `celebahq build`, each behind one interface that the pass loop (celebahq/pipeline.py) drives:

    prepare (`PrepareStage`, in the decode workers: decode, landmarks, plan, [cleanup, shrink, crop])
    -> render and score (a `BatchRenderer`, in the main process on the device: `PilRenderer` or `TorchRenderer`)
    -> the pass's output (a `PassOutput`: `ScoreRecorder` records scores, `ImageWriter` writes images)

Which implementation runs, where and with which network is decided once, by celebahq/build_plan.py; nothing here
looks at the build's options."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gancore.errors import UserError
from gancore.imagefiles import list_image_files
from gancore.processes import die_with_parent, helper_pool
from gancore.runtime import DeviceTimer, host_to_device
from gancore.sources import BadImage, decode_image

from .build_report import PassReport
from .export import DatasetZip, HDF5Pyramid
from .geometry import CropPlan, plan_crop
from .landmarks import LandmarkDetector, implausible_landmarks, read_celeba_landmarks
from .manifest import ManifestWriter
from .png_writers import encode_and_write, pixels_md5
from .quality import quality_score
from .render import DeviceUpscale, Upscale, render_pil, render_torch_tensor, shrink_and_crop
from .selection import Pick

LANDMARK_FILE = Path("Anno") / "list_landmarks_celeba.txt"
HostStage = Callable[[np.ndarray], np.ndarray]  # uint8 HWC -> uint8 HWC of the same size (a cleanup)
DeviceStage = Callable[[torch.Tensor], torch.Tensor]  # uint8 [3, H, W] on the device -> float [3, H, W], uint8 values


@dataclass(frozen=True)
class SourceItem:
    name: str  # file path relative to the source folder (POSIX), the manifest key
    path: Path


@dataclass
class Prepared:
    """A source ready to render (the worker's result): the cropped face and the plans."""

    source: str
    pixels: np.ndarray  # uint8 HWC, `render_plan`'s image: the (cleaned) photo shrunk and cropped to the plan's crop
    # box, or the whole decoded photo when the cleanup runs on the device (PrepareStage.crop False)
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
class Failed:
    """A decode worker's UserError, which stops the build (raised again in the main process)."""

    source: str
    message: str
    seconds: float = 0.0


@dataclass
class Rendered:
    """A rendered face: the host pixels (for the md5 and the writers) and its quality score."""

    prepared: Prepared
    image: np.ndarray  # uint8 [R, R, 3]
    md5: str  # of `image`'s bytes
    quality: float  # celebahq.quality.quality_score of the rendered tensor, computed where it was rendered



# --------------------------------------------------------------------------------------------------------------
# Sources


def photo_folder(src: Path) -> Path:
    """Where the photos of a source folder are: `img_celeba/` in CelebA's layout, else the folder itself."""
    return src / "img_celeba" if (src / "img_celeba").is_dir() else src


def discover_sources(src: str | os.PathLike) -> tuple[list[SourceItem], dict[str, np.ndarray] | None]:
    """CelebA layout (img_celeba/*.jpg + Anno/list_landmarks_celeba.txt) or any folder of face photos.

    Returns the sources (gancore.imagefiles.list_image_files: recursive, sorted by relative path) and the landmark
    table (None: landmarks are detected with dlib).
    """
    root = Path(src)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give CelebA's folder with img_celeba/ and Anno/)")
    images_dir = photo_folder(root)
    files = list_image_files(images_dir)
    if not files:
        raise UserError(f"{images_dir}: no images found")
    items = [SourceItem(p.relative_to(images_dir).as_posix(), p) for p in files]
    table = read_celeba_landmarks(root / LANDMARK_FILE) if (root / LANDMARK_FILE).is_file() else None
    return items, table


@dataclass(frozen=True)
class PrepareStage:
    """The first stage, in the decode workers: what they do to each source photo before it is rendered."""

    resolution: int  # the output side R the crop is planned for
    accept_odd_landmarks: bool  # render landmarks whose geometry cannot be a face's instead of skipping them
    cleanup: HostStage | None  # run on the decoded photo in the worker (None: none here)
    crop: bool  # shrink and crop in the worker, so that the main process receives only the face's pixels
    # (False: the whole photo goes on, to be cleaned up, shrunk and cropped on the device)
    num_workers: int  # decoding processes (0: in the main process)

    def run(self, items: list[SourceItem], table) -> Iterator[Prepared | Skipped | Failed]:
        """The workers' results in source order (decoded here when there are no workers or one source)."""
        dataset = _Prepare(items, table, self)
        if self.num_workers == 0 or len(items) < 2:
            return (dataset[i] for i in range(len(dataset)))
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_as_is,
                                                num_workers=self.num_workers, worker_init_fn=die_with_parent))


class _Prepare(torch.utils.data.Dataset):
    """Worker-side steps for one source: decode, landmarks, plan, cleanup, shrink + crop. Never raises for bad
    input: returns `Prepared`, `Skipped`, or `Failed` for a UserError (which stops the build)."""

    def __init__(self, items: list[SourceItem], table, stage: PrepareStage):
        self.items, self.table, self.stage = items, table, stage
        self.detector = LandmarkDetector() if table is None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Prepared | Skipped | Failed:
        started = time.perf_counter()
        try:
            result = self._prepare(self.items[index])
        except UserError as error:  # a problem of the whole build (e.g. a bad $GANCORE_MAX_PIXELS): returned,
            # not raised, so that the main process raises it as it is, not with the worker's traceback in its text
            result = Failed(self.items[index].name, str(error))
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
        odd = None if self.stage.accept_odd_landmarks else implausible_landmarks(points)
        if odd is not None:
            return Skipped(item.name, f"{odd}; pass --accept-odd-landmarks to render it anyway")
        try:
            plan = plan_crop(points, (image.shape[1], image.shape[0]), self.stage.resolution)
        except ValueError as error:
            return Skipped(item.name, f"unusable landmarks ({error})")
        if not self.stage.crop:  # the main process cleans up, shrinks and crops on the device
            return Prepared(item.name, image, plan, plan, landmarks, 0.0)
        if self.stage.cleanup is not None:
            image = self.stage.cleanup(image)
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


class BatchRenderer(Protocol):
    """The render stage, in the main process: `launch(batch, timer)` queues a batch's render and quality score on
    the device and starts the copy of the pixels and scores to the host (`landed` waits for it); `timer` gets the
    device time of each part (celebahq.build_report.StageSeconds: cleanup, draw, sr, score, host)."""

    def launch(self, batch: list[Prepared], timer: DeviceTimer) -> InFlight: ...


@dataclass(frozen=True)
class PilRenderer:
    """The reference backend (celebahq.render.render_pil) on the host, one photo after another."""

    resolution: int
    downscale: str  # 4R -> R filter: "lanczos" or "box"
    upscale: Upscale  # the super-resolution stage on uint8 HWC arrays

    def launch(self, batch: list[Prepared], timer: DeviceTimer) -> InFlight:
        with timer.span("draw"):
            upscale = timer.wrap("sr", self.upscale)
            images = np.stack([render_pil(p.pixels, p.render_plan, self.resolution, upscale, self.downscale)
                               for p in batch])
            tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
        scores = _scores(tensors, self.resolution, timer)
        with timer.span("host"):
            return InFlight(batch, images, scores, None)


@dataclass(frozen=True)
class TorchRenderer:
    """The fast backend (celebahq.render.render_torch_tensor) on `device`; with a `cleanup` each whole photo is
    moved to the device once and cleaned up, shrunk and cropped there."""

    resolution: int
    downscale: str  # 4R -> R filter: "lanczos" or "box"
    device: torch.device
    cleanup: DeviceStage | None  # on the device, on each whole photo (None: the workers sent crops)
    upscale: DeviceUpscale | None  # the super-resolution stage on the device (None: Lanczos in torch)

    def launch(self, batch: list[Prepared], timer: DeviceTimer) -> InFlight:
        with timer.span("cleanup"):
            inputs = self._inputs(batch)
        upscale = self.upscale if self.upscale is None else DeviceUpscale(timer.wrap("sr", self.upscale.function))
        with timer.span("draw"):
            tensors = render_torch_tensor(inputs, [p.render_plan for p in batch], self.resolution, upscale,
                                          self.downscale, self.device)
        scores = _scores(tensors, self.resolution, timer)
        with timer.span("host"):
            # HWC made contiguous on the device: the host gets C-ordered images (no strided copy for the md5)
            (images, scores), ready = _copy_to_host(tensors.permute(0, 2, 3, 1).contiguous(), scores)
            return InFlight(batch, images, scores, ready)

    def _inputs(self, batch: list[Prepared]) -> list[np.ndarray | torch.Tensor]:
        """What the render gets: the workers' crops, or (cleanup on the device) each whole photo moved to the
        device once and cleaned up there, as a uint8 [3, H, W] tensor that the render shrinks and crops in place."""
        if self.cleanup is None:
            return [p.pixels for p in batch]
        photos = (host_to_device(np.require(p.pixels, requirements=("C", "W")), self.device) for p in batch)
        return [self.cleanup(photo.permute(2, 0, 1)) for photo in photos]


def _scores(tensors: torch.Tensor, resolution: int, timer: DeviceTimer) -> torch.Tensor | None:
    """The score stage: celebahq.quality.quality_score of each rendered face [N, 3, R, R] where it was rendered
    (None below 64²: no quality score)."""
    with timer.span("score"):
        return quality_score(tensors) if resolution >= 64 else None


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


@functools.lru_cache(maxsize=1)
def _hashing_threads() -> ThreadPoolExecutor:
    """Threads for the md5 of rendered images (3 MB each at 1024²: ~4 ms apiece on one core): one per image of a
    default batch where the cores allow, so a batch's md5s take about one image's time."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="celebahq-md5")


@dataclass(frozen=True)
class Recipe:
    """How the images are made, as the manifest's records say it (`stages`, `resolution`)."""

    cleanup: str  # "none" or "net"
    sr: str  # "lanczos" or "net"
    backend: str  # "pil" or "torch"
    downscale: str  # "lanczos" or "box"
    resolution: int

    def record(self, rendered: Rendered, status: str) -> dict:
        """The manifest record of a rendered source (status "scored" or "ok"; the writer adds output and rank)."""
        plan = rendered.prepared.plan
        stages = [] if self.cleanup == "none" else [f"cleanup:{self.cleanup}"]
        stages += [f"shrink:{plan.shrink}"] if plan.shrink > 1 else []
        stages += [f"sr:{self.sr}x{plan.superres}"] if plan.superres > 1 else []
        stages += ["pad"] if plan.padded else []
        stages += [f"render:{self.backend}", f"downscale:{self.downscale}"]
        return {"source": rendered.prepared.source, "status": status, "landmarks": rendered.prepared.landmarks,
                "quad": plan.source_quad.round(3).tolist(), "zoom": round(float(plan.zoom), 6), "stages": stages,
                "md5": rendered.md5, "resolution": self.resolution, "quality": rendered.quality}


# --------------------------------------------------------------------------------------------------------------
# The passes' outputs


class PassOutput(Protocol):
    """The last stage of a pass: `take` gets each rendered batch (on the host, with md5s) in source order,
    `finish` waits for what is still in flight."""

    def take(self, rendered: list[Rendered]) -> None: ...

    def finish(self) -> None: ...


@dataclass
class ScoreRecorder:
    """Pass 1's output: a "scored" manifest record per rendered source (no image written)."""

    recipe: Recipe
    manifest: ManifestWriter

    def take(self, rendered: list[Rendered]) -> None:
        self.manifest.extend([self.recipe.record(one, "scored") for one in rendered])

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class WriteStage:
    """Where and how pass 2 writes its images."""

    png: bool  # OUT/images/*.png, encoded and written by writer processes
    h5: str | None  # also the multi-resolution HDF5 (celebahq.export.HDF5Pyramid)
    zip: str | None  # also the dataset zip (celebahq.export.DatasetZip)
    num_writers: int  # PNG-encoding processes
    queue_limit: int  # at most this many images wait for the writers (bounded memory)
    resolution: int


class ImageWriter:
    """Pass 2's output: each rendered pick's image written (PNGs by writer processes, and/or the HDF5 / zip
    exports fed in the main process) and its "ok" record appended to the manifest once written; a write whose md5
    differs from the score pass's (`latest`) is listed in `md5_mismatches`.

    `count`: the images of the whole selection (the HDF5's size); `todo`: the picks rendered in this pass;
    `selected`: their records carry rank and selected (a selection, not every source)."""

    def __init__(self, stage: WriteStage, recipe: Recipe, out: Path, count: int, todo: list[Pick], selected: bool,
                 latest: dict, manifest: ManifestWriter, report: PassReport, stack: ExitStack):
        self.stage, self.recipe, self.out, self.selected = stage, recipe, out, selected
        self.by_source = {pick.source: pick for pick in todo}
        self.latest, self.manifest, self.report = latest, manifest, report
        self.md5_mismatches: list[str] = []
        encode = stage.png or stage.zip
        self.pool = stack.enter_context(helper_pool(stage.num_writers)) if encode else None
        self.h5 = stack.enter_context(HDF5Pyramid(stage.h5, count, stage.resolution)) if stage.h5 else None
        self.zip = stack.enter_context(DatasetZip(stage.zip)) if stage.zip else None
        self.in_flight: list[tuple[Future, dict, Pick]] = []

    def take(self, rendered: list[Rendered]) -> None:
        for one in rendered:
            pick = self.by_source[one.prepared.source]
            before = self.latest.get(pick.source)
            if before is not None and before.get("md5") and before["md5"] != one.md5 \
                    and before.get("resolution") == self.recipe.resolution:
                self.md5_mismatches.append(pick.source)
            record = self.recipe.record(one, "ok") | {"output": pick.output}
            if self.selected:
                record |= {"rank": pick.rank, "selected": True}
            self._submit(one.image, record, pick)
        self._drain(block=False)

    def finish(self) -> None:
        self._drain(block=True)

    def add_existing(self, pick: Pick) -> None:
        """Feed the exports an image an earlier run already wrote as PNG."""
        data = (self.out / pick.output).read_bytes()  # read once for both exports
        if self.h5 is not None:
            self.h5.put(pick.rank - 1, decode_image(data).transpose(2, 0, 1)[None])
        if self.zip is not None:
            self.zip.put(pick.rank - 1, data)

    def _submit(self, image: np.ndarray, record: dict, pick: Pick) -> None:
        """Queue one image for writing; `record` goes to the manifest once it is written."""
        target = str(self.out / pick.output) if self.stage.png else None
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

    def _drain(self, block: bool) -> None:
        """Collect finished writes (all of them when `block`, or while too many wait) and record them."""
        while self.in_flight and (block or self.in_flight[0][0].done()
                                  or len(self.in_flight) > self.stage.queue_limit):
            future, record, pick = self.in_flight.pop(0)
            data, seconds = future.result()
            self.report.stage_seconds.write += seconds
            if self.zip is not None:
                self.zip.put(pick.rank - 1, data)
            if self.stage.png:
                self.manifest.append(record)
            self.report.written += 1
