"""Writing outputs safely, without torch (a writer process imports only this, numpy and Pillow): atomic files
(temporary name, then rename) and a check, before any work, that an output path can be written."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (hidden, ending in .partial, unique to this process and call); when the
    block succeeds it is renamed to `path`, otherwise removed: readers never see a half-written file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
    return path
