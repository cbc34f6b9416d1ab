"""Ctrl-C at random moments of `celebahq build`: how often does the terminal get anything but one line?

    python benchmarks/ctrl_c_stress.py [--trials 40] [--code DIR]

Each trial builds the bundled example (15 sources, 64², batch 1, 2 decode workers, 1 writer) in a fresh folder as
its own process group, waits for the first manifest record, sleeps a random 0–0.15 s and sends SIGINT to the whole
group (what a terminal does). Counted: runs that printed exactly `interrupted` (exit 1); runs that ended by the
signal during interpreter shutdown, after their work, without output; runs that finished first; anything else,
printed in full (a traceback from a helper, say). `--code DIR` runs the CLI of another checkout (e.g. a `git
worktree` of an older commit) for a before/after comparison. A rare race needs many trials: quote counts, not a
verdict.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "examples" / "celeba_wild_mini"


def one_trial(code: Path, rng: random.Random) -> tuple[str, str]:
    """(outcome, stderr) of one interrupted build."""
    work = Path(tempfile.mkdtemp(prefix="ctrl_c_"))
    out = work / "out"
    command = [sys.executable, "-m", "celebahq.cli", "build", "--src", str(MINI), "--out", str(out), "--resolution",
               "64", "--limit", "15", "--batch-size", "1", "--workers", "2", "--writers", "1", "--quiet"]
    try:
        process = subprocess.Popen(command, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, env=dict(os.environ, PYTHONPATH=str(code)))
        manifest = out / "manifest.jsonl"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and not (
                manifest.is_file() and manifest.read_text().count("\n") >= 1):
            time.sleep(0.01)
        time.sleep(rng.random() * 0.15)
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        _, stderr = process.communicate(timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = stderr.strip().splitlines()
    if lines == ["interrupted"] and process.returncode == 1:
        return "one line", stderr
    if not lines and process.returncode == -signal.SIGINT:
        return "ended by the signal in shutdown, silent", stderr
    if not lines and process.returncode == 0:
        return "finished first", stderr
    return "other", stderr


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose CLI runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    for trial in range(args.trials):
        outcome, stderr = one_trial(args.code.resolve(), rng)
        counts[outcome] += 1
        if outcome == "other":
            print(f"trial {trial}:\n{stderr}", flush=True)
    print(f"{args.trials} trials ({args.code}): " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: Ctrl-C at random moments", main)
