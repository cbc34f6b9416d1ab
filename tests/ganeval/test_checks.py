"""Check before work: every problem of a call in one message, before any image is decoded, naming only the
command's own options; default counts said in a note; one sampling rule, so `fid` equals `all`'s FID;
statistics files that record how they were made, and a mismatch refused."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import gancore.sources
import ganeval.features
from gancore.errors import UserError
from ganeval.cli import main
from ganeval.fid_files import save_statistics
from toolkit_testing.extractors import TinyExtractor
from toolkit_testing.images import EXAMPLES

GEN, REAL = str(EXAMPLES / "gen"), str(EXAMPLES / "real")


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")
    monkeypatch.setattr(gancore.sources, "decode_image", refuse)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args] + ["--quiet", "--device", "cpu"])


def test_a_bad_all_call_reports_every_problem_before_decoding(no_decoding, tiny_inception):
    result = run("all", GEN, REAL, "--swd-images", 1000, "--msssim-pairs", 500, "--fid-images", 100,
                 "--is-splits", 200, "--pr-k", 150, "--workers", 0)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: ") and "Traceback" not in message
    for fragment in ("SWD needs 1000 (lower --swd-images)", "MS-SSIM needs 1000 (lower --msssim-pairs)", "FID, IS, KID and precision/recall need 100 (lower --fid-images)",
                     "only 100 images per set for 2048-d features", "--allow-singular",
                     "200 splits needs at least 200 images", "--is-splits", "k = 150", "--pr-k"):
        assert fragment in message, fragment
    assert "--num-images" not in message  # `all` has no such option


def test_weights_without_logits_are_refused_before_decoding(no_decoding):
    from ganeval import compute_metrics

    class NoLogits(TinyExtractor):
        logits_available = False

    with pytest.raises(UserError, match="no 1008-way classifier"):
        compute_metrics(GEN, REAL, "is,fid", extractor=NoLogits(), num_workers=0)


def test_single_commands_name_their_own_options(no_decoding, tiny_inception):
    kid = run("kid", GEN, REAL, "--num-images", 100, "--workers", 0)
    assert kid.exit_code == 2 and "lower --num-images" in kid.stderr and "--kid-images" not in kid.stderr
    fid = run("fid", GEN, REAL, "--num-images", 100, "--no-cache", "--workers", 0)
    assert fid.exit_code == 2 and "has 64 images, FID needs 100 (lower --num-images)" in fid.stderr
    assert "--allow-singular" in fid.stderr and "2 problems" in fid.stderr


def test_default_counts_are_all_images_with_a_note(tiny_inception):
    result = run("fid", GEN, REAL, "--allow-singular", "--no-cache", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["num_images"] == {"fid": {"a": 64, "b": 64}}
    assert any("64 (all there are; the paper used 50000" in note for note in payload["notes"])
    assert "note: FID images per set: 64" in result.stderr
    shared = run("all", GEN, REAL, "--metrics", "fid,kid,pr,msssim", "--allow-singular", "--kid-subset-size", 10,
                 "--no-cache", "--quiet")
    assert shared.exit_code == 0, shared.output
    assert "note: FID/KID/PR images per set: 64 (all there are; the paper used 50000" in shared.stderr
    assert "note: MS-SSIM pairs: 32 (all there are; the paper used 10000" in shared.stderr


def test_fid_equals_the_fid_of_all_for_the_same_options(tiny_inception):
    options = ["--seed", 7, "--allow-singular", "--json"]
    single = run("fid", GEN, REAL, "--num-images", 40, "--no-cache", *options)
    together = run("all", GEN, REAL, "--metrics", "fid,is", "--fid-images", 40, "--is-splits", 4, *options)
    inception_score = run("is", GEN, "--num-images", 40, "--splits", 4, "--seed", 7, "--json")
    assert single.exit_code == 0 and together.exit_code == 0 and inception_score.exit_code == 0, \
        single.output + together.output + inception_score.output
    together = json.loads(together.stdout)["metrics"]
    assert json.loads(single.stdout)["metrics"]["fid"]["value"] == pytest.approx(together["fid"]["value"], rel=1e-9)
    assert json.loads(inception_score.stdout)["metrics"]["is"]["mean"] == pytest.approx(together["is"]["mean"],
                                                                                          rel=1e-12)


def test_statistics_made_another_way_are_refused(tmp_path, tiny_inception):
    stats = tmp_path / "real.npz"
    made = run("stats", REAL, "-o", stats, "--num-images", 40, "--resize", "tf", "--no-cache", "--json")
    assert made.exit_code == 0, made.output
    payload = json.loads(made.stdout)
    assert payload["command"] == "stats" and payload["metrics"] == {} and payload["num_images"] == {"stats": 40}
    assert payload["statistics"]["dim"] == 24 and payload["output"] == str(stats) and payload["device"] == "cpu"
    with np.load(stats) as archive:
        assert str(archive["resize"]) == "tf" and int(archive["num_images"]) == 40
        assert str(archive["source"]) == REAL and "pt_inception-2015-12-05" in str(archive["features"])
    same = run("fid", GEN, stats, "--num-images", 40, "--allow-singular", "--no-cache", "--json")
    assert same.exit_code == 0, same.output
    direct = run("fid", GEN, REAL, "--num-images", 40, "--allow-singular", "--no-cache", "--json")
    assert json.loads(same.stdout)["metrics"]["fid"]["value"] == pytest.approx(
        json.loads(direct.stdout)["metrics"]["fid"]["value"], rel=1e-9)
    other = run("fid", GEN, stats, "--num-images", 40, "--allow-singular", "--no-cache", "--resize", "clean")
    assert other.exit_code == 2 and "made with --resize tf, this call uses --resize clean" in other.stderr
    bare = tmp_path / "pytorch_fid.npz"  # mu and sigma only, as pytorch-fid writes them
    with np.load(stats) as archive:
        save_statistics(bare, archive["mu"], archive["sigma"])
    old = run("fid", GEN, bare, "--num-images", 40, "--allow-singular", "--no-cache", "--resize", "clean")
    assert old.exit_code == 0 and "records neither its resize mode nor its feature network" in old.stderr

    both_orders = [run("fid", first, second, "--json") for first, second in ((bare, stats), (stats, bare))]
    assert [result.exit_code for result in both_orders] == [0, 0], [r.output for r in both_orders]
    values = [json.loads(result.stdout)["metrics"]["fid"]["value"] for result in both_orders]
    assert values[0] == pytest.approx(values[1], rel=1e-12)  # an old file and a new one compare either way


# --------------------------------------------------------------------------------------------------------------
# The feature cache, shared by every Inception command


def test_features_are_cached_once_and_reused_by_fid_is_kid_and_pr(tmp_path, monkeypatch):
    monkeypatch.setenv("GANEVAL_CACHE", str(tmp_path / "cache"))
    loads = []
    monkeypatch.setattr(ganeval.features, "load_inception",
                        lambda path=None, device=None, resize="tf", **kwargs: loads.append(1) or TinyExtractor())
    common = ["--num-images", 40, "--seed", 5, "--json"]
    first = run("fid", GEN, REAL, "--allow-singular", *common)
    assert first.exit_code == 0 and len(loads) == 1, first.output
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 2  # one entry per set
    for args in (["kid", GEN, REAL, "--kid-subset-size", 20], ["pr", GEN, REAL], ["is", GEN, "--splits", 4],
                 ["all", GEN, REAL, "--metrics", "fid,is,kid,pr", "--fid-images", 40, "--is-splits", 4,
                  "--kid-subset-size", 20, "--allow-singular", "--seed", 5, "--json"]):
        again = run(*args, *(common if args[0] != "all" else []))
        assert again.exit_code == 0, again.output
        assert len(loads) == 1, args  # the features and logits came from the cache: no network loaded
    fid_all = json.loads(again.stdout)["metrics"]["fid"]["value"]
    assert fid_all == pytest.approx(json.loads(first.stdout)["metrics"]["fid"]["value"], rel=1e-9)
    text = run("kid", GEN, REAL, "--kid-subset-size", 20, "--num-images", 40, "--seed", 5)
    assert text.exit_code == 0 and len(loads) == 1 and re.search(r"^KID \S+ ± \S+$", text.stdout, re.MULTILINE), text.output
    bypass = run("kid", GEN, REAL, "--kid-subset-size", 20, "--no-cache", *common)
    assert bypass.exit_code == 0 and len(loads) == 2


def test_a_cache_that_cannot_be_written_is_a_note(tmp_path, tiny_inception):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    result = run("kid", GEN, REAL, "--num-images", 30, "--kid-subset-size", 10, "--cache-dir", blocked / "sub",
                 "--json")
    assert result.exit_code == 0, result.output
    assert any("could not be written" in note for note in json.loads(result.stdout)["notes"])
    assert "note: the feature cache" in result.stderr
