"""Shared fixtures: small real photographs (the bundled examples) and helpers to write odd inputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gancore.runtime import CACHE_ENV_VAR
from ganeval.inception import WEIGHTS_ENV_VAR
from toolkit_testing.images import EXAMPLES, load_folder


@pytest.fixture(scope="session")
def real_photos() -> np.ndarray:
    """128 real 128×128 crops of public-domain photographs, uint8 NHWC."""
    return load_folder(EXAMPLES / "real")


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory):
    """ganeval's cache (feature cache, compiled kernels) in this session's own folder, never the user's: every
    command the tests run, in this process or a child, writes there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV_VAR, str(tmp_path_factory.mktemp("ganeval-cache")))
        yield


@pytest.fixture(autouse=True)
def no_inception_download(monkeypatch):
    """No test may download the Inception weights: the downloader fails loudly, the env var is cleared."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download the Inception weights")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)


# --------------------------------------------------------------------------------------------------------------
# Faulty output places: a read-only folder and a full disk (mounts need root; skipped with the reason otherwise)


def read_only_folder(tmp_path: Path) -> Path:
    """A read-only mount (as root: a read-only bind mount) or skip."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        return target
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(target), str(target)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.decode().strip()}")
    return target


@pytest.fixture
def read_only(tmp_path):
    target = read_only_folder(tmp_path)
    yield target
    if os.geteuid() == 0:
        subprocess.run(["umount", str(target)], capture_output=True, check=False)


def mounted_tmpfs(target: Path, size: str):
    """A tmpfs of `size` mounted on the new folder `target` while the generator runs (root only; else skip)."""
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 kB tmpfs (root only), so that writes meet a full disk."""
    yield from mounted_tmpfs(tmp_path / "tiny", "64k")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only): room for a training run's first files, not for its network snapshot."""
    yield from mounted_tmpfs(tmp_path / "disk", "1m")
