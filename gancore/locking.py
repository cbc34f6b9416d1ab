"""One writer per output folder: `FolderLock(folder, "celebahq build")` held while a command writes there.

The lock is `folder/.lock`, held with `fcntl.flock` (the kernel drops it when the holder dies, even by SIGKILL) and
holding one JSON line that says who holds it: pid, host, start time (UTC, ISO 8601) and the command. A second
writer gets a `UserError` naming the holder. A lock file left by a dead process of this host (flock free, old
contents) is taken over with a note on stderr. One that names another host (a folder shared over the network,
where flock may not reach the other machine, or a folder copied from there) is refused, naming that host, the pid
and the start time, since no process of another machine can be checked from here: it is taken over only when the
user says so (`take_over=True`; the CLIs' `--take-over-lock`, or $GANCORE_TAKE_OVER_LOCK=1). Where flock is
unavailable (Windows), the pid in the file decides: a live pid on this host holds the folder. Taking the lock also
marks the folder as a command's output (`gancore.outputs.mark_output_folder`): listings of a folder above it skip it.

Cooperating writers share it: `FolderLock(folder, command, shared=True)` (the shards of one build, e.g. torchrun
ranks, each writing its own manifest and sources) may be held by several processes at once, never together with
an exclusive holder; a shard also takes its own exclusive lock file (`name`), so one shard runs once.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError, printable
from .outputs import LOCK_NAME, mark_output_folder

if TYPE_CHECKING:  # typing.Self is Python ≥ 3.11; we support 3.10
    from typing import Self

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a folder lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return printable(f"`{self.command}` (pid {self.pid} on {self.host}, since {self.started})")

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        try:
            fields = json.loads(text)
            return cls(int(fields["pid"]), str(fields["host"]), str(fields["started"]), str(fields["command"]))
        except (ValueError, KeyError, TypeError):
            return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive_here(holder: LockHolder) -> bool:
    return holder.host == socket.gethostname() and pid_alive(holder.pid)


TAKE_OVER_ENV_VAR = "GANCORE_TAKE_OVER_LOCK"


def take_over_asked() -> bool:
    """Whether $GANCORE_TAKE_OVER_LOCK asks to take over locks that name another host (set by --take-over-lock)."""
    return os.environ.get(TAKE_OVER_ENV_VAR, "") not in ("", "0")


class FolderLock:
    """Context manager: hold `folder`'s writer lock (the folder is created if missing).

    Raises UserError when another live process holds it, when its lock file names another host (unless
    `take_over`; None: $GANCORE_TAKE_OVER_LOCK), or when the folder cannot be written. `notify(line)` receives the
    note when a stale lock is taken over (default: stderr).
    """

    def __init__(self, folder: str | os.PathLike, command: str, notify=None, shared: bool = False,
                 name: str = LOCK_NAME, take_over: bool | None = None):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command
        self.shared = shared
        self.take_over = take_over_asked() if take_over is None else take_over
        self.notify = notify or (lambda line: print(line, file=sys.stderr))
        self._handle = None

    def holder(self) -> LockHolder | None:
        """The recorded holder (live or stale), or None when no lock file or an unreadable one."""
        try:
            return LockHolder.parse(self.path.read_text())
        except OSError:
            return None

    def acquire(self) -> FolderLock:
        for _ in range(100):  # a holder may remove the file between our open and our flock: open it again
            handle, previous = self._open_and_lock()
            if self._still_linked(handle):
                break
            handle.close()
        else:  # pragma: no cover - would need a hundred releases in a row
            raise UserError(f"{self.folder}: could not take the writer lock {self.path}")
        if previous is not None and previous.host != socket.gethostname() and not self.shared:
            self._take_over_from_another_host(handle, previous)
        elif previous is not None and previous.pid != os.getpid() and not _alive_here(previous):
            self.notify(f"note: {printable(self.folder)}: took over the stale lock of {previous.describe()}, which "
                        f"is no longer running")
        me = LockHolder(os.getpid(), socket.gethostname(),
                        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), self.command)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(me)) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def _take_over_from_another_host(self, handle, previous: LockHolder) -> None:
        """A lock file naming another host: refused (its holder cannot be checked from here) unless `take_over`."""
        if not self.take_over:
            handle.close()
            raise UserError(f"{printable(self.folder)}: its lock {printable(self.path.name)} is held by "
                            f"{previous.describe()}, another host, whose process cannot be checked from here; if it "
                            f"has stopped, pass --take-over-lock (or set {TAKE_OVER_ENV_VAR}=1)")
        self.notify(f"note: {printable(self.folder)}: took over the lock of {previous.describe()} on another host, as "
                    f"asked")

    def _open_and_lock(self):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            mark_output_folder(self.folder)  # never listed as sources (gancore.outputs)
            handle = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
        except OSError as error:
            raise UserError(f"cannot write in {self.folder}: {error.strerror}") from None
        handle.seek(0)
        previous = LockHolder.parse(handle.read())
        if not self._try_lock(handle, previous):
            handle.close()
            who = previous.describe() if previous else "another process"
            raise UserError(f"{self.folder} is being written by {who}; wait for it to finish or stop it")
        return handle, previous

    def _still_linked(self, handle) -> bool:
        """Whether the locked file is still the one at `self.path` (not unlinked by a releasing holder)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except OSError:
            return False

    def _try_lock(self, handle, previous: LockHolder | None) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                return True
            except OSError:
                return False
        # no flock: a live pid on this host holds the folder (shared holders cannot be told apart: they wait)
        return not (previous and previous.pid != os.getpid() and _alive_here(previous))

    def release(self) -> None:
        if self._handle is None:
            return
        if self._sole_holder():
            try:
                self.path.unlink(missing_ok=True)  # while still holding the lock: no one reads a half-released file
            except OSError:
                pass
        self._handle.close()  # closing drops the flock
        self._handle = None

    def _sole_holder(self) -> bool:
        """Whether no other process holds the lock (a shared holder tries to become the exclusive one)."""
        if not self.shared or fcntl is None:
            return True
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:  # other shards still hold it: they remove the file when the last one leaves
            return False

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
