"""celebahq build figures for the device suite: `run(budget_seconds) -> list[Row]`.

On a GPU: a synthetic CelebA (benchmarks/celebahq_scale.py's generator) built at 1024² with the default stages
(the restoration networks when installed), `--num-images` = 15% of the sources as CelebA-HQ keeps, min(16, CPUs)
decode workers, in a child process: sources/s of the score pass and the write pass, the peak memory of the whole
process tree (PSS and summed RSS), and the projection for CelebA (202,599 sources -> 30,000 written) at those
rates; the goal is < 1 h with peak memory < 8 GB. Then, if the budget allows, the same build as 2 and 4 torchrun
ranks sharing the GPU (the workers split between them). 1,200 sources when the budget is ≥ 240 s: the networks'
call shapes (which cuDNN plans once each) level off after a few hundred sources, as they do early in a real build. On a CPU (smoke mode): the same rows for 24 sources -> 3 at
128², and 2 ranks.

    python benchmarks/device_build.py [--budget 240] [--sources N] [--ranks 1,2]   # prints the rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from celebahq_scale import CELEBA_KEEP, CELEBA_SOURCES, ROOT, TreeMemory, make_synthetic_celeba
from device_common import Row  # the device suite's row type


def _plan(budget_seconds: float, sources: int | None = None) -> tuple[str, int, int, int]:
    """(device, sources, resolution, workers) for this machine and budget (`sources` overrides the count)."""
    cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        default = 1200 if budget_seconds >= 240 else 400 if budget_seconds >= 180 else 240
        return "cuda", sources or default, 1024, min(16, cpus)
    return "cpu", sources or 24, 128, min(4, cpus)


@dataclass
class BuildRun:
    """One timed `celebahq build` (a process, or torchrun's tree): its reports (one per rank) and memory."""

    reports: list[dict]
    wall: float
    peak_rss: int
    peak_pss: int
    peak_pss_split: list[int]  # each process's PSS at that peak, largest first


def _timed_build(command: list[str], out: Path, timeout: float) -> BuildRun | str:
    """Run a build command; its BuildRun, or why there is none."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    memory = TreeMemory(process.pid)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        memory.stop()
        return "did not finish within the budget"
    peak = memory.stop()
    if process.returncode != 0:
        return f"failed: {stderr.strip()[-300:]}"
    reports = [json.loads(path.read_text()) for path in sorted(out.glob("report*.json"))]
    return BuildRun(reports, time.perf_counter() - started, peak, memory.peak_pss, memory.peak_pss_split)


def _pass_rate(run: BuildRun, index: int) -> float:
    """Sources/s of pass `index` over all ranks: their sources over the slowest rank's wall time."""
    passes = [report["passes"][index] for report in run.reports]
    slowest = max(one["wall_seconds"] for one in passes)
    return sum(one["sources"] for one in passes) / slowest if slowest > 0 else 0.0


def run(budget_seconds: float, sources: int | None = None, ranks: tuple[int, ...] | None = None) -> list[Row]:
    """Rows: score-pass and write-pass sources/s, projected hours for CelebA, peak memory of the build; on a GPU
    also the same build as 2 and 4 torchrun ranks sharing the GPU (2 on a CPU smoke run), if the budget allows."""
    return list(rows_as_measured(budget_seconds, sources, ranks))


def rows_as_measured(budget_seconds: float, sources: int | None = None, ranks: tuple[int, ...] | None = None):
    """`run`'s rows, yielded after each build (a caller can print them before the next one starts)."""
    deadline = time.perf_counter() + budget_seconds
    device, sources, resolution, workers = _plan(budget_seconds, sources)
    writers = min(8, workers)
    keep = max(sources * 15 // 100, 1)
    label = torch.cuda.get_device_name() if device == "cuda" else "CPU smoke mode"
    with tempfile.TemporaryDirectory(prefix="device_build_") as work:
        src = make_synthetic_celeba(Path(work) / "celeba", sources)
        for count in ranks or ((1, 2, 4) if device == "cuda" else (1, 2)):
            left = deadline - time.perf_counter()
            if count > 1 and left < 60 and device == "cuda":  # a CPU smoke run checks every step, however slow
                yield Row(f"celebahq build, {count} ranks on one device", float("nan"), "",
                          "skipped: the section's budget is spent")
                continue
            out = Path(work) / f"out{count}"
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        str(count)] if count > 1 else [sys.executable]
            # the machine's decode workers and PNG writers split between the ranks (each rank would start its own)
            command = [*launcher, "-m", "celebahq.cli", "build", "--src", str(src), "--out", str(out),
                       "--resolution", str(resolution), "--num-images", str(keep), "--device", device,
                       "--workers", str(max(workers // count, 1)), "--writers", str(max(writers // count, 1)),
                       "--quiet"]
            result = _timed_build(command, out, max(left - 15, 30))
            yield from _rows(result, count, f"{label}, {sources} synthetic sources -> {keep} at {resolution}², "
                                            f"{workers} workers and {writers} writers in all")


def _rows(result: BuildRun | str, ranks: int, note: str) -> list[Row]:
    name = "celebahq build" if ranks == 1 else f"celebahq build, {ranks} ranks on one device"
    if isinstance(result, str):
        return [Row(name, float("nan"), "", f"{note}: {result}")]
    options = result.reports[0]["options"]
    note += ", cleanup {cleanup}, sr {sr}, backend {backend}".format(**options)
    score, write = (_pass_rate(result, index) for index in (0, 1))
    hours = (CELEBA_SOURCES / score + CELEBA_KEEP / write) / 3600 if score and write else float("nan")
    first_rank = result.reports[0]["passes"]
    return [
        Row(f"{name}: score pass", score, "sources/s", f"{note}; rank 0 {_per_source(first_rank[0])}"),
        Row(f"{name}: write pass", write, "sources/s", f"{note}; rank 0 {_per_source(first_rank[1])}"),
        Row(f"{name}: projected CelebA 202,599 -> 30,000", hours, "h",
            f"at the two pass rates above; wall of this run {result.wall:.0f} s incl. start-up"),
        Row(f"{name}: peak PSS (process tree)", result.peak_pss / 2**30, "GiB",
            "sampled every 0.2 s; goal < 8 GB; shared pages split between the processes that share them; at the "
            f"peak {len(result.peak_pss_split)} processes, the largest (GiB) "
            + ", ".join(f"{pss / 2**30:.2f}" for pss in result.peak_pss_split[:5])),
        Row(f"{name}: peak RSS sum (process tree)", result.peak_rss / 2**30, "GiB",
            "sampled every 0.2 s; counts the pages forked workers share once per process"),
    ]


def _per_source(report: dict) -> str:
    """Milliseconds per source of the pass's wall time and of each stage (workers' and writers' summed)."""
    count = max(report["sources"], 1)
    parts = [f"wall {1e3 * report['wall_seconds'] / count:.1f}"]
    parts += [f"{name} {1e3 * seconds / count:.1f}" for name, seconds in report["stage_seconds"].items() if seconds]
    return "ms/source: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240)
    parser.add_argument("--sources", type=int, help="synthetic sources (default: by device and budget)")
    parser.add_argument("--ranks", type=lambda text: tuple(int(v) for v in text.split(",")),
                        help="comma-separated rank counts to measure (default: 1,2,4 on a GPU, 1,2 on a CPU)")
    args = parser.parse_args()
    for row in rows_as_measured(args.budget, args.sources, args.ranks):
        print(f"{row.name:<55} {row.value:>10.3f} {row.unit:<10} {row.note}", flush=True)


if __name__ == "__main__":
    main()
