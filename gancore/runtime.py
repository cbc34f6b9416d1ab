"""Device selection (without side effects), numeric-precision guards, progress bars, the cache root and atomic
output, shared by every command."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .errors import UserError
from .outputs import atomic_output, os_error_naming


def resolve_device(device: str | torch.device | None = None, share_gpus: bool = False) -> torch.device:
    """'auto'/None -> CUDA when available, else CPU; anything else is passed to torch.device and checked.

    Under torchrun an index-less 'cuda' is this rank's GPU (LOCAL_RANK; `share_gpus`: modulo the GPU count). No side
    effects: the process group is started by the entry point (`distributed.start_from_environment`).
    """
    return distributed.local_device(_checked_device(device), share_gpus)


def _checked_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"unknown device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    return resolved


@contextlib.contextmanager
def exact_float32():
    """Disable TF32 in matmuls and convolutions (metrics must not depend on the GPU generation)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


PROGRESS_ENV_VAR = "GANCORE_PROGRESS"  # "1": bars also when stderr is not a terminal (a log file)


def progress_bar(total: int | None, description: str, enabled: bool = True, unit: str = "img"):
    """A tqdm bar on stderr (rank 0 only under torchrun) when stderr is a terminal, in a Jupyter kernel (a widget)
    or with $GANCORE_PROGRESS=1; a silent no-op bar when disabled, when there is nothing to count (`total` 0: no
    empty bar is drawn) or when stderr is a file or a pipe, whose readers want lines: a bar's carriage returns would
    run into the next line (an `error:` line would not start a line of its own)."""
    shown = (getattr(sys.stderr, "isatty", lambda: False)() or "ipykernel" in sys.modules
             or os.environ.get(PROGRESS_ENV_VAR, "") not in ("", "0"))
    enabled = enabled and shown and total != 0 and distributed.is_main_process()
    return tqdm(total=total, desc=description, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def torch_save_atomic(payload, path: str | os.PathLike) -> Path:
    """`torch.save(payload)` into `path` atomically (temporary name, then rename). A failed write raises OSError
    naming `path`: torch's own file writer reports a full disk as a RuntimeError ('… unexpected pos N vs M'), so
    torch writes through a Python file, whose OSError ('No space left on device') is the real reason (raised
    itself, or found in the RuntimeError's context); any other serialization failure of torch becomes an OSError
    'cannot save (…)' naming `path` too."""
    path = Path(path)
    with atomic_output(path) as temporary:
        try:
            with open(temporary, "wb") as handle:
                torch.save(payload, handle)
        except RuntimeError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, OSError):
                raise os_error_naming(cause, path) from error
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OSError(None, f"cannot save ({reason})", str(path)) from error
    return path


CACHE_ENV_VAR = "GANEVAL_CACHE"


def cache_root() -> Path:
    """ganeval's cache folder: $GANEVAL_CACHE, else $XDG_CACHE_HOME/ganeval, else ~/.cache/ganeval."""
    root = os.environ.get(CACHE_ENV_VAR)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ganeval"


def host_to_device(array, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array (numpy, or a CPU tensor) as a tensor on `device`, without stalling the device's queue.

    On CUDA the data is staged in pinned memory (torch's caching host allocator) and copied asynchronously: a copy
    from ordinary (pageable) memory first waits for all GPU work queued before it, so a render that moved a few
    filter weights per photo that way made the host wait for the GPU several times per photo instead of queueing
    ahead. Elsewhere a plain copy (on the CPU, without `dtype`, the tensor may share the array's memory). `dtype`
    converts on the host first."""
    tensor = torch.as_tensor(array, dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class DeviceTimer:
    """Seconds spent in named spans of work on a device, measured without stalling it.

    On CUDA each span is a pair of events on the current stream (what the device spent from the span's first
    launch to its last, launch gaps included), read by `collect()` once the work is done (e.g. after the copy of
    the results to the host); elsewhere the host's wall clock. Spans may nest (the outer one includes the inner).
    """

    def __init__(self, device: str | torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        if not self.cuda:
            started = time.perf_counter()
            yield
            self.totals[name] += time.perf_counter() - started
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._pending.append((name, start, end))

    def wrap(self, name: str, function: Callable) -> Callable:
        """`function`, each call timed as a span `name`."""
        def timed(*args, **kwargs):
            with self.span(name):
                return function(*args, **kwargs)
        return timed

    def collect(self, wait: bool = True) -> dict[str, float]:
        """Seconds per span name so far: every span's (waiting for their work to finish), or with `wait=False`
        those of the spans whose work is done (earlier ones first; the rest stay pending). Call it now and then
        (e.g. after each batch's results reached the host): each pending span holds two CUDA events until then."""
        while self._pending:
            name, start, end = self._pending[0]
            if not wait and not end.query():
                break
            end.synchronize()
            self.totals[name] += start.elapsed_time(end) / 1000.0
            self._pending.pop(0)
        return dict(self.totals)
