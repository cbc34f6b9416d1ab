"""celebahq build speed: images/s per stage and end to end, the PIL reference vs the torch path, peak RSS.

    python benchmarks/celebahq_speed.py [--resolution 1024] [--repeat 2] [--json]

Builds the bundled example (examples/celeba_wild_mini, 15 photos from 120×150 to 1500×1400) with
`--backend pil` (the baseline, measured in the same run) and `--backend torch` (CUDA when available), each
into a fresh folder, and prints the per-stage seconds from the build report, images/s, the ratio, the peak
resident memory of this process, and the projected time for CelebA's 202,599 photos at the torch rate
(an extrapolation from 15 varied photos: state it as such).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from celebahq.pipeline import BuildOptions, build

ROOT = Path(__file__).resolve().parent.parent

CELEBA_PHOTOS = 202_599


def run(backend: str, resolution: int, repeat: int, device: str | None) -> dict:
    photos = 0
    stages: dict[str, float] = {}
    started = time.perf_counter()
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            report = build(ROOT / "examples" / "celeba_wild_mini", out,
                           BuildOptions(resolution=resolution, backend=backend, device=device, progress=False))
        photos += report.ok
        for stage, seconds in report.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    elapsed = time.perf_counter() - started
    return {"backend": backend, "photos": photos, "seconds": round(elapsed, 3),
            "images_per_s": photos / elapsed, "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
            "render_images_per_s": photos / stages["render"] if stages.get("render") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1, help="builds per backend (15 photos each)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-pil", action="store_true", help="skip the slow PIL baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results = {"resolution": args.resolution, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if not args.skip_pil:
        results["pil"] = run("pil", args.resolution, args.repeat, args.device)
    results["fast"] = run("torch", args.resolution, args.repeat, args.device)
    if "pil" in results:
        results["speedup_end_to_end"] = results["fast"]["images_per_s"] / results["pil"]["images_per_s"]
        results["speedup_render"] = results["fast"]["render_images_per_s"] / results["pil"]["render_images_per_s"]
    results["projected_hours_for_celeba"] = CELEBA_PHOTOS / results["fast"]["images_per_s"] / 3600
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"celebahq build at {args.resolution}², torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"GPU {results['gpu']}")
    for key in ("pil", "fast"):
        if key in results:
            entry = results[key]
            print(f"  {entry['backend']:<6} {entry['photos']} photos in {entry['seconds']:.1f} s: "
                  f"{entry['images_per_s']:.2f} img/s end to end, stages {entry['stage_seconds']}")
    for key in ("speedup_end_to_end", "speedup_render"):
        if key in results:
            print(f"  {key}: {results[key]:.1f}x")
    print(f"  projected for {CELEBA_PHOTOS} photos at this rate: {results['projected_hours_for_celeba']:.1f} h "
          f"(extrapolated from the 15 bundled photos); peak RSS {results['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
