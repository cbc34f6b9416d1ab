"""gancore's guards for the last hostile cases: output folders never listed as sources, one escaping function for
names in messages, disk-full errors naming the output (torch.save's too), N files checked against a limit and
the free space, locks that name another host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gancore.cli import user_errors
from gancore.errors import UserError, printable
from gancore.imagefiles import list_image_files, write_png
from gancore.locking import FolderLock
from gancore.outputs import (
    FILE_COUNT_LIMIT,
    append_text,
    check_output_path,
    check_room_for_files,
    output_file,
    output_folder,
)
from gancore.runtime import torch_save_atomic


def image(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    return write_png(folder / name, np.zeros((2, 2, 3), np.uint8))


def names(folder):
    return [path.relative_to(folder).as_posix() for path in list_image_files(folder)]


# --------------------------------------------------------------------------------------------------------------
# Output folders are not sources


@pytest.mark.parametrize("marker", [".gancore-output", ".lock", "manifest.jsonl", "manifest-0-of-2.jsonl"])
def test_a_marked_subfolder_is_not_listed_but_a_marked_root_is(tmp_path, marker):
    image(tmp_path, "a.png")
    image(tmp_path / "sub", "b.png")
    image(tmp_path / "out" / "images", "a.png.png")
    (tmp_path / "out" / marker).write_text("")
    assert names(tmp_path) == ["a.png", "sub/b.png"]
    assert names(tmp_path / "out") == ["images/a.png.png"]


def test_output_folders_are_marked_by_the_check_and_by_the_lock(tmp_path):
    image(tmp_path, "a.png")
    check_output_path(tmp_path / "checked", folder=True)
    image(tmp_path / "checked", "x.png")
    with FolderLock(tmp_path / "locked", "progan generate"):
        image(tmp_path / "locked", "y.png")
    assert names(tmp_path) == ["a.png"]
    check_output_path(tmp_path / "file.png")  # a file's parent is not marked
    assert not (tmp_path / ".gancore-output").exists()


# --------------------------------------------------------------------------------------------------------------
# Names in messages


def test_printable_escapes_what_would_break_a_line():
    assert printable("plain name ünïcode.png") == "plain name ünïcode.png"
    assert printable("a\nerror: b\r\t\x1b[2K\u2028\x85\udcff.png") == "a\\nerror: b\\r\\t\\x1b[2K\\u2028\\x85\\udcff.png"


def test_a_user_error_naming_a_hostile_file_is_one_line():
    @click.command()
    @user_errors
    def command():
        raise UserError("x\nerror: forged.png: unreadable")

    result = CliRunner().invoke(command)
    assert result.exit_code == 2 and result.stderr == "error: x\\nerror: forged.png: unreadable\n"


# --------------------------------------------------------------------------------------------------------------
# A full disk names the output


def test_a_full_disk_names_the_png_not_its_temporary(tiny_disk):
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write_png(tiny_disk / "big.png", noise)
    assert caught.value.filename == str(tiny_disk / "big.png")


def test_torch_save_on_a_full_disk_is_an_os_error_naming_the_file(tiny_disk):
    with pytest.raises(OSError, match="No space left on device") as caught:
        torch_save_atomic({"weights": torch.zeros(100_000)}, tiny_disk / "net.pt")
    assert caught.value.filename == str(tiny_disk / "net.pt") and list(tiny_disk.iterdir()) == []

    @click.command()
    @user_errors
    def command():
        torch_save_atomic({"weights": torch.zeros(100_000)}, tiny_disk / "net.pt")

    result = CliRunner().invoke(command)
    assert result.exit_code == 2 and result.stderr == f"error: {tiny_disk / 'net.pt'}: No space left on device\n"


def test_an_append_on_a_full_disk_names_the_file(tiny_disk):
    append_text(tiny_disk / "stats.jsonl", "{}\n")
    with pytest.raises(OSError, match="No space left on device") as caught:
        append_text(tiny_disk / "stats.jsonl", "x" * 100_000)
    assert caught.value.filename == str(tiny_disk / "stats.jsonl")


def test_torch_serialization_errors_are_os_errors_naming_the_file(tmp_path, monkeypatch):
    def failing_save(payload, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534\nmore")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError) as caught:
        torch_save_atomic({}, tmp_path / "net.pt")
    assert caught.value.strerror == "cannot save ([enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534)"
    assert caught.value.filename == str(tmp_path / "net.pt") and list(tmp_path.iterdir()) == []


def test_an_output_folder_made_for_a_failed_block_goes_again(tmp_path):
    with pytest.raises(UserError), output_folder(tmp_path / "a" / "b" / "c"):
        raise UserError("refused")
    assert list(tmp_path.iterdir()) == []  # the folder, its marker and the parents made for it
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), output_folder(tmp_path / "kept" / "new") as folder:
        assert (folder / ".gancore-output").is_file()
        raise KeyboardInterrupt
    assert list((tmp_path / "kept").iterdir()) == []  # a folder that existed stays
    with pytest.raises(UserError), output_folder(tmp_path / "written") as folder:
        (folder / "manifest.jsonl").write_text("{}")
        raise UserError("later")
    assert (tmp_path / "written" / "manifest.jsonl").is_file()  # work written is never removed
    with pytest.raises(UserError), output_folder(tmp_path / "kept"):
        raise UserError("refused")
    assert (tmp_path / "kept").is_dir()


def test_the_folders_made_for_a_file_of_a_failed_command_go_again(tmp_path):
    from ganeval.cli import main as ganeval_main

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(ganeval_main, ["stats", str(tmp_path / "empty"), "-o",
                                               str(tmp_path / "new" / "sub" / "stats.npz"), "--device", "cpu"])
    assert result.exit_code == 2 and "error: " in result.output, result.output
    assert sorted(os.listdir(tmp_path)) == ["empty"]
    with output_file(tmp_path / "kept" / "a.txt") as path:
        path.write_text("done")
    with pytest.raises(KeyboardInterrupt), output_file(tmp_path / "kept" / "more" / "b.txt"):
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path / "kept")) == ["a.txt"]


# --------------------------------------------------------------------------------------------------------------
# Many files


def test_file_count_and_free_space_are_checked(tmp_path, tiny_disk):
    check_room_for_files(tmp_path, FILE_COUNT_LIMIT, 10, "PNGs of 4x4", allow_many=False)
    with pytest.raises(UserError, match=r"^1,000,000,000,000 PNGs of 4x4 asked, more than 100,000; pass "
                                        r"--allow-many to write that many$"):
        check_room_for_files(tmp_path, 10**12, 10, "PNGs of 4x4", allow_many=False)
    with pytest.raises(UserError, match=r"tiny: 1,000 PNGs of 64x64 need up to 12\.3 MB, only \d+\.\d kB free"):
        check_room_for_files(tiny_disk, 1000, 12_288, "PNGs of 64x64", allow_many=False)


# --------------------------------------------------------------------------------------------------------------
# Locks naming another host


def foreign_lock(folder):
    folder.mkdir()
    holder = {"pid": 4242, "host": f"not-{socket.gethostname()}", "started": "2026-01-02T03:04:05+00:00",
              "command": "celebahq build"}
    (folder / ".lock").write_text(json.dumps(holder) + "\n")
    return holder


def test_a_lock_of_another_host_is_refused_unless_taken_over(tmp_path, monkeypatch):
    holder = foreign_lock(tmp_path / "out")
    monkeypatch.delenv("GANCORE_TAKE_OVER_LOCK", raising=False)
    with pytest.raises(UserError) as caught:
        FolderLock(tmp_path / "out", "celebahq rank").acquire()
    message = str(caught.value)
    assert f"pid 4242 on {holder['host']}, since 2026-01-02T03:04:05+00:00" in message
    assert "another host" in message and "--take-over-lock" in message and "no longer running" not in message
    assert json.loads((tmp_path / "out" / ".lock").read_text()) == holder  # left as it was
    notes = []
    with FolderLock(tmp_path / "out", "celebahq rank", notify=notes.append, take_over=True):
        assert json.loads((tmp_path / "out" / ".lock").read_text())["host"] == socket.gethostname()
    assert len(notes) == 1 and "on another host, as asked" in notes[0]
    foreign_lock(tmp_path / "again")
    monkeypatch.setenv("GANCORE_TAKE_OVER_LOCK", "1")
    with FolderLock(tmp_path / "again", "celebahq rank", notify=notes.append):
        pass


def test_lock_and_pixel_options_last_one_command(monkeypatch):
    """--take-over-lock and --max-pixels reach the command's processes through the environment, and end with it: a
    later command run from the same Python process does not take over locks it was not told to."""
    from gancore.cli import max_pixels_option, take_over_lock_option

    seen = []

    @click.command()
    @take_over_lock_option
    @max_pixels_option
    def command():
        seen.append((os.environ.get("GANCORE_TAKE_OVER_LOCK"), os.environ.get("GANCORE_MAX_PIXELS")))

    monkeypatch.delenv("GANCORE_TAKE_OVER_LOCK", raising=False)
    monkeypatch.setenv("GANCORE_MAX_PIXELS", "5000")
    assert CliRunner().invoke(command, ["--take-over-lock", "--max-pixels", "77"]).exit_code == 0
    assert seen == [("1", "77")]
    assert "GANCORE_TAKE_OVER_LOCK" not in os.environ and os.environ["GANCORE_MAX_PIXELS"] == "5000"


def test_a_hostile_lock_file_cannot_forge_a_line(tmp_path):
    (tmp_path / "out").mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)  # a pid that no longer runs
    holder = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": "x", "command": "evil\nerror: forged"}
    (tmp_path / "out" / ".lock").write_text(json.dumps(holder))
    notes = []
    with FolderLock(tmp_path / "out", "celebahq rank", notify=notes.append):
        pass
    assert len(notes) == 1 and "\n" not in notes[0] and "evil\\nerror: forged" in notes[0]


def test_every_command_prints_skips_in_one_shape(capsys):
    """celebahq's `skipped NAME: REASON` and ganeval's, with the set: `skipped (gen) NAME: REASON`."""
    from gancore.cli import emit_skipped, report_skipped

    emit_skipped({"a.jpg": "unreadable image"})
    assert report_skipped({"gen": ["b.png: truncated"], "real": []}) == 1
    assert capsys.readouterr().err.splitlines() == ["skipped a.jpg: unreadable image",
                                                    "skipped (gen) b.png: truncated"]


def test_an_error_mid_pass_is_a_line_of_its_own_in_a_log(tmp_path):
    """stderr to a file: no progress bar (its carriage returns would put the `error:` line after the bar's text on
    one line), so a broken image found mid-pass gives exactly one line; GANCORE_PROGRESS=1 brings the bar back."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(40):
        write_png(folder / f"{index:03d}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    broken = (folder / "020.png").read_bytes()
    (folder / "020.png").write_bytes(broken[:60])  # the header still says 16x16, the pixels are gone
    command = [sys.executable, "-m", "ganeval.cli", "swd", str(folder), str(folder), "--num-images", "40",
               "--device", "cpu"]
    quiet = subprocess.run(command, capture_output=True, check=False)  # bytes: a "\r" stays one
    assert quiet.returncode == 2 and b"\r" not in quiet.stderr, quiet.stderr
    lines = quiet.stderr.decode().split("\n")
    assert len(lines) == 2 and lines[0].startswith("error: ") and "020.png" in lines[0] and lines[1] == "", lines
    shown = subprocess.run(command, capture_output=True, check=False, env={**os.environ, "GANCORE_PROGRESS": "1"})
    assert shown.returncode == 2 and b"\r" in shown.stderr


def test_progress_bars_are_drawn_on_terminals_in_notebooks_or_when_asked(monkeypatch):
    import types

    from gancore.runtime import progress_bar

    monkeypatch.delenv("GANCORE_PROGRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress_bar(10, "log").disable  # the tests' stderr is no terminal
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    with progress_bar(10, "notebook") as bar:
        assert not bar.disable
    monkeypatch.delitem(sys.modules, "ipykernel")
    monkeypatch.setenv("GANCORE_PROGRESS", "1")
    with progress_bar(10, "asked") as bar:
        assert not bar.disable
    assert progress_bar(10, "quiet", enabled=False).disable and progress_bar(0, "empty").disable
