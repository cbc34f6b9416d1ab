"""Helper processes that never outlive the build: decode workers and PNG writers.

Every child the build starts calls `die_with_parent` first: on Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes
the kernel kill it the moment its parent dies (even by SIGKILL, which no handler sees), and a parent that was
already gone when the child started ends it at once. Children ignore SIGINT: Ctrl-C in a terminal reaches the
whole process group, and only the main process should answer it (with one line), not every worker with a
traceback. The writers are started with "spawn", so they are children of the build process itself (a
forkserver would be their parent and itself outlive the build).
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gancore.imagefiles import encode_png
from gancore.runtime import atomic_output

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(*_args) -> None:
    """Make this child process end when its parent does, and leave Ctrl-C to the parent (any arguments are
    ignored: usable as a DataLoader `worker_init_fn` or a pool `initializer`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the check below still runs
            pass
    if parent == 1:  # the parent died before the prctl took effect: we were re-parented to init
        os._exit(1)


def writer_pool(num_writers: int) -> ProcessPoolExecutor:
    """`num_writers` processes that encode and write PNGs (zlib at 1024² costs ~0.09 s an image, more than a GPU
    render; threads would contend for the GIL in Pillow's per-chunk loop), each dying with this process."""
    return ProcessPoolExecutor(num_writers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent)


def pixels_md5(image: np.ndarray) -> str:
    """md5 of the uint8 HWC RGB pixels (C order): the manifest's `md5`, independent of the PNG encoding."""
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


def encode_and_write(image: np.ndarray, path: str | None, keep_bytes: bool) -> tuple[bytes | None, float]:
    """In a writer: encode uint8 HWC `image` as PNG; write it atomically to `path` (temporary name, then rename)
    when given; return the bytes when `keep_bytes` (for a zip export) and the seconds spent."""
    started = time.perf_counter()
    data = encode_png(image)
    if path is not None:
        with atomic_output(Path(path)) as temporary:
            temporary.write_bytes(data)
    return (data if keep_bytes else None), time.perf_counter() - started
