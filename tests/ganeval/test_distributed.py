"""Under torchrun (2 CPU processes, gloo) every command gives the single-process numbers."""

from __future__ import annotations

import json

import pytest

from toolkit_testing.images import EXAMPLES
from toolkit_testing.subprocesses import single, torchrun


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
        "from toolkit_testing.extractors import TinyExtractor\n"
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
