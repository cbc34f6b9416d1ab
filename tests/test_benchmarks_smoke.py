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


def test_the_step_arithmetic_is_counted_through_a_double_backward():
    """train_vs_original counts a step's GFLOP by torch's formulas, `autograd.grad(create_graph=True)` included."""
    import torch
    import torch.nn.functional as F
    from train_vs_original import counted_gflop

    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, requires_grad=True)
    forward = 2 * 2 * 5 * 4 * 9 * 8 * 8  # multiply-adds of the convolution, ×2

    def penalty_step():
        (gradient,) = torch.autograd.grad(F.conv2d(x, w, padding=1).sum(), x, create_graph=True)
        gradient.square().sum().backward()

    assert counted_gflop(lambda: F.conv2d(x, w, padding=1)) * 1e9 == forward
    assert counted_gflop(penalty_step) * 1e9 >= 3 * forward  # forward, input gradient, and its own backward


def test_the_winograd_benchmark_computes_the_same_convolution():
    """conv_algorithms times Winograd F(2×2, 3×3) against F.conv2d: the same outputs and gradients, odd sizes of
    channels and uneven spatial sides included."""
    import torch
    import torch.nn.functional as F
    from conv_algorithms import winograd_conv3x3

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    ours, reference = winograd_conv3x3(x, w), F.conv2d(x, w, padding=1)
    torch.testing.assert_close(ours, reference)
    upstream = torch.randn_like(reference)
    grads = torch.autograd.grad(ours, (x, w), upstream)
    torch.testing.assert_close(grads, torch.autograd.grad(reference, (x, w), upstream))


def test_the_strided_convolution_variants_compute_the_same_convolution():
    """conv_algorithms' channels_last and space-to-depth forms of D's 4×4 stride-2 convolution equal it."""
    import torch
    from conv_algorithms import strided_conv4x4, strided_conv4x4_channels_last, strided_conv4x4_space_to_depth

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    for variant in (strided_conv4x4_channels_last, strided_conv4x4_space_to_depth):
        torch.testing.assert_close(variant(x, w), strided_conv4x4(x, w))
