"""`celebahq rank` and `build --num-images` on builds of the bundled example: manifests, selection, export order,
resume, bad images, concurrent writers, the contact sheet and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from celebahq import rank
from celebahq.cli import main
from celebahq.manifest import latest_records, read_all_manifests
from celebahq.pipeline import BuildOptions, build
from celebahq.quality import quality_score
from celebahq.rank import contact_sheet, rank_build, write_preview
from gancore.errors import UserError
from toolkit_testing.builds import read_manifest, selected_images

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"


def options(**kwargs) -> BuildOptions:
    return BuildOptions(**{"resolution": 64, "batch_size": 8, "num_workers": 0, "num_writers": 1, "progress": False,
                           "device": "cpu", "backend": "torch", **kwargs})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A 64² build of the 15 bundled photos (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("built") / "out"
    assert build(MINI, out, options()).ok == 15
    return out


@pytest.fixture
def out(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "out"))


def finished(out: Path) -> list[dict]:
    return [r for r in latest_records(read_all_manifests(out)).values() if r["status"] == "ok"]


def test_rank_scores_ranks_and_selects_the_best(out):
    report = rank_build(out, keep=5, num_workers=0, progress=False)
    assert (report.ranked, report.selected, report.scored, report.keep) == (15, 5, 0, 5)  # the build scored them
    assert report.manifest == "read 15 manifest records, skipped 0 damaged lines"
    records = sorted(finished(out), key=lambda r: r["rank"])
    assert [r["rank"] for r in records] == list(range(1, 16))
    assert [r["selected"] for r in records] == [True] * 5 + [False] * 10
    qualities = [r["quality"] for r in records]
    assert qualities == sorted(qualities, reverse=True) and report.best[0]["quality"] == qualities[0]
    image = np.array(Image.open(out / records[0]["output"]))
    assert qualities[0] == quality_score(torch.from_numpy(image[None]).permute(0, 3, 1, 2)).item()  # bit for bit
    assert rank_build(out, keep=5, rescore=True, num_workers=0, progress=False).scored == 15
    assert [r["quality"] for r in sorted(finished(out), key=lambda r: r["rank"])] == qualities
    assert qualities[0] == pytest.approx(quality_score(torch.from_numpy(image[None]).permute(0, 3, 1, 2)).item())
    # export and --num-images follow the ranking
    assert selected_images(out) == [out / r["output"] for r in records[:5]]
    assert selected_images(out, 2) == [out / r["output"] for r in records[:2]]
    with pytest.raises(UserError, match="5 finished images, 6 asked"):
        selected_images(out, 6)


def test_ranking_again_reuses_scores_and_keeps_the_selection(out):
    rank_build(out, keep=4, num_workers=0, progress=False)
    assert json.loads((out / "ranking.json").read_text())["keep"] == 4
    before = {r["source"]: r["quality"] for r in finished(out)}
    again = rank_build(out, num_workers=0, progress=False)
    assert (again.scored, again.selected, again.keep) == (0, 4, 4)
    assert {r["source"]: r["quality"] for r in finished(out)} == before
    assert rank_build(out, keep=40, num_workers=0, progress=False).selected == 15  # fewer than asked: all
    assert rank_build(out, rescore=True, num_workers=0, progress=False).scored == 15


def test_ranking_everything_then_more_images_selects_them_too(tmp_path):
    out = tmp_path / "out"
    build(MINI, out, options(limit=2))
    assert rank_build(out, num_workers=0, progress=False).selected == 2  # no keep: all
    build(MINI, out, options(limit=4))
    assert rank_build(out, num_workers=0, progress=False).selected == 4


def test_rewrite_keeps_every_line_and_the_build_still_resumes(out):
    lines = (out / "manifest.jsonl").read_text().splitlines()
    with open(out / "manifest.jsonl", "a") as file:
        file.write('{"source": "torn')  # a build killed mid-line
    rank_build(out, keep=3, num_workers=0, progress=False)
    rewritten = read_manifest(out)
    assert len(rewritten) == len(lines) and (out / "manifest.jsonl").read_text().endswith("}\n")
    assert [r["source"] for r in rewritten] == [json.loads(line)["source"] for line in lines]
    assert not list(out.glob(".*.tmp"))
    resumed = build(MINI, out, options())
    assert resumed.processed == 0 and resumed.already_done == 15
    assert len(selected_images(out)) == 3


def test_build_with_num_images_ranks_at_the_end_and_after_a_resume(tmp_path):
    out = tmp_path / "out"
    first = build(MINI, out, options(limit=3, num_images=2))
    assert first.ranking["ranked"] == 3 and first.ranking["selected"] == 2 and first.ok == 2
    assert json.loads((out / "report.json").read_text())["ranking"]["selected"] == 2
    build(MINI, out, options(limit=5))  # resumed without a selection: export refuses the stale ranking
    with pytest.raises(UserError, match="finished after the ranking"):
        selected_images(out)
    resumed = build(MINI, out, options(limit=5, num_images=2))  # every source already scored: nothing rendered
    assert (resumed.ranking["scored"], resumed.ranking["ranked"], resumed.ranking["selected"]) == (0, 5, 2)
    assert len(selected_images(out)) == 2


def test_sharded_builds_defer_and_rank_every_shard(tmp_path):
    out = tmp_path / "out"
    for index in range(2):
        report = build(MINI, out, options(shard=(index, 2), limit=4, num_images=3))
        assert "without --shard" in report.ranking["deferred"] and report.ok == 0
    for name in ("manifest-0-of-2.jsonl", "manifest-1-of-2.jsonl"):
        records = read_manifest(out, name)
        assert len(records) == 2 and all(r["status"] == "scored" and r["quality"] > 0 for r in records)
    written = build(MINI, out, options(limit=4, num_images=3))  # the write pass, over every shard's scores
    assert written.ok == 3 and written.passes[0].rendered == 0
    assert len(selected_images(out)) == 3


def test_unreadable_images_are_reported_and_left_out(out):
    broken = min(finished(out), key=lambda r: r["source"])
    (out / broken["output"]).write_bytes(b"not a png")
    report = rank_build(out, keep=20, rescore=True, num_workers=0, progress=False)
    assert list(report.skipped) == [broken["source"]] and "cannot decode" in report.skipped[broken["source"]]
    assert report.ranked == report.selected == 14
    record = latest_records(read_all_manifests(out))[broken["source"]]
    assert record["rank"] is None and record["selected"] is False and record["quality"] is None
    assert out / broken["output"] not in selected_images(out)


def test_a_manifest_changed_while_ranking_is_not_overwritten(out, monkeypatch):
    score = rank.score_sources

    def score_while_a_build_appends(*args, **kwargs):
        with open(out / "manifest.jsonl", "a") as file:
            file.write(json.dumps({"source": "new.jpg", "status": "skipped", "reason": "no face found"}) + "\n")
        return score(*args, **kwargs)

    monkeypatch.setattr(rank, "score_sources", score_while_a_build_appends)
    with pytest.raises(UserError, match="changed while ranking"):
        rank_build(out, keep=3, num_workers=0, progress=False)
    records = read_manifest(out)
    assert records[-1]["source"] == "new.jpg" and all("rank" not in r for r in records)


def test_errors_for_folders_that_are_not_builds(tmp_path):
    with pytest.raises(UserError, match="no manifest.jsonl"):
        rank_build(tmp_path, progress=False)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"source": "a.jpg", "status": "skipped"}) + "\n")
    with pytest.raises(UserError, match="no finished images"):
        rank_build(tmp_path, progress=False)
    with pytest.raises(UserError, match="no ranked images"):
        write_preview(tmp_path, tmp_path / "sheet.png")


def test_contact_sheet_of_the_best_and_worst(out):
    rank_build(out, num_workers=0, progress=False)
    path = write_preview(out, out / "preview" / "sheet.png", count=4, side=48)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (2 * (14 + 48 + 14 + 6) + 6, 6 + 4 * (48 + 6), 3)
    assert not list(path.parent.glob(".*.partial"))
    thumbnails = [(np.zeros((8, 8, 3), np.uint8), "a")] * 3
    assert contact_sheet([("one", thumbnails), ("two", thumbnails[:1])], 8).shape == (2 * (14 + 8 + 14 + 6) + 6,
                                                                                      6 + 3 * 14, 3)


def test_cli_rank_and_build_num_images(out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["rank", str(out), "--keep", "3", "--preview", str(tmp_path / "sheet.png"),
                                  "--preview-count", "2", "--workers", "0", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["selected"] == 3 and report["ranked"] == 15 and Path(report["preview"]).is_file()
    text = runner.invoke(main, ["rank", str(out), "--keep", "30", "--quiet"])
    assert text.exit_code == 0 and "selected 15" in text.stdout and "only 15 ranked" in text.stderr
    missing = runner.invoke(main, ["rank", str(tmp_path)])
    assert missing.exit_code == 2 and "no manifest.jsonl" in missing.stderr
    built = runner.invoke(main, ["build", "--src", str(MINI), "--out", str(tmp_path / "b"), "--resolution", "64",
                                 "--limit", "2", "--workers", "0", "--writers", "1", "--backend", "torch", "--device", "cpu",
                                 "--num-images", "1", "--quiet"])
    assert built.exit_code == 0, built.output
    assert "selected 1 " in built.stdout
