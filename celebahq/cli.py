"""`celebahq` command line: thin wrappers over celebahq.pipeline, export, quality and rank (and restore)."""

from __future__ import annotations

import contextlib
import json

import click

from gancore.cli import emit, emit_skipped, start_distributed, take_over_lock_option, user_errors
from gancore.outputs import output_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan-toolkit")
def main():
    """Rebuild CelebA-HQ from the CelebA in-the-wild release (paper, Appendix C)."""


def _shard(_ctx, _param, value: str | None):
    if value is None:
        return (0, 1)
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected i/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"need 0 ≤ i < N, got {value}")
    return (index, count)


@main.command("build")
@click.option("--src", required=True, type=click.Path(file_okay=False),
              help="CelebA folder (img_celeba/*.jpg + Anno/list_landmarks_celeba.txt) or a folder of face photos.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (resumable).")
@click.option("--resolution", type=int, default=1024, show_default=True, help="Output side R (power of two).")
@click.option("--backend", type=click.Choice(["auto", "torch", "pil"]), default="auto", show_default=True,
              help="torch: batched on the GPU; pil: the reference path; auto: torch on CUDA, else pil.")
@click.option("--sr", type=click.Choice(["net", "lanczos"]), default=None,
              help="Super-resolution stage for small faces: net (the shipped 4× network; the default on CUDA) or "
                   "lanczos (the original release's stand-in; the default on a CPU).")
@click.option("--cleanup", type=click.Choice(["net", "none"]), default=None,
              help="JPEG artifact removal applied to each source photo: net (the shipped network; the default on "
                   "CUDA) or none (the original release; the default on a CPU).")
@click.option("--downscale", type=click.Choice(["lanczos", "box"]), default="lanczos", show_default=True,
              help="4R -> R filter: lanczos (original code) or box (the paper's text).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Sources rendered together on the device.")
@click.option("--workers", "num_workers", type=click.IntRange(0), default=None, help="Decoding processes.")
@click.option("--writers", "num_writers", type=click.IntRange(1), default=None, help="PNG-encoding processes.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto (CUDA when available).")
@click.option("--shard", callback=_shard, default=None, help="i/N: process every N-th source from i.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N sources.")
@click.option("--num-images", type=click.IntRange(1), default=None,
              help="Two passes: score every source, then write only the best N by quality.")
@click.option("--select", "select_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Write exactly the sources listed in this file (one per line, or the official image_list.txt: "
                   "then named by their CelebA-HQ numbers).")
@click.option("--h5", "h5_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the selection straight into this multi-resolution HDF5 (needs a selection).")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the selection straight into this dataset zip (needs a selection).")
@click.option("--png/--no-png", default=True, show_default=True, help="Write OUT/images/*.png.")
@click.option("--accept-odd-landmarks", is_flag=True,
              help="Render landmarks whose geometry cannot be a face's (eyes swapped, mouth above the eyes) instead "
                   "of skipping them with the reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@take_over_lock_option
@user_errors
def build_command(src, out, resolution, backend, sr, cleanup, downscale, batch_size, num_workers, num_writers, device,
                  shard, limit, num_images, select_file, h5_path, zip_path, png, accept_odd_landmarks, as_json, quiet):
    """Crop, align and render the faces of SRC into OUT/images/*.png with OUT/manifest.jsonl and report.json."""
    from .build_options import BuildOptions
    from .pipeline import build

    start_distributed(device, share_gpus=True)  # ranks only wait for each other: several may share a GPU
    options = BuildOptions(resolution=resolution, backend=backend, sr=sr, cleanup=cleanup, downscale=downscale,
                           batch_size=batch_size, num_workers=num_workers, num_writers=num_writers,
                           device=device, shard=shard if shard != (0, 1) else None, limit=limit,
                           num_images=num_images, select=select_file, png=png, h5=h5_path, zip=zip_path,
                           accept_odd_landmarks=accept_odd_landmarks, progress=not quiet)
    report = build(src, out, options)
    if as_json:
        emit(json.dumps(report.to_dict()))
        return
    if report.manifest and "skipped 0 damaged" not in report.manifest:
        emit(f"warning: {out}: {report.manifest}", err=True)
    emit_skipped(report.skipped)
    passes = ", ".join(f"{p.name} pass {p.sources_per_second:.2f} sources/s" for p in report.passes if p.sources)
    emit(f"{report.ok} images written, {len(report.skipped)} skipped, {report.already_done} already done "
         f"({report.sources} sources{'; ' + passes if passes else ''}) -> {out}")
    if report.md5_mismatches:
        emit(f"warning: {len(report.md5_mismatches)} images differ from their score pass "
             f"(e.g. {report.md5_mismatches[0]})", err=True)
    if report.ranking:
        _print_ranking(report.ranking, out)
    for path in (h5_path, zip_path):
        if path and "deferred" not in report.ranking:
            emit(f"wrote {path}")


@main.command("export")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--h5", "h5_path", type=click.Path(dir_okay=False), help="Multi-resolution HDF5 (original ProGAN).")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), help="stylegan2-ada-pytorch dataset zip.")
@click.option("--num-images", type=click.IntRange(1), default=None, help="Only the first N (ranking order).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@take_over_lock_option
@user_errors
def export_command(out, h5_path, zip_path, num_images, quiet):
    """Export the finished images of a build OUT as HDF5 and/or zip."""
    from .export import export_hdf5, export_zip

    if not h5_path and not zip_path:
        raise click.UsageError("give --h5 FILE and/or --zip FILE")
    with contextlib.ExitStack() as targets:
        for path in (h5_path, zip_path):
            if path:  # both targets checked before either is written
                targets.enter_context(output_file(path))
        for path, export in ((h5_path, export_hdf5), (zip_path, export_zip)):
            if path:
                result = export(out, path, num_images, progress=not quiet)
                emit(f"wrote {result.path} ({result.images} images; {result.manifest})")


# --------------------------------------------------------------------------------------------------------------
# Frequency-based quality ranking (celebahq.quality, celebahq.rank)


def _scoring_options(command):
    """--batch-size, --workers, --device and --quiet of the commands that score images."""
    for option in reversed([
        click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
                     help="Images scored together (same-size neighbours)."),
        click.option("--workers", "num_workers", type=click.IntRange(0), default=None, help="Decoding processes."),
        click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto (CUDA when available)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        command = option(command)
    return command


@main.command("quality")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_scoring_options
@click.option("--json", "as_json", is_flag=True, help='Print [{"file": …, "quality": …}, …], best first.')
@user_errors
def quality_command(paths, batch_size, num_workers, device, as_json, quiet):
    """Score image files and folders (recursive; also .zip/.npy/.h5) by frequency-based quality, best first."""
    from .quality import score_paths

    report = score_paths(paths, batch_size=batch_size, device=device, num_workers=num_workers, progress=not quiet)
    emit_skipped(report.skipped)
    ranked = report.ranked()
    if as_json:
        emit(json.dumps([{"file": name, "quality": score} for name, score in ranked]))
        return
    for name, score in ranked:
        emit(f"{score:.5f}  {name}")


@main.command("rank")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--keep", type=click.IntRange(1), default=None,
              help="Select the best N (default: the N of the last ranking, or all).")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a contact sheet (PNG) of the best and worst images.")
@click.option("--preview-count", type=click.IntRange(1), default=6, show_default=True,
              help="Images per row of the contact sheet.")
@click.option("--rescore", is_flag=True, help="Score every image again (default: reuse the manifest's scores).")
@_scoring_options
@click.option("--json", "as_json", is_flag=True, help="Print the ranking report as JSON.")
@take_over_lock_option
@user_errors
def rank_command(out, keep, preview, preview_count, rescore, batch_size, num_workers, device, as_json, quiet):
    """Rank the finished images of a build OUT by quality, write the scores into its manifests, select the best."""
    from .rank import rank_build, write_preview

    with output_file(preview) if preview else contextlib.nullcontext():  # checked before the scoring
        report = rank_build(out, keep=keep, rescore=rescore, batch_size=batch_size, device=device,
                            num_workers=num_workers, progress=not quiet).to_dict()
        if preview:
            report["preview"] = str(write_preview(out, preview, count=preview_count))
    if as_json:
        emit(json.dumps(report))
        return
    _print_ranking(report, out)


def _print_ranking(ranking: dict, out: str) -> None:
    if "deferred" in ranking:
        emit(f"not ranked: {ranking['deferred']}", err=True)
        return
    emit_skipped(ranking["skipped"], "not ranked")
    if ranking["keep"] is not None and ranking["keep"] > ranking["ranked"]:
        emit(f"warning: {ranking['keep']} images asked, only {ranking['ranked']} ranked: all selected", err=True)
    emit(f"ranked {ranking['ranked']} images ({ranking['scored']} scored now), selected "
         f"{ranking['selected']} -> {out}" + (f" ({ranking['manifest']})" if ranking.get("manifest") else ""))
    if "preview" in ranking:
        emit(f"wrote {ranking['preview']}")


# --------------------------------------------------------------------------------------------------------------
# Restoration networks (celebahq.restore)

RESTORERS = click.Choice(["cleanup", "sr"])


@main.command("restore")
@click.argument("kind", type=RESTORERS)
@click.argument("in_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A weight file from train-restorer (default: the shipped weights).")
@click.option("--tile", type=click.IntRange(8), default=None, help="Tile side in input pixels.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Tiles per batch.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto (CUDA when available).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def restore_command(kind, in_dir, out_dir, weights, tile, batch_size, device, quiet):
    """Remove JPEG artifacts (cleanup) or upscale 4× (sr) every image of IN_DIR into OUT_DIR as PNG (same stems)."""
    from gancore.runtime import resolve_device

    from .restore.infer import Restorer, restore_folder

    restorer = Restorer(kind, _weights_file(kind, weights), resolve_device(device), tile=tile, batch=batch_size)
    written, skipped = restore_folder(restorer, in_dir, out_dir, progress=not quiet)
    emit_skipped(skipped)
    emit(f"{written} images written, {len(skipped)} skipped -> {out_dir}")


def _weights_file(kind: str, weights: str | None) -> str:
    from gancore.errors import UserError

    from .restore.infer import shipped_weights

    if weights is None and not shipped_weights(kind).is_file():
        raise UserError(f"no shipped {kind} weights in this installation ({shipped_weights(kind)}); "
                           "give --weights FILE")
    return weights or str(shipped_weights(kind))


@main.command("train-restorer")
@click.argument("kind", type=RESTORERS)
@click.argument("more_images", nargs=-1, type=click.Path(exists=True))
@click.option("--images", required=True, multiple=True, type=click.Path(exists=True),
              help="Training photographs (folders or files; list several after it or repeat the option).")
@click.option("--val-images", multiple=True, type=click.Path(exists=True),
              help="Held-out photographs for the periodic validation PSNR.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Weights file (best validation so far); OUT.ckpt holds the latest state for resuming.")
@click.option("--steps", type=click.IntRange(1), default=20000, show_default=True, help="Optimizer steps.")
@click.option("--patch", type=click.IntRange(32), default=96, show_default=True,
              help="High-resolution patch side (multiple of 8).")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True, help="Training crops per step.")
@click.option("--lr", type=float, default=4e-4, show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights and the crops.")
@click.option("--adversarial-weight", type=float, default=0.0, show_default=True,
              help="sr only: weight of the GAN term added to the L1 loss (0 = off; the shipped weights used 0).")
@click.option("--val-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between validations (the best validated weights are kept).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch.")
@click.option("--restart", is_flag=True, help="Ignore OUT.ckpt and start from scratch.")
@click.option("--init", "init_weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from these weights (matching layers; extra residual blocks start as the identity).")
@click.option("--config", "config_json", default=None,
              help='Network size as JSON, e.g. \'{"widths": [32, 48, 64], "blocks": [2, 2, 4]}\' (default: shipped).')
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto (CUDA when available).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def train_restorer_command(kind, more_images, images, val_images, out, steps, patch, batch, lr, seed,
                           adversarial_weight, val_every, threads, restart, init_weights, config_json, device,
                           quiet):
    """Train the cleanup or sr network on synthetic degradations of photographs (resumes from OUT.ckpt)."""
    from .restore.train import TrainOptions, train_restorer

    images = images + more_images

    options = TrainOptions(steps=steps, patch=patch, batch=batch, lr=lr, seed=seed,
                           adversarial_weight=adversarial_weight, val_every=val_every, device=device,
                           threads=threads, resume=not restart, progress=not quiet, init=init_weights,
                           config=_network_config(config_json))
    best = train_restorer(kind, images, out, val_images, options)
    if "gain_db" in best:
        emit(f"best validation at step {best['step']}: {best['psnr']:.2f} dB, {best['gain_db']:+.2f} dB over the "
             f"baseline -> {out}")
    else:
        emit(f"trained {steps} steps (no validation images) -> {out}")


def _network_config(config_json: str | None) -> dict:
    if not config_json:
        return {}
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--config") from None
    if not isinstance(config, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--config")
    return config


@main.command("eval-restorer")
@click.argument("kind", type=RESTORERS)
@click.argument("more_images", nargs=-1, type=click.Path(exists=True))
@click.option("--images", required=True, multiple=True, type=click.Path(exists=True),
              help="Held-out photographs (folders or files).")
@click.option("--quality", type=click.IntRange(1, 95), default=20, show_default=True,
              help="cleanup: JPEG quality of the degraded inputs.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A weight file from train-restorer (default: the shipped weights).")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto (CUDA when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (with per-image figures).")
@user_errors
def eval_restorer_command(kind, more_images, images, quality, weights, device, as_json):
    """PSNR and SSIM of the network vs the baselines (decoded JPEG; bicubic and Lanczos 4×) on photographs."""
    from gancore.cli import format_table
    from gancore.runtime import resolve_device

    from .restore.eval import evaluate
    from .restore.infer import Restorer
    from .restore.train import load_photos

    restorer = Restorer(kind, _weights_file(kind, weights), resolve_device(device))
    figures = evaluate(kind, load_photos(images + more_images, 1), restorer, quality)
    if as_json:
        emit(json.dumps(figures))
        return
    rows = [(method, [values["psnr"], values["ssim"]]) for method, values in figures["methods"].items()]
    degradation = f"JPEG quality {quality}" if kind == "cleanup" else "4× antialiased downscale"
    emit(f"{kind} on {figures['images']} photographs ({degradation}):")
    emit(format_table(["PSNR dB", "SSIM"], rows, precision=4))
    emit("net gain: " + ", ".join(f"{gain:+.2f} dB over {method}" for method, gain in figures["gain_db"].items()))


# --------------------------------------------------------------------------------------------------------------
# The official CelebA-HQ from NVIDIA's deltas (celebahq.official)


@main.command("official")
@click.option("--src", required=True, type=click.Path(file_okay=False, exists=True),
              help="CelebA folder: img_celeba/*.jpg and Anno/list_landmarks_celeba.txt.")
@click.option("--deltas", required=True, type=click.Path(file_okay=False, exists=True),
              help="The released deltas: image_list.txt and deltas00000.zip … deltas29000.zip.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (resumable).")
@click.option("--legacy/--fast", default=True, show_default=True,
              help="legacy: the pre-delta images of Pillow 3.1.1 bit for bit (numpy, CPU); fast: the current "
                   "reference renderer (within a grey level, so most rows will not match the md5s).")
@click.option("--decoder", type=click.Choice(["libjpeg-8d", "pillow"]), default="libjpeg-8d", show_default=True,
              help="JPEG decoder of the CelebA photos: IJG libjpeg 8d (the original's, through the jpeglib "
                   "package) or this Pillow's (libjpeg-turbo: 4:2:0 photos decode differently, so the result is "
                   "not the official dataset).")
@click.option("--workers", type=click.IntRange(0), default=None, help="Worker processes [CPU count].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N rows (trials).")
@click.option("--h5", "h5_path", type=click.Path(dir_okay=False), help="Also write the multi-resolution HDF5.")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), help="Also write the StyleGAN dataset zip.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@take_over_lock_option
@user_errors
def official_command(src, deltas, out, legacy, decoder, workers, limit, h5_path, zip_path, as_json, quiet):
    """The official CelebA-HQ: OUT/images/imgHQ%05d.png from CelebA and NVIDIA's released deltas."""
    from .official import OFFICIAL_ROWS, OfficialOptions, build_official, export_official

    with contextlib.ExitStack() as targets:
        for path in (h5_path, zip_path):
            if path:  # checked before hours of work, not after
                targets.enter_context(output_file(path))
        report = build_official(src, deltas, out, OfficialOptions(legacy=legacy, decoder=decoder, workers=workers,
                                                                  limit=limit, progress=not quiet))
        written = export_official(out, report, h5_path, zip_path, progress=not quiet) if h5_path or zip_path else []
    if as_json:
        emit(json.dumps(dict(report.to_dict(), exports=[str(p) for p in written])))
        return
    emit_skipped(report.skipped)
    if report.rows != OFFICIAL_ROWS and limit is None:
        emit(f"note: image_list.txt has {report.rows} rows; the release has {OFFICIAL_ROWS}", err=True)
    emit(f"{report.ok} of {report.rows} images ({report.processed} now, {report.already_done} before), "
         f"{report.exact} exact; pre-delta differs in {len(report.proc_mismatch)}, final in "
         f"{len(report.final_mismatch)}; {len(report.skipped)} skipped -> {out}")
    _emit_decoder_counts(report.by_decoder)
    if not report.official:
        emit(f"note: not the official CelebA-HQ: JPEGs decoded by {report.decoder_version} ({report.decoder}), "
             f"{'legacy' if report.legacy else 'fast'} render; the original used IJG libjpeg 8d and Pillow 3.1.1",
             err=True)
    for path in written:
        emit(f"wrote {path}")


@main.command("verify")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--deltas", required=True, type=click.Path(file_okay=False, exists=True),
              help="The deltas folder (only image_list.txt is read).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N rows.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes [CPU count].")
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def verify_command(out, deltas, limit, workers, as_json, quiet):
    """Check OUT/images/imgHQ%05d.png against the release's final md5s; exit 1 unless all match."""
    from .official import verify_official

    report = verify_official(out, deltas, limit=limit, workers=workers, progress=not quiet)
    if as_json:
        emit(json.dumps(report.to_dict()))
    else:
        for label, indices in (("differs", report.mismatched), ("missing", report.missing)):
            for idx in indices[:20]:
                emit(f"imgHQ{idx:05d}: {label}", err=True)
        emit(f"{report.exact} of {report.rows} images match the release's md5, {len(report.mismatched)} differ, "
             f"{len(report.missing)} missing or unreadable")
        _emit_decoder_counts(report.by_decoder)
    if not report.ok:
        raise SystemExit(1)


def _emit_decoder_counts(by_decoder) -> None:
    """One line per JPEG decoder: its rows and how many match the release's proc and final md5s."""
    for decoder, counts in sorted(by_decoder.items()):
        emit(f"  decoded by {decoder}: {counts.rows} images, proc md5 matches {counts.proc_match}, "
             f"final md5 matches {counts.final_match}")


@main.command("check-decoder")
@click.argument("celeba", type=click.Path(file_okay=False), required=False)
@click.option("--src", type=click.Path(file_okay=False), default=None,
              help="CelebA folder: check img_celeba/000001.jpg against the original's md5 (also as CELEBA).")
@user_errors
def check_decoder_command(celeba, src):
    """Which JPEG decoder `official` and `build` use, and with a CelebA folder whether official's decodes
    000001.jpg to the original's md5 (libjpeg 8d's). Exit 1 unless the official decoder runs and matches."""
    from gancore.errors import UserError

    from .decoding import HOW_TO_GET_8D
    from .official import check_decoder

    if celeba and src and celeba != src:
        raise UserError(f"two CelebA folders given ({celeba}, --src {src}): give one")
    check = check_decoder(src or celeba)
    for use in check.uses:
        state = f"unavailable: {use.problem}" if use.problem else "available"
        emit(f"{use.command}: {use.decoder}, {use.version}, {state}")
    if check.path is not None:
        for decoder, md5 in check.md5s.items():
            verdict = "matches" if md5 == check.expected else "differs from"
            emit(f"{check.path} (chroma {check.subsampling}) by {decoder}: md5 {md5}, {verdict} the original's "
                 f"{check.expected}")
    if check.matches:
        emit("official decodes as the original (IJG libjpeg 8d)" if check.path else
             "official's decoder runs; give --src CELEBA to check 000001.jpg's md5")
        return
    emit("official cannot decode as the original: " + (
        f"{check.uses[0].problem}; {HOW_TO_GET_8D}" if check.uses[0].problem else
        f"000001.jpg is not CelebA's, or its decode differs from libjpeg 8d's {check.expected}"))
    raise SystemExit(1)


if __name__ == "__main__":
    main()
