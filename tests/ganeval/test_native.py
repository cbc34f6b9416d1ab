"""The optional compiled MS-SSIM kernel: same numbers as the PyTorch path, built once, cached, and a clean
fallback when it cannot be built or is turned off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gancore.native as builder
from ganeval import native
from ganeval.msssim import _msssim_kernel, ms_ssim, ms_ssim_scales

MSSSIM_SOURCE = native.SOURCE_DIR / "msssim.c"
needs_compiler = pytest.mark.skipif(builder.find_compiler() is None, reason="no C compiler on this machine")
needs_kernel = pytest.mark.skipif(builder.find_compiler() is None or native.turned_off(),
                                  reason="no C compiler on this machine, or GANEVAL_NATIVE=0")


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(native.NATIVE_ENV_VAR, raising=False)  # the build mechanics, whatever the caller's setting
    return tmp_path / "cache" / "native"


@needs_kernel
@pytest.mark.parametrize("shape", [(4, 3, 128, 128), (3, 3, 45, 37), (2, 1, 16, 16), (2, 3, 70, 300)])
def test_compiled_kernel_equals_pytorch_path(real_photos, shape):
    assert _msssim_kernel() is not None, native.status("msssim")
    n, c, h, w = shape
    rng = np.random.default_rng(sum(shape))
    photos = np.resize(real_photos, (n, 128, 128, 3))
    first = torch.from_numpy(np.ascontiguousarray(np.resize(photos.transpose(0, 3, 1, 2)[:, :c], (n, c, h, w))))
    second = torch.from_numpy(np.clip(first.numpy() + rng.normal(0, 20, first.shape), 0, 255).astype(np.uint8))
    for a, b in ((first, second), (first.double(), second.float())):  # uint8 planes, and float ones
        compiled = ms_ssim_scales(a, b)
        reference = ms_ssim_scales(a, b, native=False)
        for got, expected in zip(compiled, reference):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(ms_ssim(first, second), ms_ssim(first, second, native=False), rtol=0, atol=1e-13)


@needs_compiler
def test_build_is_cached_and_reused(private_cache, monkeypatch):
    library, reason = builder.build_and_load(MSSSIM_SOURCE)
    assert library is not None and "compiled kernel" in reason
    built = list(private_cache.glob("msssim-*.so"))
    assert len(built) == 1 and not list(private_cache.glob(".*partial"))
    monkeypatch.setattr(builder, "compile_library", lambda *args: pytest.fail("compiled again"))
    again, _ = builder.build_and_load(MSSSIM_SOURCE)
    assert again is not None and list(private_cache.glob("msssim-*.so")) == built


@needs_compiler
def test_a_damaged_cached_build_is_rebuilt(private_cache):
    damaged = builder.library_path(MSSSIM_SOURCE, builder.find_compiler(), builder.FLAG_CHOICES[0])
    damaged.write_bytes(b"not a shared library")  # e.g. a full disk during an earlier build
    library, reason = builder.build_and_load(MSSSIM_SOURCE)
    assert library is not None and "compiled kernel" in reason and damaged.stat().st_size > 1000


def test_turned_off_by_environment(private_cache, monkeypatch):
    monkeypatch.setenv("GANEVAL_NATIVE", "0")
    library, reason = builder.build_and_load(MSSSIM_SOURCE)
    assert library is None and "GANEVAL_NATIVE=0" in reason
    assert not private_cache.exists()


def test_broken_compiler_gives_a_reason_and_no_partial_files(private_cache, monkeypatch, tmp_path):
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho 'fake-cc: cannot compile anything' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    library, reason = builder.build_and_load(MSSSIM_SOURCE)
    assert library is None and "could not build msssim.c" in reason and "cannot compile anything" in reason
    assert not list(private_cache.glob("*"))  # nothing half-written left behind


def test_no_writable_folder_anywhere(monkeypatch):
    def nowhere(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(builder, "build_and_load", nowhere)
    kernels = builder.KernelSet(native.SOURCE_DIR)
    assert kernels.load("msssim") is None and "read-only file system" in kernels.status("msssim")


def test_no_compiler_at_all(private_cache, monkeypatch):
    monkeypatch.setattr(builder, "find_compiler", lambda: None)
    library, reason = builder.build_and_load(MSSSIM_SOURCE)
    assert library is None and "no C compiler" in reason


def test_pytorch_path_when_the_kernel_is_unavailable(monkeypatch, real_photos):
    images = torch.from_numpy(np.ascontiguousarray(real_photos[:4].transpose(0, 3, 1, 2)))
    expected = ms_ssim(images[:2], images[2:], native=False)
    monkeypatch.setattr("ganeval.msssim._msssim_kernel", lambda: None)
    torch.testing.assert_close(ms_ssim(images[:2], images[2:]), expected, rtol=0, atol=0)
