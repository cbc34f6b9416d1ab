"""FID Inception-v3: layout vs the standard weights file, the three resizers, the extractor and weight discovery.

No real weights and no network here: state dicts are random and saved by the tests, and the downloader is
replaced by fakes.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gancore.errors import UserError
from ganeval.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_SHA256_PREFIX,
    FID_WEIGHTS_URL,
    KNOWN_WEIGHT_FILENAMES,
    RESIZE_MODES,
    WEIGHTS_ENV_VAR,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    find_inception_weights,
    load_inception,
    resize_clean,
    resize_pytorch_bilinear,
    resize_tf1_bilinear,
)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache under tmp_path (via TORCH_HOME); returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # in case something called set_dir
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


def random_network(seed: int = 0) -> FIDInceptionV3:
    """FIDInceptionV3 with random weights and BatchNorm statistics that keep activations O(1) through 94 units."""
    generator = torch.Generator().manual_seed(seed)
    network = FIDInceptionV3().eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(count, generator=generator))
                module.bias.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_var.copy_(1 + 0.1 * torch.rand(count, generator=generator))
        network.fc.weight.copy_(torch.randn(network.fc.weight.shape, generator=generator) / 2048 ** 0.5)
        network.fc.bias.copy_(torch.randn(network.fc.bias.shape, generator=generator))
    return network


def save_weights_file(network: FIDInceptionV3, path: Path) -> Path:
    """Like the published file: a plain dict without `num_batches_tracked` (and without version metadata)."""
    state = {key: value.clone() for key, value in network.state_dict().items()
             if not key.endswith("num_batches_tracked")}
    torch.save(state, path)
    return path


def uint8_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (count, 3, height, width), dtype=np.uint8))


# --------------------------------------------------------------------------------------------------------------
# Resizers


def tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, no half-pixel centres), one output pixel at a time, float32.

    scale = in/out in float32; src = dst·scale; lo = floor(src); hi = min(lo + 1, in − 1); frac = src − lo;
    top/bottom rows interpolated along x, then the result along y (as TF's kernel does).
    """
    channels, in_h, in_w = image.shape
    scale_y, scale_x = np.float32(in_h) / np.float32(out_h), np.float32(in_w) / np.float32(out_w)
    out = np.zeros((channels, out_h, out_w), np.float32)
    for i in range(out_h):
        src_y = np.float32(i) * scale_y
        y0 = int(np.floor(src_y))
        y1, fy = min(y0 + 1, in_h - 1), src_y - np.float32(y0)
        for j in range(out_w):
            src_x = np.float32(j) * scale_x
            x0 = int(np.floor(src_x))
            x1, fx = min(x0 + 1, in_w - 1), src_x - np.float32(x0)
            top = image[:, y0, x0] + (image[:, y0, x1] - image[:, y0, x0]) * fx
            bottom = image[:, y1, x0] + (image[:, y1, x1] - image[:, y1, x0]) * fx
            out[:, i, j] = top + (bottom - top) * fy
    return out


def nvidia_grid_resize(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """NVIDIA TorchScript's TF1 resize: identity affine grid shifted by (1/W − 1/size, 1/H − 1/size)."""
    n, c, h, w = images.shape
    theta = torch.eye(2, 3).repeat(n, 1, 1)
    theta[:, 0, 2] += 1 / w - 1 / size
    theta[:, 1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize("in_size, out_size", [((32, 32), (299, 299)), ((500, 500), (299, 299)),
                                               ((37, 53), (299, 299)), ((299, 299), (40, 23))])
def test_tf1_resize_equals_pixel_loop(in_size, out_size):
    image = uint8_images(1, *in_size, seed=1)[0].numpy().astype(np.float32)
    expected = tf1_resize_reference(image, *out_size)
    ours = resize_tf1_bilinear(torch.from_numpy(image)[None], out_size)[0]
    assert ours.dtype == torch.float32 and ours.shape == (3, *out_size)
    np.testing.assert_array_equal(ours.numpy(), expected)  # bit-exact on the CPU


def test_tf1_resize_same_size_is_identity_and_default_is_299():
    images = uint8_images(2, 299, 299).float()
    assert torch.equal(resize_tf1_bilinear(images), images)
    assert resize_tf1_bilinear(uint8_images(1, 64, 48).float()).shape == (1, 3, 299, 299)


def test_tf1_resize_equals_nvidia_grid_sample_trick():
    noise = uint8_images(2, 32, 32, seed=2).float()  # upsampling a noise image (checkerboard-like worst case)
    np.testing.assert_allclose(resize_tf1_bilinear(noise).numpy(), nvidia_grid_resize(noise).numpy(),
                               rtol=0, atol=1e-3)
    # Downsampling: grid_sample's float32 coordinate error (~W·2⁻²⁴ px) times the image gradient, so use a
    # smooth image, where that is far below 1e-3.
    ys, xs = torch.meshgrid(torch.arange(500.0), torch.arange(500.0), indexing="ij")
    smooth = torch.stack([127.5 + 127.5 * torch.sin(xs / 40 + k) * torch.cos(ys / 55 - k) for k in range(3)])[None]
    np.testing.assert_allclose(resize_tf1_bilinear(smooth).numpy(), nvidia_grid_resize(smooth).numpy(),
                               rtol=0, atol=1e-3)


def test_pytorch_resize_is_half_pixel_bilinear():
    images = uint8_images(2, 50, 70).float()
    expected = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(resize_pytorch_bilinear(images), expected)
    # Half-pixel centres: differs from TF1's corner-aligned sampling.
    assert (resize_pytorch_bilinear(images) - resize_tf1_bilinear(images)).abs().max() > 1


def test_clean_resize_is_pil_bicubic_on_float_channels_clipped():
    checker = ((np.indices((64, 64)).sum(0) // 4) % 2 * 255).astype(np.uint8)
    images = torch.from_numpy(np.stack([checker, 255 - checker, np.full_like(checker, 77)]))[None].float()
    ours = resize_clean(images)
    assert ours.shape == (1, 3, 299, 299) and ours.dtype == torch.float32
    raw = np.asarray(Image.fromarray(checker.astype(np.float32)).resize((299, 299), Image.Resampling.BICUBIC))
    assert raw.min() < 0 and raw.max() > 255  # bicubic overshoots; clean-fid clips
    np.testing.assert_array_equal(ours[0, 0].numpy(), np.clip(raw, 0, 255))
    assert torch.all(ours[0, 2] == 77)  # a constant channel stays constant
    assert resize_clean(images, (30, 20)).shape == (1, 3, 30, 20)


def test_resize_modes():
    assert RESIZE_MODES == {"tf": resize_tf1_bilinear, "pytorch": resize_pytorch_bilinear, "clean": resize_clean}


# --------------------------------------------------------------------------------------------------------------
# Network layout


def test_state_dict_layout_matches_the_standard_weights_file():
    state = FIDInceptionV3().state_dict()
    units = sorted(key[: -len(".conv.weight")] for key in state if key.endswith(".conv.weight"))
    assert len(units) == 94
    expected = {f"{unit}.{suffix}" for unit in units
                for suffix in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                               "bn.num_batches_tracked")} | {"fc.weight", "fc.bias"}
    assert set(state) == expected and len(state) == 94 * 6 + 2
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch_pool.bn.running_var"].shape == (32,)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7a.branch3x3_2.conv.weight"].shape == (320, 192, 3, 3)
    assert state["Mixed_7c.branch3x3_2b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
    network = FIDInceptionV3()
    assert all(m.eps == 0.001 for m in network.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.bias is None for m in network.modules() if isinstance(m, nn.Conv2d))


def _pool_branch_input(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the block's pooling branch conv receives for input x."""
    seen = []
    handle = block.branch_pool.conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        block(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name, channels, size", [("Mixed_5b", 192, 7), ("Mixed_6b", 768, 5),
                                                  ("Mixed_7b", 1280, 4), ("Mixed_7c", 2048, 4)])
def test_pooling_branches_exclude_padding_and_7c_uses_max(name, channels, size):
    block = getattr(FIDInceptionV3(), name).eval()
    x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(3)) + 1  # positive
    pooled = _pool_branch_input(block, x)
    average_excluding_pad = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    average_including_pad = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
    maximum = F.max_pool2d(x, 3, 1, 1)
    expected = maximum if name == "Mixed_7c" else average_excluding_pad
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-6)
    for wrong in (average_including_pad, average_excluding_pad, maximum):
        if wrong is not expected:
            assert (pooled - wrong).abs().max() > 0.1
    assert isinstance(block.pool, nn.MaxPool2d if name == "Mixed_7c" else nn.AvgPool2d)


def test_forward_shapes_and_unbiased_logits():
    network = random_network()
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(4)) * 2 - 1  # smallest valid input
    with torch.no_grad():
        pool3, logits = network(x)
    assert pool3.shape == (2, 2048) and logits.shape == (2, 1008)
    assert pool3.dtype == logits.dtype == torch.float32
    assert pool3.std() > 0.01  # the random weights keep activations alive
    torch.testing.assert_close(logits, pool3 @ network.fc.weight.T)
    assert (logits - network.fc(pool3)).abs().max() > 0.1  # the bias is not added


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_inference_form_folds_batchnorm_without_changing_the_function(memory_format):
    network = random_network(seed=11)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    fast = network.for_inference(memory_format)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert all(not p.requires_grad for p in fast.parameters())
    assert fast.Conv2d_4a_3x3.conv.weight.is_contiguous(memory_format=memory_format)
    assert all(torch.equal(value, network.state_dict()[key]) for key, value in before.items())  # a copy
    x = torch.rand(3, 3, 75, 75, generator=torch.Generator().manual_seed(12)) * 2 - 1
    with torch.no_grad():
        expected = network.double().pool3(x.double())  # float64: the float32 rounding of both is measured
        plain = network.float().pool3(x)
        folded = fast.pool3(x.contiguous(memory_format=memory_format))
    folded_error = float((folded.double() - expected).norm() / expected.norm())
    plain_error = float((plain.double() - expected).norm() / expected.norm())
    assert folded_error < 1e-5 and plain_error < 1e-5  # seen: 7.9e-7 and 5.3e-7 (94 float32 layers)


# --------------------------------------------------------------------------------------------------------------
# Loading and the extractor


def test_state_dict_without_num_batches_tracked_loads_strictly(tmp_path):
    network = random_network(seed=5)
    path = save_weights_file(network, tmp_path / FID_WEIGHTS_FILENAME)
    assert not any(key.endswith("num_batches_tracked") for key in torch.load(path, weights_only=True))
    extractor = load_inception(path, device="cpu")
    assert isinstance(extractor.network, FIDInceptionV3) and not extractor.is_torchscript
    assert extractor.source == path and extractor.logits_available
    loaded = extractor.network.state_dict()
    for key, value in network.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
    assert not extractor.network.training
    assert not any(p.requires_grad for p in extractor.network.parameters())


def test_wrong_state_dict_is_a_clear_error(tmp_path):
    state = {k: v for k, v in FIDInceptionV3().state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="not the FID Inception-v3 state dict.*fc.weight"):
        load_inception(tmp_path / "partial.pth", device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="neither an Inception state dict"):
        load_inception(tmp_path / "junk.pth", device="cpu")


def test_extractor_end_to_end_at_299(tmp_path):
    network = random_network(seed=6)
    extractor = load_inception(save_weights_file(network, tmp_path / "w.pth"), device="cpu")
    pool3, logits = extractor.features(uint8_images(1, 40, 56, seed=6))
    assert pool3.shape == (1, 2048) and logits.shape == (1, 1008)
    assert pool3.dtype == logits.dtype == torch.float32 and torch.isfinite(pool3).all()
    assert pool3.std() > 0.01
    torch.testing.assert_close(logits, pool3 @ network.fc.weight.T)
    assert extractor.features(uint8_images(1, 40, 56, seed=6), logits=False)[1] is None


class _Spy:
    """Stands in for FIDInceptionV3.pool3: records its input and the TF32 flags it ran under."""

    def __init__(self):
        self.inputs, self.tf32 = [], []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        self.tf32.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return x.mean(dim=(2, 3)).repeat(1, 2048 // 3 + 1)[:, :2048]


@pytest.mark.parametrize("mode", ["tf", "pytorch", "clean"])
def test_extractor_preprocessing_per_mode(mode, monkeypatch):
    extractor = InceptionFeatureExtractor(random_network(), resize=mode, device="cpu")
    spy = _Spy()
    monkeypatch.setattr(extractor.inference_network, "pool3", spy)
    images = uint8_images(2, 33, 47, seed=7)
    u = images.float()
    expected = {"tf": (resize_tf1_bilinear(u) - 128) / 128,  # TF graph, torch-fidelity
                "pytorch": 2 * resize_pytorch_bilinear(u / 255) - 1,  # pytorch-fid: u/255, resize, 2x − 1
                "clean": (resize_clean(u) - 128) / 128}[mode]  # clean-fid
    # set by hand: pytest ≥ 9.2's monkeypatch deletes these torch flags at teardown instead of restoring them
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        pool3, logits = extractor.features(images)
        assert spy.tf32 == [(False, False)]  # off while running ...
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # ... restored after
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert torch.equal(spy.inputs[0], expected)  # the same values, in channels_last on the CPU
    assert spy.inputs[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, pool3 @ extractor.network.fc.weight.T)


def test_extractor_rejects_bad_input():
    with pytest.raises(UserError, match="unknown resize mode"):
        InceptionFeatureExtractor(FIDInceptionV3(), resize="lanczos", device="cpu")
    extractor = InceptionFeatureExtractor(FIDInceptionV3(), device="cpu")
    with pytest.raises(UserError, match="N×3×H×W"):
        extractor.features(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------------------------
# TorchScript (NVIDIA's inception-2015-12-05.pt) stand-ins


class _TinyLayers(nn.Module):
    """[N, 3, H, W] -> [N, 2048, 1, 1], like NVIDIA's `layers` (a cheap stand-in)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.project = nn.Linear(8, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.conv(x).mean(dim=(2, 3)))[:, :, None, None]


class _TinyNvidiaLike(nn.Module):
    """Same interface as NVIDIA's module: `.layers`, `.output` (1008-way), forward(img, return_features)."""

    def __init__(self):
        super().__init__()
        self.layers = _TinyLayers()
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = (img.to(torch.float32) - 128) / 128
        features = self.layers(x).reshape(-1, 2048)
        if return_features:
            return features
        return F.softmax(self.output(features), dim=1)


class _TinyOpaque(nn.Module):
    """A TorchScript feature network with neither `.layers` nor a classifier weight."""

    def __init__(self):
        super().__init__()
        self.body = _TinyLayers()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = (img.to(torch.float32) - 128) / 128
        features = self.body(x).reshape(-1, 2048)
        if return_features:
            return features
        return features.softmax(dim=1)


def scripted_extractor(module_type, seed: int, path):
    """A seeded module of `module_type`, saved as TorchScript at `path` and loaded back: (module, extractor)."""
    torch.manual_seed(seed)
    module = module_type().eval()
    torch.jit.save(torch.jit.script(module), path)
    return module, load_inception(path, device="cpu")


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
def test_torchscript_file_takes_the_torchscript_path(tmp_path):
    module, extractor = scripted_extractor(_TinyNvidiaLike, 8, tmp_path / "inception-2015-12-05.pt")
    assert extractor.is_torchscript and isinstance(extractor.network, torch.jit.ScriptModule)
    assert extractor.inference_network is None  # not an Inception-v3: runs as the TorchScript it is
    assert extractor.logits_available
    images = uint8_images(2, 45, 45, seed=8)
    pool3, logits = extractor.features(images)
    with torch.no_grad():
        expected = module.layers((resize_tf1_bilinear(images.float()) - 128) / 128).reshape(-1, 2048)
    torch.testing.assert_close(pool3, expected)
    torch.testing.assert_close(logits, pool3 @ module.output.weight.T)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
def test_torchscript_without_layers_or_classifier(tmp_path):
    module, extractor = scripted_extractor(_TinyOpaque, 9, tmp_path / "opaque.pt")
    assert extractor.is_torchscript and not extractor.logits_available
    images = uint8_images(2, 299, 299, seed=9)
    pool3, logits = extractor.features(images, logits=False)
    assert logits is None
    with torch.no_grad():
        expected = module(images.float(), return_features=True)  # the module's own mapping
    torch.testing.assert_close(pool3, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="no classifier weight"):
        extractor.features(images)


# --------------------------------------------------------------------------------------------------------------
# Weight discovery


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_explicit_path_wins(tmp_path, hub_dir, monkeypatch):
    explicit = _touch(tmp_path / "mine.pth")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(_touch(tmp_path / "env.pth")))
    _touch(hub_dir / FID_WEIGHTS_FILENAME)
    assert find_inception_weights(explicit) == explicit
    assert find_inception_weights(str(explicit)) == explicit
    with pytest.raises(UserError, match="does not exist"):
        find_inception_weights(tmp_path / "missing.pth")


def test_env_var_beats_the_hub_cache(tmp_path, hub_dir, monkeypatch):
    from_env = _touch(tmp_path / "env.pth")
    _touch(hub_dir / FID_WEIGHTS_FILENAME)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(from_env))
    assert find_inception_weights() == from_env
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match=WEIGHTS_ENV_VAR):
        find_inception_weights()


@pytest.mark.parametrize("name", KNOWN_WEIGHT_FILENAMES)
def test_hub_cache_is_searched(hub_dir, name):
    cached = _touch(hub_dir / name)
    assert find_inception_weights() == cached


def test_hub_cache_prefers_the_pytorch_fid_file(hub_dir):
    for name in KNOWN_WEIGHT_FILENAMES:
        _touch(hub_dir / name)
    assert find_inception_weights() == hub_dir / FID_WEIGHTS_FILENAME


def test_download_goes_through_a_temporary_name(hub_dir, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        Path(dst).write_bytes(b"downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    found = find_inception_weights()
    assert found == hub_dir / FID_WEIGHTS_FILENAME and found.read_bytes() == b"downloaded"
    [(url, temporary, prefix)] = calls
    assert url == FID_WEIGHTS_URL and prefix == FID_WEIGHTS_SHA256_PREFIX == "6726825d"
    assert temporary.parent == hub_dir and temporary != found
    assert sorted(p.name for p in hub_dir.iterdir()) == [FID_WEIGHTS_FILENAME]


def test_offline_is_a_clear_error(hub_dir, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"partial")
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as caught:
        find_inception_weights()
    message = str(caught.value)
    for needed in (FID_WEIGHTS_URL, FID_WEIGHTS_FILENAME, WEIGHTS_ENV_VAR, str(hub_dir), "no route to host"):
        assert needed in message
    assert "\n" not in message
    assert not any(hub_dir.iterdir())  # the partial file is removed
    with pytest.raises(UserError, match="pytorch-fid/releases"):
        load_inception()


def test_bad_hash_and_disabled_download(hub_dir, monkeypatch):
    def wrong_file(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "00000000")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", wrong_file)
    with pytest.raises(UserError, match="not the expected one"):
        find_inception_weights()
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("download=False must not download"))
    with pytest.raises(UserError, match="downloading is disabled"):
        find_inception_weights(download=False)
