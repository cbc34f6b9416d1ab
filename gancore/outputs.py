"""Writing outputs safely, without torch (a writer process imports only this, numpy and Pillow): atomic files
(temporary name, then rename), a check, before any work, that an output path can be written, and the marker that
tells an output folder from a folder of sources."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"  # gancore.locking's writer lock file
OUTPUT_MARKER = ".gancore-output"  # an empty file: "this folder is a command's output, not a source"
FILE_COUNT_LIMIT = 100_000  # files one command writes unless told it may write more (the paper's FID: 50,000)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (hidden, ending in .partial, unique to this process and call); when the
    block succeeds it is renamed to `path`, otherwise removed: readers never see a half-written file.

    An OSError of the write (a full disk: a failed `write` names no file) is raised again naming `path`, not the
    hidden temporary, so that the CLIs' one line says which output failed ('PATH: No space left on device')."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        if error.filename not in (None, str(temporary), temporary):
            raise  # about another file (e.g. a source read inside the block)
        raise os_error_naming(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)


def os_error_naming(error: OSError, path: str | os.PathLike) -> OSError:
    """`error`'s errno and reason naming `path` (a failed `write` or `close` names no file); OSError picks the
    subclass from the errno (FileNotFoundError for ENOENT, …)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append `text` (UTF-8) to `path`, created if missing; an OSError (a full disk) names `path`."""
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise os_error_naming(error, path) from error


def check_output_path(path: str | os.PathLike, folder: bool = False) -> Path:
    """Check, before any work, that `path` can be written: a file whose parent folder exists (or can be made) and
    is writable, and which is not itself a folder; with `folder=True`, a folder that exists or can be made and is
    writable. Creates missing parent folders. Raises UserError naming the path and the reason."""
    path = Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; give a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {target}: {error.strerror or error}") from None
    probe = target / f".write-test.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    try:
        probe.touch()
    except OSError as error:  # read-only file system, permission, no space for an inode
        raise UserError(f"cannot write in {target}: {error.strerror or error}") from None
    probe.unlink(missing_ok=True)
    if folder:
        mark_output_folder(path)
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """`check_output_path(path, folder=True)` for the length of a block: when the block raises (a user error, an
    interrupt) and left nothing but the marker in a folder this call made, the folder goes again, with the parent
    folders made for it: a refused command leaves no empty output behind. A folder that existed is never removed."""
    path = Path(path)
    first_missing = _first_missing(path)
    folder = check_output_path(path, folder=True)
    try:
        yield folder
    except BaseException:
        if first_missing is not None:
            _remove_unused(folder, first_missing)
        raise


@contextlib.contextmanager
def output_file(path: str | os.PathLike) -> Iterator[Path]:
    """`check_output_path(path)` for the length of a block that ends by writing the file (atomically): when the
    block raises, the parent folders made for the file go again if they are still empty."""
    path = Path(path)
    first_missing = _first_missing(path.parent)
    checked = check_output_path(path)
    try:
        yield checked
    except BaseException:
        if first_missing is not None:
            _remove_unused(path.parent, first_missing)
        raise


def _first_missing(path: Path) -> Path | None:
    """The highest of `path` and its parents that does not exist (None: `path` exists)."""
    return next((folder for folder in reversed([path, *path.parents]) if not folder.exists()), None)


def _remove_unused(folder: Path, top: Path) -> None:
    """Remove `folder` if it holds nothing but the output marker, then its empty parents up to `top` included."""
    with contextlib.suppress(OSError):
        if set(os.listdir(folder)) <= {OUTPUT_MARKER}:
            (folder / OUTPUT_MARKER).unlink(missing_ok=True)
        for empty in [folder, *folder.parents[:len(folder.parents) - len(top.parents)]]:
            empty.rmdir()  # OSError (not empty) ends the walk


def mark_output_folder(folder: str | os.PathLike) -> None:
    """Mark the existing `folder` as a command's output: `gancore.imagefiles.list_image_files` never lists it as a
    subfolder of a source folder. Raises OSError when the folder cannot be written."""
    (Path(folder) / OUTPUT_MARKER).touch()


def check_apart(out: str | os.PathLike, source: str | os.PathLike) -> None:
    """Refuse (UserError) an output folder that is the source folder itself: its outputs would be listed as sources
    on the next run (an output folder inside the source folder is fine: listings skip it by its marker)."""
    if Path(out).resolve() == Path(source).resolve():
        raise UserError(f"{out}: the output folder is the source folder; give the output a folder of its own (it "
                        f"may lie inside the source folder)")


def holds_output_marker(names: Iterable[str]) -> bool:
    """Whether a folder holding files `names` is a command's output: the output marker, a writer lock (a command
    writes there now) or a build manifest (`manifest.jsonl`, `manifest-I-of-N.jsonl`: builds made before the marker
    existed)."""
    return any(name in (OUTPUT_MARKER, LOCK_NAME, "manifest.jsonl")
               or (name.startswith("manifest-") and name.endswith(".jsonl")) for name in names)


def check_room_for_files(folder: str | os.PathLike, count: int, bytes_each: int, what: str, allow_many: bool,
                         option: str = "--allow-many") -> None:
    """Check, before any work, that `count` files of at most `bytes_each` bytes (`what`, e.g. "PNGs of 1024x1024")
    may be written into `folder` (which need not exist yet: the free space is that of the nearest folder above it
    that does, so a refused command has created nothing): at most FILE_COUNT_LIMIT of them unless `allow_many` (the
    user's `option`), and no more bytes than the file system has free. Raises UserError naming what is needed."""
    if count > FILE_COUNT_LIMIT and not allow_many:
        raise UserError(f"{count:,} {what} asked, more than {FILE_COUNT_LIMIT:,}; pass {option} to write that many")
    needed, free = count * bytes_each, shutil.disk_usage(_nearest_existing(Path(folder))).free
    if needed > free:
        raise UserError(f"{folder}: {count:,} {what} need up to {_byte_size(needed)}, only {_byte_size(free)} "
                        f"free there")


def _nearest_existing(path: Path) -> Path:
    """`path` if it exists, else the nearest folder above it that does (the current folder at worst)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _byte_size(count: int) -> str:
    """'512 bytes', '3.1 MB', '46.9 GB', … (powers of 1000, as `df -H` shows them)."""
    size, unit = float(count), "bytes"
    for larger in ("kB", "MB", "GB", "TB", "PB", "EB"):
        if size < 1000:
            break
        size, unit = size / 1000, larger
    return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
