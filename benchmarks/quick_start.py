"""The README's quick start, timed: build the bundled example (15 photos at 1024², the device's default
stages), then MS-SSIM among the 15 crops, each command as a user runs it (a fresh process, start-up included).

    python benchmarks/quick_start.py [--out DIR] [--record]

Prints the wall time of each command and of both, and the MS-SSIM line (0.4329 on the bundled example).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import results_record

ROOT = Path(__file__).resolve().parent.parent
TITLE = "quick start: the bundled example, build and MS-SSIM"


def timed(command: list[str]) -> tuple[float, str]:
    """Run `command` from the repository root; (wall seconds, its stdout). Stops the benchmark if it fails."""
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}): {finished.stderr[-2000:]}")
    return time.perf_counter() - start, finished.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="build folder (default: a temporary one, removed after)")
    parser.add_argument("--record", action="store_true", help=results_record.RECORD_HELP)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="quick-start-")) / "mini"
    try:
        build = ["celebahq", "build", "--src", "examples/celeba_wild_mini", "--out", str(out), "--quiet"]
        build_seconds, _ = timed(build)
        score = ["ganeval", "msssim", str(out / "images"), "--num-pairs", "7", "--quiet"]
        score_seconds, printed = timed(score)
    finally:
        if args.out is None:
            shutil.rmtree(out.parent, ignore_errors=True)
    print(f"celebahq build --src examples/celeba_wild_mini   {build_seconds:7.1f} s")
    print(f"ganeval msssim --num-pairs 7                     {score_seconds:7.1f} s")
    print(f"quick start, both                                {build_seconds + score_seconds:7.1f} s")
    print(printed.strip().splitlines()[0])


if __name__ == "__main__":
    results_record.run_main(TITLE, main)
