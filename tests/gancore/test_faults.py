"""gancore's guards against hostile input and faults: decompression bombs, majority image size, the folder lock,
atomic PNG writing, output checks and OSError as one CLI line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gancore.cli import user_errors
from gancore.errors import SourceError, UserError
from gancore.imagefiles import list_image_files, write_png
from gancore.locking import FolderLock
from gancore.outputs import check_output_path
from gancore.sources import MAX_PIXELS_ENV_VAR, BadImage, ImageStream, decode_image, open_source, peek_shape


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels (one empty IDAT): a 'bomb' by its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def save(folder: Path, name: str, size: int, value: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------------------------
# Decompression bombs


def test_bomb_header_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    assert bomb.stat().st_size < 200
    with pytest.raises(BadImage, match=r"too large: 100000x100000 = 10,000,000,000 pixels.*--max-pixels"):
        decode_image(bomb)


def test_pixel_limit_from_the_environment(tmp_path, monkeypatch):
    path = save(tmp_path, "a.png", 64)
    monkeypatch.setenv(MAX_PIXELS_ENV_VAR, "1000")
    with pytest.raises(BadImage, match="too large: 64x64"):
        decode_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV_VAR, "5000")
    assert decode_image(path).shape == (64, 64, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV_VAR, "lots")
    with pytest.raises(SourceError, match="GANCORE_MAX_PIXELS='lots' is not a whole number"):
        decode_image(path)


def test_bomb_in_a_folder_is_skipped_and_reported(tmp_path):
    for index in range(4):
        save(tmp_path, f"{index}.png", 16, index)
    (tmp_path / "00bomb.png").write_bytes(png_header_only(40_000, 40_000))
    stream = ImageStream(tmp_path, num_images=4, skip_bad=True, num_workers=0)
    assert sum(batch.shape[0] for batch in stream) == 4
    assert [item.reason.split(":")[0] for item in stream.skipped] == ["too large"]


# --------------------------------------------------------------------------------------------------------------
# The reference size is the majority's


def test_majority_size_wins_even_when_an_odd_file_sorts_first(tmp_path):
    save(tmp_path, "000_odd.png", 64)
    for index in range(6):
        save(tmp_path, f"good{index}.png", 32, index)
    source = open_source(tmp_path)
    assert peek_shape(source, skip_bad=True) == (32, 32)
    with pytest.raises(SourceError, match=r"6 of 7 sampled files are 32x32.*000_odd\.png: 64x64"):
        peek_shape(source)
    stream = ImageStream(tmp_path, num_images=6, skip_bad=True, num_workers=0)
    batches = list(stream)
    assert sum(batch.shape[0] for batch in batches) == 6 and batches[0].shape[2:] == (32, 32)
    assert len(stream.skipped) == 1 and "000_odd.png" in stream.skipped[0].name
    assert "differs from the majority's 32x32" in stream.skipped[0].reason


# --------------------------------------------------------------------------------------------------------------
# Listing and writing


def test_listing_is_recursive_sorted_and_skips_hidden(tmp_path):
    save(tmp_path / "b", "1.png", 8)
    save(tmp_path, "a.JPG", 8)
    save(tmp_path / ".hidden", "x.png", 8)
    save(tmp_path, ".half.png", 8)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == ["a.JPG", "b/1.png"]


def test_write_png_is_atomic(tmp_path):
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    path = write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_full_disk_leaves_no_partial_file(tiny_disk):
    write_png(tiny_disk / "small.png", np.zeros((8, 8, 3), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~197 kB, incompressible
    with pytest.raises(OSError, match="No space left on device"):
        write_png(tiny_disk / "big.png", noise)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["small.png"]


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new" / "out.npz") == tmp_path / "new" / "out.npz"
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []
    with pytest.raises(UserError, match="is a folder"):
        check_output_path(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create"):
        check_output_path(blocker / "sub" / "out.npz")
    with pytest.raises(UserError, match="is a file; give a folder"):
        check_output_path(blocker, folder=True)


def test_read_only_output_is_refused_before_work(read_only):
    with pytest.raises(UserError, match=r"cannot write in .*ro: Read-only file system|Permission denied"):
        check_output_path(read_only / "stats.npz")


def test_os_error_becomes_one_line(read_only):
    @click.command()
    @user_errors
    def command():
        write_png(read_only / "x.png", np.zeros((2, 2, 3), np.uint8))

    result = CliRunner().invoke(command)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Read-only file system" in lines[0]
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------------------
# One writer per folder


def test_second_writer_is_refused_and_lock_released(tmp_path):
    with FolderLock(tmp_path / "out", "celebahq build") as lock:
        holder = json.loads((tmp_path / "out" / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "celebahq build"
        code = ("import sys; from gancore.locking import FolderLock; from gancore.errors import UserError\n"
                f"try:\n    FolderLock({str(tmp_path / 'out')!r}, 'celebahq rank').acquire()\n"
                "except UserError as e:\n    print(e); sys.exit(2)\n")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert other.returncode == 2
        assert f"is being written by `celebahq build` (pid {os.getpid()}" in other.stdout
        assert lock.holder().command == "celebahq build"
    assert not (tmp_path / "out" / ".lock").exists()
    FolderLock(tmp_path / "out", "again").acquire().release()


def test_shards_share_the_folder_lock_and_exclude_other_writers(tmp_path):
    """The shards of one build (torchrun ranks) hold the folder lock together; `rank`, `export` or an unsharded
    build are refused while any shard writes, and shards are refused while one of those does. flock locks belong
    to open files, so two handles in this process contend like two processes."""
    out = tmp_path / "out"
    notes = []
    first = FolderLock(out, "celebahq build --shard 0/2", shared=True).acquire()
    second = FolderLock(out, "celebahq build --shard 1/2", shared=True, notify=notes.append).acquire()
    assert notes == []  # the other shard is alive: nothing was taken over
    with pytest.raises(UserError, match=r"is being written by `celebahq build --shard"):
        FolderLock(out, "celebahq rank").acquire()
    first.release()
    assert (out / ".lock").exists()  # the other shard still writes
    with pytest.raises(UserError, match="is being written by"):
        FolderLock(out, "celebahq export").acquire()
    second.release()
    assert not (out / ".lock").exists()  # the last shard out removes it
    with FolderLock(out, "celebahq rank"), pytest.raises(UserError, match="is being written by `celebahq rank`"):
        FolderLock(out, "celebahq build --shard 0/2", shared=True).acquire()
    shard = FolderLock(out, "celebahq build --shard 0/2", name=".lock-shard-0-of-2").acquire()
    with pytest.raises(UserError, match="--shard 0/2"):  # one process per shard
        FolderLock(out, "celebahq build --shard 0/2", name=".lock-shard-0-of-2").acquire()
    shard.release()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = ("import os; from gancore.locking import FolderLock\n"
            f"FolderLock({str(tmp_path)!r}, 'celebahq build').acquire(); os.kill(os.getpid(), 9)\n")
    killed = subprocess.run([sys.executable, "-c", code], check=False)
    assert killed.returncode == -9 and (tmp_path / ".lock").exists()
    notes = []
    with FolderLock(tmp_path, "celebahq export", notify=notes.append):
        pass
    assert len(notes) == 1 and "took over the stale lock of `celebahq build`" in notes[0]


def test_helper_pool_children_do_not_import_the_main_module(tmp_path):
    """A spawned child normally re-imports the parent's __main__ (for a CLI: torch and all); helper_pool's do not,
    and they still run tasks of importable modules."""
    marker = tmp_path / "imported-by"
    script = tmp_path / "entry.py"
    script.write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).open('a').write(__name__ + ' ' + str(os.getpid()) + '\\n')\n"
        "if __name__ == '__main__':\n"
        "    from gancore.processes import helper_pool\n"
        "    with helper_pool(2) as pool:\n"
        "        pids = {pool.submit(os.getpid).result() for _ in range(4)}\n"
        "    print(len(pids - {os.getpid()}) > 0)\n")
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])),
                               check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "True"  # the tasks ran in other processes
    assert marker.read_text().split()[0::2] == ["__main__"]  # only the parent ran the entry module


def test_a_helper_is_silent_when_its_parent_left_mid_exchange(capsys):
    """A helper's uncaught connection errors (its parent stopped while, e.g., the resource-sharer thread handed it
    a shared tensor: 4 of 60 Ctrl-Cs of a build printed such a traceback before, `benchmarks/ctrl_c_stress.py`)
    print nothing; any other error its usual traceback."""
    from gancore.processes import quiet_when_the_parent_left

    for error in (EOFError(), ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError()):
        quiet_when_the_parent_left(type(error), error, None)
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real bug")
    except ValueError as error:
        quiet_when_the_parent_left(ValueError, error, error.__traceback__)
    assert "ValueError: a real bug" in capsys.readouterr().err



@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_process_state_and_descendants_follow_a_child(tmp_path):
    """`process_state` reads the kernel's letter (a command name with spaces and parentheses does not confuse it),
    `descendants` finds a live child and drops it once it is a zombie; a reaped child has no state."""
    import signal
    import time

    from toolkit_testing.process_tree import descendants, process_state

    python = tmp_path / "a) (b c"  # the command name /proc/PID/stat shows in parentheses: the executable's
    python.symlink_to(sys.executable)
    child = subprocess.Popen([str(python), "-c", "import time; time.sleep(60)"])
    try:
        assert process_state(os.getpid()) == "R" and child.pid in descendants(os.getpid())
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while process_state(child.pid) != "T":
            assert time.monotonic() < deadline, process_state(child.pid)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
        assert process_state(child.pid) == "Z" and child.pid not in descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert process_state(child.pid) is None
