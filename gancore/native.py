"""Optional compiled CPU kernels, built on first use with the system C compiler and loaded with ctypes.

The idea is that of stylegan2-ada-pytorch's custom ops (torch_utils/custom_ops.py): a kernel compiled on the
user's machine, cached, with the package's plain Python implementation as the fallback whenever it cannot be
built. The kernels are plain C99 files in a package folder (ganeval/_native, celebahq/_native: no Python or torch
headers, so a build takes a second or two) and ctypes releases the GIL while one runs, so worker threads run them in
parallel. A package makes one `KernelSet` for its folder and calls `load(name)`.

- Compiler: $CC, else the first of cc, gcc, clang on the PATH. Flags: -O3 -march=native (the library is only
  ever used on the machine that built it), retried without -march=native, then with -O3 alone; always
  -ffp-contract=off and never -ffast-math, so that float arithmetic is exactly the C source's (no product fused
  into an FMA, no sum reassociated: kernels that reproduce other code bit for bit rely on it).
- Cache: <cache_root>/native/<name>-<hash>.so (see gancore.runtime.cache_root), the hash covering the source, the
  compiler, the flags and the CPU's feature flags (so that a home folder shared by different machines keeps
  one build per CPU kind); written under a temporary name, then renamed.
- GANEVAL_NATIVE=0 turns every compiled kernel off. `status(name)` says which build is loaded, or why none is.
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

NATIVE_ENV_VAR = "GANEVAL_NATIVE"
FLAG_CHOICES = (["-O3", "-march=native", "-fopenmp-simd"], ["-O3", "-fopenmp-simd"], ["-O3"])
COMMON_FLAGS = ["-std=c99", "-shared", "-fPIC", "-ffp-contract=off"]
BUILD_TIMEOUT_S = 120


class KernelSet:
    """The compiled kernels of one source folder (<source_dir>/<name>.c), each built once and cached per process."""

    def __init__(self, source_dir: Path):
        self.source_dir = Path(source_dir)
        self._lock = threading.Lock()
        self._loaded: dict[str, ctypes.CDLL | None] = {}
        self._status: dict[str, str] = {}

    def load(self, name: str) -> ctypes.CDLL | None:
        """The compiled <name>.c as a ctypes library, building it on first use; None (and a reason in
        `status(name)`) when the kernels are turned off or no build succeeds. Cached for the process."""
        with self._lock:
            if name not in self._loaded:
                try:
                    library, reason = build_and_load(self.source_dir / f"{name}.c")
                except OSError as error:  # e.g. no writable folder at all for the build
                    library, reason = None, f"could not build {name}: {error}"
                self._loaded[name], self._status[name] = library, reason
            return self._loaded[name]

    def disable(self, name: str, reason: str) -> None:
        """Stop using a loaded kernel for the rest of the process (e.g. when its self-check fails)."""
        with self._lock:
            self._loaded[name], self._status[name] = None, reason

    def status(self, name: str) -> str:
        """One line: the loaded build of kernel `name`, why there is none, or 'not loaded yet'."""
        return self._status.get(name, "not loaded yet")

    def forget(self) -> None:
        """Drop what was loaded or decided so far (the next `load` builds or finds the library again)."""
        with self._lock:
            self._loaded.clear()
            self._status.clear()


def turned_off() -> bool:
    """Whether $GANEVAL_NATIVE turns the compiled kernels off (0, false, no or off)."""
    return os.environ.get(NATIVE_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


def build_and_load(source: Path) -> tuple[ctypes.CDLL | None, str]:
    """The C file `source` compiled (or found in the cache) and loaded: (library or None, one line saying which
    build, or why none)."""
    if turned_off():
        return None, f"turned off by {NATIVE_ENV_VAR}={os.environ[NATIVE_ENV_VAR]}"
    if not source.is_file():
        return None, f"no kernel source {source}"
    compiler = find_compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang): using the pure Python path"
    errors = []
    for flags in FLAG_CHOICES:
        path = library_path(source, compiler, flags)
        for _ in range(2):  # a cached build that does not load (damaged) is removed and built once more
            if not path.exists():
                error = compile_library(compiler, flags, source, path)
                if error:
                    errors.append(f"{' '.join(flags)}: {error}")
                    break
            try:
                return ctypes.CDLL(str(path)), f"compiled kernel {path} ({' '.join(flags + COMMON_FLAGS[-1:])})"
            except OSError as error:
                errors.append(f"{' '.join(flags)}: cannot load {path}: {error}")
                path.unlink(missing_ok=True)
    return None, f"could not build {source.name} with {compiler}: " + " | ".join(errors)


def find_compiler() -> str | None:
    """$CC, else the first of cc, gcc, clang on the PATH (its full path), else None."""
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


def library_path(source: Path, compiler: str, flags: list[str]) -> Path:
    """Where the build of `source` with `compiler` and `flags` for this CPU is cached."""
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
    return folder / f"{source.stem}-{digest.hexdigest()[:16]}.so"


def compile_library(compiler: str, flags: list[str], source: Path, path: Path) -> str | None:
    """Build `source` into `path` (atomically); None on success, else the compiler's complaint."""
    try:
        with atomic_output(path) as temporary:
            result = subprocess.run([compiler, *flags, *COMMON_FLAGS, str(source), "-o", str(temporary)],
                                    capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
            if result.returncode != 0:
                message = (result.stderr or result.stdout).strip().splitlines()
                raise RuntimeError(message[-1] if message else f"exit status {result.returncode}")
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        return str(error)
    return None


__all__ = ["COMMON_FLAGS", "FLAG_CHOICES", "NATIVE_ENV_VAR", "KernelSet", "build_and_load", "compile_library",
           "find_compiler", "library_path", "turned_off"]
