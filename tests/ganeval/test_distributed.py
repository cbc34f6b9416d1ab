"""Under torchrun (2 CPU processes, gloo) every command gives the single-process numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES

HERE = Path(__file__).resolve().parent


def torchrun(args: list[str], processes: int = 2) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                             "--standalone", *args], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def single(args: list[str]) -> str:
    result = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path])))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("command", [
    ["swd", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "20", "--baseline", "--batch-size", "6"],
    ["msssim", str(EXAMPLES / "real"), "--num-pairs", "20", "--batch-size", "6"],
])
def test_cli_commands_match_one_process(command):
    args = ["-m", "ganeval.cli", *command, "--json", "--quiet", "--device", "cpu"]
    several = json.loads(torchrun(args))["metrics"][command[0]]
    one = json.loads(single(args))["metrics"][command[0]]
    for key in ("levels", "value"):
        if key in one:
            assert several[key] == pytest.approx(one[key], rel=1e-6)
    if "baseline" in one:
        assert several["baseline"]["levels"] == pytest.approx(one["baseline"]["levels"], rel=1e-9)


def test_all_with_fid_matches_one_process(tmp_path):
    script = tmp_path / "run_all.py"
    script.write_text(
        "import json, sys\n"
        "from gancore import distributed\n"
        "from ganeval.evaluate import evaluate_all\n"
        "distributed.start_from_environment(__import__('torch').device('cpu'))\n"
        "from test_fid import TinyExtractor\n"
        f"result = evaluate_all({str(EXAMPLES / 'gen')!r}, {str(EXAMPLES / 'real')!r}, swd_images=16,\n"
        "                      msssim_pairs=10, fid_images=30, seed=3, device='cpu', batch_size=4,\n"
        "                      extractor=TinyExtractor(), progress=False)\n"
        "if distributed.is_main_process():\n"
        "    print(json.dumps(result.to_dict()))\n")
    several = json.loads(torchrun([str(script)]))["metrics"]
    one = json.loads(single([str(script)]))["metrics"]
    assert several["swd"]["levels"] == pytest.approx(one["swd"]["levels"], rel=1e-9)
    assert several["msssim"]["value"] == pytest.approx(one["msssim"]["value"], rel=1e-6)  # float32 blocking
    assert several["fid"]["value"] == pytest.approx(one["fid"]["value"], rel=1e-6)  # sums in another order
