"""`celebahq official` per row against the original `create_celebahq`, in one sitting, and the 30,000-row projection.

A synthetic 1024² release in the official format (toolkit_testing.official_release.make_release: image_list.txt,
PBKDF2/Fernet/bz2 deltas of the bundled photos) of `--rows` rows, then three single-thread runs over its rows, each
in a child process that reports its own stage timers and peak RSS, alternated `--repeat` times so that a load from
other jobs weighs on all three alike:

* ours: `build_official(..., workers=0)` (one process, one thread): the row time is each row's own `seconds` in the
  manifest (read, decode, decrypt, legacy render, add, md5s, PNG); the decrypt, render and PNG stages are timed by
  wrapping those functions; "rest" is what the row spends outside them (reading, decoding, md5s, the addition).
* ours, numpy: the same with GANEVAL_NATIVE=0 (the legacy render without its compiled kernels).
* original: the original `process_func`'s steps (decode, crop recipe under Pillow 3.1.1, PBKDF2/Fernet/bz2 decrypt,
  addition, md5) timed step by step, under `--original-python` (a Python 3.6 with Pillow 3.1.1, numpy 1.19.5,
  scipy 1.5.4 and cryptography, as in docs); the original wrote TFRecords, which is not counted (ours writes a PNG,
  which is).

The projection: 30,000 rows × the median row seconds / 16 cores (rows in parallel, one per core). Each run also
reports its CPU seconds per row (user + system, over all its rows), which a load from other jobs inflates far
less than the wall time.

    python benchmarks/official_speed.py [--rows 4] [--repeat 2] [--original-python /path/to/python3.6] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import results_record

from toolkit_testing.official_release import EXAMPLE, SOURCES, make_release

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_ROWS = 30_000
CORES = 16
SINGLE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

# Runs under Python 3.6 + Pillow 3.1.1: the original process_func's operations on each row of the release, timed.
ORIGINAL_ROW_SCRIPT = r"""
import base64, bz2, hashlib, json, os, resource, sys, time, zipfile
import numpy as np, PIL, PIL.Image, scipy.ndimage
import cryptography.fernet, cryptography.hazmat.backends, cryptography.hazmat.primitives.hashes
import cryptography.hazmat.primitives.kdf.pbkdf2
assert PIL.PILLOW_VERSION == '3.1.1', PIL.PILLOW_VERSION
celeba, deltas, decoded = sys.argv[1], sys.argv[2], sys.argv[3]
with open(os.path.join(celeba, 'Anno', 'list_landmarks_celeba.txt')) as file:
    landmarks = np.float32([[float(v) for v in line.split()[1:]] for line in file.readlines()[2:]]).reshape(-1, 5, 2)
with open(os.path.join(deltas, 'image_list.txt')) as file:
    rows = [line.split() for line in file][1:]

def rot90(v):
    return np.array([-v[1], v[0]])

def render(img, lm):
    eye_avg = (lm[0] + lm[1]) * 0.5 + 0.5
    mouth_avg = (lm[3] + lm[4]) * 0.5 + 0.5
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    zoom = 1024 / (np.hypot(*x) * 2)
    shrink = int(np.floor(0.5 / zoom))
    if shrink > 1:
        img = img.resize((int(np.round(float(img.size[0]) / shrink)), int(np.round(float(img.size[1]) / shrink))),
                         PIL.Image.ANTIALIAS)
        quad /= shrink
        zoom *= shrink
    border = max(int(np.round(1024 * 0.1 / zoom)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
            int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, img.size[0]),
            min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
    superres = int(np.exp2(np.ceil(np.log2(zoom))))
    if superres > 1:
        img = img.resize((img.size[0] * superres, img.size[1] * superres), PIL.Image.ANTIALIAS)
        quad *= superres
        zoom /= superres
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
           int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - img.size[0] + border, 0),
           max(pad[3] - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.round(1024 * 0.3 / zoom)))
        img = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), 'reflect')
        h, w, _ = img.shape
        y, x, _ = np.mgrid[:h, :w, :1]
        mask = 1.0 - np.minimum(np.minimum(np.float32(x) / pad[0], np.float32(y) / pad[1]),
                                np.minimum(np.float32(w - 1 - x) / pad[2], np.float32(h - 1 - y) / pad[3]))
        blur = 1024 * 0.02 / zoom
        img += (scipy.ndimage.gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
        img = PIL.Image.fromarray(np.uint8(np.clip(np.round(img), 0, 255)), 'RGB')
        quad += pad[0:2]
    img = img.transform((4096, 4096), PIL.Image.QUAD, (quad + 0.5).flatten(), PIL.Image.BILINEAR)
    img = img.resize((1024, 1024), PIL.Image.ANTIALIAS)
    return np.asarray(img).transpose(2, 0, 1)

def decrypt(idx, orig_file, path):
    with zipfile.ZipFile(os.path.join(deltas, 'deltas%05d.zip' % (idx - idx % 1000)), 'r') as archive:
        delta_bytes = archive.read('delta%05d.dat' % idx)
    with open(path, 'rb') as file:
        orig_bytes = file.read()
    kdf = cryptography.hazmat.primitives.kdf.pbkdf2.PBKDF2HMAC(
        algorithm=cryptography.hazmat.primitives.hashes.SHA256(), length=32, salt=bytes(orig_file, 'ascii'),
        iterations=100000, backend=cryptography.hazmat.backends.default_backend())
    key = base64.urlsafe_b64encode(kdf.derive(orig_bytes))
    return np.frombuffer(bz2.decompress(cryptography.fernet.Fernet(key).decrypt(delta_bytes)),
                         dtype=np.uint8).reshape(3, 1024, 1024)

times = {'decode': [], 'render': [], 'decrypt': [], 'rest': [], 'row': []}
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_before = usage.ru_utime + usage.ru_stime
for idx, orig_idx, orig_file, proc_md5, final_md5 in rows:
    idx, path = int(idx), os.path.join(celeba, 'img_celeba', orig_file)
    t0 = time.perf_counter()
    img = PIL.Image.open(path)
    img.load()
    t1 = time.perf_counter()
    # this Pillow 3.1.1 decodes with the system's libjpeg, not 8d: render the 8d pixels (decoded beforehand, as the
    # original's own Pillow did) so that its md5 checks hold; the decode above is what is timed
    img = PIL.Image.fromarray(np.load(os.path.join(decoded, orig_file + '.npy')))
    pre = render(img, landmarks[int(orig_idx)])
    t2 = time.perf_counter()
    delta = decrypt(idx, orig_file, path)
    t3 = time.perf_counter()
    ok = hashlib.md5(pre.tobytes()).hexdigest() == proc_md5
    ok = ok and hashlib.md5((pre + delta).tobytes()).hexdigest() == final_md5
    t4 = time.perf_counter()
    for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
        times[key].append(seconds)
    times.setdefault('exact', []).append(bool(ok))
usage = resource.getrusage(resource.RUSAGE_SELF)
times['cpu'] = [(usage.ru_utime + usage.ru_stime - cpu_before) / len(rows)]
with open('/proc/self/status') as file:  # VmHWM: ru_maxrss would carry the parent's peak over exec
    times['peak_rss'] = [int(line.split()[1]) * 1024 for line in file if line.startswith('VmHWM:')][0]
print(json.dumps(times))
"""


def ours_child(deltas: Path, out: Path) -> dict:
    """In this (child) process: build_official on one thread with the decrypt, render and PNG stages timed."""
    import resource

    from celebahq import official
    from celebahq.legacy_pillow import kernel_status

    stages: dict[str, list[float]] = {"decrypt": [], "render": [], "png": []}
    for stage, name in (("decrypt", "decrypt_delta"), ("render", "pre_delta_image"), ("png", "write_png")):
        setattr(official, name, _timed(getattr(official, name), stages[stage]))
    kernel = kernel_status()  # built (or found in the cache) before the timing starts
    cpu_before = _cpu_seconds(resource)
    report = official.build_official(EXAMPLE, deltas, out, official.OfficialOptions(workers=0, progress=False))
    cpu = (_cpu_seconds(resource) - cpu_before) / max(report.rows, 1)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rows = [record["seconds"] for record in records]
    rest = [row - sum(values[i] for values in stages.values()) for i, row in enumerate(rows)]
    return {**stages, "rest": rest, "row": rows, "cpu": [cpu], "exact": [report.exact == report.rows] * len(rows),
            "peak_rss": _peak_rss(), "kernel": kernel}


def _timed(function, times: list[float]):
    """`function`, appending the seconds of each call to `times`."""
    import time

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - started)
        return result
    return timed


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM, bytes; getrusage's ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(resource) -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_8d_decodes(deltas: Path, folder: Path) -> None:
    """FOLDER/<orig_file>.npy: each photo of the release decoded by IJG libjpeg 8d (HWC uint8)."""
    from celebahq.decoding import LIBJPEG_8D, decode_jpeg

    folder.mkdir(parents=True)
    for line in (deltas / "image_list.txt").read_text().splitlines()[1:]:
        orig_file = line.split()[2]
        pixels = decode_jpeg((EXAMPLE / "img_celeba" / orig_file).read_bytes(), LIBJPEG_8D)
        np.save(folder / f"{orig_file}.npy", pixels)


def run_child(kind: str, deltas: Path, work: Path, original_python: str | None) -> dict:
    """One timed run in a fresh single-thread child process: 'ours', 'numpy' or 'original'."""
    env = {**os.environ, **SINGLE_THREAD}
    if kind == "original":
        decoded = work / "decoded-8d"
        if not decoded.is_dir():
            write_8d_decodes(deltas, decoded)
        command = [original_python, "-c", ORIGINAL_ROW_SCRIPT, str(EXAMPLE), str(deltas), str(decoded)]
    else:
        env["GANEVAL_NATIVE"] = "0" if kind == "numpy" else env.get("GANEVAL_NATIVE", "1")
        out = Path(tempfile.mkdtemp(dir=work))
        command = [sys.executable, __file__, "--child", str(deltas), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_stages(runs: list[dict]) -> dict[str, float]:
    """Median seconds per row of each stage over all runs and rows."""
    keys = [key for key in runs[0] if key not in ("exact", "peak_rss", "kernel")]
    return {key: statistics.median(value for run in runs for value in run[key]) for key in keys}


def report(results: dict[str, list[dict]], rows: int, loads: list[str]) -> str:
    """The Markdown/plain-text table of the sitting."""
    lines = [f"{rows} rows of a synthetic 1024² release from the bundled photos, one thread per run; median "
             "seconds per row (each run in its own process, the three kinds alternated; cpu: the process's CPU "
             "seconds per row, less sensitive to other jobs than the wall time); load while measuring: "
             + "; ".join(loads), ""]
    base = median_stages(results["original"])["row"] if "original" in results else None
    cpu_base = median_stages(results["original"])["cpu"] if "original" in results else None
    stage_names = ["decode", "decrypt", "render", "png", "rest", "row", "cpu"]
    lines.append("| run | " + " | ".join(stage_names) + " | peak RSS | vs original (wall) | vs original (CPU) | "
                 "30,000 rows on 16 cores |")
    lines.append("|---" * (len(stage_names) + 5) + "|")
    for kind, runs in results.items():
        stages = median_stages(runs)
        cells = [f"{stages[name]:.3f}" if name in stages else "–" for name in stage_names]
        peak = max(run["peak_rss"] for run in runs) / 2 ** 20
        ratio = f"×{base / stages['row']:.2f}" if base else "–"
        cpu_ratio = f"×{cpu_base / stages['cpu']:.2f}" if cpu_base else "–"
        hours = OFFICIAL_ROWS * stages["row"] / CORES / 3600
        exact = "" if all(all(run["exact"]) for run in runs) else " (md5 mismatch!)"
        lines.append(f"| {kind}{exact} | " + " | ".join(cells) + f" | {peak:.0f} MiB | {ratio} | {cpu_ratio} | "
                     f"{hours:.2f} h |")
    kernel = results.get("ours", [{}])[0].get("kernel")
    if kernel:
        lines += ["", f"ours: {kernel}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=len(SOURCES), help="rows of the synthetic release")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, each running every kind once")
    parser.add_argument("--original-python", help="a Python 3.6 with Pillow 3.1.1 (the original's environment)")
    parser.add_argument("--skip-numpy", action="store_true", help="leave out the run without compiled kernels")
    parser.add_argument("--record", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("DELTAS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ours_child(Path(args.child[0]), Path(args.child[1]))))
        return
    kinds = ["ours"] + ([] if args.skip_numpy else ["numpy"]) + (["original"] if args.original_python else [])
    names = [SOURCES[i % len(SOURCES)] for i in range(args.rows)]
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    loads = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        make_release(work / "deltas", names, resolution=1024)
        for round_index in range(args.repeat):
            for kind in kinds[round_index % len(kinds):] + kinds[:round_index % len(kinds)]:
                results[kind].append(run_child(kind, work / "deltas", work, args.original_python))
                loads.append(f"{kind} {results_record.load_summary()}")
    text = report(results, args.rows, loads)
    print(text)
    if args.record:
        results_record.record_section("celebahq official: a row against the original create_celebahq", text)


if __name__ == "__main__":
    main()
