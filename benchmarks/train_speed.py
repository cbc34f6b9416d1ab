"""Training throughput (images/s) and peak memory per working resolution, fp32 vs bf16 autocast.

    python benchmarks/train_speed.py                                  # GPU when present: celebahq-1024, all resolutions
    python benchmarks/train_speed.py --config tiny --device cpu       # the CPU figures in docs/progan.md
    python benchmarks/train_speed.py --config celebahq-1024 --resolutions 4,128,1024 --steps 20 --json

Each point times `--steps` D+G steps (after `--warmup` steps) of the real training step functions with the
config's minibatch at that resolution (stable, not fading), random reals and fresh latents. Images/s counts
real images shown to D, as the paper's kimg.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import time

import torch

from gancore.runtime import resolve_device
from progan.configs import resolve_config
from progan.loss import make_loss
from progan.networks import build_networks
from progan.schedule import training_phase
from progan.training_loop import discriminator_step, generator_step, make_optimizers, update_ema


def measure(config, resolution: int, device: torch.device, bf16: bool, steps: int, warmup: int,
            max_seconds: float = math.inf, minibatch: int | None = None) -> dict:
    """Time up to `steps` D+G steps (at least one; fewer once `max_seconds` of timed steps are spent) after
    `warmup` steps, at `resolution` with the config's minibatch there (or `minibatch`)."""
    log2r = int(math.log2(config.resolution))
    lod = float(log2r - int(math.log2(resolution)))
    kimg = next(k for k in (x * 10.0 for x in range(10 ** 6)) if training_phase(config, k).lod <= lod)
    phase = training_phase(config, kimg)
    torch.manual_seed(0)
    G, D = (network.to(device) for network in build_networks(config, channels_last=device.type == "cuda"))
    G_ema = copy.deepcopy(G).requires_grad_(False)
    G_opt, D_opt = make_optimizers(G, D, config)
    loss = make_loss(config)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    batch = minibatch or phase.minibatch
    reals = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the reserved peak is this point's
        torch.cuda.reset_peak_memory_stats(device)

    last = {}

    def step():
        z = torch.randn(batch, config.latent_size, device=device)
        _, stats, applied = discriminator_step(G, D, D_opt, loss, reals, z, torch.rand(batch, 1, 1, 1, device=device),
                                               lod, autocast)
        last.update(gradient_penalty=float(stats["gradient_penalty"].detach()), D_applied=applied)
        update_ema(G_ema, G, config.G_ema_beta)
        generator_step(G, D, G_opt, loss, torch.randn(batch, config.latent_size, device=device), lod, autocast)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    done = 0
    while done < max(steps, 1) and (done == 0 or time.perf_counter() - started < max_seconds):
        step()
        done += 1
        if device.type == "cuda" and max_seconds < math.inf:
            torch.cuda.synchronize(device)  # the time check sees finished steps
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    steps = done
    result = {"resolution": resolution, "minibatch": batch, "precision": "bf16" if bf16 else "fp32",
              "images_per_second": round(steps * batch / seconds, 1),
              "sec_per_kimg": round(seconds / (steps * batch) * 1000, 2),
              "cpu_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "gradient_penalty": last["gradient_penalty"], "gradients_finite": last["D_applied"]}
    if device.type == "cuda":
        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
        result["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2 ** 20)
    result["steps"] = steps
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="Preset [celebahq-1024 on a GPU, tiny on a CPU].")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolutions", default=None, help="Comma-separated [every one of the config].")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 or both.")
    parser.add_argument("--tf32", action="store_true", help="Allow TF32 in fp32 runs (the trainer's default).")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    device = resolve_device(args.device)
    config = resolve_config(args.config or ("celebahq-1024" if device.type == "cuda" else "tiny"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resolutions = ([int(r) for r in args.resolutions.split(",")] if args.resolutions
                   else [2 ** k for k in range(2, int(math.log2(config.resolution)) + 1)])
    rows = []
    for resolution in resolutions:
        for precision in args.precision.split(","):
            row = measure(config, resolution, device, precision == "bf16", args.steps, args.warmup)
            rows.append(row)
            if not args.json:
                print(f"{resolution:>5}  {row['precision']}  minibatch {row['minibatch']:>3}  "
                      f"{row['images_per_second']:>9.1f} img/s  {row['sec_per_kimg']:>8.2f} s/kimg  "
                      + (f"GPU peak {row['gpu_peak_mb']} MB" if "gpu_peak_mb" in row
                         else f"RSS {row['cpu_max_rss_mb']} MB"), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    if args.json:
        print(json.dumps({"config": args.config, "device": name, "torch": torch.__version__, "rows": rows}))
    else:
        print(f"device: {name}, torch {torch.__version__}, TF32 {'on' if args.tf32 else 'off'}")


if __name__ == "__main__":
    import results_record

    results_record.run_main("progan: training step speed, CPU", main)
