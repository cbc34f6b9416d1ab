"""Where a `celebahq build` spends its time: the build of a small synthetic CelebA under torch.profiler.

    python benchmarks/celebahq_profile.py [--sources 48] [--resolution 1024] [--device cuda] [--rows 25] [--nets]

Builds `--sources` synthetic sources (benchmarks/celebahq_scale.py's generator) in this process with the default
stages for the device (on CUDA: the torch backend and both networks), scores them all and writes the best 15%,
and prints the operators that took the most device time and the most host time (torch.profiler's tables), the
main process's Python functions by own time (cProfile), the operator calls per rendered source (nested ones
included), then the build's own stage split (StageSeconds). Meant for one run on a GPU machine; on a CPU it checks
that it runs, and `--nets` runs CUDA's stages there (torch backend, both networks) to count their operator calls.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch
from celebahq_scale import make_synthetic_celeba
from torch.profiler import ProfilerActivity, profile

from celebahq.pipeline import BuildOptions, build


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--nets", action="store_true", help="torch backend and both networks whatever the device")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="celebahq_profile_") as work:
        src = make_synthetic_celeba(Path(work) / "celeba", args.sources)
        options = BuildOptions(resolution=args.resolution, device=args.device, num_workers=args.workers,
                               num_images=max(args.sources * 15 // 100, 1), progress=False,
                               **({"backend": "torch", "cleanup": "net", "sr": "net"} if args.nets else {}))
        build(src, Path(work) / "warm", BuildOptions(**{**options.__dict__, "limit": 4, "num_images": 1}))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        started = time.perf_counter()
        python_profile = cProfile.Profile()
        with profile(activities=activities) as profiler:
            python_profile.enable()
            report = build(src, Path(work) / "out", options)
            python_profile.disable()
        wall = time.perf_counter() - started
    averages = profiler.key_averages()
    if cuda:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
    pstats.Stats(python_profile).sort_stats("tottime").print_stats(args.rows)
    rendered = max(sum(one.sources for one in report.passes), 1)
    print(f"{args.sources} sources at {args.resolution}² on {args.device} in {wall:.1f} s (profiled); "
          f"{sum(event.count for event in averages) / rendered:.0f} operator calls per rendered source")
    if cuda:  # the device's own time: is it the bound (near 100%) or waiting for the host?
        kernels = sum(getattr(event, "self_device_time_total", 0.0) for event in averages) / 1e6
        print(f"GPU busy {kernels:.1f} s of the {wall:.1f} s ({100 * kernels / wall:.0f}%): "
              f"{1e3 * kernels / rendered:.1f} ms of device time per rendered source")
    for one in report.passes:
        per = {k: round(1e3 * v / max(one.sources, 1), 1) for k, v in one.stage_seconds.__dict__.items() if v}
        print(f"  {one.name}: {one.sources} sources, {one.sources_per_second:.2f}/s, ms/source {per}")


if __name__ == "__main__":
    main()
