"""Launch a small two-rank `ganeval msssim` under torchrun (gloo, the CPU) many times, several launches at once so
the cores are contended, and count the runs that fail and those whose rank died of SIGABRT at exit ("terminate
called without an active exception": a process group left to interpreter finalization).

    python benchmarks/torchrun_exit_stress.py [--runs 25] [--parallel 3] [--record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import results_record

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["-m", "ganeval.cli", "msssim", str(ROOT / "examples" / "real"), "--num-pairs", "20", "--batch-size", "6",
           "--json", "--quiet", "--device", "cpu"]


def launch() -> tuple[int, bool]:
    """(exit status, whether a rank aborted at exit) of one two-rank run."""
    finished = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                               *COMMAND], capture_output=True, text=True, timeout=300, check=False,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    return finished.returncode, "terminate called without an active exception" in finished.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=25, help="Launches per parallel loop.")
    parser.add_argument("--parallel", type=int, default=3, help="Loops running at once.")
    parser.add_argument("--record", action="store_true", help=results_record.RECORD_HELP)
    args = parser.parse_args()
    total = args.runs * args.parallel
    with ThreadPoolExecutor(args.parallel) as pool:
        outcomes = list(pool.map(lambda _: launch(), range(total)))
    failed = sum(status != 0 for status, _ in outcomes)
    aborted = sum(abort for _, abort in outcomes)
    print(f"{total} two-rank runs of `ganeval msssim` (gloo), {args.parallel} at once: {failed} failed, "
          f"{aborted} with a rank aborted at exit")


if __name__ == "__main__":
    results_record.run_main("gancore: torchrun ranks at exit", main)
