"""The device suite runs end to end in its --smoke mode (tiny sizes on the CPU): rows, JSON and Markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_device_suite_smoke_writes_its_table(tmp_path):
    """Every section, every row it owes: the metrics, the build's projection and the trainer up to 1024²."""
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_suite.py"), "--smoke",
                                "--device", "cpu", "--out", str(tmp_path)],
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads((tmp_path / "device_suite.json").read_text())
    assert report["smoke"] and all(report["sections"][name]["status"] == "ok" for name in ("metrics", "build",
                                                                                           "train"))
    names = [row["name"] for row in report["rows"]]
    for prefix in ("SWD", "FID features", "MS-SSIM", "celebahq build: projected CelebA 202,599 -> 30,000",
                   "train celebahq-1024 (smoke) 1024² fp32", "train celebahq-1024 (smoke) projected whole run"):
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    for row in report["rows"]:
        assert row["value"] >= 0 and row["device"] == "cpu", row
    table = (tmp_path / "device_suite.md").read_text()
    assert "| metrics | SWD 16 vs 16 images at 32² |" in table
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary names, none left


def test_device_suite_reports_a_missing_section_without_failing(tmp_path, monkeypatch):
    import device_suite  # benchmarks/ is on the tests' path (pyproject.toml: pythonpath)

    monkeypatch.setattr(device_suite, "section_file", lambda name: tmp_path / "absent.py")
    rows, status = device_suite.run_section("build", 1.0, {}, "cpu")
    assert rows == [] and status["status"] == "absent"
