"""`celebahq official` time and disk on this machine, scaled down and extrapolated to the 30,000 rows.

A synthetic 1024² release in the official format (tests/celebahq/test_official.py's `make_release`: image_list.txt,
PBKDF2/Fernet/bz2 deltas of the bundled photos) of `--rows` rows, then `celebahq official --workers W` on it in a
child process (wall time, peak RSS of the process tree, PNG bytes), then the legacy render alone in this process
(seconds per photo). The extrapolation: 30,000 rows × the measured core-seconds per row, over 2 and 16 cores.

    python benchmarks/official_speed.py [--rows 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from celebahq_scale import TreeMemory

from celebahq.landmarks import read_celeba_landmarks
from celebahq.legacy_pillow import render_legacy
from gancore.sources import decode_image
from toolkit_testing.official_release import EXAMPLE, SOURCES, make_release

OFFICIAL_ROWS = 30_000


def time_build(deltas: Path, out: Path, workers: int) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree) of `celebahq official` on the release."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "celebahq.cli", "official", "--src", str(EXAMPLE), "--deltas",
                                str(deltas), "--out", str(out), "--workers", str(workers), "--quiet"])
    memory = TreeMemory(process.pid)
    if process.wait() != 0:
        raise SystemExit(f"celebahq official failed (exit {process.returncode})")
    return time.perf_counter() - started, memory.stop()


def time_render(names: list[str]) -> float:
    """Seconds per photo of the legacy (Pillow 3.1.1) pre-delta render at 1024², one process."""
    table = read_celeba_landmarks(EXAMPLE / "Anno" / "list_landmarks_celeba.txt")
    images = [decode_image(EXAMPLE / "img_celeba" / name) for name in names]
    started = time.perf_counter()
    for name, image in zip(names, images):
        render_legacy(image, table[name], 1024)
    return (time.perf_counter() - started) / len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=len(SOURCES), help="rows of the synthetic release")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    names = [SOURCES[i % len(SOURCES)] for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as work:
        deltas, out = Path(work) / "deltas", Path(work) / "out"
        make_release(deltas, names, resolution=1024)
        wall, peak = time_build(deltas, out, args.workers)
        png_bytes = sum(path.stat().st_size for path in (out / "images").glob("*.png"))
    per_photo = time_render(sorted(set(names)))
    core_seconds = wall * args.workers / args.rows  # an upper bound: includes the workers' start-up
    print(f"celebahq official, {args.rows} rows at 1024², {args.workers} workers: {wall:.1f} s wall, peak RSS "
          f"{peak / 2 ** 20:.0f} MiB, {png_bytes / args.rows / 1e6:.2f} MB per PNG")
    print(f"legacy render alone: {per_photo:.2f} s per photo (one process)")
    for cores in (2, 16):
        print(f"30,000 rows on {cores} cores: {OFFICIAL_ROWS * core_seconds / cores / 3600:.1f} h "
              f"({core_seconds:.1f} core-s per row, start-up included)")


if __name__ == "__main__":
    main()
