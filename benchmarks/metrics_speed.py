"""MS-SSIM, FID feature extraction and the FID trace: ganeval's speed against slow references, same run.

    python benchmarks/metrics_speed.py                          # CPU: the three comparisons below (+ GPU if any)
    python benchmarks/metrics_speed.py --msssim-resolutions 128,256 --json
    python benchmarks/metrics_speed.py --cuda-only              # GPU figures only
    python benchmarks/metrics_speed.py --skip-reference         # no SciPy baselines (they are the slow part)
    python benchmarks/metrics_speed.py --pairs 8 --repeat 1 --fid-images 4 --fid-samples 600 --fid-dim 256  # smoke

1. MS-SSIM: `ganeval.msssim.ms_ssim` (float64, chunked like `msssim_diversity`) against the NumPy/SciPy FFT
   reference of the test suite (`ref_msssim` in toolkit_testing.msssim_reference, imported, not copied) on the same
   pairs of the bundled 128×128 photographs (examples/real; `--msssim-resolutions 128,256` adds a LANCZOS resize
   to 256²). Seconds, pairs/s, the ratio and the max |ours − reference|; the same without the compiled kernel
   (`native=False`: the PyTorch/OpenCV path used where no C compiler is found) and with `dtype=torch.float32`.
2. FID features: images/s of `InceptionFeatureExtractor.features` (uint8 in, TF1 bilinear resize to 299
   included) at 128² and 1024², with a randomly initialised `FIDInceptionV3` (or `--inception PATH`).
3. FID trace at D = 2048: `ganeval.fid.frechet_distance` ("symmetric", the default, and "eigvals") against the
   pytorch-fid formula with `scipy.linalg.sqrtm`, on covariances of 5000 correlated random features (float64).
4. On CUDA: MS-SSIM pairs/s at 128², 256², 1024² (1000 pairs from random crops/resizes of the photographs,
   uint8 pool resident on the GPU, so decode and host transfer are excluded), the GPU features of 2 (64-image
   batches, host uint8 batches, warm-up excluded) and the default FID method on the GPU, each with the peak
   `torch.cuda.max_memory_allocated`.

Seconds are wall clock (torch.cuda.synchronize() around GPU timings); ratios compare runs of this invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch
from PIL import Image

from gancore.native import build_and_load
from gancore.runtime import CACHE_ENV_VAR
from ganeval import native
from ganeval.fid import frechet_distance
from ganeval.inception import FIDInceptionV3, InceptionFeatureExtractor, load_inception
from ganeval.msssim import default_batch_size, ms_ssim
from toolkit_testing.msssim_reference import ref_msssim

ROOT = Path(__file__).resolve().parent.parent

REFERENCE_CHUNK = 32  # pairs per ref_msssim call (bounds the FFT memory; the per-pair cost does not change)


# --------------------------------------------------------------------------------------------------------------
# Inputs


def load_photos() -> np.ndarray:
    """The bundled real photographs, uint8 NHWC 128×128."""
    files = sorted((ROOT / "examples" / "real").glob("*.png"))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def photo_pairs(photos: np.ndarray, num_pairs: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC (first, second): pairs of two different photographs, LANCZOS-resized unless already at size."""
    rng = np.random.default_rng(seed)
    first = rng.integers(len(photos), size=num_pairs)
    second = (first + rng.integers(1, len(photos), size=num_pairs)) % len(photos)
    if resolution != photos.shape[1]:
        photos = np.stack([np.asarray(Image.fromarray(p).resize((resolution, resolution), Image.LANCZOS))
                           for p in photos])
    return photos[first], photos[second]


def augmented(photos: np.ndarray, count: int, resolution: int, seed: int) -> np.ndarray:
    """uint8 NCHW: random crops (64-128 px) and flips of the photographs, bilinear-resized to `resolution`."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, resolution, resolution), np.uint8)
    side_max = photos.shape[1]
    for index in range(count):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(side_max // 2, side_max + 1))
        top, left = rng.integers(0, side_max + 1 - side, size=2)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((resolution, resolution),
                                                                                Image.BILINEAR)
        array = np.asarray(crop)
        out[index] = (array[:, ::-1] if rng.random() < 0.5 else array).transpose(2, 0, 1)
    return out


def nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


def correlated_statistics(samples: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) float64 of `samples` features: white noise plus a rank-64 correlated part."""
    generator = torch.Generator().manual_seed(seed)
    rank = min(64, dim)
    mixing = torch.randn(rank, dim, generator=generator) * 0.5
    scales = 0.5 + torch.rand(dim, generator=generator)
    features = (torch.randn(samples, dim, generator=generator) * scales
                + torch.randn(samples, rank, generator=generator) @ mixing
                + torch.randn(dim, generator=generator) * 0.1)
    mu = features.double().mean(0)
    centered = features - mu.float()
    sigma = (centered.T @ centered).double() / (samples - 1)  # float32 product, float64 from here
    return mu.numpy(), ((sigma + sigma.T) / 2).numpy()


# --------------------------------------------------------------------------------------------------------------
# Timing helpers


def timed(function, cuda: bool = False):
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = function()
    if cuda:
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def timed_median(function, repeat: int):
    """(value of the last run, median seconds over `repeat` runs): one-off hiccups of a shared machine removed."""
    runs = [timed(function) for _ in range(max(1, repeat))]
    return runs[-1][0], float(np.median([seconds for _, seconds in runs]))


def peak_memory_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


def chunked_ms_ssim(a: torch.Tensor, b: torch.Tensor, pairs_per_chunk: int,
                    dtype: torch.dtype = torch.float64, use_native: bool = True) -> torch.Tensor:
    return torch.cat([ms_ssim(a[start:start + pairs_per_chunk], b[start:start + pairs_per_chunk], dtype=dtype,
                              native=use_native)
                      for start in range(0, len(a), pairs_per_chunk)])


def reference_ms_ssim(first_nhwc: np.ndarray, second_nhwc: np.ndarray) -> np.ndarray:
    return np.concatenate([ref_msssim(first_nhwc[start:start + REFERENCE_CHUNK],
                                      second_nhwc[start:start + REFERENCE_CHUNK])
                           for start in range(0, len(first_nhwc), REFERENCE_CHUNK)])


def scipy_fid(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of Σ₁Σ₂, eps offset if singular)."""
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    difference = mu1 - mu2
    return float(difference.dot(difference) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------------------------------------------
# The three benchmarks


def bench_msssim_cpu(photos: np.ndarray, args) -> dict:
    results = {}
    for resolution in args.msssim_resolutions:
        first, second = photo_pairs(photos, args.pairs, resolution, seed=resolution)
        a, b = nchw(first), nchw(second)
        chunk = args.msssim_chunk or default_batch_size(resolution, resolution, torch.device("cpu")) // 2
        chunked_ms_ssim(a[:2], b[:2], 2)  # warm-up (first-call allocations)
        ours, ours_s = timed_median(lambda a=a, b=b, chunk=chunk: chunked_ms_ssim(a, b, chunk), args.repeat)
        entry = {"pairs": args.pairs, "pairs_per_chunk": chunk, "ours_seconds": ours_s,
                 "ours_pairs_per_s": args.pairs / ours_s, "ours_mean": float(ours.mean())}
        entry["kernel"] = native.status("msssim")
        # Without the compiled kernel (the PyTorch/OpenCV path it falls back to), and float32 (not the default,
        # which never uses the kernel): speed and distance from the default result, same pairs
        fallback, fallback_s = timed_median(
            lambda a=a, b=b, chunk=chunk: chunked_ms_ssim(a, b, chunk, use_native=False), args.repeat)
        entry.update(fallback_seconds=fallback_s, fallback_max_abs_diff=float((fallback - ours).abs().max()))
        single, single_s = timed_median(
            lambda a=a, b=b, chunk=chunk: chunked_ms_ssim(a, b, chunk, torch.float32), args.repeat)
        entry.update(float32_seconds=single_s, float32_max_abs_diff_vs_float64=float((single - ours).abs().max()))
        if not args.skip_reference:
            reference, reference_s = timed_median(
                lambda first=first, second=second: reference_ms_ssim(first, second), args.repeat)
            entry.update(reference_seconds=reference_s, reference_pairs_per_s=args.pairs / reference_s,
                         speedup=reference_s / ours_s, reference_mean=float(reference.mean()),
                         max_abs_diff=float(np.abs(ours.numpy() - reference).max()))
        if torch.cuda.is_available():
            on_gpu = chunked_ms_ssim(a.cuda(), b.cuda(), chunk).cpu()
            entry["cuda_vs_cpu_max_abs_diff"] = float((on_gpu - ours).abs().max())
        results[str(resolution)] = entry
    return results


def bench_kernel_build() -> dict:
    """Seconds to build the compiled MS-SSIM kernel into an empty cache: what the first CPU MS-SSIM call on a
    machine adds (later calls load the cached build)."""
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get(CACHE_ENV_VAR)
        os.environ[CACHE_ENV_VAR] = folder
        try:
            start = time.perf_counter()
            library, reason = build_and_load(native.SOURCE_DIR / "msssim.c")
            seconds = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop(CACHE_ENV_VAR)
            else:
                os.environ[CACHE_ENV_VAR] = previous
    return {"seconds": seconds, "built": library is not None, "status": reason}


def bench_msssim_cuda(photos: np.ndarray, args) -> dict:
    results = {}
    device = torch.device("cuda")
    for resolution in args.gpu_resolutions:
        pool_size = min(2 * args.gpu_pairs, 128 if resolution > 512 else 512)
        pool = torch.from_numpy(augmented(photos, pool_size, resolution, seed=resolution)).to(device)
        generator = torch.Generator(device=device).manual_seed(resolution)
        first = torch.randint(pool_size, (args.gpu_pairs,), device=device, generator=generator)
        second = (first + torch.randint(1, pool_size, (args.gpu_pairs,), device=device,
                                        generator=generator)) % pool_size
        chunk = args.msssim_chunk or default_batch_size(resolution, resolution, device) // 2

        def run(count: int, first=first, second=second, pool=pool, chunk=chunk):
            total = torch.zeros((), dtype=torch.float64, device=device)
            for start in range(0, count, chunk):
                stop = min(start + chunk, count)
                total += ms_ssim(pool[first[start:stop]], pool[second[start:stop]]).sum()
            return float(total) / count

        run(min(chunk, args.gpu_pairs))  # warm-up
        torch.cuda.reset_peak_memory_stats()
        mean, seconds = timed(lambda run=run: run(args.gpu_pairs), cuda=True)
        results[str(resolution)] = {"pairs": args.gpu_pairs, "pairs_per_chunk": chunk, "seconds": seconds,
                                    "pairs_per_s": args.gpu_pairs / seconds, "mean": mean,
                                    "peak_gpu_memory_gb": peak_memory_gb()}
        del pool
        torch.cuda.empty_cache()
    return results


def make_extractor(args, device: str) -> InceptionFeatureExtractor:
    if args.inception:
        return load_inception(args.inception, device=device, resize="tf", download=False)
    torch.manual_seed(0)
    return InceptionFeatureExtractor(FIDInceptionV3(), resize="tf", device=device)


def bench_features(photos: np.ndarray, args, device: str) -> dict:
    cuda = device == "cuda"
    count = args.fid_images or (512 if cuda else 16)
    batch = args.fid_batch or (64 if cuda else 16)
    extractor = make_extractor(args, device)
    results = {}
    for resolution in (128, 1024):
        pool = torch.from_numpy(augmented(photos, min(count, batch), resolution, seed=resolution))
        extractor.features(pool[:min(len(pool), 8 if cuda else 2)])  # warm-up (cuDNN / oneDNN set-up)

        def run(pool=pool, extractor=extractor):
            for start in range(0, count, batch):
                pool3, _ = extractor.features(pool[:min(batch, count - start)])
            return pool3

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        pool3, seconds = timed(run, cuda=cuda)
        entry = {"images": count, "batch": batch, "seconds": seconds, "images_per_s": count / seconds,
                 "finite": bool(torch.isfinite(pool3).all())}
        if cuda:
            entry["peak_gpu_memory_gb"] = peak_memory_gb()
        results[str(resolution)] = entry
    return results


def bench_trace(args, cpu: bool) -> dict:
    (mu1, sigma1), (mu2, sigma2) = (correlated_statistics(args.fid_samples, args.fid_dim, seed)
                                    for seed in (1, 2))
    results = {"dim": args.fid_dim, "samples": args.fid_samples}
    if cpu:
        for method in args.fid_methods:
            value, seconds = timed(lambda method=method: frechet_distance(mu1, sigma1, mu2, sigma2, method=method))
            results[method] = {"seconds": seconds, "value": value}
        if not args.skip_reference:
            value, seconds = timed(lambda: scipy_fid(mu1, sigma1, mu2, sigma2))
            results["scipy_sqrtm"] = {"seconds": seconds, "value": value}
    if torch.cuda.is_available():
        frechet_distance(mu1, sigma1, mu2, sigma2, device="cuda")  # warm-up (cuSOLVER handles, workspaces)
        torch.cuda.reset_peak_memory_stats()
        value, seconds = timed(lambda: frechet_distance(mu1, sigma1, mu2, sigma2, device="cuda"), cuda=True)
        results["symmetric_cuda"] = {"seconds": seconds, "value": value, "peak_gpu_memory_gb": peak_memory_gb()}
    baseline_key = "scipy_sqrtm" if "scipy_sqrtm" in results else "symmetric"
    baseline = results.get(baseline_key)
    for key, entry in results.items():
        if isinstance(entry, dict) and baseline is not None and key != baseline_key:
            entry[f"rel_diff_vs_{baseline_key}"] = abs(entry["value"] - baseline["value"]) / abs(baseline["value"])
            if baseline_key == "scipy_sqrtm":
                entry["speedup_vs_scipy"] = baseline["seconds"] / entry["seconds"]
    return results


# --------------------------------------------------------------------------------------------------------------
# Report


def print_summary(report: dict) -> None:
    print(f"ganeval metrics speed: torch {report['torch']}, numpy {report['numpy']}, scipy {report['scipy']}, "
          f"{report['threads']} CPU threads" + (f", GPU {report['gpu']}" if "gpu" in report else ""))
    build = report.get("msssim_kernel_build")
    if build:
        print(f"  MS-SSIM kernel build into an empty cache: {build['seconds']:.2f} s"
              + ("" if build["built"] else f" (not built: {build['status']})"))
    for resolution, e in report.get("msssim_cpu", {}).items():
        line = (f"  MS-SSIM CPU {resolution}², {e['pairs']} pairs: ours {e['ours_seconds']:.3f} s "
                f"({e['ours_pairs_per_s']:.1f} pairs/s; float32 {e['float32_seconds']:.3f} s, "
                f"max|float32 - float64| {e['float32_max_abs_diff_vs_float64']:.1e})")
        if "reference_seconds" in e:
            line += (f", scipy ref {e['reference_seconds']:.3f} s ({e['reference_pairs_per_s']:.1f} pairs/s), "
                     f"{e['speedup']:.1f}x, max|diff| {e['max_abs_diff']:.1e}")
        line += (f"\n    without the compiled kernel {e['fallback_seconds']:.3f} s "
                 f"({e['pairs'] / e['fallback_seconds']:.1f} pairs/s, max|diff| {e['fallback_max_abs_diff']:.1e}); "
                 f"kernel: {e['kernel']}")
        if "cuda_vs_cpu_max_abs_diff" in e:
            line += f", cuda-vs-cpu max|diff| {e['cuda_vs_cpu_max_abs_diff']:.1e}"
        print(line)
    for resolution, e in report.get("msssim_cuda", {}).items():
        print(f"  MS-SSIM CUDA {resolution}², {e['pairs']} pairs: {e['seconds']:.3f} s "
              f"({e['pairs_per_s']:.0f} pairs/s), peak GPU {e['peak_gpu_memory_gb']:.2f} GiB")
    for device in ("cpu", "cuda"):
        for resolution, e in report.get(f"fid_features_{device}", {}).items():
            extra = f", peak GPU {e['peak_gpu_memory_gb']:.2f} GiB" if "peak_gpu_memory_gb" in e else ""
            print(f"  FID features {device.upper()} {resolution}²->299, {e['images']} images (batch {e['batch']}, "
                  f"{report['inception']} weights): {e['seconds']:.3f} s ({e['images_per_s']:.1f} img/s){extra}")
    trace = report.get("fid_trace")
    if trace:
        print(f"  FID trace, D={trace['dim']} ({trace['samples']} samples per covariance):")
        for key, e in trace.items():
            if not isinstance(e, dict):
                continue
            extras = [f"{name} {e[name]:.1e}" for name in e if name.startswith("rel_diff")]
            extras += [f"{e['speedup_vs_scipy']:.1f}x vs scipy"] if "speedup_vs_scipy" in e else []
            extras += [f"peak GPU {e['peak_gpu_memory_gb']:.2f} GiB"] if "peak_gpu_memory_gb" in e else []
            print(f"    {key:<15} {e['seconds']:8.3f} s   FID {e['value']:.10g}"
                  + (f"   ({', '.join(extras)})" if extras else ""))


def integer_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=256, help="MS-SSIM pairs for the CPU comparison (256)")
    parser.add_argument("--msssim-resolutions", type=integer_list, default=[128],
                        help="CPU comparison sizes, comma-separated (128; e.g. 128,256)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="CPU MS-SSIM timings (ours and the reference alike) are medians of this many runs (3)")
    parser.add_argument("--msssim-chunk", type=int, default=None,
                        help="pairs per ms_ssim call (default: msssim_diversity's batch size / 2)")
    parser.add_argument("--gpu-pairs", type=int, default=1000, help="MS-SSIM pairs per size on CUDA (1000)")
    parser.add_argument("--gpu-resolutions", type=integer_list, default=[128, 256, 1024],
                        help="MS-SSIM sizes on CUDA (128,256,1024)")
    parser.add_argument("--fid-images", type=int, default=None,
                        help="images per feature-throughput run (16 on CPU, 512 on CUDA)")
    parser.add_argument("--fid-batch", type=int, default=None, help="Inception batch (16 on CPU, 64 on CUDA)")
    parser.add_argument("--inception", default=None, help="FID Inception weights file (default: random init)")
    parser.add_argument("--fid-dim", type=int, default=2048, help="covariance size for the trace timing (2048)")
    parser.add_argument("--fid-samples", type=int, default=5000, help="features behind each covariance (5000)")
    parser.add_argument("--fid-methods", type=lambda text: text.split(","), default=["symmetric", "eigvals"],
                        help="frechet_distance methods timed on the CPU (symmetric,eigvals)")
    parser.add_argument("--skip-reference", action="store_true",
                        help="skip the slow baselines (SciPy MS-SSIM reference, scipy.linalg.sqrtm FID)")
    parser.add_argument("--cuda-only", action="store_true", help="skip every CPU measurement")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if args.cuda_only and not cuda:
        parser.error("--cuda-only asked for, but torch sees no CUDA GPU")
    photos = load_photos()
    report = {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
              "threads": torch.get_num_threads(), "inception": "real" if args.inception else "random"}
    if cuda:
        report["gpu"] = torch.cuda.get_device_name()
    if not args.cuda_only:
        report["msssim_kernel_build"] = bench_kernel_build()
        report["msssim_cpu"] = bench_msssim_cpu(photos, args)
    if cuda:
        report["msssim_cuda"] = bench_msssim_cuda(photos, args)
    if not args.cuda_only:
        report["fid_features_cpu"] = bench_features(photos, args, "cpu")
    if cuda:
        report["fid_features_cuda"] = bench_features(photos, args, "cuda")
        torch.cuda.empty_cache()
    report["fid_trace"] = bench_trace(args, cpu=not args.cuda_only)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_summary(report)


if __name__ == "__main__":
    import results_record

    title = "ganeval: MS-SSIM, Inception and FID speed, CUDA only" if "--cuda-only" in sys.argv else "ganeval: MS-SSIM, Inception and FID speed"
    results_record.run_main(title, main)
