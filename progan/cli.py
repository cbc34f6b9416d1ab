"""`progan` command line: thin wrappers over progan.training_loop, progan.checkpoint and progan.configs."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import typing
from pathlib import Path

import click
import numpy as np

from gancore.cli import emit, start_distributed, take_over_lock_option, user_errors
from gancore.errors import UserError
from gancore.processes import stop_children
from ganeval.cli import RegisteredOptionsCommand, cache_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan-toolkit")
def main():
    """Train Progressive GANs (Karras et al. 2018), evaluate their snapshots, and sample and interpolate from
    them. A checkpoint (.pt) is also an image source for every ganeval command, e.g.

    \b
      progan train --config tiny --data examples/real --out runs/tiny
      progan evaluate runs/tiny --real examples/real --metrics swd
      progan interpolate runs/tiny/network-snapshot-000008.pt --video lerp.mp4 --grid 4x2 --zoom 4

    Run `progan COMMAND --help` for a command's options."""


@main.command("train", short_help="Train a ProGAN from scratch (--out) or continue a run (--resume).")
@click.option("--config", "config_name", default="tiny", show_default=True, metavar="NAME",
              help="Preset: celebahq-1024 (the released presets for 1, 2, 4, 8 GPUs), celebahq-1024-v1 (the "
              "paper's, 1 GPU), celeba-128, table1-a … table1-g, cifar10, lsun-256, mnist-rgb, tiny.")
@click.option("--data", "data_path", type=click.Path(exists=True), help="HDF5 from `celebahq export`, a folder, "
              "zip or array of square power-of-two images. Default when resuming: the run's.")
@click.option("--out", "run_dir", type=click.Path(file_okay=False),
              help="Run folder: a new or empty one (one holding a run is refused) [the resumed run's].")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many thousand real images (total) [the config's total_kimg].")
@click.option("--gpus", type=click.IntRange(1), default=1, show_default=True,
              help="Processes/GPUs; >1 relaunches itself under torchrun. Picks the preset's variant for N GPUs.")
@click.option("--resume", type=click.Path(exists=True), default=None,
              help="A run folder (its newest valid checkpoint) or a checkpoint .pt: continue exactly.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config value (JSON values, checked against the field's type), e.g. "
              "--set bf16=true --set 'minibatch_dict={\"4\":64}'.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@take_over_lock_option
@user_errors
def train_command(config_name, data_path, run_dir, kimg, gpus, resume, overrides, device):
    """Train a ProGAN on --data into a new run folder --out, or continue a run with --resume (its newest valid
    checkpoint; the line "resuming from FILE (KIMG kimg, tick T)" says which). A folder that already holds a run
    is refused: nothing in it is overwritten. Ctrl-C or SIGTERM stops at the next round with a checkpoint, e.g.

    \b
      progan train --config celebahq-1024 --data celebahq.h5 --out runs/celebahq
      progan train --config tiny --data examples/real --out runs/tiny --kimg 6
      progan train --resume runs/tiny --kimg 12
    """
    from .configs import resolve_config
    from .runs import check_new_run_dir, resume_setup
    from .schedule import check_gpu_split
    from .training_loop import run_training

    world = int(os.environ.get("WORLD_SIZE", "1"))
    processes = world if world > 1 else gpus
    overrides = list(overrides) + ([f"total_kimg={kimg}"] if kimg is not None else [])
    if resume is not None:
        setup = resume_setup(resume, overrides, data_path, run_dir, note=lambda line: emit(line, err=True))
        config, data_path, run_dir, resume = setup.config, setup.data_path, setup.run_dir, setup.checkpoint
        if world > 1 or gpus == 1:  # said once: by rank 0, not also by the torchrun launcher
            emit(setup.describe(), err=True)
    else:
        config = resolve_config(config_name, overrides, processes)
    if data_path is None or run_dir is None:
        raise click.UsageError("give --data and --out (or --resume RUN)")
    if resume is None and world == 1:  # before any process starts; the ranks under torchrun skip it
        check_new_run_dir(run_dir)
    if config.resolution is not None:  # refused here, before any process starts (else once the data is known)
        check_gpu_split(config, processes, config_name if resume is None else "the resumed run's config")
    if gpus > 1 and world == 1:
        _relaunch_under_torchrun(gpus, Path(run_dir))
    start_distributed(device)
    state = run_training(config, data_path, run_dir, resume=resume, device=device,
                          log=lambda line: emit(line, err=True))
    if state.interrupted:
        emit(f"interrupted at {state.cur_nimg / 1000:.3f} kimg; resume with: progan train --resume {run_dir}")
    else:
        emit(f"done: {state.cur_nimg / 1000:.1f} kimg in {state.tick} ticks -> {run_dir}")


def _relaunch_under_torchrun(gpus: int, run_dir: Path) -> typing.NoReturn:
    """Run this command again as `gpus` ranks under torchrun, in this process (the launcher), and exit with their
    outcome instead of torchrun's tracebacks: 0 when every rank ended well, also after a SIGTERM or Ctrl-C, which
    torchrun forwards to the ranks (each finishes its round; rank 0 writes the interrupted checkpoint and says how
    to resume) and waits 30 s for; the failing rank's own status when one failed (its `error:` line is above it);
    a UserError (exit 2) when a rank was killed by a signal; 1 and one line when the run was stopped before it
    could checkpoint. No rank outlives the launcher (`_run_torchrun`)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    started = time.time()
    try:
        _run_torchrun([f"--nproc_per_node={gpus}", "--standalone", "-m", "progan.cli", *sys.argv[1:]])
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        if failure.exitcode < 0:
            raise UserError(f"rank {rank} was killed by {signal.Signals(-failure.exitcode).name}") from None
        sys.exit(failure.exitcode)
    except SignalException as stopped:
        if not any(path.stat().st_mtime >= started for path in run_dir.glob("interrupted-*.pt")):
            emit(f"interrupted by {signal.Signals(stopped.sigval).name} before the ranks wrote a checkpoint",
                 err=True)
            sys.exit(1)
    sys.exit(0)


TORCHRUN_GRACE_S = 30  # what torchrun gives its ranks between SIGTERM and SIGKILL when it stops them


def _run_torchrun(arguments: list[str]) -> None:
    """torchrun (torch.distributed.run.main) with `arguments`, in this process, its log lines silenced (they would
    repeat the ranks' own), then the end of any rank it left running, as torchrun ends them (SIGTERM to the rank's
    process group, SIGKILL after TORCHRUN_GRACE_S). A SIGTERM or Ctrl-C that arrives while torchrun starts the
    ranks raises its SignalException before torchrun has recorded them, so its own shutdown stops none: they would
    be left in their own sessions, holding this command's stdout and stderr, waiting for the store of the gone
    torchrun (init_process_group's 30 minutes)."""
    from torch.distributed.run import main as torchrun

    for name in list(logging.root.manager.loggerDict):  # after the import, which makes torchrun's loggers
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun(arguments)
    finally:
        stop_children(TORCHRUN_GRACE_S)


@main.command("generate", short_help="Write images of a checkpoint's EMA generator as PNG files.")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--num", type=click.IntRange(1), default=64, show_default=True, help="Images to write.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder of PNGs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i comes from latent (seed, i).")
@click.option("--resolution", type=int, default=None,
              help="Output side: a power of two from 4 to the network's [the network's].")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--allow-many", is_flag=True, help="Allow --num above 100,000.")
@take_over_lock_option
@user_errors
def generate_command(checkpoint, num, out_dir, seed, resolution, device, allow_many):
    """Write NUM images of CHECKPOINT's EMA generator as OUT/000000.png … (each PNG written atomically). Refused
    before any work when NUM is above 100,000 without --allow-many, or when the PNGs could need more space than
    OUT's disk has free (each at most its raw pixels' size)."""
    from gancore.runtime import resolve_device

    from .checkpoint import generator_from_checkpoint, load_checkpoint, write_generated_images

    G = generator_from_checkpoint(load_checkpoint(checkpoint), resolve_device(device))
    out = write_generated_images(G, out_dir, num, seed=seed, resolution=resolution, allow_many=allow_many)
    emit(f"wrote {num} images -> {out}")


@main.command("interpolate", short_help="A latent interpolation video (mp4) or its frames, from a checkpoint.")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--video", "video_path", type=click.Path(dir_okay=False), default=None,
              help="Write an H.264 mp4 here (needs the [video] extra: imageio and imageio-ffmpeg).")
@click.option("--out", "out_path", type=click.Path(),
              help="Also (or instead) write the frames: a folder of PNGs, or a .png file for one sheet of them.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Length in seconds (frames = duration × fps, rounded).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Frames per second.")
@click.option("--frames", type=click.IntRange(1), default=None, help="Frame count [duration × fps].")
@click.option("--smoothing", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Standard deviation of the Gaussian blur of the latents over time, in seconds.")
@click.option("--grid", "grid_size", default="1x1", show_default=True, metavar="CxR",
              help="Each frame a grid of C columns × R rows of images, each with its own latent path.")
@click.option("--zoom", type=click.IntRange(1), default=1, show_default=True,
              help="Repeat each pixel ZOOM × ZOOM times (nearest neighbour).")
@click.option("--seed", type=int, default=1000, show_default=True,
              help="Latents from numpy's RandomState(seed), as the original.")
@click.option("--columns", type=click.IntRange(1), default=16, show_default=True,
              help="Frames per row of the .png sheet of --out.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--allow-many", is_flag=True, help="Allow more than 100,000 frames.")
@take_over_lock_option
@user_errors
def interpolate_command(checkpoint, video_path, out_path, duration, fps, frames, smoothing, grid_size, zoom, seed,
                        columns, device, allow_many):
    """The original's latent interpolation video: per-frame N(0, I) latents, Gaussian-smoothed over time
    (wrapping, so the video loops) and renormalised, through CHECKPOINT's EMA generator, e.g.

    \b
      progan interpolate runs/tiny/network-snapshot-000008.pt --video lerp.mp4 --grid 4x2 --zoom 4
      progan interpolate celebahq-1024.pt --video lerp.mp4 --duration 10 --out frames/
    """
    from gancore.runtime import resolve_device

    from .checkpoint import generator_from_checkpoint, load_checkpoint
    from .interpolation import InterpolationOptions, check_video_support, write_interpolation

    if video_path is None and out_path is None:
        raise UserError("give --video FILE.mp4 and/or --out FOLDER|SHEET.png")
    options = InterpolationOptions(duration=duration, fps=fps, frames=frames, smoothing=smoothing,
                                   grid=_parse_grid(grid_size), zoom=zoom, seed=seed, columns=columns,
                                   allow_many=allow_many)
    if video_path is not None:
        check_video_support()
    G = generator_from_checkpoint(load_checkpoint(checkpoint), resolve_device(device))
    count = write_interpolation(G, video_path, out_path, options)
    if video_path is not None:
        emit(f"wrote {count} frames at {fps:g} fps -> {video_path}")
    if out_path is not None:
        emit(f"wrote {count} frames -> {Path(out_path)}")


def _parse_grid(text: str) -> tuple[int, int]:
    """'CxR' -> (C, R), both ≥ 1; UserError otherwise."""
    columns, _, rows = text.lower().partition("x")
    if not (columns.isdigit() and rows.isdigit() and int(columns) >= 1 and int(rows) >= 1):
        raise UserError(f"--grid {text}: give columns x rows, e.g. 4x2")
    return int(columns), int(rows)


@main.command("evaluate", cls=RegisteredOptionsCommand,
              short_help="Score every snapshot of a run: a table (Markdown, JSON) and curves.")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--real", "real_path", required=True, type=click.Path(exists=True),
              help="The real images: an HDF5 from `celebahq export`, a folder, zip or array (ganeval pairs its size "
              "with each snapshot's resolution).")
@click.option("--metrics", default="swd", show_default=True, metavar="NAMES",
              help="Comma-separated ganeval metrics: swd, msssim, fid, is, kid, pr.")
@click.option("--seed", type=int, default=1000, show_default=True,
              help="Generated images from latents (seed, i); the reals' sample from seed + 1.")
@click.option("--inception", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Inception weights file [$GANEVAL_INCEPTION, torch hub cache, download].")
@click.option("--resize", type=click.Choice(["tf", "clean"]), default="tf", show_default=True,
              help="How images are resized to the Inception's 299x299 (tf: the original FID code's).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for evaluation.json, evaluation.md and the curves [RUN/evaluation].")
@click.option("--no-plots", is_flag=True, help="Write the table only (the curves need matplotlib: the [plot] extra).")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON object.")
@cache_options
@take_over_lock_option
@user_errors
def evaluate_command(run_dir, real_path, metrics, seed, inception, resize, out_dir, no_plots, device, as_json,
                     no_cache, cache_dir, **metric_options):
    """Score every network snapshot of RUN against --real, each at its trained resolution, e.g.

    \b
      progan evaluate runs/tiny --real examples/real --metrics swd,fid

    Writes OUT/evaluation.json, OUT/evaluation.md (one row per snapshot) and OUT/<metric>.png (the metric
    against kimg; SWD one line per level). A rerun scores only the snapshots and metrics not yet in
    evaluation.json with the same settings; the table is rewritten (atomically) after every snapshot. The
    metrics' options are those of `ganeval all` (each registered metric's); the Inception is loaded once and the
    reals' features are computed once per resolution (ganeval's feature cache).
    """
    from gancore.locking import FolderLock
    from gancore.outputs import output_folder
    from ganeval.registry import MetricSettings, parse_metric_names

    from .evaluation import check_plotting, evaluate_run, run_snapshots

    names = parse_metric_names(metrics)
    run_snapshots(Path(run_dir))
    if not no_plots:
        check_plotting()
    settings = MetricSettings.from_values(seed, **metric_options)
    with output_folder(out_dir or Path(run_dir) / "evaluation") as out, \
            FolderLock(out, "progan evaluate"):  # a second evaluation into the same folder is refused
        result = evaluate_run(run_dir, real_path, names, settings, out, device=device, inception=inception,
                              resize=resize, plots=not no_plots, note=lambda line: emit(line, err=True),
                              cache=not no_cache, cache_dir=cache_dir)
    if as_json:
        emit(json.dumps(result.to_dict()))
        return
    emit(f"{len(result.rows)} snapshots: {result.computed} values computed, {result.reused} reused -> "
         + ", ".join(Path(file).name for file in result.files) + f" in {out}")


@main.command("import", short_help="Convert an official TensorFlow network (.pkl) into a progan checkpoint.")
@click.argument("pickle_path", metavar="FILE.pkl", type=click.Path(exists=True, dir_okay=False))
@click.argument("out_path", metavar="OUT.pt", type=click.Path(dir_okay=False))
@user_errors
def import_command(pickle_path, out_path):
    """Convert an official pretrained network of the TensorFlow release (karras2018iclr-*.pkl: G, D and Gs) into
    a progan checkpoint, without TensorFlow and without running anything from the file, e.g.

    \b
      progan import karras2018iclr-celebahq-1024x1024.pkl celebahq-1024.pt
      progan generate celebahq-1024.pt --num 16 --out samples
      PROGAN_SOURCE_IMAGES=50000 ganeval fid celebahq-1024.pt celebahq-1024.h5
    """
    from gancore.outputs import check_output_path

    from .checkpoint import CHECKPOINT_SUFFIX
    from .tf_import import import_pickle

    if Path(out_path).suffix != CHECKPOINT_SUFFIX:
        raise UserError(f"{out_path}: give a name ending in {CHECKPOINT_SUFFIX} (how ganeval recognises checkpoints)")
    check_output_path(out_path)
    result = import_pickle(pickle_path, out_path)
    if result.ignored_kwargs:
        emit(f"note: build arguments ignored, as the original ignores them: {', '.join(result.ignored_kwargs)}",
             err=True)
    config = result.config
    emit(f"imported {Path(pickle_path).name}: {config.resolution}x{config.resolution}, lod {result.lod:g}, "
         f"fused_scale {config.fused_scale}, G {result.G_params / 1e6:.2f}M, D {result.D_params / 1e6:.2f}M "
         f"parameters -> {result.path}")


@main.command("info", short_help="A preset's parameter counts, training schedule and resolved config.")
@click.option("--config", "config_name", default="celebahq-1024", show_default=True, metavar="NAME",
              help="Preset, as for `progan train --config`.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, as for `progan train --set`.")
@click.option("--resolution", type=int, default=None, help="Output side when the config leaves it to the data.")
@click.option("--gpus", type=click.IntRange(1), default=1, show_default=True, help="For the minibatch schedule.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@user_errors
def info_command(config_name, overrides, resolution, gpus, as_json):
    """Parameter counts (total and per working resolution), the schedule on --gpus GPUs (global and per-GPU
    minibatch, minibatch-stddev group) and the resolved config. A config a GPU count cannot run is refused."""
    from .configs import gpu_variant, resolve_config
    from .networks import build_networks, count_parameters, parameters_at
    from .schedule import check_gpu_split, schedule_table

    config = resolve_config(config_name, list(overrides) + ([f"resolution={resolution}"] if resolution else []),
                            gpus)
    if config.resolution is None:
        raise UserError(f"config {config_name} takes its resolution from the data; pass --resolution R")
    check_gpu_split(config, gpus, config_name)
    variant = gpu_variant(config_name, gpus)
    G, D = build_networks(config)
    final = parameters_at(G, D, config.resolution)
    per_resolution = {str(2 ** k): parameters_at(G, D, 2 ** k) for k in range(2, int(np.log2(config.resolution)) + 1)}
    info = {"config": config_name, "resolution": config.resolution, "G_params": final["G"], "D_params": final["D"],
            "G_params_all_layers": count_parameters(G), "D_params_all_layers": count_parameters(D),
            "per_resolution": per_resolution, "gpus": gpus, "preset_gpus": variant,
            "schedule": schedule_table(config, gpus), "settings": config.to_dict()}
    if as_json:
        emit(json.dumps(info))
        return
    emit(f"{config_name}: {config.resolution}x{config.resolution}, G {final['G'] / 1e6:.2f}M, "
         f"D {final['D'] / 1e6:.2f}M parameters (with every lower-resolution toRGB/fromRGB: "
         f"{info['G_params_all_layers'] / 1e6:.2f}M / {info['D_params_all_layers'] / 1e6:.2f}M)")
    emit(f"{'resolution':>10} {'G':>12} {'D':>12}")
    for res, counts in per_resolution.items():
        emit(f"{res:>10} {counts['G']:>12,} {counts['D']:>12,}")
    if variant is not None:
        emit(f"schedule on {gpus} GPU{'s' if gpus > 1 else ''}: the released preset for {variant} "
             f"GPU{'s' if variant > 1 else ''}" + (" (none for this count)" if variant != gpus else ""))
    emit(f"{'kimg':>17} {'stage':>10} {'res':>5} {'lod':>11} {'minibatch':>9} {'per GPU':>7} {'group':>5} "
         f"{'G lr':>8} {'D lr':>8}")
    for row in info["schedule"]:
        emit(f"{row['start_kimg']:>8g}-{row['end_kimg']:<8g} {row['kind']:>10} {row['resolution']:>5} "
             f"{row['lod'][0]:>5.2f}-{row['lod'][1]:<5.2f} {row['minibatch']:>9} {row['per_gpu']:>7} "
             f"{row['group'] or '-':>5} {row['G_lr']:>8.4g} {row['D_lr']:>8.4g}")
    emit("resolved config (`progan train --set KEY=VALUE` changes any of them):")
    for key, value in info["settings"].items():
        emit(f"  {key:<26} {json.dumps(value)}")


if __name__ == "__main__":
    main()
