"""`celebahq build` never loses data and never leaves processes behind: one writer per folder, names that cannot
collide, children that die with the build, Ctrl-C, read-only and full output folders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from celebahq.cli import main
from celebahq.landmarks import read_celeba_landmarks, write_celeba_landmarks
from celebahq.manifest import latest_records, read_all_manifests
from celebahq.pipeline import BuildOptions, build
from toolkit_testing.builds import selected_images
from toolkit_testing.process_pause import resume, stop_when
from toolkit_testing.process_tree import descendants, process_state

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"


def build_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "celebahq.cli", "build", "--src", str(MINI), "--out", str(out), "--device", "cpu",
            "--backend", "torch", "--quiet", *extra]


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def manifest_lines(out: Path) -> int:
    path = out / "manifest.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if process_state(pid) not in (None, "Z")}


def test_same_stem_sources_are_both_kept(tmp_path):
    src = tmp_path / "src"
    (src / "img_celeba").mkdir(parents=True)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    shutil.copy(MINI / "img_celeba" / "000001.jpg", src / "img_celeba" / "face.jpg")
    Image.open(MINI / "img_celeba" / "000002.jpg").save(src / "img_celeba" / "face.png")
    write_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt",
                           {"face.jpg": table["000001.jpg"], "face.png": table["000002.jpg"]})
    options = BuildOptions(resolution=64, num_workers=0, num_writers=1, device="cpu", backend="torch",
                           progress=False)
    assert build(src, tmp_path / "out", options).ok == 2
    records = latest_records(read_all_manifests(tmp_path / "out"))
    assert {r["output"] for r in records.values()} == {"images/face.jpg.png", "images/face.png.png"}
    files = selected_images(tmp_path / "out")
    assert len(files) == 2 and files[0].read_bytes() != files[1].read_bytes()


def test_swapped_eye_columns_are_skipped_unless_accepted(tmp_path):
    src = tmp_path / "src"
    (src / "img_celeba").mkdir(parents=True)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    shutil.copy(MINI / "img_celeba" / "000001.jpg", src / "img_celeba" / "000001.jpg")
    write_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt",
                           {"000001.jpg": table["000001.jpg"][[1, 0, 2, 3, 4]]})  # left and right eye swapped
    options = BuildOptions(resolution=64, num_workers=0, num_writers=1, device="cpu", backend="torch",
                           progress=False)
    report = build(src, tmp_path / "out", options)
    assert report.ok == 0 and "eyes are swapped" in report.skipped["000001.jpg"]
    assert "--accept-odd-landmarks" in report.skipped["000001.jpg"]
    accepted = BuildOptions(resolution=64, num_workers=0, num_writers=1, device="cpu", backend="torch",
                            progress=False, accept_odd_landmarks=True)
    assert build(src, tmp_path / "out2", accepted).ok == 1


def test_one_writer_per_folder_rank_during_a_build_is_refused(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(build_command(out, "--resolution", "64", "--limit", "6", "--batch-size", "1",
                                             "--workers", "0", "--writers", "1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stop_when(process, lambda: (out / ".lock").is_file() and manifest_lines(out) >= 1)  # stopped mid-build
        runner = CliRunner()
        ranked = runner.invoke(main, ["rank", str(out), "--workers", "0", "--quiet"])
        assert ranked.exit_code == 2 and "being written by `celebahq build`" in ranked.stderr
        assert f"pid {process.pid}" in ranked.stderr and len(ranked.stderr.splitlines()) == 1
        second = runner.invoke(main, ["build", "--src", str(MINI), "--out", str(out), "--resolution", "64"])
        assert second.exit_code == 2 and "being written by `celebahq build`" in second.stderr
        exported = runner.invoke(main, ["export", str(out), "--zip", str(tmp_path / "x.zip"), "--quiet"])
        assert exported.exit_code == 2 and not (tmp_path / "x.zip").exists()
    finally:
        resume(process)
        assert process.wait(timeout=300) == 0, process.stderr.read()
    records = latest_records(read_all_manifests(out))
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())  # nothing lost
    assert not (out / ".lock").exists()


def test_children_die_with_a_killed_build_and_the_rerun_finishes(tmp_path):
    out = tmp_path / "out"
    command = build_command(out, "--resolution", "64", "--limit", "8", "--batch-size", "1", "--workers", "2",
                            "--writers", "2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # 2 decode workers and the writers: the pool starts a writer only when none is idle, so how many exist when
    # the first image is recorded depends on timing (one run saw 3 of them); wait for the workers and one more
    stop_when(process, lambda: manifest_lines(out) >= 1 and len(descendants(process.pid)) >= 3)
    helpers = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resume(process)  # the helpers go on, as after a real kill: nothing but the build's death may end them
    deadline = time.time() + 5
    while alive(helpers) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(helpers), f"still running after 5 s: {alive(helpers)}"
    rerun = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(latest_records(read_all_manifests(out))) == 8 and not list(out.rglob("*.partial"))


def test_ctrl_c_prints_one_line(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(build_command(out, "--resolution", "64", "--limit", "8", "--batch-size", "1",
                                             "--workers", "2", "--writers", "1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    stop_when(process, lambda: manifest_lines(out) >= 1)
    helpers = descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does: the whole process group
    resume(process)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr.strip().splitlines() == ["interrupted"], stderr
    wait_for(lambda: not alive(helpers), 5)


def test_read_only_output_folders_give_one_line_before_any_work(tmp_path, read_only):
    runner = CliRunner()
    built = runner.invoke(main, ["build", "--src", str(MINI), "--out", str(read_only / "out"), "--resolution", "64"])
    assert built.exit_code == 2 and built.stderr.startswith("error: ") and len(built.stderr.splitlines()) == 1
    assert "Read-only file system" in built.stderr
    restored = runner.invoke(main, ["restore", "cleanup", str(MINI / "img_celeba"), str(read_only / "clean")])
    assert restored.exit_code == 2 and "Read-only file system" in restored.stderr
    out = tmp_path / "out"
    build(MINI, out, BuildOptions(resolution=64, limit=2, num_workers=0, num_writers=1, device="cpu",
                                  backend="torch", progress=False))
    preview = runner.invoke(main, ["rank", str(out), "--preview", str(read_only / "p.png"), "--workers", "0"])
    assert preview.exit_code == 2 and "Read-only file system" in preview.stderr
    assert "rank" not in latest_records(read_all_manifests(out))["000001.jpg"]  # refused before the ranking


def test_a_full_disk_stops_the_build_with_one_line_and_no_partial_file(tiny_disk):
    tiny = tiny_disk
    done = subprocess.run(build_command(tiny / "out", "--resolution", "256", "--limit", "6", "--workers", "0",
                                        "--writers", "1"), check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("No space left on device"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not list(tiny.rglob("*.partial"))
    for path in (tiny / "out" / "images").rglob("*.png"):  # whatever was written is whole
        assert np.asarray(Image.open(path)).shape == (256, 256, 3)
