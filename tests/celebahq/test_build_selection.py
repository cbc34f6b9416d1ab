"""`celebahq build` in two passes: score everything, write only the selection; `--select` with the official
image_list.txt; the HDF5 / zip exports written straight from the render."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from celebahq.cli import main
from celebahq.export import export_hdf5, export_zip
from celebahq.manifest import latest_records, read_all_manifests
from celebahq.pipeline import BuildOptions, build
from celebahq.rank import rank_build
from celebahq.selection import read_selection
from toolkit_testing.builds import selected_images, small_celeba
from toolkit_testing.official_release import HEADER, MD5S

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"


def options(**kwargs) -> BuildOptions:
    return BuildOptions(**{"resolution": 64, "batch_size": 4, "num_workers": 0, "num_writers": 1, "progress": False,
                           "device": "cpu", "backend": "torch", **kwargs})


def test_two_passes_equal_one_pass_then_rank_pixel_for_pixel(tmp_path):
    once = tmp_path / "once"
    assert build(MINI, once, options()).ok == 15
    rank_build(once, keep=10, num_workers=0, progress=False)
    twice = tmp_path / "twice"
    report = build(MINI, twice, options(num_images=10, h5=str(tmp_path / "two.h5"), zip=str(tmp_path / "two.zip")))
    assert [p.name for p in report.passes] == ["score", "write"]
    assert (report.passes[0].rendered, report.passes[1].rendered, report.ok) == (15, 10, 10)
    assert report.md5_mismatches == [] and len(list((twice / "images").iterdir())) == 10  # only the kept ones
    ranked, selected = selected_images(once), selected_images(twice)
    assert [p.name for p in ranked] == [p.name for p in selected]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ranked, selected))
    records = latest_records(read_all_manifests(twice))
    assert sum(r["status"] == "scored" for r in records.values()) == 5  # scored, not kept, never written
    # the exports written straight from the render equal those exported from the one-pass build's PNGs
    export_hdf5(once, tmp_path / "one.h5", progress=False)
    with h5py.File(tmp_path / "one.h5") as one, h5py.File(tmp_path / "two.h5") as two:
        assert sorted(one) == sorted(two)
        for name in one:
            np.testing.assert_array_equal(one[name][:], two[name][:])
    export_zip(once, tmp_path / "one.zip", progress=False)
    with zipfile.ZipFile(tmp_path / "one.zip") as one, zipfile.ZipFile(tmp_path / "two.zip") as two:
        assert sorted(one.namelist()) == sorted(two.namelist())
        assert all(one.read(name) == two.read(name) for name in one.namelist())
    again = build(MINI, twice, options(num_images=10))  # resumed: nothing to score or write
    assert again.processed == 0 and again.ok == 0 and again.already_done == 15


def test_select_with_the_official_image_list_writes_exactly_those_sources(tmp_path):
    src = small_celeba(tmp_path, 5)
    image_list = tmp_path / "image_list.txt"
    image_list.write_text("idx orig_idx orig_file proc_md5 final_md5\n"
                          "0 3 000004.jpg 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210\n"
                          "2 0 000001.jpg 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210\n"
                          "1 1 000002.jpg 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210\n")
    picks = read_selection(image_list)
    assert [(p.rank, p.source, p.output) for p in picks] == [(1, "000004.jpg", "images/imgHQ00000.png"),
                                                             (2, "000002.jpg", "images/imgHQ00001.png"),
                                                             (3, "000001.jpg", "images/imgHQ00002.png")]
    result = CliRunner().invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "out"), "--select",
                                       str(image_list), "--resolution", "64", "--workers", "0", "--writers", "1",
                                       "--device", "cpu", "--backend", "torch", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "imgHQ00000.png", "imgHQ00001.png", "imgHQ00002.png"]
    build(src, tmp_path / "all", options())  # every source, one pass: the same pixels under the source names
    everything = latest_records(read_all_manifests(tmp_path / "all"))
    chosen = latest_records(read_all_manifests(tmp_path / "out"))
    assert sorted(chosen) == ["000001.jpg", "000002.jpg", "000004.jpg"]
    for pick in picks:
        assert chosen[pick.source]["md5"] == everything[pick.source]["md5"]
        assert chosen[pick.source]["rank"] == pick.rank
    assert [p.name for p in selected_images(tmp_path / "out")] == ["imgHQ00000.png", "imgHQ00001.png",
                                                                   "imgHQ00002.png"]


def test_selection_errors_are_one_line(tmp_path):
    src = small_celeba(tmp_path, 2)
    runner = CliRunner()
    listing = tmp_path / "list.txt"
    listing.write_text("000001.jpg\nmissing.jpg\n")
    missing = runner.invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--select", str(listing)])
    assert missing.exit_code == 2 and "1 listed sources are not in the source folder (e.g. missing.jpg (line 2))" in missing.stderr
    for text, where in (("idx orig_idx orig_file\n0 1 000001.jpg\n", "line 1: expected the header"),
                        (f"# CelebA-HQ\n{HEADER}\n\n0 1\n", "line 4: expected 5 fields"),
                        (f"{HEADER}\n0 0 000001.jpg {MD5S}\n0 1 000002.jpg {MD5S}\n", "line 3: idx 0 is listed twice")):
        listing.write_text(text)
        bad = runner.invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--select", str(listing)])
        assert bad.exit_code == 2 and where in bad.stderr and bad.stderr.count("\n") == 1, (text, bad.stderr)
    both = runner.invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--num-images", "1",
                                "--select", str(listing)])
    assert both.exit_code == 2 and "not both" in both.stderr
    h5 = runner.invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--h5", "x.h5"])
    assert h5.exit_code == 2 and "need a selection" in h5.stderr


@pytest.mark.parametrize("field", ["sr", "cleanup", "backend"])
def test_options_are_resolved_without_changing_them(field):
    given = options(backend="auto", sr=None, cleanup=None)
    resolved = given.resolved()
    assert getattr(given, field) in (None, "auto") and getattr(resolved, field) not in (None, "auto")
    assert resolved.resolved() == resolved
