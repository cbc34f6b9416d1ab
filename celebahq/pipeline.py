"""`celebahq build`: CelebA in-the-wild photos -> R×R crops, with a manifest and a report.

Flow per source image (paper Appendix C, original `create_celebahq`):

    decode (worker) -> landmarks (CelebA file or dlib, worker) -> plan (pure geometry, worker)
    -> cleanup stage + shrink + crop (worker; with the torch backend in the main process on the device instead)
    -> [super-resolution, padding, 4R bilinear, downscale] (render on the device, a batch per call) -> quality
    score and md5 of the rendered pixels -> PNG encoded by a writer process (temp + rename) and/or the HDF5 / zip
    exports -> one manifest line

The options are resolved once into a plan (celebahq/build_plan.py: which stage runs where, on which device, with
which network); each pass drives the stages (celebahq/build_stages.py: prepare -> render and score -> the pass's
output) through their interfaces in one loop (`_run_pass`).

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

import json
import os
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from gancore import distributed
from gancore.errors import UserError
from gancore.locking import FolderLock
from gancore.outputs import atomic_output, check_apart, output_folder
from gancore.runtime import DeviceTimer, progress_bar
from gancore.sources import max_pixels

from .build_options import BuildOptions
from .build_plan import BuildPlan, plan_build
from .build_report import BuildReport, PassReport
from .build_stages import (
    Failed,
    ImageWriter,
    InFlight,
    PassOutput,
    Prepared,
    ScoreRecorder,
    Skipped,
    SourceItem,
    discover_sources,
    landed,
    photo_folder,
)
from .export import prepare_target
from .manifest import ManifestWriter, latest_records, load_all_manifests
from .rank import RANKING_NAME, RankReport
from .selection import Pick, best_picks, missing_sources, output_name, read_selection


def _run_pass(report: PassReport, items: list[SourceItem], table, plan: BuildPlan, manifest: ManifestWriter,
              output: PassOutput, skipped: dict[str, str]) -> None:
    """One pass through the stages, batch by batch: prepare `items` (plan.prepare), render and score them
    (plan.renderer), hand each rendered batch to `output`; skipped sources are recorded in the manifest and
    `skipped`."""
    report.sources = len(items)
    started = time.perf_counter()
    batch: list[Prepared] = []
    timer = DeviceTimer(plan.options.device)
    in_flight: InFlight | None = None  # the batch the device renders while the host lands its predecessor (md5,
    # manifest, writers), so neither waits for the other between batches
    # the bar counts sources done (rendered and handed to the output, or skipped), not sources prepared ahead
    bar = progress_bar(len(items), f"celebahq build ({report.name})", plan.options.progress)

    def land() -> None:
        nonlocal in_flight
        landed_started = time.perf_counter()
        rendered, in_flight = landed(in_flight), None
        timer.collect(wait=False)  # fold in the spans whose device work is done
        report.stage_seconds.render += time.perf_counter() - landed_started
        report.rendered += len(rendered)
        output.take(rendered)
        bar.update(len(rendered))

    def flush() -> None:
        nonlocal in_flight
        render_started = time.perf_counter()
        launched = plan.renderer.launch(list(batch), timer)
        report.stage_seconds.render += time.perf_counter() - render_started
        batch.clear()
        if in_flight is not None:
            land()
        in_flight = launched

    with bar:
        for result in plan.prepare.run(items, table):
            report.stage_seconds.prepare += result.seconds
            if isinstance(result, Failed):
                raise UserError(result.message)
            if isinstance(result, Skipped):
                skipped[result.source] = result.reason
                manifest.append(result.to_record())
                report.skipped += 1
                bar.update(1)
                continue
            batch.append(result)
            if len(batch) == plan.options.batch_size:
                flush()
        if batch:
            flush()
        if in_flight is not None:
            land()
        for name, seconds in timer.collect().items():
            setattr(report.stage_seconds, name, seconds)
        report.wall_seconds = time.perf_counter() - started
        bar.set_postfix_str("finishing writes")
        output.finish()  # the writes still in flight (after the pass's wall time: the writers' time is counted)


# --------------------------------------------------------------------------------------------------------------
# The build


def build(src: str | os.PathLike, out: str | os.PathLike, options: BuildOptions | None = None) -> BuildReport:
    """Build (or resume) CelebA-HQ-style crops of the face photos in `src` into `out`; returns the report.

    Holds `out`'s writer lock throughout (UserError when another process writes there): exclusively, or for a
    shard of a sharded build (`shard`, torchrun ranks) shared with the other shards plus the shard's own lock."""
    plan = plan_build(options or BuildOptions())
    max_pixels()  # a bad $GANCORE_MAX_PIXELS: one UserError here, before any decode worker starts
    check_apart(out, photo_folder(Path(src)))
    with ExitStack() as locks:
        out = locks.enter_context(output_folder(out))  # made now, gone again if the build ends before writing
        for target in (plan.options.h5, plan.options.zip):
            if target:
                prepare_target(target)
        index, count = plan.shard
        if count == 1:
            locks.enter_context(FolderLock(out, "celebahq build"))
        else:
            command = f"celebahq build --shard {index}/{count}"
            locks.enter_context(FolderLock(out, command, shared=True))
            locks.enter_context(FolderLock(out, command, name=f".lock-shard-{index}-of-{count}"))
        return _build_locked(Path(src), out, plan)


def _build_locked(src: Path, out: Path, plan: BuildPlan) -> BuildReport:
    started = time.perf_counter()
    options = plan.options
    shard_index, shard_count = plan.shard
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
    report = BuildReport(sources=len(items), processed=0, already_done=0, ok=0, manifest=summary.describe(),
                         options={k: v for k, v in asdict(options).items() if k != "progress"})
    with ManifestWriter(out, plan.manifest_name) as manifest:
        if options.num_images is not None:
            _score_pass(items, table, plan, out, latest, manifest, report)
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
            _write_pass(mine_picked, items, table, plan, out, latest, manifest, report)
    elapsed = time.perf_counter() - started
    report.images_per_second = round(report.processed / elapsed, 3) if elapsed > 0 else 0.0
    with atomic_output(out / plan.report_name) as temporary:
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
    missing_sources(picks, {item.name for item in items}, f"--select {options.select}")
    return picks


def _score_pass(items, table, plan: BuildPlan, out: Path, latest: dict, manifest: ManifestWriter,
                report: BuildReport) -> None:
    """Pass 1: render and score every source not scored yet; record "scored" (no image written)."""
    pending = [item for item in items if _needs_score(latest.get(item.name), out)]
    report.already_done += len(items) - len(pending)
    scored = PassReport("score")
    _run_pass(scored, pending, table, plan, manifest, ScoreRecorder(plan.recipe, manifest), report.skipped)
    report.processed += scored.rendered + scored.skipped
    report.passes.append(scored)


def _needs_score(record: dict | None, out: Path) -> bool:
    if record is None:
        return True
    if record["status"] == "ok":
        return record.get("quality") is None or not (out / record["output"]).is_file()
    return record["status"] not in ("scored", "skipped")


def _write_pass(picks: list[Pick] | None, items, table, plan: BuildPlan, out: Path, latest: dict,
                manifest: ManifestWriter, report: BuildReport) -> None:
    """Pass 2: render and write the picked sources (every source when `picks` is None) not written yet."""
    options = plan.options
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
        writer = ImageWriter(plan.write, plan.recipe, out, len(picks), todo, not everything, latest, manifest,
                             written, stack)
        for pick in existing if fresh_exports else []:
            writer.add_existing(pick)
        _run_pass(written, [by_name[p.source] for p in todo], table, plan, manifest, writer, report.skipped)
        report.md5_mismatches += writer.md5_mismatches
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
