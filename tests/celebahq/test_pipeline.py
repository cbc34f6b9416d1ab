"""`celebahq build`: end to end on the bundled example, bad input, resume after a kill, CLI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from celebahq.cli import main
from celebahq.landmarks import read_celeba_landmarks, write_celeba_landmarks
from celebahq.manifest import latest_records, read_all_manifests
from celebahq.pipeline import BuildOptions, build
from gancore.errors import UserError
from toolkit_testing.process_pause import resume, stop_when

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"


def options(**kwargs) -> BuildOptions:
    return BuildOptions(**{"resolution": 64, "batch_size": 4, "num_workers": 0, "progress": False,
                           "device": "cpu", "backend": "torch", **kwargs})


def test_build_the_bundled_example_and_resume(tmp_path):
    report = build(MINI, tmp_path / "out", options())
    assert report.ok == 15 and not report.skipped and report.already_done == 0
    records = latest_records(read_all_manifests(tmp_path / "out"))
    assert len(records) == 15
    first = records["000001.jpg"]
    assert first["status"] == "ok" and first["landmarks"]["landmark_source"] == "celeba"
    assert np.asarray(first["quad"]).shape == (4, 2) and first["zoom"] > 0 and first["quality"] > 0
    assert first["output"] == "images/000001.jpg.png"  # the source's extension is kept: names cannot collide
    image = np.asarray(Image.open(tmp_path / "out" / first["output"]))
    assert image.shape == (64, 64, 3)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["ok"] == 15 and set(saved["seconds"]) >= {"render"}
    again = build(MINI, tmp_path / "out", options())
    assert again.processed == 0 and again.already_done == 15


def make_bad_celeba(tmp_path: Path) -> Path:
    src = tmp_path / "celeba"
    (src / "img_celeba").mkdir(parents=True)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    good = MINI / "img_celeba" / "000001.jpg"
    rows = {}
    for name in ("good.jpg", "corrupt.jpg", "truncated.jpg", "cmyk.jpg", "gray.jpg", "outside.jpg",
                 "degenerate.jpg", "norow.jpg"):
        shutil.copy(good, src / "img_celeba" / name)
        rows[name] = table["000001.jpg"]
    (src / "img_celeba" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    data = good.read_bytes()
    (src / "img_celeba" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.open(good).convert("CMYK").save(src / "img_celeba" / "cmyk.jpg")
    Image.open(good).convert("L").save(src / "img_celeba" / "gray.jpg")
    rows["outside.jpg"] = table["000001.jpg"] + 5000
    degenerate = table["000001.jpg"].copy()
    degenerate[1] = degenerate[0]
    degenerate[3:] = degenerate[0]
    rows["degenerate.jpg"] = degenerate
    del rows["norow.jpg"]
    write_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt", rows)
    return src


def test_bad_input_is_skipped_with_reasons(tmp_path):
    report = build(make_bad_celeba(tmp_path), tmp_path / "out", options())
    assert report.ok == 3  # good, cmyk, gray
    reasons = report.skipped
    assert set(reasons) == {"corrupt.jpg", "truncated.jpg", "outside.jpg", "degenerate.jpg", "norow.jpg"}
    assert "unreadable" in reasons["corrupt.jpg"] and "unreadable" in reasons["truncated.jpg"]
    assert reasons["norow.jpg"] == "no landmark row"
    assert "landmarks" in reasons["outside.jpg"] and "landmarks" in reasons["degenerate.jpg"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped"] == reasons


def test_a_killed_build_resumes_to_the_same_result(tmp_path):
    clean = build(MINI, tmp_path / "clean", options(resolution=128, batch_size=4))  # the killed run uses 1
    assert clean.ok == 15
    command = [sys.executable, "-m", "celebahq.cli", "build", "--src", str(MINI), "--out", str(tmp_path / "killed"),
               "--resolution", "128", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--backend", "torch",
               "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = tmp_path / "killed" / "manifest.jsonl"
    stop_when(process, lambda: manifest.is_file() and manifest.read_text().count("\n") >= 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resume(process)
    assert len(latest_records(read_all_manifests(tmp_path / "killed"))) < 15
    resumed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    killed = latest_records(read_all_manifests(tmp_path / "killed"))
    reference = latest_records(read_all_manifests(tmp_path / "clean"))
    assert {k: v["md5"] for k, v in killed.items()} == {k: v["md5"] for k, v in reference.items()}
    assert not list((tmp_path / "killed").rglob("*.partial"))


def test_cli_build_export_and_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["build", "--src", str(MINI), "--out", str(tmp_path / "out"), "--resolution", "32",
                                  "--limit", "4", "--workers", "0", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 4
    exported = runner.invoke(main, ["export", str(tmp_path / "out"), "--h5", str(tmp_path / "x.h5"), "--quiet"])
    assert exported.exit_code == 0 and (tmp_path / "x.h5").is_file()
    missing = runner.invoke(main, ["build", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "no such folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(main, ["build", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert empty.exit_code == 2 and "no images found" in empty.stderr
    assert not (tmp_path / "o").exists()  # the refused builds made no output folder
    odd = runner.invoke(main, ["build", "--src", str(MINI), "--out", str(tmp_path / "o"), "--resolution", "100"])
    assert odd.exit_code == 2 and "power of two" in odd.stderr
    assert runner.invoke(main, ["build", "--src", str(MINI), "--out", "o", "--shard", "3/2"]).exit_code == 2


def test_torchrun_ranks_build_into_one_folder_at_once(tmp_path):
    """2 processes (torchrun, gloo, CPU) build into one folder together (they share its lock): each scores its
    shard, they wait for each other, and each writes its share of the same best N. The images, their ranks and the
    ranking equal one process's; no lock file is left."""
    import os

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "celebahq.cli", "build", "--src", str(MINI), "--out", str(tmp_path / "two"), "--resolution", "64",
               "--device", "cpu", "--backend", "torch", "--batch-size", "4", "--workers", "0", "--num-images", "5",
               "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    one = build(MINI, tmp_path / "one", options(num_images=5))
    assert one.ok == 5 and sorted(p.name for p in (tmp_path / "two").glob("manifest-*")) == [
        "manifest-0-of-2.jsonl", "manifest-1-of-2.jsonl"]
    written = sorted(p.name for p in (tmp_path / "two" / "images").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    for name in written:
        assert (tmp_path / "two" / "images" / name).read_bytes() == (tmp_path / "one" / "images" / name).read_bytes()
    ranks = {r["source"]: r["rank"] for r in latest_records(read_all_manifests(tmp_path / "two")).values()
             if r.get("selected")}
    assert ranks == {r["source"]: r["rank"] for r in latest_records(read_all_manifests(tmp_path / "one")).values()
                     if r.get("selected")}
    assert not list((tmp_path / "two").glob(".lock*"))


def test_shards_cannot_write_the_exports(tmp_path):
    with pytest.raises(UserError, match="cannot be written by the shards"):
        options(num_images=3, shard=(0, 2), h5=str(tmp_path / "x.h5")).resolved()


@pytest.mark.parametrize("shard_count", [2])
def test_shards_cover_the_sources_once(tmp_path, shard_count):
    for index in range(shard_count):
        build(MINI, tmp_path / "out", options(resolution=32, shard=(index, shard_count)))
    records = latest_records(read_all_manifests(tmp_path / "out"))
    assert len(records) == 15 and all(r["status"] == "ok" for r in records.values())


def test_pil_and_torch_backends_agree(tmp_path):
    auto = build(MINI, tmp_path / "auto", options(backend="auto", limit=3))
    assert "render:pil" in latest_records(read_all_manifests(tmp_path / "auto"))["000001.jpg"]["stages"]
    build(MINI, tmp_path / "torch", options(limit=3))
    assert auto.ok == 3
    for name in ("000001.jpg.png", "000002.jpg.png", "000003.jpg.png"):
        a = np.asarray(Image.open(tmp_path / "auto" / "images" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "torch" / "images" / name), dtype=np.int16)
        difference = np.abs(a - b)
        assert difference.mean() <= 0.5 and np.percentile(difference, 99) <= 4


def test_folder_without_landmark_file_uses_dlib(tmp_path):
    pytest.importorskip("dlib", reason="dlib not installed (pip install .[faces])")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("000001.jpg", "000002.jpg"):
        shutil.copy(MINI / "img_celeba" / name, photos / name)
    Image.new("RGB", (200, 200), (90, 120, 30)).save(photos / "no_face.jpg")
    report = build(photos, tmp_path / "out", options(backend="pil"))
    assert report.ok == 2 and report.skipped == {"no_face.jpg": "no face found"}
    record = latest_records(read_all_manifests(tmp_path / "out"))["000001.jpg"]
    assert record["landmarks"]["landmark_source"] == "dlib" and "detection_score" in record["landmarks"]
    stored = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")["000001.jpg"]
    assert np.abs(np.asarray(record["landmarks"]["points"]) - stored).max() < 6  # pixels, a 512² photo


def test_prepared_photos_travel_as_tensors():
    """A worker's Prepared pickles its pixels as a torch tensor (the DataLoader's queue then shares the memory
    instead of piping the bytes) and unpickles to the same numpy pixels, read-only sources included."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch

    from celebahq.pipeline import Prepared

    pixels = np.random.default_rng(1).integers(0, 256, (37, 52, 3), dtype=np.uint8)
    pixels.setflags(write=False)  # as decoded by PIL
    prepared = Prepared("a/b.jpg", pixels, None, None, {"points": [[1, 2]]}, 0.5)
    _, (fields,) = prepared.__reduce__()
    assert isinstance(fields["pixels"], torch.Tensor)
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(prepared)
    back = pickle.loads(buffer.getvalue())
    assert isinstance(back, Prepared) and isinstance(back.pixels, np.ndarray)
    np.testing.assert_array_equal(back.pixels, pixels)
    assert (back.source, back.landmarks, back.seconds) == ("a/b.jpg", {"points": [[1, 2]]}, 0.5)


def test_the_progress_bar_counts_sources_done_not_prepared(tmp_path, monkeypatch):
    """Each pass's bar moves when a batch is rendered and handed on (or a source skipped), never ahead of it, and
    ends at the pass's source count; the writes still in flight are finished while the bar is shown."""
    from celebahq import pipeline

    bars = []

    class RecordingBar:
        def __init__(self, total, description, enabled=True):
            self.total, self.counted, self.rendered_when_counted = total, 0, []
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, count):
            self.counted += count
            self.rendered_when_counted.append((self.counted, reports[-1].rendered + reports[-1].skipped))

        def set_postfix_str(self, text):
            pass

    reports = []
    original = pipeline._run_pass

    def run_pass(report, *args, **kwargs):
        reports.append(report)
        return original(report, *args, **kwargs)

    monkeypatch.setattr(pipeline, "progress_bar", RecordingBar)
    monkeypatch.setattr(pipeline, "_run_pass", run_pass)
    build(MINI, tmp_path / "out", options(num_images=5))
    assert [bar.total for bar in bars] == [15, 5]  # the score pass, then the write pass
    for bar in bars:
        assert bar.counted == bar.total
        assert all(counted <= done for counted, done in bar.rendered_when_counted), bar.rendered_when_counted
