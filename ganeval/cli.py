"""`ganeval` command line: thin wrappers over the Python API. Results on stdout, progress on stderr."""

from __future__ import annotations

import json

import click

from gancore import distributed
from gancore.cli import emit, format_table, report_skipped, source_options, start_distributed, user_errors
from gancore.outputs import output_file

from .report import command_report, metric_entry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan-toolkit")
def main():
    """The Progressive GAN paper's metrics: SWD, MS-SSIM, FID (and its statistics files), IS, KID and
    precision/recall, or all at once from one pass.

    A SOURCE is a directory of images (recursive), a .zip of images, a .npy/.npz uint8 array (NHWC or NCHW)
    or a multi-resolution HDF5 file (datasets data<R>x<R>).
    """


def emit_notes(notes: list[str]) -> None:
    """One `note: ...` line per note on stderr (the same texts as the JSON's "notes")."""
    for note in notes:
        emit(f"note: {note}", err=True)


def emit_json(command: str, result, sources: dict[str, str], num_images, **extra) -> None:
    """The command's JSON object (`report.command_report`) for a single-metric `result` (named as the command;
    `stats` computes no metric)."""
    metrics = {command: result} if command != "stats" else {}
    emit(json.dumps(command_report(command, metrics, num_images=num_images, seed=result.seed, sources=sources,
                                   notes=result.notes, skipped=result.skipped,
                                   device=getattr(result, "device", "cpu"), seconds=getattr(result, "seconds", 0.0),
                                   **extra)))


@main.command("swd")
@click.argument("gen")
@click.argument("real")
@click.option("--num-images", type=click.IntRange(1), default=None,
              help="Images drawn from each source [the paper's 16384, or all when a source holds fewer].")
@click.option("--seed", type=int, default=1000, show_default=True, help="Subsets, patch positions, directions.")
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True,
              help="Run with seeds seed…seed+K−1 and report mean ± std.")
@click.option("--baseline", is_flag=True, help="Also report the real-vs-real floor (two disjoint sets of REAL).")
@source_options
@user_errors
def swd_command(gen, real, num_images, seed, repeats, baseline, device, batch_size, num_workers, skip_bad,
                as_json, quiet):
    """Sliced Wasserstein distance ×1e3 between GEN and REAL on Laplacian-pyramid patches (paper, sec. 5)."""
    start_distributed(device)
    from .swd import compute_swd

    result = compute_swd(gen, real, num_images=num_images, seed=seed, device=device, batch_size=batch_size,
                 repeats=repeats, baseline=baseline, skip_bad=skip_bad, num_workers=num_workers,
                 progress=not quiet)
    skipped = report_skipped(result.skipped)
    emit_notes(result.notes)
    if as_json:
        emit_json("swd", result, {"gen": gen, "real": real}, {"swd": result.num_images})
        return
    columns = list(result.levels) + ["avg"]
    rows = [("SWD x1e3", list(result.levels.values()) + [result.avg])]
    if result.std is not None:
        rows.append((f"std ({result.repeats} seeds)", list(result.std.levels.values()) + [result.std.avg]))
    if result.baseline is not None:
        rows.append((f"reals vs reals ({result.baseline_num_images})",
                     list(result.baseline.levels.values()) + [result.baseline.avg]))
    emit(format_table(columns, rows))
    emit(f"{result.num_images} images per set, seed {result.seed}, {result.device}, "
               f"{result.seconds:.1f} s" + (f", {skipped} bad files skipped" if skipped else ""), err=True)


@main.command("msssim")
@click.argument("source")
@click.option("--num-pairs", type=click.IntRange(1), default=None,
              help="Pairs of consecutive images [the paper's 10000, or all pairs there are].")
@click.option("--seed", type=int, default=1000, show_default=True, help="Random subset and order of the images.")
@source_options
@user_errors
def msssim_command(source, num_pairs, seed, device, batch_size, num_workers, skip_bad, as_json, quiet):
    """MS-SSIM among the images of SOURCE (diversity; lower = more diverse), as the paper's table 1."""
    start_distributed(device)
    from .msssim import msssim_diversity

    result = msssim_diversity(source, num_pairs=num_pairs, seed=seed, device=device, batch_size=batch_size,
                              skip_bad=skip_bad, progress=not quiet, num_workers=num_workers)
    skipped = report_skipped(result.skipped)
    emit_notes(result.notes)
    if as_json:
        emit_json("msssim", result, {"gen": source}, {"msssim": 2 * result.num_pairs})
        return
    emit(f"MS-SSIM {result.value:.4f}")
    emit(f"{result.num_pairs} pairs, seed {result.seed}, {result.device}, {result.seconds:.1f} s"
               + (f", {skipped} bad files skipped" if skipped else ""), err=True)


seed_option = click.option(
    "--seed", type=int, default=1000, show_default=True,
    help="Sampling: GEN is streamed in the random order drawn from seed, REAL from seed+1; every metric takes "
         "the first N images of these streams (the same images in every command).")
inception_option = click.option(
    "--inception", type=click.Path(dir_okay=False), default=None,
    help="Inception weights (pt_inception-2015-12-05-6726825d.pth or NVIDIA's inception-2015-12-05.pt) "
         "[$GANEVAL_INCEPTION, torch hub cache, download].")
resize_option = click.option(
    "--resize", type=click.Choice(["tf", "pytorch", "clean"]), default="tf", show_default=True,
    help="Resize to 299: TF1 bilinear (the reference), pytorch-fid's, or clean-fid's.")


def inception_options(command):
    """Options shared by the Inception-based commands (fid, stats, is)."""
    options = [
        click.option("--num-images", type=click.IntRange(1), default=None,
                     help="Images per image source [the paper's 50000 (Appendix F), or all when a source holds "
                          "fewer]."),
        seed_option, inception_option, resize_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def cache_options(command):
    """--cache-dir and --no-cache: the Inception feature cache shared by fid, stats, is, kid, pr and all."""
    command = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                           help="Inception feature cache, shared by fid, stats, is, kid, pr and all "
                                "[$GANEVAL_CACHE/fid or ~/.cache/ganeval/fid].")(command)
    return click.option("--no-cache", is_flag=True, help="Neither read nor write cached features.")(command)


class RegisteredOptionsCommand(click.Command):
    """A command whose parameters end with the options the registered metrics bring (`MetricSpec.options`:
    every metric's counts and settings, or only the named `spec_options`), looked up whenever its `params` are
    read (parsing, --help, anything that lists them), so that a metric registered after this module was
    imported has them too."""

    def __init__(self, *args, spec_options: tuple[str, ...] | None = None, **kwargs):
        self.spec_options = spec_options
        super().__init__(*args, **kwargs)

    @property
    def params(self) -> list[click.Parameter]:
        from .registry import registered_options

        wanted = [option for option in registered_options()
                  if self.spec_options is None or option.name in self.spec_options]
        if wanted != self._registered:  # rebuilt only when the registry changed: click relies on the objects
            self._registered = wanted
            self._params[:] = self._own_params + [option.click_option() for option in wanted]
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own_params, self._params, self._registered = list(value), list(value), None


@main.command("fid", cls=RegisteredOptionsCommand, spec_options=("allow-singular",))
@click.argument("a")
@click.argument("b")
@inception_options
@cache_options
@source_options
@user_errors
def fid_command(a, b, num_images, seed, inception, resize, no_cache, cache_dir, allow_singular, device,
                batch_size, num_workers, skip_bad, as_json, quiet):
    """Fréchet Inception distance between A and B (each an image source or a stats .npz)."""
    start_distributed(device)
    from .fid import compute_fid

    result = compute_fid(a, b, num_images=num_images, seed=seed, inception=inception, resize=resize, device=device,
                 batch_size=batch_size or 64, skip_bad=skip_bad, num_workers=num_workers, progress=not quiet,
                 cache=not no_cache, cache_dir=cache_dir, allow_singular=allow_singular)
    report_skipped(result.skipped)
    emit_notes(result.notes)
    if as_json:
        emit_json("fid", result, {"a": a, "b": b}, {"fid": result.num_images})
        return
    emit(f"FID {result.value:.4f}")
    counts = ", ".join(f"{name}: {n if n is not None else '?'}" for name, n in result.num_images.items())
    emit(f"images ({counts}), resize {result.resize}, {result.device}, {result.seconds:.1f} s", err=True)


@main.command("stats")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the statistics (.npz with mu, sigma: pytorch-fid compatible).")
@inception_options
@cache_options
@source_options
@user_errors
def stats_command(source, output, num_images, seed, inception, resize, no_cache, cache_dir, device, batch_size,
                  num_workers, skip_bad, as_json, quiet):
    """Write FID statistics (Inception pool3 mean and covariance) of SOURCE to a .npz file."""
    start_distributed(device)
    from .fid import compute_statistics
    from .fid_files import statistics_path

    with output_file(statistics_path(output)):  # checked before any work: a read-only folder fails now, not later
        result = compute_statistics(source, num_images=num_images, seed=seed, inception=inception, resize=resize,
                                    device=device, batch_size=batch_size or 64, skip_bad=skip_bad,
                                    num_workers=num_workers, progress=not quiet, cache=not no_cache,
                                    cache_dir=cache_dir)
        report_skipped(result.skipped)
        emit_notes(result.notes)
        if not distributed.is_main_process():
            return
        written = result.save(output)
    if as_json:
        emit_json("stats", result, {"real": source}, {"stats": result.num_images},
                  statistics=metric_entry(result), output=str(written))
        return
    emit(f"wrote {written} ({result.num_images} images, {result.mu.shape[0]}-d features)")


@main.command("is")
@click.argument("source")
@click.option("--splits", type=click.IntRange(1), default=10, show_default=True,
              help="Splits the images are cut into (mean ± std over them).")
@inception_options
@cache_options
@source_options
@user_errors
def is_command(source, splits, num_images, seed, inception, resize, no_cache, cache_dir, device, batch_size,
               num_workers, skip_bad, as_json, quiet):
    """Inception score of SOURCE: mean and std over splits (the paper's CIFAR-10 figure, 8.80, is one)."""
    start_distributed(device)
    from .isc import inception_score_source

    result = inception_score_source(source, num_images=num_images, splits=splits, seed=seed, inception=inception,
                                    resize=resize, device=device, batch_size=batch_size or 64,
                                    skip_bad=skip_bad, num_workers=num_workers, progress=not quiet,
                                    cache=not no_cache, cache_dir=cache_dir)
    report_skipped(result.skipped)
    emit_notes(result.notes)
    if as_json:
        emit_json("is", result, {"gen": source}, {"is": result.num_images})
        return
    emit(f"IS {result.mean:.4f} ± {result.std:.4f}")



def emit_metrics(result, as_json: bool, command: str) -> None:
    """Print a `MetricsResult`: its JSON object, or the paper-style table (and the SWD baseline), each mean ±
    std (IS, KID) and a summary."""
    from .evaluate import paper_table

    report_skipped(result.skipped)
    emit_notes(result.all_notes())
    if as_json:
        emit(json.dumps(result.to_dict(command)))
        return
    columns, values = paper_table(result)
    emit(format_table(columns, [("GEN vs REAL", values)], precision=4))
    for name, item in result.results.items():
        if hasattr(item, "mean") and hasattr(item, "std"):
            emit(f"{name.upper()} {item.mean:.6g} ± {item.std:.2g}")
    swd = result.results.get("swd")
    if swd is not None and swd.baseline is not None:
        emit(format_table(list(swd.baseline.levels) + ["avg"],
                          [("SWD reals vs reals", list(swd.baseline.levels.values()) + [swd.baseline.avg])]))
    emit(", ".join(f"{name} {count}" for name, count in result.counts.items())
         + f", seed {result.seed}, {result.device}, {result.seconds:.1f} s", err=True)


def run_registry(command, gen, real, metrics, settings, inception, resize, device, batch_size, num_workers,
                 skip_bad, as_json, cache_dir, no_cache, option_names=None) -> None:
    """The commands built on the registry (all, kid, pr): one pass, then print. `option_names`: the command's
    names of the settings its messages mention (default: "--fid-images" for `fid_images`)."""
    from .metric_main import compute_metrics

    result = compute_metrics(gen, real, metrics, settings, inception=inception, resize=resize, device=device,
                             batch_size=batch_size, skip_bad=skip_bad, num_workers=num_workers,
                             option_names=option_names, cache=not no_cache, cache_dir=cache_dir)
    emit_metrics(result, as_json, command)


@main.command("all", cls=RegisteredOptionsCommand)
@click.argument("gen")
@click.argument("real")
@click.option("--metrics", default=None,
              help="Comma-separated subset of the registered metrics: swd, msssim, fid, is, kid, pr and any "
                   "registered beside them [all of them].")
@seed_option
@inception_option
@resize_option
@cache_options
@source_options
@user_errors
def all_command(gen, real, metrics, seed, inception, resize, no_cache, cache_dir, device, batch_size, num_workers,
                skip_bad, as_json, quiet, **metric_options):
    """SWD, MS-SSIM (of GEN), FID, IS (of GEN), KID and precision/recall, and any metric registered beside them,
    from one decoding pass per set (each image decoded once, the Inception run once per image), as a table like
    the paper's. Each metric's options come from its registered spec."""
    start_distributed(device)
    from .registry import MetricSettings

    settings = MetricSettings.from_values(seed, not quiet, **metric_options)
    run_registry("all", gen, real, metrics, settings, inception, resize, device, batch_size, num_workers, skip_bad,
                 as_json, cache_dir, no_cache)


@main.command("kid", cls=RegisteredOptionsCommand, spec_options=("kid-subsets", "kid-subset-size"))
@click.argument("gen")
@click.argument("real")
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Images per set, the features of all of them; subsets are drawn from these [the paper's FID "
                   "count 50000, or all when a set holds fewer].")
@seed_option
@inception_option
@resize_option
@cache_options
@source_options
@user_errors
def kid_command(gen, real, num_images, seed, kid_subsets, kid_subset_size, inception, resize, no_cache, cache_dir,
                device, batch_size, num_workers, skip_bad, as_json, quiet):
    """Kernel Inception distance between GEN and REAL: unbiased MMD² (cubic kernel) over subsets, mean ± std."""
    start_distributed(device)
    from .registry import MetricSettings

    settings = MetricSettings.from_values(seed, not quiet, kid_images=num_images, kid_subsets=kid_subsets,
                                          kid_subset_size=kid_subset_size)
    run_registry("kid", gen, real, "kid", settings, inception, resize, device, batch_size, num_workers, skip_bad,
                 as_json, cache_dir, no_cache, {"kid_images": "--num-images", "fid_images": "--num-images"})


@main.command("pr", cls=RegisteredOptionsCommand, spec_options=("pr-k",))
@click.argument("gen")
@click.argument("real")
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Images per set [the paper's FID count 50000, or all when a set holds fewer].")
@seed_option
@inception_option
@resize_option
@cache_options
@source_options
@user_errors
def pr_command(gen, real, num_images, seed, pr_k, inception, resize, no_cache, cache_dir, device, batch_size,
               num_workers, skip_bad, as_json, quiet):
    """Precision and recall of GEN against REAL with k-NN manifolds of the Inception features (Kynkäänniemi
    et al. 2019)."""
    start_distributed(device)
    from .registry import MetricSettings

    settings = MetricSettings.from_values(seed, not quiet, pr_images=num_images, pr_k=pr_k)
    run_registry("pr", gen, real, "pr", settings, inception, resize, device, batch_size, num_workers, skip_bad,
                 as_json, cache_dir, no_cache, {"pr_images": "--num-images", "fid_images": "--num-images"})


if __name__ == "__main__":
    main()
