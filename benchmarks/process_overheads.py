"""What the build's helper processes cost the main process and the machine (CPU, seconds).

    python benchmarks/process_overheads.py [--code DIR]

1. Memory by process during `python -m celebahq.cli build` of 60 synthetic sources (2 decode workers, 4 writers):
   the peak PSS of the main process, the forked decode workers and the spawned writers. `--code DIR` runs that
   build from another checkout (e.g. a `git worktree` of an older commit), for a before/after comparison.
2. The first PNG from a fresh spawn pool, with a plain ProcessPoolExecutor (children re-import this script, which
   imports the CLI as `python -m celebahq.cli` would) and with `gancore.processes.helper_pool`.
3. How long the main process takes to receive one decoded photo from a DataLoader worker: a plain object holding
   the numpy array (pickled through a pipe) and `build_stages.Prepared` (pixels through shared memory).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from celebahq_scale import ROOT, _pss, make_synthetic_celeba

import celebahq.cli  # noqa: F401 - what a `python -m celebahq.cli` main module has imported
from celebahq.build_stages import Prepared
from celebahq.png_writers import encode_and_write
from gancore.processes import die_with_parent, helper_pool
from toolkit_testing.process_tree import descendants


def memory_by_role(code: Path) -> dict[str, list[float]]:
    """Peak PSS (MiB) of each process of a small CLI build run from checkout `code`, by role."""
    with tempfile.TemporaryDirectory(prefix="process_overheads_") as work:
        src = make_synthetic_celeba(Path(work) / "celeba", 60)
        command = [sys.executable, "-m", "celebahq.cli", "build", "--src", str(src), "--out", str(Path(work) / "out"),
                   "--resolution", "256", "--num-images", "30", "--workers", "2", "--writers", "4", "--quiet",
                   "--device", "cpu"]
        process = subprocess.Popen(command, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(code)))
        peaks: dict[int, tuple[str, int]] = {}
        while process.poll() is None:
            for pid in descendants(process.pid) | {process.pid}:
                try:
                    command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                role = ("main" if pid == process.pid else "spawned (writers, resource tracker)"
                        if b"multiprocessing" in command_line else "forked (decode workers)")
                peaks[pid] = (role, max(peaks.get(pid, (role, 0))[1], _pss(pid)))
            time.sleep(0.2)
    roles: dict[str, list[float]] = {}
    for role, peak in peaks.values():
        roles.setdefault(role, []).append(round(peak / 2**20, 1))
    return roles


def first_png_seconds(pool: ProcessPoolExecutor) -> float:
    started = time.perf_counter()
    with pool:
        pool.submit(encode_and_write, np.zeros((1024, 1024, 3), np.uint8), None, False).result()
    return time.perf_counter() - started


class _Plain:
    """A worker result without Prepared's pickling: the numpy array goes through the pipe."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels


class _Photos(torch.utils.data.Dataset):
    def __init__(self, prepared: bool, side: int):
        self.prepared, self.side = prepared, side

    def __len__(self) -> int:
        return 300

    def __getitem__(self, index: int):
        pixels = np.full((self.side, self.side * 4 // 3, 3), index % 255, np.uint8)
        return Prepared(str(index), pixels, None, None, {}, 0.0) if self.prepared else _Plain(pixels)


def _as_is(item):
    return item


def receive_ms(prepared: bool, side: int) -> float:
    """Median milliseconds for the main process to take one queued item from 2 workers."""
    loader = torch.utils.data.DataLoader(_Photos(prepared, side), batch_size=None, collate_fn=_as_is, num_workers=2,
                                         prefetch_factor=4)
    items = iter(loader)
    next(items)
    time.sleep(1.0)  # the workers fill the queue: what follows is the receive cost only
    waits = []
    for _ in range(8):
        started = time.perf_counter()
        next(items)
        waits.append(time.perf_counter() - started)
    del items
    return float(np.median(waits)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose CLI the measured build runs")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    for role, peaks in memory_by_role(args.code.resolve()).items():
        print(f"build, peak PSS (MiB), {role}: {sorted(peaks, reverse=True)}")
    plain = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
    print(f"first PNG of a fresh pool: plain spawn pool {first_png_seconds(plain):.2f} s, "
          f"helper_pool {first_png_seconds(helper_pool(1)):.2f} s")
    for side in (500, 1500):
        plain_ms, prepared_ms = receive_ms(False, side), receive_ms(True, side)
        print(f"receive one {side}×{side * 4 // 3} photo from a worker: numpy object {plain_ms:.2f} ms, "
              f"Prepared {prepared_ms:.2f} ms")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: helper process overheads", main)
