"""Every GPU benchmark of the project in one run (about 8 minutes on one H100): one JSON and one Markdown table.

    python benchmarks/device_suite.py --out results/                 # CUDA if present: the full suite
    python benchmarks/device_suite.py --out /tmp/smoke --smoke       # tiny sizes on the CPU, under a minute
    python benchmarks/device_suite.py --out results/ --sections metrics

Sections are modules beside this file, `device_<name>.py`, each with `run(budget_seconds: float) -> list[Row]`
(`Row` and the helpers are in device_common.py): `metrics` (device_metrics.py: SWD, FID features, MS-SSIM),
`build` (device_build.py: the CelebA-HQ build) and `train` (device_train.py: the trainer), the last two only
when their file exists. Adding a benchmark means adding such a module and a line to SECTIONS (its budget on
a GPU and in smoke mode); this file needs no other change.

Each section runs in its own Python process (a crash, a hang or leaked GPU memory stays in it) with its
budget, and is killed at 1.5× the budget plus a margin; its rows, or one row saying why there are none, go
to OUT/device_suite.json (with the machine: GPU, torch, CUDA, load) and OUT/device_suite.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from device_common import DEVICE_ENV_VAR, SMOKE_ENV_VAR, Row

HERE = Path(__file__).resolve().parent



class Budget(NamedTuple):
    """A section's seconds: on the GPU (of the 480-second suite on an H100), and in smoke mode on a 2-core CPU
    (tiny sizes, where the start-up of a Python process with torch is a good part of it)."""

    device: float
    smoke: float


SECTIONS = {"metrics": Budget(100.0, 15.0), "build": Budget(240.0, 30.0), "train": Budget(140.0, 30.0)}
KILL_FACTOR, KILL_MARGIN, SMOKE_KILL_SECONDS = 1.5, 30.0, 300.0


def kill_limit(budget: float, smoke: bool) -> float:
    """Seconds after which a section's process is killed (smoke: startup and imports dominate, a slow CPU)."""
    return max(budget * KILL_FACTOR + KILL_MARGIN, SMOKE_KILL_SECONDS if smoke else 0.0)


def section_file(name: str) -> Path:
    return HERE / f"device_{name}.py"


def run_section_here(name: str, budget: float, rows_path: Path) -> None:
    """In the child process: import the section module, run it, write its rows as JSON."""
    spec = importlib.util.spec_from_file_location(f"device_{name}", section_file(name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in a section look their module up there
    spec.loader.exec_module(module)
    rows = module.run(budget)
    rows_path.write_text(json.dumps([asdict(row) for row in rows], default=str))


def run_section(name: str, budget: float, environment: dict, device: str) -> tuple[list[dict], dict]:
    """(rows, status) of one section, run in a child process killed after `kill_limit(budget)` seconds."""
    limit = kill_limit(budget, environment.get(SMOKE_ENV_VAR) == "1")
    if not section_file(name).is_file():
        return [], {"status": "absent", "seconds": 0.0, "budget": budget}
    with tempfile.TemporaryDirectory() as folder:
        rows_path = Path(folder) / "rows.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--budget", str(budget),
                   "--rows-to", str(rows_path)]
        start = time.perf_counter()
        try:
            completed = subprocess.run(command, env=environment, capture_output=True, text=True,
                                       timeout=limit, check=False)
            failure = None if completed.returncode == 0 else _last_line(completed.stderr)
        except subprocess.TimeoutExpired:  # subprocess.run kills the child
            failure = f"killed after {limit:.0f} s"
        seconds = time.perf_counter() - start
        rows = json.loads(rows_path.read_text()) if failure is None and rows_path.is_file() else []
    status = {"status": "ok" if failure is None else "failed", "seconds": seconds, "budget": budget}
    if failure is not None:
        status["error"] = failure
        rows = [asdict(Row("(section)", float("nan"), "", f"failed: {failure}", seconds))]
    elif seconds > budget:
        status["note"] = f"over its budget ({seconds:.0f} s > {budget:.0f} s)"
    for row in rows:
        row["section"], row["device"] = row.get("section") or name, row.get("device") or device
    return rows, status


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def machine(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()],
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown(report: dict) -> str:
    info = report["machine"]
    title = (f"Device suite on {info.get('gpu', info['device'])} (torch {info['torch']}, CUDA {info['cuda']}), "
             f"{info['started']}, {report['seconds']:.0f} s{' (smoke)' if report['smoke'] else ''}")
    lines = [title, "",
             "| section | what | value | unit | seconds | note |", "|---|---|---:|---|---:|---|"]
    for row in report["rows"]:
        value = "–" if row["value"] != row["value"] else f"{row['value']:.4g}"  # NaN: no figure
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
        lines.append(f"| {row['section']} | {row['name']} | {value} | {row['unit']} | {seconds} | "
                     f"{row['note']} |")
    for name, status in report["sections"].items():
        if status["status"] != "ok" or "note" in status:
            lines.append(f"\n{name}: {status['status']} {status.get('error', status.get('note', ''))}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def save(report: dict, out: Path) -> None:
    write_atomically(out / "device_suite.json", json.dumps(report, indent=1))
    write_atomically(out / "device_suite.md", markdown(report))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for device_suite.json and device_suite.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and budgets (any device, seconds)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--sections", type=lambda text: text.split(","), default=list(SECTIONS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rows-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_section_here(args.child, args.budget, args.rows_to)
        return 0
    if args.out is None:
        parser.error("--out is required")
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    environment = dict(os.environ, **{DEVICE_ENV_VAR: device, SMOKE_ENV_VAR: "1" if args.smoke else "0"})
    environment["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), environment.get("PYTHONPATH", "")])
    report = {"machine": machine(device), "smoke": args.smoke, "rows": [], "sections": {}}
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        budget = SECTIONS[name].smoke if args.smoke else SECTIONS[name].device
        rows, status = run_section(name, budget, environment, device)
        report["rows"].extend(rows)
        report["sections"][name] = status
        report["seconds"] = time.perf_counter() - start
        print(f"{name}: {status['status']} in {status['seconds']:.1f} s", file=sys.stderr, flush=True)
        save(report, args.out)  # after every section: a run cut short still leaves the sections it finished
    print(markdown(report))
    return 0 if all(s["status"] in ("ok", "absent") for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
