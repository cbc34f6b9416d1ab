"""`celebahq build` against hostile layouts and inputs: an output folder inside the source folder, selection files
with a BOM, a bare or misspelt header, CRLF line ends; a bad $GANCORE_MAX_PIXELS with decode workers; a source
name holding a newline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from celebahq.cli import main
from celebahq.pipeline import BuildOptions, build, discover_sources
from celebahq.selection import read_selection
from gancore.errors import UserError
from toolkit_testing.builds import small_celeba
from toolkit_testing.official_release import HEADER, MD5S

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"


def options(**kwargs) -> BuildOptions:
    return BuildOptions(**{"resolution": 16, "num_workers": 0, "num_writers": 1, "progress": False, "device": "cpu",
                           "backend": "pil", **kwargs})


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------------------
# An output folder inside the source folder


def test_an_output_folder_inside_the_source_folder_is_never_a_source(tmp_path):
    src = small_celeba(tmp_path, 2)
    out = src / "img_celeba" / "out"  # where the listing looks for sources
    first = build(src, out, options())
    second = build(src, out, options())
    assert (first.sources, first.ok, second.sources, second.ok, second.already_done) == (2, 2, 2, 0, 2)
    assert second.skipped == {} and not (out / "images" / "out").exists()
    assert [item.name for item in discover_sources(src)[0]] == ["000001.jpg", "000002.jpg"]


# --------------------------------------------------------------------------------------------------------------
# Selection files


@pytest.mark.parametrize(("text", "message"), [
    (f"{HEADER}\n", "line 1: the header of image_list.txt is followed by no rows"),
    (f"# list\n\n{HEADER}\n\n", "line 3: the header of image_list.txt is followed by no rows"),
    ("\ufeff000001.jpg\n", "line 1: starts with a UTF-8 byte order mark (BOM)"),
    (f"\ufeff{HEADER}\n0 0 000001.jpg {MD5S}\n", "line 1: starts with a UTF-8 byte order mark (BOM)"),
    (f"0 0 000001.jpg {MD5S}\n", f"line 1: a row of image_list.txt, but the header line '{HEADER}' is missing"),
    (f"Idx orig_idx orig_file proc_md5 final_md5\n0 0 000001.jpg {MD5S}\n",
     "line 1: expected the header 'idx orig_idx orig_file proc_md5 final_md5', found 'Idx orig_idx"),
    (f"idx orig_idx orig_fle proc_md5 final_md5\n0 0 000001.jpg {MD5S}\n", "found 'idx orig_idx orig_fle"),
    ("000001.jpg\n\n# two\n000001.jpg\n", "line 4: 000001.jpg is listed again (first on line 1)"),
])
def test_bad_selection_files_are_named_with_their_line(tmp_path, text, message):
    listing = tmp_path / "list.txt"
    listing.write_bytes(text.encode("utf-8"))
    with pytest.raises(UserError, match=r"^--select .*list\.txt, line ") as caught:
        read_selection(listing)
    assert message in str(caught.value)


def test_crlf_selection_files_read_as_lf_with_the_same_line_numbers(tmp_path):
    for text in (f"{HEADER}\n0 0 000001.jpg {MD5S}\n1 1 000002.jpg {MD5S}\n", "000002.jpg\n\n000001.jpg\n"):
        lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
        lf.write_bytes(text.encode())
        crlf.write_bytes(text.replace("\n", "\r\n").encode())
        picks = read_selection(lf)
        assert read_selection(crlf) == picks and [p.line for p in read_selection(crlf)] == [p.line for p in picks]
    assert [(p.source, p.line) for p in picks] == [("000002.jpg", 1), ("000001.jpg", 3)]


def test_missing_sources_are_named_with_their_lines(tmp_path):
    src = small_celeba(tmp_path, 1)
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{HEADER}\r\n0 0 000001.jpg {MD5S}\r\n\r\n1 1 000009.jpg {MD5S}\r\n".encode())
    result = CliRunner().invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--select",
                                       str(listing), "--device", "cpu", "--quiet"])
    assert "1 listed sources are not in the source folder (e.g. 000009.jpg (line 4))" in one_error_line(result)


# --------------------------------------------------------------------------------------------------------------
# The environment and names


def test_a_bad_pixel_limit_variable_is_one_line_with_decode_workers(tmp_path):
    src = small_celeba(tmp_path, 2)
    done = subprocess.run([sys.executable, "-m", "celebahq.cli", "build", "--src", str(src), "--out",
                           str(tmp_path / "out"), "--resolution", "16", "--workers", "2", "--device", "cpu",
                           "--quiet"], env=dict(os.environ, GANCORE_MAX_PIXELS="abc"), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["error: GANCORE_MAX_PIXELS='abc' is not a whole number of pixels"]


def test_a_source_name_with_a_newline_cannot_forge_a_line(tmp_path):
    src = small_celeba(tmp_path, 1)
    (src / "img_celeba" / "x\nerror: forged\x1b[2K.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "o"), "--resolution",
                                       "16", "--workers", "0", "--writers", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert not [line for line in lines if line.startswith("error:")], lines
    assert lines[0].startswith("skipped x\\nerror: forged\\x1b[2K.jpg: unreadable image"), lines


def test_a_restore_output_inside_its_input_folder_is_never_read_back(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    photo = np.asarray(Image.open(MINI / "img_celeba" / "000001.jpg").convert("RGB"))
    Image.fromarray(photo[:16, :16]).save(src / "a.png")
    for _ in range(2):
        result = CliRunner().invoke(main, ["restore", "cleanup", str(src), str(src / "out"), "--quiet", "--device",
                                           "cpu"])
        assert result.exit_code == 0 and "1 images written, 0 skipped" in result.output, result.output
    assert sorted(path.relative_to(src).as_posix() for path in src.rglob("*.png")) == ["a.png", "out/a.png"]


def test_an_output_folder_that_is_the_source_folder_is_refused(tmp_path):
    src = small_celeba(tmp_path, 1)
    build_here = CliRunner().invoke(main, ["build", "--src", str(src), "--out", str(src / "img_celeba" / "."),
                                           "--device", "cpu", "--quiet"])
    assert "the output folder is the source folder" in one_error_line(build_here)
    restore_here = CliRunner().invoke(main, ["restore", "cleanup", str(src / "img_celeba"), str(src / "img_celeba"),
                                             "--device", "cpu", "--quiet"])
    assert "the output folder is the source folder" in one_error_line(restore_here)
    assert not (src / "img_celeba" / "images").exists() and not list(src.rglob("*.png"))
