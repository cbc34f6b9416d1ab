"""`celebahq build`: CelebA in-the-wild photos -> R×R crops, with a manifest and a report.

Flow per source image (paper Appendix C, original `create_celebahq`):

    decode (worker) -> landmarks (CelebA file or dlib, worker) -> plan (pure geometry, worker)
    -> cleanup stage -> [shrink, crop, super-resolution stage, padding, 4R bilinear, downscale] (batched render)
    -> PNG encoded by a writer process (temp + rename) -> one manifest line

Resumable: a source whose latest manifest record is "ok" (with its PNG present) or "skipped" is not redone.
`shard=(i, N)` processes every N-th source starting at i (several machines, or torchrun ranks), each shard
appending to its own manifest file. Bad input (corrupt JPEG, missing landmark row, landmarks outside the
image, degenerate landmarks, no face found) is skipped with its reason; the run never dies on one image.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gancore import distributed
from gancore.errors import UserError
from gancore.runtime import atomic_output, progress_bar, resolve_device
from gancore.sources import IMAGE_EXTENSIONS, BadImage, decode_image

from .geometry import plan_crop
from .landmarks import LandmarkDetector, read_celeba_landmarks
from .manifest import ManifestWriter, latest_records, read_all_manifests
from .rank import rank_build
from .render import lanczos_upscale, render_pil, render_torch, shrink_and_crop
from .restore.infer import cleanup_image, net_upscale, shipped_weights

LANDMARK_FILE = Path("Anno") / "list_landmarks_celeba.txt"
# "net": the shipped restoration networks (celebahq.restore; loaded lazily, once per process, in the decode
# workers for cleanup and in the main process for SR). "none"/"lanczos": the original release's stand-ins.
CLEANUP_STAGES = {"none": None, "net": cleanup_image}
SR_STAGES = {"lanczos": lanczos_upscale, "net": net_upscale}


def default_stages(device: str | None = None) -> tuple[str, str]:
    """(cleanup, sr) that `celebahq build` uses unless told: the networks when their weights are installed and the
    build runs on CUDA; on a CPU the stand-ins (the networks would make the bundled example ~5× slower there)."""
    on_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if on_cuda and shipped_weights("cleanup").is_file() and shipped_weights("sr").is_file():
        return "net", "net"
    return "none", "lanczos"


@dataclass
class BuildOptions:
    """Settings of one build (CLI flags of `celebahq build`)."""

    resolution: int = 1024
    backend: str = "auto"  # "torch" (batched), "pil" (the reference) or "auto": torch on CUDA, else pil
    # (on a CPU the PIL path is faster: benchmarks/celebahq_speed.py)
    sr: str = "lanczos"  # super-resolution stage for small faces
    cleanup: str = "none"  # JPEG cleanup stage, applied to each decoded source photo
    downscale: str = "lanczos"  # 4R -> R filter: "lanczos" (original code) or "box" (paper text)
    batch_size: int = 8
    num_workers: int | None = None  # decoding processes (default: min(4, CPUs))
    num_writers: int | None = None  # PNG-encoding processes (default: min(8, CPUs))
    device: str | None = None
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None  # only the first N sources (quick trials)
    num_images: int | None = None  # at the end, rank by quality and select the best N (celebahq/rank.py)
    progress: bool = True


@dataclass
class SourceItem:
    name: str  # file name relative to the source folder, the manifest key
    path: Path


@dataclass
class BuildReport:
    sources: int
    processed: int
    already_done: int
    ok: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    images_per_second: float = 0.0
    options: dict = field(default_factory=dict)
    ranking: dict = field(default_factory=dict)  # celebahq.rank.RankReport with --num-images

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------------
# Sources


def discover_sources(src: str | os.PathLike) -> tuple[list[SourceItem], dict[str, np.ndarray] | None]:
    """CelebA layout (img_celeba/*.jpg + Anno/list_landmarks_celeba.txt) or any folder of face photos.

    Returns the sources sorted by name and the landmark table (None: landmarks are detected with dlib).
    """
    root = Path(src)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give CelebA's folder with img_celeba/ and Anno/)")
    images_dir = root / "img_celeba" if (root / "img_celeba").is_dir() else root
    files = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"{images_dir}: no images found")
    items = [SourceItem(p.relative_to(images_dir).as_posix(), p) for p in files]
    table = read_celeba_landmarks(root / LANDMARK_FILE) if (root / LANDMARK_FILE).is_file() else None
    return items, table


class _Prepare(torch.utils.data.Dataset):
    """Worker-side steps for one source: decode, landmarks, plan, cleanup. Never raises for bad input."""

    def __init__(self, items: list[SourceItem], table, options: BuildOptions):
        self.items, self.table, self.options = items, table, options
        self.detector = LandmarkDetector() if table is None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        result = {"source": item.name, "status": "skipped"}
        started = time.perf_counter()
        try:
            image = decode_image(item.path)
        except BadImage as error:
            return dict(result, reason=f"unreadable image ({error})", seconds=time.perf_counter() - started)
        if self.table is not None:
            points = self.table.get(Path(item.name).name)
            if points is None:
                return dict(result, reason="no landmark row", seconds=time.perf_counter() - started)
            result["landmarks"] = {"points": points.tolist(), "landmark_source": "celeba"}
        else:
            detection = self.detector.detect(image)
            if detection is None:
                return dict(result, reason="no face found", seconds=time.perf_counter() - started)
            points = detection.points5
            record = detection.to_record()  # landmark_source "dlib", detection_score, face_box, …
            record.pop("landmarks", None)
            result["landmarks"] = dict(record, points=points.tolist())
        try:
            plan = plan_crop(points, (image.shape[1], image.shape[0]), self.options.resolution)
        except ValueError as error:
            return dict(result, reason=f"unusable landmarks ({error})", seconds=time.perf_counter() - started)
        cleanup = CLEANUP_STAGES[self.options.cleanup]
        if cleanup is not None:
            image = cleanup(image)
        # Shrink and crop here, in the worker: the main process receives only the face's pixels.
        image, render_plan = shrink_and_crop(image, plan)
        return dict(result, status="ready", image=image, plan=plan, render_plan=render_plan,
                    seconds=time.perf_counter() - started)


def _first(batch):
    return batch[0]


# --------------------------------------------------------------------------------------------------------------
# Writing


def _write_png(image: np.ndarray, path: Path) -> tuple[str, float]:
    """Atomic PNG write (temp name + rename); returns the md5 of the uint8 HWC RGB pixels and the seconds."""
    started = time.perf_counter()
    buffer = io.BytesIO()
    # zlib level 3: 3× faster than Pillow's default 6 for 7% larger files (0.085 s vs 0.27 s at 1024²)
    Image.fromarray(image).save(buffer, "PNG", compress_level=3)
    # a unique temporary name keeps a writer left over from a killed run off the file of the run that resumes it
    with atomic_output(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest(), time.perf_counter() - started


def _writer_pool(num_writers: int | None) -> ProcessPoolExecutor:
    """Processes that encode and write PNGs: zlib at 1024² costs ~0.09 s an image, more than the GPU render, and
    threads would contend for the GIL in Pillow's per-chunk encode loop. forkserver: no fork of a threaded parent."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(num_writers or min(8, os.cpu_count() or 1), mp_context=context)


def _record(ready: dict, options: BuildOptions, output: str, md5: str) -> dict:
    plan = ready["plan"]
    stages = ([] if options.cleanup == "none" else [f"cleanup:{options.cleanup}"])
    stages += [f"shrink:{plan.shrink}"] if plan.shrink > 1 else []
    stages += [f"sr:{options.sr}x{plan.superres}"] if plan.superres > 1 else []
    stages += ["pad"] if plan.padded else []
    stages += [f"render:{options.backend}", f"downscale:{options.downscale}"]
    return {"source": ready["source"], "status": "ok", "landmarks": ready["landmarks"],
            "quad": plan.source_quad.round(3).tolist(), "zoom": round(float(plan.zoom), 6),
            "stages": stages, "output": output, "md5": md5, "resolution": options.resolution, "quality": None}


# --------------------------------------------------------------------------------------------------------------
# The build


def _pending(items: list[SourceItem], out: Path) -> tuple[list[SourceItem], int]:
    """Sources still to do, and how many are done; temp files of a killed run are removed."""
    for leftover in (out / "images").rglob(".*.partial"):
        leftover.unlink(missing_ok=True)
    latest = latest_records(read_all_manifests(out))
    pending = []
    for item in items:
        record = latest.get(item.name)
        if record is None or (record["status"] == "ok" and not (out / record["output"]).is_file()):
            pending.append(item)
    return pending, len(items) - len(pending)


def build(src: str | os.PathLike, out: str | os.PathLike, options: BuildOptions | None = None) -> BuildReport:
    """Build (or resume) CelebA-HQ-style crops of every face photo in `src` into `out`; returns the report."""
    options = options or BuildOptions()
    for name, value, choices in (("backend", options.backend, ("auto", "torch", "pil")),
                                 ("sr", options.sr, SR_STAGES),
                                 ("cleanup", options.cleanup, CLEANUP_STAGES),
                                 ("downscale", options.downscale, ("lanczos", "box"))):
        if value not in choices:
            raise UserError(f"--{name} {value!r}: choose one of {', '.join(choices)}")
    for kind, stage in (("cleanup", options.cleanup), ("sr", options.sr)):
        if stage == "net" and not shipped_weights(kind).is_file():
            raise UserError(f"--{kind} net: no shipped weights at {shipped_weights(kind)}")
    if options.resolution < 4 or options.resolution & (options.resolution - 1):
        raise UserError(f"--resolution {options.resolution}: must be a power of two ≥ 4")
    if options.num_images is not None and options.num_images < 1:
        raise UserError(f"--num-images {options.num_images}: must be at least 1")
    device = resolve_device(options.device)
    if options.backend == "auto":
        options.backend = "torch" if device.type == "cuda" else "pil"
    if distributed.is_distributed() and options.shard == (0, 1):
        options.shard = (distributed.rank(), distributed.world_size())
    shard_index, shard_count = options.shard
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    items, table = discover_sources(src)
    items = items[:options.limit] if options.limit else items
    items = items[shard_index::shard_count]
    pending, already_done = _pending(items, out)
    seconds = {"prepare (workers)": 0.0, "render": 0.0, "write (writers)": 0.0}
    skipped, ok = {}, 0
    workers = options.num_workers if options.num_workers is not None else min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_Prepare(pending, table, options), batch_size=1, collate_fn=_first,
                                         num_workers=workers if len(pending) > 1 else 0)
    manifest_name = "manifest.jsonl" if shard_count == 1 else f"manifest-{shard_index}-of-{shard_count}.jsonl"
    upscale = SR_STAGES[options.sr]

    def render(batch: list[dict]) -> list[np.ndarray]:
        if options.backend == "pil":
            return [render_pil(r["image"], r["render_plan"], options.resolution, upscale, options.downscale)
                    for r in batch]
        return render_torch([r["image"] for r in batch], [r["render_plan"] for r in batch], options.resolution,
                            None if options.sr == "lanczos" else upscale, options.downscale, device)

    with ManifestWriter(out, manifest_name) as manifest, _writer_pool(options.num_writers) as writer, \
            progress_bar(len(pending), "celebahq build", options.progress) as bar:
        in_flight = []

        max_in_flight = 4 * options.batch_size  # rendered images waiting for the writers: bounded memory

        def drain(block: bool) -> None:
            nonlocal ok
            while in_flight and (block or in_flight[0][0].done() or len(in_flight) > max_in_flight):
                future, ready, output = in_flight.pop(0)
                md5, write_seconds = future.result()
                seconds["write (writers)"] += write_seconds
                manifest.append(_record(ready, options, output, md5))
                ok += 1
                bar.update(1)

        batch = []
        for result in loader:
            seconds["prepare (workers)"] += result.pop("seconds", 0.0)
            if result["status"] != "ready":
                skipped[result["source"]] = result["reason"]
                manifest.append(result)
                bar.update(1)
                continue
            batch.append(result)
            if len(batch) == options.batch_size:
                _render_and_queue(batch, render, out, seconds, writer, in_flight)
                batch = []
            drain(block=False)
        if batch:
            _render_and_queue(batch, render, out, seconds, writer, in_flight)
        drain(block=True)

    elapsed = time.perf_counter() - started
    ranking = {} if options.num_images is None else _select_best(out, options, device, shard_count > 1)
    report = BuildReport(sources=len(items), processed=len(pending), already_done=already_done, ok=ok,
                         skipped=skipped, seconds={k: round(v, 3) for k, v in seconds.items()},
                         images_per_second=round(len(pending) / elapsed, 3) if elapsed > 0 else 0.0,
                         options={k: v for k, v in asdict(options).items() if k != "progress"}, ranking=ranking)
    report_name = "report.json" if shard_count == 1 else f"report-{shard_index}-of-{shard_count}.json"
    with atomic_output(out / report_name) as temporary:
        temporary.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _select_best(out: Path, options: BuildOptions, device, sharded: bool) -> dict:
    """`--num-images N`: rank the finished images by quality and select the best N (celebahq/rank.py)."""
    if sharded:  # the other shards may still be appending to their manifests
        return {"deferred": f"a sharded build: run `celebahq rank {out} --keep {options.num_images}` once every "
                            "shard has finished"}
    return rank_build(out, keep=options.num_images, device=device, num_workers=options.num_workers,
                      progress=options.progress).to_dict()


def _render_and_queue(batch, render, out: Path, seconds: dict, writer, in_flight: list) -> None:
    render_started = time.perf_counter()
    rendered = render(batch)
    seconds["render"] += time.perf_counter() - render_started
    for ready, image in zip(batch, rendered):
        output = f"images/{Path(ready['source']).with_suffix('.png').as_posix()}"
        (out / output).parent.mkdir(parents=True, exist_ok=True)
        ready = {k: v for k, v in ready.items() if k not in ("image", "render_plan")}
        in_flight.append((writer.submit(_write_png, image, out / output), ready, output))
