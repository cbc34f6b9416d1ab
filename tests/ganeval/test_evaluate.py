"""`ganeval all`: one pass gives the same numbers as the single-metric commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ganeval.cli import main
from ganeval.evaluate import evaluate_all, paper_table
from ganeval.fid import compute_fid as fid
from ganeval.msssim import msssim_diversity
from ganeval.swd import compute_swd as swd
from toolkit_testing.extractors import TinyExtractor
from toolkit_testing.images import EXAMPLES


def test_all_equals_the_single_metrics():
    gen, real = EXAMPLES / "gen", EXAMPLES / "real"
    result = evaluate_all(gen, real, swd_images=16, msssim_pairs=8, fid_images=64, seed=5, baseline=True,
                          extractor=TinyExtractor(), progress=False, batch_size=6, device="cpu")
    alone = swd(gen, real, num_images=16, seed=5, baseline=True, progress=False, device="cpu")
    assert result.swd.levels == pytest.approx(alone.levels, rel=1e-6)
    assert result.swd_baseline.levels == pytest.approx(alone.baseline.levels, rel=1e-6)
    assert result.msssim == pytest.approx(msssim_diversity(gen, num_pairs=8, seed=5, progress=False, device="cpu").value,
                                          rel=1e-6)
    # FID does not depend on the order: with the whole generated set and the same real subset it is equal
    real_subset = np.stack([img for batch in __import__("ganeval").ImageStream(real, num_images=64, seed=6)
                            for img in batch.numpy()])
    whole = fid(gen, real_subset, num_images=None, extractor=TinyExtractor(), progress=False, cache=False)
    assert result.fid == pytest.approx(whole.value, rel=1e-6)
    columns, values = paper_table(result)
    assert columns == ["SWD 128", "SWD 64", "SWD 32", "SWD 16", "SWD avg", "MS-SSIM", "FID"]
    assert len(values) == len(columns)


def test_all_cli_json_and_errors(tmp_path):
    runner = CliRunner()
    import torch

    from ganeval.inception import FIDInceptionV3

    weights = tmp_path / "inception.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    args = ["all", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--swd-images", "8", "--msssim-pairs", "4",
            "--fid-images", "4", "--is-splits", "2", "--inception", str(weights), "--json", "--quiet", "--no-cache",
            "--allow-singular"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    metrics = payload["metrics"]
    assert payload["command"] == "all" and set(metrics) >= {"swd", "msssim", "fid"}
    assert list(metrics["swd"]["levels"]) == ["128", "64", "32", "16"]
    assert metrics["msssim"]["num_pairs"] == 4 and payload["num_images"]["fid"] == 4
    only_swd = runner.invoke(main, ["all", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--metrics", "swd",
                                    "--swd-images", "8", "--quiet"])
    assert only_swd.exit_code == 0 and "MS-SSIM" not in only_swd.stdout and "SWD avg" in only_swd.stdout
    too_many = runner.invoke(main, ["all", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--metrics", "msssim",
                                    "--msssim-pairs", "100", "--quiet"])
    assert too_many.exit_code == 2 and "needs 200" in too_many.stderr
    unknown = runner.invoke(main, ["all", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--metrics", "nope"])
    assert unknown.exit_code == 2 and "unknown metric" in unknown.stderr
