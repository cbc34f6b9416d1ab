"""celebahq build figures for the device suite: `run(budget_seconds) -> list[Row]`.

On a GPU: a synthetic CelebA (benchmarks/celebahq_scale.py's generator) built at 1024² with the default stages
(the restoration networks when installed), `--num-images` = 15% of the sources as CelebA-HQ keeps, min(16, CPUs)
decode workers, in a child process: sources/s of the score pass and the write pass, the peak RSS of the whole
process tree, and the projection for CelebA (202,599 sources -> 30,000 written) at those rates; the goal is
< 1 h with peak RSS < 8 GB. On a CPU (smoke mode): the same rows for 24 sources -> 4 at 128².

    python benchmarks/device_build.py [--budget 240]          # prints the rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celebahq_scale import CELEBA_KEEP, CELEBA_SOURCES, ROOT, TreeMemory, make_synthetic_celeba
from device_common import Row  # the device suite's row type


def _plan(budget_seconds: float) -> tuple[str, int, int, int]:
    """(device, sources, resolution, workers) for this machine and budget."""
    cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        sources = 400 if budget_seconds >= 180 else 240
        return "cuda", sources, 1024, min(16, cpus)
    return "cpu", 24, 128, min(4, cpus)


def run(budget_seconds: float) -> list[Row]:
    """Rows: score-pass and write-pass sources/s, projected hours for CelebA, peak RSS (GiB) of the build."""
    device, sources, resolution, workers = _plan(budget_seconds)
    keep = max(sources * 15 // 100, 1)
    label = torch.cuda.get_device_name() if device == "cuda" else "CPU smoke mode"
    with tempfile.TemporaryDirectory(prefix="device_build_") as work:
        src = make_synthetic_celeba(Path(work) / "celeba", sources)
        command = [sys.executable, "-m", "celebahq.cli", "build", "--src", str(src), "--out", str(Path(work) / "out"),
                   "--resolution", str(resolution), "--num-images", str(keep), "--device", device, "--workers",
                   str(workers), "--quiet", "--json"]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        memory = TreeMemory(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=max(budget_seconds - 30, 30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            memory.stop()
            return [Row("celebahq build", float("nan"), "", f"{label}: did not finish within the budget")]
        peak = memory.stop()
        wall = time.perf_counter() - started
    if process.returncode != 0:
        return [Row("celebahq build", float("nan"), "", f"{label}: failed: {stderr.strip()[-300:]}")]
    report = json.loads(stdout)
    score, write = report["passes"]
    stages = "cleanup {cleanup}, sr {sr}, backend {backend}".format(**report["options"])
    note = f"{label}, {sources} synthetic sources -> {keep} at {resolution}², {workers} workers, {stages}"
    score_rate, write_rate = score["sources_per_second"], write["sources_per_second"]
    hours = (CELEBA_SOURCES / score_rate + CELEBA_KEEP / write_rate) / 3600 if score_rate and write_rate else None
    return [
        Row("celebahq build: score pass", score_rate, "sources/s", note + f"; {_per_source(score)}"),
        Row("celebahq build: write pass", write_rate, "sources/s", note + f"; {_per_source(write)}"),
        Row("celebahq build: projected CelebA 202,599 -> 30,000", hours if hours else float("nan"), "h",
            f"at the two pass rates above; wall of this run {wall:.0f} s incl. start-up"),
        Row("celebahq build: peak PSS (process tree)", memory.peak_pss / 2**30, "GiB",
            "sampled every 0.2 s; goal < 8 GB; shared pages split between the processes that share them"),
        Row("celebahq build: peak RSS sum (process tree)", peak / 2**30, "GiB",
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
    args = parser.parse_args()
    for row in run(args.budget):
        print(f"{row.name:<55} {row.value:>10.3f} {row.unit:<10} {row.note}")


if __name__ == "__main__":
    main()
