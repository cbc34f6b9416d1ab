"""celebahq build at scale on this machine: a synthetic CelebA of many sources -> the best N, two passes.

    python benchmarks/celebahq_scale.py [--sources 5000] [--keep 1000] [--resolution 128] [--kills 3] [--json]

Makes a CelebA-layout folder (img_celeba/*.jpg + Anno/list_landmarks_celeba.txt) of `--sources` photos from the
15 bundled ones (examples/celeba_wild_mini): each a random similarity transform of one of them (rotation ±25°,
scale 0.3–3× log-uniform, canvas ≤ 2048 px), saved at a random JPEG quality 30–95, its landmarks transformed
with it; 3% get no landmark row (skipped by the build). Then:

1. a clean `celebahq build --num-images KEEP` in a child process: sources/s of each pass (from report.json),
   peak RSS of the whole process tree (sampled every 0.2 s from /proc), bytes written;
2. the same build killed with SIGKILL at `--kills` random moments, each followed by a rerun, then run to the end:
   the selected images must be byte-identical to the clean run's, no temporary left, no helper process alive;
3. the extrapolation to CelebA (202,599 sources -> 30,000) from the measured per-source stage costs: worker time
   (decode, landmarks, plan, shrink + crop), main-process time (render, score, md5) and writer time (PNG),
   at this resolution and scaled to 1024² (render and write ∝ R²; a rough scaling, stated as such).

Timings on a shared machine are noisy: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from celebahq.landmarks import read_celeba_landmarks, write_celeba_landmarks
from toolkit_testing.builds import selected_images
from toolkit_testing.process_tree import descendants

ROOT = Path(__file__).resolve().parent.parent

MINI = ROOT / "examples" / "celeba_wild_mini"
CELEBA_SOURCES, CELEBA_KEEP = 202_599, 30_000


def make_synthetic_celeba(folder: Path, count: int, seed: int = 0, no_landmarks: float = 0.03) -> Path:
    """A CelebA-layout folder of `count` transformed copies of the bundled photos (see the module docstring)."""
    rng = random.Random(seed)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    photos = {name: cv2.imread(str(MINI / "img_celeba" / name)) for name in sorted(table)}
    (folder / "img_celeba").mkdir(parents=True, exist_ok=True)
    rows = {}
    for index in range(count):
        name = rng.choice(sorted(photos))
        image, points = photos[name], table[name]
        scale = math.exp(rng.uniform(math.log(0.3), math.log(3.0)))
        height, width = image.shape[:2]
        scale = min(scale, 2048 / max(height, width))
        out_w, out_h = max(int(width * scale), 16), max(int(height * scale), 16)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-25, 25), scale)
        matrix[:, 2] += (out_w / 2 - width / 2, out_h / 2 - height / 2)
        warped = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        file = f"{index + 1:06d}.jpg"
        cv2.imwrite(str(folder / "img_celeba" / file), warped, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(30, 95)])
        if rng.random() >= no_landmarks:
            rows[file] = np.concatenate([points, np.ones((5, 1))], axis=1) @ matrix.T
    write_celeba_landmarks(folder / "Anno" / "list_landmarks_celeba.txt", rows)
    return folder


class TreeMemory:
    """Peak memory (bytes) of a process and all its descendants, sampled from /proc every 0.2 s: `peak` sums their
    RSS (pages shared between processes, e.g. the torch libraries of forked workers, count once per process) and
    `peak_pss` their PSS (each shared page split between its sharers: what the tree takes from the machine)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.peak_pss, self._stop = pid, 0, 0, threading.Event()
        self.peak_pss_split: list[int] = []  # each process's PSS at the PSS peak, largest first
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            pids = {self.pid} | descendants(self.pid)
            self.peak = max(self.peak, sum(_rss(pid) for pid in pids))
            split = sorted((_pss(pid) for pid in pids), reverse=True)
            if sum(split) > self.peak_pss:
                self.peak_pss, self.peak_pss_split = sum(split), split

    def stop(self) -> int:
        """Stop sampling; returns the peak RSS sum."""
        self._stop.set()
        self._thread.join()
        return self.peak


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size (bytes) from /proc/PID/smaps_rollup; 0 where the kernel has none."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def build_command(src: Path, out: Path, args) -> list[str]:
    return [sys.executable, "-m", "celebahq.cli", "build", "--src", str(src), "--out", str(out), "--resolution",
            str(args.resolution), "--num-images", str(args.keep), "--device", args.device, "--batch-size",
            str(args.batch_size), "--quiet", "--json", *(["--workers", str(args.workers)] if args.workers else []),
            *(["--writers", str(args.writers)] if args.writers else [])]


@dataclass
class CleanRun:
    wall_seconds: float
    peak_rss_bytes: int
    bytes_written: int
    report: dict = field(default_factory=dict)


def clean_run(src: Path, out: Path, args) -> CleanRun:
    started = time.perf_counter()
    process = subprocess.Popen(build_command(src, out, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    memory = TreeMemory(process.pid)
    stdout, stderr = process.communicate()
    peak = memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"build failed: {stderr}")
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return CleanRun(time.perf_counter() - started, peak, written, json.loads(stdout))


def killed_runs(src: Path, out: Path, args, clean_seconds: float, rng: random.Random) -> list[float]:
    """SIGKILL the build at `args.kills` random moments (each run resumes the last), then finish it."""
    moments = []
    for _ in range(args.kills):
        moment = rng.uniform(0.1, 0.9) * clean_seconds / 2  # the resumed runs have less left to do
        process = subprocess.Popen(build_command(src, out, args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=ROOT)
        helpers: set[int] = set()
        deadline = time.perf_counter() + moment
        while process.poll() is None and time.perf_counter() < deadline:
            helpers |= descendants(process.pid)
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(5)
        left = [pid for pid in helpers if _rss(pid) > 0]
        if left:
            raise SystemExit(f"helpers alive 5 s after the build was killed: {left}")
        moments.append(round(moment, 1))
    finished = subprocess.run(build_command(src, out, args), check=False, capture_output=True, text=True,
                              cwd=ROOT)
    if finished.returncode != 0:
        raise SystemExit(f"resumed build failed: {finished.stderr}")
    return moments


def extrapolate(report: dict, resolution: int, workers: int) -> dict:
    """Hours for CelebA from the per-source stage costs of this run (at this resolution, and scaled to 1024²)."""
    score, write = report["passes"]
    per = {
        "prepare (worker s/source)": score["stage_seconds"]["prepare"] / max(score["sources"], 1),
        "render+score (main s/source)": score["stage_seconds"]["render"] / max(score["rendered"], 1),
        "write (writer s/image)": write["stage_seconds"]["write"] / max(write["written"], 1),
    }
    area = (1024 / resolution) ** 2
    projection = {}
    for label, scale in ((f"{resolution}²", 1.0), ("1024² (render, write ∝ R²)", area)):
        prepare = per["prepare (worker s/source)"] / max(workers, 1)
        render = per["render+score (main s/source)"] * scale
        write_cost = per["write (writer s/image)"] * scale / max(workers, 1)
        score_pass = CELEBA_SOURCES * max(prepare, render)  # workers and the main process overlap
        write_pass = CELEBA_KEEP * max(prepare, render, write_cost)
        bound = max((("prepare", prepare), ("render", render)), key=lambda item: item[1])[0]
        projection[label] = {"score pass h": round(score_pass / 3600, 2), "write pass h": round(write_pass / 3600, 2),
                             "total h": round((score_pass + write_pass) / 3600, 2), "bound by": bound}
    return {"per_source": {k: round(v, 5) for k, v in per.items()}, "projection": projection}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--keep", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--writers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-folder", type=Path, default=None, help="Work here and keep it (default: a temp).")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    work = args.keep_folder or Path(tempfile.mkdtemp(prefix="celebahq_scale_"))
    try:
        started = time.perf_counter()
        src = make_synthetic_celeba(work / "celeba", args.sources, args.seed)
        made = time.perf_counter() - started
        clean = clean_run(src, work / "clean", args)
        moments = killed_runs(src, work / "killed", args, clean.wall_seconds, random.Random(args.seed))
        a, b = selected_images(work / "clean"), selected_images(work / "killed")
        identical = [p.name for p in a] == [p.name for p in b] and all(
            x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
        partials = list((work / "killed").rglob("*.partial"))
        workers = args.workers or min(4, os.cpu_count() or 1)
        result = {"sources": args.sources, "keep": args.keep, "resolution": args.resolution,
                  "synthetic_folder_seconds": round(made, 1), "clean": asdict(clean) | {"report": None},
                  "passes": [{"name": p["name"], "sources": p["sources"], "sources_per_second":
                              p["sources_per_second"], "wall_seconds": round(p["wall_seconds"], 1)}
                             for p in clean.report["passes"]],
                  "skipped": len(clean.report["skipped"]), "written": clean.report["ok"],
                  "kill_moments_s": moments, "killed_then_resumed_identical": identical,
                  "partials_left": len(partials), "cpus": os.cpu_count(),
                  "extrapolation": extrapolate(clean.report, args.resolution, workers)}
    finally:
        if args.keep_folder is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.sources} sources -> best {args.keep} at {args.resolution}² ({os.cpu_count()} CPUs, "
          f"{workers} workers)")
    for p in result["passes"]:
        print(f"  {p['name']} pass: {p['sources']} sources, {p['sources_per_second']:.2f} sources/s "
              f"({p['wall_seconds']} s)")
    print(f"  wall {clean.wall_seconds:.1f} s, peak RSS (process tree) {clean.peak_rss_bytes / 2**30:.2f} GiB, "
          f"{clean.bytes_written / 2**20:.1f} MiB written, {result['skipped']} skipped")
    print(f"  SIGKILL at {moments} s + reruns: identical outputs {identical}, temporaries left {len(partials)}")
    print("  per-source costs:", result["extrapolation"]["per_source"])
    for label, figures in result["extrapolation"]["projection"].items():
        print(f"  CelebA {CELEBA_SOURCES} -> {CELEBA_KEEP} at {label}: {figures}")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: build at scale on a CPU", main)
