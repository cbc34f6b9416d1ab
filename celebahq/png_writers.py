"""The work the build's writer processes do (encode, write, hash); the processes themselves, which die with the
build, come from `gancore.processes`."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from gancore.imagefiles import encode_png
from gancore.outputs import atomic_output


def pixels_md5(image: np.ndarray) -> str:
    """md5 of the uint8 HWC RGB pixels (C order): the manifest's `md5`, independent of the PNG encoding."""
    return hashlib.md5(np.ascontiguousarray(image).data).hexdigest()  # no copy of a C-ordered array


def encode_and_write(image: np.ndarray, path: str | None, keep_bytes: bool) -> tuple[bytes | None, float]:
    """In a writer: encode uint8 HWC `image` as PNG; write it atomically to `path` (temporary name, then rename)
    when given; return the bytes when `keep_bytes` (for a zip export) and the seconds spent."""
    started = time.perf_counter()
    data = encode_png(image)
    if path is not None:
        with atomic_output(Path(path)) as temporary:
            temporary.write_bytes(data)
    return (data if keep_bytes else None), time.perf_counter() - started
