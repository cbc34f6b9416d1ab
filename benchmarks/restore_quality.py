"""Restoration networks: quality vs the baselines on held-out photographs, speed, and a side-by-side picture.

    python benchmarks/restore_quality.py --images DIR [DIR ...] [--quality 20] [--json]
        [--picture docs/images/restore_side_by_side.png]

Quality: `celebahq eval-restorer`'s figures (PSNR and SSIM of the shipped networks vs the decoded JPEG at
`--quality` for cleanup, vs bicubic and Lanczos 4× for SR) on every photograph of --images (use photographs the
weights did not see in training: examples/make_restore_training_data.py writes the held-out ones to OUT/val).
Speed: output megapixels per second of tiled inference on a 1024×1024 input (cleanup) and a 256×256 input (SR,
1024×1024 out), on the CPU with torch's default threads and on CUDA when available (float16), best of 3.
Picture: a crop of the photograph named like --picture-from (default astronaut), degraded / baseline / network / original, for cleanup and SR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from celebahq.restore.degrade import SR_SCALE, bicubic_upscale, downscale, jpeg_roundtrip
from celebahq.restore.eval import evaluate
from celebahq.restore.infer import Restorer
from celebahq.restore.train import load_photos
from toolkit_testing.flops import gflops_per_megapixel

SPEED_INPUT = {"cleanup": 1024, "sr": 256}
CROP = 128  # side of each panel of the picture (output pixels)


def speed(restorer: Restorer, repeats: int = 3) -> float:
    """Output megapixels per second (best of `repeats`, after one warm-up run)."""
    side = SPEED_INPUT[restorer.kind]
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    restorer(image[:64, :64])
    best = float("inf")
    for _ in range(repeats):
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = restorer(image)
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return out.shape[0] * out.shape[1] / 1e6 / best


def side_by_side(photo: np.ndarray, restorers: dict[str, Restorer], quality: int,
                 corner: tuple[int, int] | None = None) -> Image.Image:
    """Two rows of CROP² panels, shown at 2×: cleanup at `quality` (input = baseline, ours, original) and SR 4×
    (input, bicubic, ours, original). corner: (top, left) of the crop, multiples of 8 (default: the centre)."""
    height, width = photo.shape[:2]
    top, left = corner or ((height - CROP) // 2 // 8 * 8, (width - CROP) // 2 // 8 * 8)
    clean = photo[top:top + CROP, left:left + CROP]
    jpeg = jpeg_roundtrip(clean, quality)
    small = downscale(clean)
    nearest = np.repeat(np.repeat(small, SR_SCALE, 0), SR_SCALE, 1)
    rows = [("cleanup", [(f"JPEG q{quality} = baseline", jpeg), ("ours", restorers["cleanup"](jpeg)),
                         ("original", clean)]),
            ("sr", [("input (1/4, nearest)", nearest), ("bicubic 4x", bicubic_upscale(small, SR_SCALE)),
                    ("ours 4x", restorers["sr"](small)), ("original", clean)])]
    label = 14
    sheet = Image.new("RGB", (4 * CROP, 2 * (CROP + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (_, panels) in enumerate(rows):
        for col, (name, panel) in enumerate(panels):
            x, y = col * CROP, row * (CROP + label)
            draw.text((x + 2, y + 1), name, fill="black")
            sheet.paste(Image.fromarray(panel), (x, y + label))
    return sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--quality", type=int, default=20)
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--picture-from", default="astronaut", help="the photo whose name contains this")
    parser.add_argument("--picture-crop", default="56,160", help="top,left of its crop (default: the astronaut's face)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    photos = load_photos(args.images, 1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"threads": torch.get_num_threads(), "photographs": sorted(photos)}
    for kind in ("cleanup", "sr"):
        restorer = Restorer(kind, device="cpu")
        figures = evaluate(kind, photos, restorer, args.quality)
        figures.pop("per_image")
        figures["gflop_per_megapixel"] = round(gflops_per_megapixel(restorer.model), 1)
        figures["parameters"] = sum(p.numel() for p in restorer.model.parameters())
        figures["megapixels_per_second"] = {device: round(speed(Restorer(kind, device=device)), 3)
                                            for device in devices}
        results[kind] = figures
    if args.picture:
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        chosen = [name for name in sorted(photos) if args.picture_from in Path(name).stem]
        corner = tuple(int(v) for v in args.picture_crop.split(",")) if chosen else None  # else the centre
        restorers = {kind: Restorer(kind, device="cpu") for kind in ("cleanup", "sr")}
        picture = side_by_side(photos[(chosen or sorted(photos))[0]], restorers, args.quality, corner)
        picture.save(args.picture, optimize=True)
        results["picture"] = str(args.picture)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for kind in ("cleanup", "sr"):
        figures = results[kind]
        print(f"{kind}: {figures['parameters']:,} parameters, {figures['gflop_per_megapixel']} GFLOP/MP, "
              + ", ".join(f"{v} MP/s on {d}" for d, v in figures["megapixels_per_second"].items()))
        for method, values in figures["methods"].items():
            print(f"  {method:8s} PSNR {values['psnr']:.3f} dB  SSIM {values['ssim']:.4f}")
        print("  gain: " + ", ".join(f"{g:+.2f} dB over {m}" for m, g in figures["gain_db"].items()))


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: restoration networks, quality and speed", main)
