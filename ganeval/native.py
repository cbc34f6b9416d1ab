"""Optional compiled CPU kernels, built on first use with the system C compiler and loaded with ctypes.

The idea is that of stylegan2-ada-pytorch's custom ops (torch_utils/custom_ops.py): a kernel compiled on the
user's machine, cached, with the plain PyTorch implementation as the fallback whenever it cannot be built. Here
the kernels are plain C99 (ganeval/_native/*.c: no torch headers, so a build is quick; benchmarks/metrics_speed.py
times it) and ctypes releases the GIL while one runs, so worker threads run them in parallel.

- Compiler: $CC, else the first of cc, gcc, clang on the PATH. Flags: -O3 -march=native (the library is only
  ever used on the machine that built it), retried without -march=native, then with -O3 alone.
- Cache: <cache_root>/native/<name>-<hash>.so (see gancore.runtime.cache_root), the hash covering the source, the
  compiler, the flags and the CPU's feature flags (so that a home folder shared by different machines keeps
  one build per CPU kind); written under a temporary name, then renamed.
- GANEVAL_NATIVE=0 turns the kernels off. `status(name)` says which build is loaded, or why none is.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from gancore.outputs import atomic_output
from gancore.runtime import cache_root

SOURCE_DIR = Path(__file__).resolve().parent / "_native"
NATIVE_ENV_VAR = "GANEVAL_NATIVE"
FLAG_CHOICES = (["-O3", "-march=native", "-fopenmp-simd"], ["-O3", "-fopenmp-simd"], ["-O3"])
COMMON_FLAGS = ["-std=c99", "-shared", "-fPIC"]
BUILD_TIMEOUT_S = 120

_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL | None] = {}
_STATUS: dict[str, str] = {}


def load(name: str) -> ctypes.CDLL | None:
    """The compiled ganeval/_native/<name>.c as a ctypes library, building it on first use; None (and a reason in
    `status(name)`) when the kernels are turned off or no build succeeds. Cached for the process."""
    with _LOCK:
        if name not in _LOADED:
            try:
                library, reason = _build_and_load(name)
            except OSError as error:  # e.g. no writable folder at all for the build
                library, reason = None, f"could not build {name}: {error}"
            _LOADED[name], _STATUS[name] = library, reason
        return _LOADED[name]


def disable(name: str, reason: str) -> None:
    """Stop using a loaded kernel for the rest of the process (e.g. when its self-check fails)."""
    with _LOCK:
        _LOADED[name], _STATUS[name] = None, reason


def status(name: str) -> str:
    """One line: the loaded build of kernel `name`, why there is none, or 'not loaded yet'."""
    return _STATUS.get(name, "not loaded yet")


def turned_off() -> bool:
    """Whether $GANEVAL_NATIVE turns the compiled kernels off (0, false, no or off)."""
    return os.environ.get(NATIVE_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


def _build_and_load(name: str) -> tuple[ctypes.CDLL | None, str]:
    if turned_off():
        return None, f"turned off by {NATIVE_ENV_VAR}={os.environ[NATIVE_ENV_VAR]}"
    source = SOURCE_DIR / f"{name}.c"
    if not source.is_file():
        return None, f"no kernel source {source}"
    compiler = _find_compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang): using the PyTorch/OpenCV path"
    errors = []
    for flags in FLAG_CHOICES:
        library_path = _library_path(name, source, compiler, flags)
        for _ in range(2):  # a cached build that does not load (damaged) is removed and built once more
            if not library_path.exists():
                error = _compile(compiler, flags, source, library_path)
                if error:
                    errors.append(f"{' '.join(flags)}: {error}")
                    break
            try:
                return ctypes.CDLL(str(library_path)), f"compiled kernel {library_path} ({' '.join(flags)})"
            except OSError as error:
                errors.append(f"{' '.join(flags)}: cannot load {library_path}: {error}")
                library_path.unlink(missing_ok=True)
    return None, f"could not build {source.name} with {compiler}: " + " | ".join(errors)


def _find_compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cpu_fingerprint() -> str:
    """The CPU's feature flags (Linux), else whatever the platform module says about the processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _library_path(name: str, source: Path, compiler: str, flags: list[str]) -> Path:
    digest = hashlib.sha256()
    for part in (source.read_bytes(), compiler.encode(), " ".join(flags + COMMON_FLAGS).encode(),
                 _cpu_fingerprint().encode(), platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    folder = cache_root() / "native"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:  # read-only or missing home: build in a private temporary folder instead
        folder = Path(tempfile.mkdtemp(prefix="ganeval-native-"))
    return folder / f"{name}-{digest.hexdigest()[:16]}.so"


def _compile(compiler: str, flags: list[str], source: Path, library_path: Path) -> str | None:
    """Build `source` into `library_path` (atomically); None on success, else the compiler's complaint."""
    try:
        with atomic_output(library_path) as temporary:
            result = subprocess.run([compiler, *flags, *COMMON_FLAGS, str(source), "-o", str(temporary)],
                                    capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
            if result.returncode != 0:
                message = (result.stderr or result.stdout).strip().splitlines()
                raise RuntimeError(message[-1] if message else f"exit status {result.returncode}")
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        return str(error)
    return None


__all__ = ["NATIVE_ENV_VAR", "disable", "load", "status", "turned_off"]
