"""Helper processes that never outlive their parent: decode workers, PNG writers, any pool a command starts.

Every child calls `die_with_parent` first: on Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the kernel kill it
the moment its parent dies (even by SIGKILL, which no handler sees), and a parent that was already gone when the
child started ends it at once. Children ignore SIGINT: Ctrl-C in a terminal reaches the whole process group,
and only the main process should answer it (with one line), not every worker with a traceback. Pools are
started with "spawn", so they are children of the command's process itself (a forkserver would be their parent
and itself outlive the command).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import types
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(*_args) -> None:
    """Make this child process end when its parent does, and leave Ctrl-C to the parent, silently (any arguments
    are ignored: usable as a DataLoader `worker_init_fn` or a pool `initializer`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = quiet_when_the_parent_left
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the check below still runs
            pass
    if parent == 1 or os.getppid() != parent:  # the parent died before the prctl took effect: re-parented
        os._exit(1)


def quiet_when_the_parent_left(kind: type[BaseException], error: BaseException, trace) -> None:
    """A helper's hook for errors nothing caught: a broken connection to the parent (EOFError, ConnectionError)
    means the parent stopped (Ctrl-C, a kill) in the middle of an exchange, e.g. while multiprocessing's
    resource-sharer thread handed it a shared tensor's file descriptor: nothing to report, the parent says what
    happened. Anything else is printed as usual."""
    if issubclass(kind, (EOFError, ConnectionError)):
        return
    sys.__excepthook__(kind, error, trace)


def helper_pool(count: int) -> ProcessPoolExecutor:
    """`count` spawned helper processes, each dying with this process, that import only what their tasks need (e.g.
    PNG encoders: zlib at 1024² costs ~0.09 s an image, more than a GPU render, and threads would contend for the
    GIL in Pillow's loop). Tasks must be functions of an importable module, not of the command's `__main__`."""
    return _LeanSpawnPool(count, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)


class _LeanSpawnPool(ProcessPoolExecutor):
    """A spawn pool whose children do not import the parent's `__main__`. A spawned child normally re-imports it
    (for `python -m celebahq.cli` that is the whole CLI: torch, OpenCV, … — ~0.3 GiB PSS and seconds of start-up
    per child on a CUDA machine, for processes that encode PNGs). The pool starts children on demand inside
    `submit`, so `submit` shows the spawn machinery a bare `__main__` while it runs."""

    def submit(self, fn, /, *args, **kwargs):
        with _bare_main_module():
            return super().submit(fn, *args, **kwargs)


@contextlib.contextmanager
def _bare_main_module():
    """`sys.modules["__main__"]` replaced by an empty module (no file, no spec: nothing for a child to import)."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
