"""Catch a running build at a chosen moment: stop its process group, look, act, let it go on.

Polling a condition while a build runs can miss it: a 6-source build of the bundled set at 64² writes its images in
about a third of a second (a CI run timed out waiting for the first manifest line of a build that had finished). Looking only
while the whole group is stopped (SIGSTOP) makes "the build is still running and has written this much" a fact at
the moment the test acts on it, however slow or fast the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from .process_tree import process_state


def stop_when(process: subprocess.Popen, condition: Callable[[], bool], seconds: float = 120) -> None:
    """Return with `process`'s group stopped at the first look at which `condition()` holds.

    The process must lead its own group (`Popen(..., start_new_session=True)`). Between looks the group runs for
    about 20 ms. Raises AssertionError when the process ends first or `seconds` pass; the group is then let go on.
    """
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before the condition held")
        os.killpg(process.pid, signal.SIGSTOP)
        if _stopped_soon(process.pid) and condition():
            return
        resume(process)  # also drops a stop still pending
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition did not hold within {seconds} s")
        time.sleep(0.02)


def resume(process: subprocess.Popen) -> None:
    """Let a group stopped by `stop_when` go on (also when its leader has already been killed)."""
    try:
        os.killpg(process.pid, signal.SIGCONT)
    except ProcessLookupError:  # nothing of the group is left
        pass


def _stopped_soon(pid: int, seconds: float = 0.5) -> bool:
    """Whether the kernel reports `pid` stopped (state T) within `seconds` (False when it has ended).

    SIGSTOP takes effect asynchronously, and not at all while the process waits uninterruptibly (state D) on a
    member of its group that is itself stopped: a build that has just vfork()ed a helper waits for the child's
    exec, and the child was stopped first (a first version that waited for T hung there, under load).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state is None or state in "TtZX":
            return state is not None and state in "Tt"
        time.sleep(0.001)
    return False
