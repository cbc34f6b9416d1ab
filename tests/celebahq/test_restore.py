"""celebahq.restore: network shapes, tiled inference, the shipped weights vs the baselines, bad inputs, the build
stages and the CLI commands (train, restore, eval)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from celebahq.cli import main
from celebahq.manifest import latest_records, read_all_manifests
from celebahq.pipeline import BuildOptions, build
from celebahq.restore.degrade import SR_SCALE, bicubic_upscale, downscale, jpeg_roundtrip
from celebahq.restore.eval import psnr
from celebahq.restore.infer import SIZE_BUCKET_CUDA, Restorer, net_upscale, shipped_weights
from celebahq.restore.models import (
    build_model,
    is_channels_last,
    load_restorer,
    pixel_shuffle_as,
    pixel_unshuffle_as,
    warm_start,
)
from celebahq.restore.train import weights_payload
from toolkit_testing.flops import gflops_per_megapixel

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"
KINDS = ("cleanup", "sr")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph held out from training (astronaut, the bundled mini CelebA's first image), 256×256."""
    return np.asarray(Image.open(MINI / "img_celeba" / "000001.jpg").convert("RGB"))[:256, 128:384]


@pytest.fixture(scope="module")
def restorers() -> dict[str, Restorer]:
    return {kind: Restorer(kind, device="cpu") for kind in KINDS}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> dict[str, Path]:
    """Weight files of untrained networks with a non-zero last layer (their tiling behaves like a trained one's)."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_model(kind)
        torch.nn.init.normal_(model.tail.weight, std=0.05)
        files[kind] = folder / f"{kind}.pt"
        torch.save(weights_payload(kind, model, {}, {}), files[kind])
    return files


# --------------------------------------------------------------------------------------------------------------
# Networks and tiled inference


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 50), (64, 64)])
def test_model_shapes(kind, size):
    model = build_model(kind).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    scale = SR_SCALE if kind == "sr" else 1
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale)


def test_untrained_networks_are_identity_and_bicubic():
    """The last layers start at zero: an untrained cleanup net returns its input, the SR net a bicubic upsample."""
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        assert torch.equal(build_model("cleanup")(x), x)
        up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        assert torch.allclose(build_model("sr")(x), up)


def test_cost_per_megapixel():
    """The costs quoted in docs/celebahq.md (GFLOP per output megapixel)."""
    assert gflops_per_megapixel(build_model("cleanup")) == pytest.approx(49.8, abs=0.5)
    assert gflops_per_megapixel(build_model("sr")) == pytest.approx(55.7, abs=0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_batch_independent(kind, restorers, photo):
    image = photo[:150, :170] if kind == "cleanup" else photo[:40, :60]
    tile = 96 if kind == "cleanup" else 32
    first = Restorer(kind, device="cpu", tile=tile, batch=8)(image)
    assert first.dtype == np.uint8 and first.shape == (image.shape[0] * restorers[kind].scale,
                                                      image.shape[1] * restorers[kind].scale, 3)
    assert np.array_equal(first, Restorer(kind, device="cpu", tile=tile, batch=8)(image))
    assert np.array_equal(first, Restorer(kind, device="cpu", tile=tile, batch=1)(image))
    fixed = Restorer(kind, device="cpu", tile=tile, batch=8)
    fixed.tiling = replace(fixed.tiling, fixed_batch=True)  # CUDA's: calls of 1, 2, 4 or 8 windows (blanks fill)
    seen = []
    model = fixed.model
    fixed.model = lambda x: seen.append(x.shape[0]) or model(x)
    assert np.array_equal(first, fixed(image))
    assert seen and all(count in (1, 2, 4, 8) for count in seen)


@pytest.mark.parametrize("kind", KINDS)
def test_half_layers_compute_what_autocast_does(kind, photo):
    """CUDA's mode (float16 layers, float32 input skips; here on the CPU) == the float32 model under autocast,
    bit for bit, and within a grey level of float32."""
    image = photo[:150, :170] if kind == "cleanup" else photo[:40, :60]
    tile = 96 if kind == "cleanup" else 32
    half = Restorer(kind, device="cpu", tile=tile, half=True)
    assert next(half.model.parameters()).dtype == torch.float16
    autocast = Restorer(kind, device="cpu", tile=tile)
    model = autocast.model

    def under_autocast(x):
        with torch.autocast("cpu", dtype=torch.float16):
            return model(x)

    autocast.model = under_autocast
    got = half(image)
    np.testing.assert_array_equal(got, autocast(image))
    full = Restorer(kind, device="cpu", tile=tile)(image)
    assert np.abs(got.astype(np.int16) - full).max() <= 1


@pytest.mark.parametrize("source_layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pixel_shuffles_in_one_copy_equal_torchs(source_layout, channels_last, dtype):
    """pixel_(un)shuffle_as == F.pixel_(un)shuffle then a cast, value for value, stored in the layout asked for."""
    x = torch.randn(2, 12, 5, 7).to(memory_format=source_layout)
    shuffled = pixel_shuffle_as(x, 2, dtype, channels_last)
    assert torch.equal(shuffled, torch.nn.functional.pixel_shuffle(x, 2).to(dtype))
    assert shuffled.dtype == dtype and is_channels_last(shuffled) == channels_last and (
        channels_last or shuffled.is_contiguous())
    image = torch.randn(2, 3, 10, 14).to(memory_format=source_layout)
    unshuffled = pixel_unshuffle_as(image, 2, dtype, channels_last)
    assert torch.equal(unshuffled, torch.nn.functional.pixel_unshuffle(image, 2).to(dtype))
    assert is_channels_last(unshuffled) == channels_last and (channels_last or unshuffled.is_contiguous())
    assert torch.equal(pixel_shuffle_as(unshuffled, 2, dtype, False), image.to(dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_channels_last_networks_feed_every_convolution_channels_last(kind):
    """CUDA's layout (float16, channels_last; here on the CPU): every convolution gets a channels_last input (no
    layout conversion in front of it: F.pixel_shuffle returns NCHW on CUDA, and the float32 NCHW input needs one
    copy, not two), the output is float32 NCHW and equals the NCHW network's to float16 rounding."""
    nchw = load_restorer(shipped_weights(kind), kind)[0].half()
    nhwc = load_restorer(shipped_weights(kind), kind)[0].half().to(memory_format=torch.channels_last)
    layouts = []
    for module in nhwc.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(lambda _, inputs: layouts.append(is_channels_last(inputs[0])))
    x = torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        expected, got = nchw(x), nhwc(x)
    assert layouts and all(layouts), f"{layouts.count(False)} of {len(layouts)} convolutions got an NCHW input"
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weights", ["shipped", "random"])
def test_tiled_equals_whole_image_without_seams(kind, weights, random_weights, photo):
    path = shipped_weights(kind) if weights == "shipped" else random_weights[kind]
    image = photo[:200, :232] if kind == "cleanup" else photo[:64, :96]
    tile = 96 if kind == "cleanup" else 32
    whole = Restorer(kind, path, device="cpu", tile=4096)(image).astype(np.int16)
    tiled = Restorer(kind, path, device="cpu", tile=tile)(image).astype(np.int16)
    assert np.abs(tiled - whole).max() <= 1
    # CUDA's coarse padding of window sides (more replicated edge, never other pixels) agrees to the same ±1
    coarse = Restorer(kind, path, device="cpu", tile=tile, size_bucket=SIZE_BUCKET_CUDA[kind])
    assert coarse.tiling.size_bucket == SIZE_BUCKET_CUDA[kind]
    assert np.abs(coarse(image).astype(np.int16) - whole).max() <= 1
    # no seam: the step between neighbours across a tile border is the whole image's step, to the same ±1
    scale = SR_SCALE if kind == "sr" else 1
    borders = np.arange(tile, image.shape[1], tile) * scale
    step_tiled = np.abs(tiled[:, borders] - tiled[:, borders - 1])
    step_whole = np.abs(whole[:, borders] - whole[:, borders - 1])
    assert np.abs(step_tiled - step_whole).max() <= 2
    # and a model that ignores context (margin 0) would show the test is sensitive
    cut = Restorer(kind, path, device="cpu", tile=tile, margin=0)(image).astype(np.int16)
    assert np.abs(cut - whole).max() > 2


# --------------------------------------------------------------------------------------------------------------
# The shipped weights


def held_out_crops() -> list[np.ndarray]:
    """128×128 crops of photographs none of the shipped weights saw in training (astronaut, coffee)."""
    skimage_data = pytest.importorskip("skimage.data")
    crops = []
    for photo in (skimage_data.astronaut(), skimage_data.coffee()):
        for top, left in ((40, 60), (200, 250), (300, 100)):
            crops.append(photo[top:top + 128, left:left + 128])
    return crops


def test_shipped_weights_are_recorded():
    for kind in KINDS:
        payload = torch.load(shipped_weights(kind), weights_only=True)
        assert payload["kind"] == kind and payload["training"]["steps"] > 0
        assert payload["training"]["images"] and payload["validation"]["gain_db"] > 0
        assert payload["training"]["options"]["adversarial_weight"] == 0.0
    total = sum(shipped_weights(kind).stat().st_size for kind in KINDS)
    assert total <= 20 * 2**20


def test_shipped_cleanup_beats_the_decoded_jpeg(restorers):
    gains = []
    for crop in held_out_crops():
        degraded = jpeg_roundtrip(crop, 20)
        gains.append(psnr(restorers["cleanup"](degraded), crop) - psnr(degraded, crop))
    assert np.mean(gains) > 0.6  # measured +1.1 dB on these crops
    assert min(gains) > 0.2


def test_shipped_sr_beats_bicubic(restorers):
    gains = []
    for crop in held_out_crops():
        small = downscale(crop)
        gains.append(psnr(restorers["sr"](small), crop) - psnr(bicubic_upscale(small, SR_SCALE), crop))
    assert np.mean(gains) > 0.4  # measured +0.8 dB on these crops
    assert min(gains) > 0.0


# --------------------------------------------------------------------------------------------------------------
# Odd inputs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 5, 3), (2, 9), (7, 4, 1), (6, 6, 4), (9, 2, 2)])
def test_tiny_grey_and_rgba_inputs(kind, shape, restorers):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = restorers[kind](image)
    scale = restorers[kind].scale
    assert out.dtype == np.uint8 and out.shape == (shape[0] * scale, shape[1] * scale, 3)


def test_grey_input_gives_grey_rgb(restorers, photo):
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    assert np.array_equal(restorers["cleanup"](grey), restorers["cleanup"](np.repeat(grey[:, :, None], 3, 2)))


def test_rejects_non_uint8(restorers):
    with pytest.raises(ValueError, match="uint8"):
        restorers["cleanup"](np.zeros((8, 8, 3), np.float32))


def test_huge_image_runs_in_bounded_tiles(monkeypatch):
    """A 3000×4000 photo goes through in tiles: no call sees more than batch × (tile + 2·margin)² pixels."""
    restorer = Restorer("cleanup", device="cpu", tile=512, batch=4)
    seen = []

    def identity(x):
        seen.append(x.shape)
        return x

    monkeypatch.setattr(restorer, "model", identity)
    image = np.full((3000, 4000, 3), 77, np.uint8)
    image[::97, ::89] = 200
    out = restorer(image)
    assert np.array_equal(out, image)
    tiling = restorer.tiling  # the far-edge window: up to a bucket longer, and a margin of replicated edge
    side = tiling.tile + 3 * tiling.margin + tiling.bucket
    assert max(shape[0] * shape[2] * shape[3] for shape in seen) <= 4 * side * side


@pytest.mark.parametrize("kind", KINDS)
def test_window_shapes_are_bounded_whatever_the_photo_size(monkeypatch, kind):
    """cuDNN plans one execution per input shape (on an H100 that cost ~0.4 ms of host time per convolution and
    left the GPU idle when every photo brought new shapes): with CUDA's tiling (run here on the CPU), over photos of
    40 sizes up to 3 tiles a side, every window side is a multiple of the size bucket and at most tile + bucket +
    3 margins rounded up to it, so the shapes are a bounded set; calls hold a power of two of windows."""
    restorer = Restorer(kind, device="cpu", tile=96 if kind == "cleanup" else 48,
                        size_bucket=SIZE_BUCKET_CUDA[kind] // 2)
    restorer.tiling = replace(restorer.tiling, fixed_batch=True)
    tiling = restorer.tiling
    calls = []

    def identity(x):
        calls.append(tuple(x.shape))
        return x if kind == "cleanup" else x.repeat_interleave(4, -2).repeat_interleave(4, -1)

    monkeypatch.setattr(restorer, "model", identity)
    generator = np.random.default_rng(3)
    for _ in range(40):
        height, width = generator.integers(1, 3 * tiling.tile, size=2)
        image = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = image if kind == "cleanup" else image.repeat(4, 0).repeat(4, 1)
        assert np.array_equal(restorer(image), expected)
    largest = -(-(tiling.tile + tiling.bucket + 3 * tiling.margin) // tiling.size_bucket) * tiling.size_bucket
    assert all(side % tiling.size_bucket == 0 and side <= largest for call in calls for side in call[-2:])
    assert all(call[0] in (1, 2, 4, 8) for call in calls)
    assert len({call[-2:] for call in calls}) <= (largest // tiling.size_bucket) ** 2


@pytest.mark.parametrize("tile, margin", [(96, 48), (192, 16), (512, 16)])
def test_windows_split_a_side_evenly(tile, margin):
    """A side longer than tile + 2 margins is cut into ⌈length / tile⌉ near-equal tiles, each with ≥ margin of
    context where the image has it, windows starting at multiples of the bucket; the windows overlap by their
    margins only (no window shifted back over its neighbour)."""
    from celebahq.restore.infer import BUCKET, _windows

    for length in range(1, 4 * tile):
        windows = _windows(length, tile, margin, BUCKET)
        assert windows[0][0] == 0 and windows[-1][1] == length
        if length <= tile + 2 * margin:
            assert windows == [(0, length, 0, length)]
            continue
        assert len(windows) == -(-length // tile)
        for (own_start, own_stop, first, last), following in zip(windows, windows[1:] + [None]):
            assert first % BUCKET == 0 and first <= own_start < own_stop <= last <= length
            assert own_stop - own_start <= tile + BUCKET
            assert own_start - first >= margin or first == 0
            assert last - own_stop >= margin or last == length
            assert following is None or following[0] == own_stop
        assert sum(last - first for _, _, first, last in windows) <= length + 2 * margin * (len(windows) - 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_restorer_matches_the_cpu(kind, photo):
    """CUDA's mode (float16 layers, channels_last, CUDA's tiling: one window, then several) against the float32
    whole image on the CPU: float16 rounding only (a layout or tiling error would show as garbage)."""
    image = photo[:200, :232] if kind == "cleanup" else photo[:64, :96]
    whole = Restorer(kind, device="cpu", tile=4096)(image).astype(np.int16)
    for tile in (None, 96 if kind == "cleanup" else 32):
        restorer = Restorer(kind, device="cuda", tile=tile)
        assert restorer.half and is_channels_last(restorer.model.tail.weight)
        difference = np.abs(restorer(image).astype(np.int16) - whole)
        assert difference.max() <= 4 and difference.mean() <= 0.25, (tile, difference.max(), difference.mean())


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 16])
def test_net_upscale_factors(factor, photo):
    image = photo[:20, :30]
    assert net_upscale(image, factor).shape == (20 * factor, 30 * factor, 3)


# --------------------------------------------------------------------------------------------------------------
# In the build


@pytest.fixture(scope="module")
def small_faces(tmp_path_factory) -> Path:
    """Two tiny bundled photos whose faces need super-resolution at R = 256."""
    root = tmp_path_factory.mktemp("mini")
    (root / "img_celeba").mkdir()
    (root / "Anno").mkdir()
    names = ("000006.jpg", "000007.jpg")
    for name in names:
        shutil.copy(MINI / "img_celeba" / name, root / "img_celeba" / name)
    lines = (MINI / "Anno" / "list_landmarks_celeba.txt").read_text().splitlines()
    rows = [line for line in lines[2:] if line.split()[0] in names]
    (root / "Anno" / "list_landmarks_celeba.txt").write_text("\n".join([str(len(rows)), lines[1], *rows]) + "\n")
    return root


@pytest.mark.parametrize("backend", ["pil", "torch"])
def test_build_with_networks(backend, small_faces, tmp_path):
    options = BuildOptions(resolution=256, backend=backend, cleanup="net", sr="net", batch_size=2, num_workers=0,
                           device="cpu", progress=False)
    report = build(small_faces, tmp_path / "net", options)
    assert report.ok == 2
    records = latest_records(read_all_manifests(tmp_path / "net"))
    for record in records.values():
        assert "cleanup:net" in record["stages"] and "sr:netx2" in record["stages"]
    stand_in = build(small_faces, tmp_path / "lanczos", BuildOptions(
        resolution=256, backend=backend, cleanup="none", sr="lanczos", num_workers=0, device="cpu", progress=False))
    assert stand_in.ok == 2
    for name in records:
        a = np.asarray(Image.open(tmp_path / "net" / records[name]["output"]), dtype=np.float64)
        b = np.asarray(Image.open(tmp_path / "lanczos" / records[name]["output"]), dtype=np.float64)
        assert 0 < np.abs(a - b).mean() < 12  # the networks change the picture, a little


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_the_torch_build_cleans_up_on_the_device(device, small_faces, tmp_path, monkeypatch):
    """With the torch backend the workers send the whole photo and the cleanup net runs in the main process on the
    build's device, on tensors (never the host-array stage); the crops equal the pil backend's to rounding."""
    from celebahq import build_plan

    cleanup_tensor = build_plan.cleanup_tensor

    def host_stage(image):
        raise AssertionError("the host cleanup stage ran in a torch build")

    seen = []

    def device_stage(x):
        seen.append((type(x), x.device.type, tuple(x.shape)))
        return cleanup_tensor(x)

    common = {"resolution": 256, "cleanup": "net", "sr": "net", "batch_size": 2, "num_workers": 0, "progress": False}
    build(small_faces, tmp_path / "pil", BuildOptions(backend="pil", device="cpu", **common))
    monkeypatch.setattr(build_plan, "cleanup_image", host_stage)  # the stages the plan chooses from
    monkeypatch.setattr(build_plan, "cleanup_tensor", device_stage)
    assert build(small_faces, tmp_path / "torch", BuildOptions(backend="torch", device=device, **common)).ok == 2
    assert len(seen) == 2 and all(kind is torch.Tensor and where == device for kind, where, _ in seen)
    assert {shape[1:] for _, _, shape in seen} == {Image.open(small_faces / "img_celeba" / name).size[::-1]
                                                   for name in ("000006.jpg", "000007.jpg")}  # whole photos
    for record in latest_records(read_all_manifests(tmp_path / "torch")).values():
        output = record["output"]
        a = np.asarray(Image.open(tmp_path / "torch" / output), dtype=np.float64)
        b = np.asarray(Image.open(tmp_path / "pil" / output), dtype=np.float64)
        # on CUDA the networks run in float16 (celebahq/restore/infer.py): the pictures agree less closely
        assert np.abs(a - b).mean() < (0.5 if device == "cpu" else 3.0)
        assert device != "cpu" or np.percentile(np.abs(a - b), 99) <= 4


# --------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_restore_writes_pngs_and_skips_bad_files(tmp_path, photo):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(jpeg_roundtrip(photo[:40, :48], 20)).save(src / "a.jpg", quality=20)
    Image.fromarray(photo[:16, :20]).convert("L").save(src / "sub" / "b.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    for kind, scale in (("cleanup", 1), ("sr", SR_SCALE)):
        result = CliRunner().invoke(main, ["restore", kind, str(src), str(tmp_path / kind), "--quiet",
                                           "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert "2 images written, 1 skipped" in result.output and "broken.jpg" in result.output
        assert Image.open(tmp_path / kind / "a.png").size == (48 * scale, 40 * scale)
        assert Image.open(tmp_path / kind / "sub" / "b.png").size == (20 * scale, 16 * scale)
        assert not list((tmp_path / kind).rglob(".*partial"))


def test_restore_keeps_sources_that_share_a_stem_apart(tmp_path, photo):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo[:16, :16]).save(src / "face.jpg", quality=90)
    Image.fromarray(photo[16:32, :16]).save(src / "face.png")
    Image.fromarray(photo[:16, 16:32]).save(src / "other.jpg", quality=90)
    result = CliRunner().invoke(main, ["restore", "cleanup", str(src), str(tmp_path / "out"), "--quiet",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".gancore-output", "face.jpg.png", "face.png.png",
                                                                     "other.png"]
    assert (tmp_path / "out" / "face.jpg.png").read_bytes() != (tmp_path / "out" / "face.png.png").read_bytes()


def test_cli_train_resume_and_eval(tmp_path, photo):
    images = tmp_path / "train"
    images.mkdir()
    Image.fromarray(photo).save(images / "photo.png")
    out = tmp_path / "sr.pt"
    args = ["train-restorer", "sr", "--images", str(images), "--val-images", str(images), "--out", str(out),
            "--patch", "32", "--batch", "2", "--val-every", "2", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    first = torch.load(str(out) + ".ckpt", weights_only=True)
    assert first["step"] == 2
    result = CliRunner().invoke(main, [*args, "--steps", "4"])  # resumes from step 2
    assert result.exit_code == 0, result.output
    payload = torch.load(out, weights_only=True)
    assert payload["training"]["images"] == [(images / "photo.png").as_posix()]
    assert torch.load(str(out) + ".ckpt", weights_only=True)["step"] == 4
    assert [h["step"] for h in torch.load(str(out) + ".ckpt", weights_only=True)["history"]] == [2, 4]

    result = CliRunner().invoke(main, ["eval-restorer", "sr", "--images", str(images), "--weights", str(out),
                                       "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert set(figures["methods"]) == {"bicubic", "lanczos", "net"} and figures["images"] == 1
    result = CliRunner().invoke(main, ["eval-restorer", "cleanup", "--images", str(images), str(images / "photo.png"),
                                       "--quality", "30", "--device", "cpu"])  # --images DIR [DIR|FILE …]
    assert result.exit_code == 0, result.output
    assert "cleanup on 1 photographs" in result.output and "jpeg" in result.output and "net gain" in result.output


def test_warm_start_grows_a_network_without_changing_its_output():
    small = build_model("cleanup", {"blocks": [1, 1, 2]}).eval()
    for parameter in small.parameters():  # non-zero everywhere, tail included
        torch.nn.init.normal_(parameter, std=0.05)
    grown = build_model("cleanup", {"blocks": [2, 3, 4]}).eval()
    fresh = warm_start(grown, small.state_dict())
    assert fresh and all(".body." in name for name in fresh)  # only the added residual blocks
    image = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(grown(image), small(image))
    with pytest.raises(ValueError, match="share no layer"):
        warm_start(build_model("sr"), small.state_dict())


def test_cli_train_from_init_weights_with_a_config(tmp_path, photo):
    images = tmp_path / "train"
    images.mkdir()
    Image.fromarray(photo).save(images / "photo.png")
    base = ["train-restorer", "cleanup", "--images", str(images), "--patch", "32", "--batch", "2", "--steps", "1",
            "--device", "cpu", "--quiet"]
    small = tmp_path / "small.pt"
    assert CliRunner().invoke(main, [*base, "--out", str(small)]).exit_code == 0
    grown = tmp_path / "grown.pt"
    result = CliRunner().invoke(main, [*base, "--out", str(grown), "--init", str(small),
                                       "--config", '{"widths": [32, 48, 64], "blocks": [2, 2, 4]}'])
    assert result.exit_code == 0, result.output
    payload = torch.load(grown, weights_only=True)
    assert payload["config"] == {"widths": [32, 48, 64], "blocks": [2, 2, 4]}
    assert payload["training"]["options"]["init"] == str(small)
    for bad, message in ((["--init", str(small), "--config", "{}"], None),
                         (["--config", '{"width": 3}'], "bad network config"),
                         (["--config", "[1]"], "JSON object"),
                         (["--config", "{"], "not JSON")):
        result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "bad.pt"), "--restart", *bad])
        if message is None:
            assert result.exit_code == 0, result.output  # same config: a plain warm start
        else:
            assert result.exit_code != 0 and message in result.output, result.output
            assert "Traceback" not in result.output
    sr_init = CliRunner().invoke(main, [*base[:1], "sr", *base[2:], "--out", str(tmp_path / "sr.pt"),
                                        "--init", str(small)])
    assert sr_init.exit_code != 0 and "not 'sr'" in sr_init.output
