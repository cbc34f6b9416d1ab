"""End to end on the bundled example: `celebahq build` → `celebahq export --h5` → `progan train --config tiny`
→ `ganeval all` on the last checkpoint against the built images; one report.

    python benchmarks/e2e_mini.py [--out out/e2e] [--resolution 16] [--kimg 8] [--json]

Every stage runs its real command line in a subprocess (what a user types), timed. FID is added when the
Inception weights are on disk (ganeval's discovery; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(stage: str, arguments: list[str], report: dict) -> str:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", *arguments], check=False, cwd=ROOT, capture_output=True, text=True)
    report["stages"][stage] = {"command": " ".join(arguments), "seconds": round(time.perf_counter() - started, 1)}
    if completed.returncode != 0:
        sys.exit(f"{stage} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed.stdout


def inception_available() -> bool:
    from gancore.errors import UserError
    from ganeval.inception import find_inception_weights

    try:
        find_inception_weights(download=False)
    except UserError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/e2e", help="Working folder (replaced).")
    parser.add_argument("--resolution", type=int, default=16, help="Build and training resolution.")
    parser.add_argument("--kimg", type=float, default=8.0, help="Training length.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    build, h5, run_dir = out / "build", out / "celebahq.h5", out / "run"
    report = {"stages": {}}
    run("build", ["celebahq.cli", "build", "--src", "examples/celeba_wild_mini", "--out", str(build),
                  "--resolution", str(args.resolution), "--quiet"], report)
    run("export", ["celebahq.cli", "export", str(build), "--h5", str(h5), "--quiet"], report)
    run("train", ["progan.cli", "train", "--config", "tiny", "--data", str(h5), "--out", str(run_dir),
                  "--kimg", str(args.kimg), "--set", f"resolution={args.resolution}"], report)
    checkpoint = max(run_dir.glob("network-snapshot-*.pt"))
    num_images = len(list((build / "images").glob("*.png")))
    metrics = "swd,msssim" + (",fid" if inception_available() else "")
    scores = json.loads(run("evaluate", ["ganeval.cli", "all", str(checkpoint), str(build / "images"), "--metrics",
                                         metrics, "--swd-images", str(num_images), "--msssim-pairs",
                                         str(num_images // 2), "--fid-images", str(num_images),
                                         "--allow-singular", "--json", "--quiet"], report))
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    report.update(images=num_images, checkpoint=str(checkpoint.relative_to(out)), scores=scores,
                  training={"kimg": stats[-1]["kimg"], "loss_D": stats[-1]["loss_D"], "loss_G": stats[-1]["loss_G"],
                            "images_per_second": round(sum(s["images_per_second"] for s in stats) / len(stats), 1),
                            "swd_in_loop": [s["metrics"]["swd"]["avg"] for s in stats
                                            if "swd" in s.get("metrics", {})]})
    if args.json:
        print(json.dumps(report))
        return
    for stage, entry in report["stages"].items():
        print(f"{stage:<9} {entry['seconds']:>7.1f} s   {entry['command']}")
    print(f"trained {stats[-1]['kimg']:.1f} kimg on {num_images} faces at {args.resolution}x{args.resolution}, "
          f"{report['training']['images_per_second']} img/s; in-loop SWD {report['training']['swd_in_loop']}")
    print(f"ganeval all: {json.dumps(scores['metrics'])}")


if __name__ == "__main__":
    import results_record

    results_record.run_main("toolkit: end to end on the bundled example", main)
