"""`celebahq` command line: thin wrappers over celebahq.pipeline and celebahq.export."""

from __future__ import annotations

import json

import click

from ganeval.cli import emit, user_errors


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
@click.option("--sr", type=click.Choice(["lanczos"]), default="lanczos", show_default=True,
              help="Super-resolution stage for small faces (lanczos = the original release's stand-in).")
@click.option("--cleanup", type=click.Choice(["none"]), default="none", show_default=True,
              help="JPEG artifact removal stage applied to each source photo.")
@click.option("--downscale", type=click.Choice(["lanczos", "box"]), default="lanczos", show_default=True,
              help="4R -> R filter: lanczos (original code) or box (the paper's text).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--workers", "num_workers", type=click.IntRange(0), default=None, help="Decoding processes.")
@click.option("--writers", "num_writers", type=click.IntRange(1), default=None, help="PNG-encoding processes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--shard", callback=_shard, default=None, help="i/N: process every N-th source from i.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N sources.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True)
@user_errors
def build_command(src, out, resolution, backend, sr, cleanup, downscale, batch_size, num_workers, num_writers, device,
                  shard, limit, as_json, quiet):
    """Crop, align and render every face of SRC into OUT/images/*.png with OUT/manifest.jsonl and report.json."""
    from .pipeline import BuildOptions, build

    options = BuildOptions(resolution=resolution, backend=backend, sr=sr, cleanup=cleanup, downscale=downscale,
                           batch_size=batch_size, num_workers=num_workers, num_writers=num_writers,
                           device=device, shard=shard, limit=limit, progress=not quiet)
    report = build(src, out, options)
    if as_json:
        emit(json.dumps(report.to_dict()))
        return
    for source, reason in report.skipped.items():
        emit(f"skipped {source}: {reason}", err=True)
    emit(f"{report.ok} images written, {len(report.skipped)} skipped, {report.already_done} already done "
         f"({report.sources} sources; {report.images_per_second:.2f} images/s) -> {out}")


@main.command("export")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--h5", "h5_path", type=click.Path(dir_okay=False), help="Multi-resolution HDF5 (original ProGAN).")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), help="stylegan2-ada-pytorch dataset zip.")
@click.option("--num-images", type=click.IntRange(1), default=None, help="Only the first N (ranking order).")
@click.option("--quiet", is_flag=True)
@user_errors
def export_command(out, h5_path, zip_path, num_images, quiet):
    """Export the finished images of a build OUT as HDF5 and/or zip."""
    from .export import export_hdf5, export_zip

    if not h5_path and not zip_path:
        raise click.UsageError("give --h5 FILE and/or --zip FILE")
    if h5_path:
        emit(f"wrote {export_hdf5(out, h5_path, num_images, progress=not quiet)}")
    if zip_path:
        emit(f"wrote {export_zip(out, zip_path, num_images, progress=not quiet)}")


if __name__ == "__main__":
    main()
