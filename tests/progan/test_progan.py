"""progan: Table 2 networks, the original's schedule formulas, layer math by hand, a tiny run whose SWD falls,
exact resume, bad data, checkpoints as ganeval sources."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gancore.errors import SourceError, UserError
from gancore.sources import open_source
from progan.checkpoint import load_checkpoint
from progan.cli import main as progan_main
from progan.configs import resolve_config
from progan.dataset import TrainingData
from progan.networks import (
    EqualizedConv2d,
    EqualizedLinear,
    build_networks,
    count_parameters,
    minibatch_stddev,
    parameters_at,
)
from progan.schedule import compute_lod, training_phase
from progan.training_loop import run_training
from toolkit_testing.fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread on the shared machine)
from toolkit_testing.images import EXAMPLES, write_images

# ---------------------------------------------------------------------------------------------------------------
# Networks (paper Table 2)

TABLE2_G = [  # (layer, weight shape, Table 2 parameter count rounded as printed)
    ("blocks.4.dense", (8192, 512), 4.2e6), ("blocks.4.conv1", (512, 512, 3, 3), 2.4e6),
    ("blocks.8.conv0", (512, 512, 3, 3), 2.4e6), ("blocks.64.conv0", (256, 512, 3, 3), 1.2e6),
    ("blocks.64.conv1", (256, 256, 3, 3), 590e3), ("blocks.128.conv0", (128, 256, 3, 3), 295e3),
    ("blocks.128.conv1", (128, 128, 3, 3), 148e3), ("blocks.256.conv0", (64, 128, 3, 3), 74e3),
    ("blocks.256.conv1", (64, 64, 3, 3), 37e3), ("blocks.512.conv0", (32, 64, 3, 3), 18e3),
    ("blocks.512.conv1", (32, 32, 3, 3), 9.2e3), ("blocks.1024.conv0", (16, 32, 3, 3), 4.6e3),
    ("blocks.1024.conv1", (16, 16, 3, 3), 2.3e3), ("to_rgb.1024", (3, 16, 1, 1), 51),
]
TABLE2_D = [
    ("from_rgb.1024", (16, 3, 1, 1), 64), ("blocks.1024.conv0", (16, 16, 3, 3), 2.3e3),
    ("blocks.1024.conv1", (32, 16, 3, 3), 4.6e3), ("blocks.512.conv1", (64, 32, 3, 3), 18e3),
    ("blocks.64.conv1", (512, 256, 3, 3), 1.2e6), ("blocks.8.conv1", (512, 512, 3, 3), 2.4e6),
    ("epilogue.conv", (512, 513, 3, 3), 2.4e6), ("epilogue.dense", (512, 8192), 4.2e6), ("epilogue.out", (1, 512), 513),
]


def test_1024_networks_match_table2():
    G, D = build_networks(resolve_config("celebahq-1024"))
    counts = parameters_at(G, D, 1024)
    assert round(counts["G"] / 1e5) == 231 and round(counts["D"] / 1e5) == 231   # "23.1M" each
    for network, table in ((G, TABLE2_G), (D, TABLE2_D)):
        layers = dict(network.named_modules())
        for name, shape, printed in table:
            layer = layers[name]
            assert tuple(layer.weight.shape) == shape, name
            count = count_parameters(layer) + (512 if name == "blocks.4.dense" else 0)  # + the bias after reshape
            assert count == pytest.approx(printed, rel=0.05), name  # Table 2 prints two significant digits
    # every other resolution's toRGB/fromRGB exists up front, one fixed model for the optimizer and DDP
    assert set(G.to_rgb) == set(D.from_rgb) == {str(2 ** k) for k in range(2, 11)}


def test_output_shapes_per_lod():
    config = resolve_config("tiny", {"resolution": 32})
    G, D = build_networks(config)
    z = torch.randn(4, config.latent_size)
    for lod, res in ((3.0, 4), (2.5, 8), (2.0, 8), (0.3, 32), (0.0, 32)):
        images = G(z, lod)
        assert images.shape == (4, 3, res, res)
        assert D(images, lod).shape == (4, 1)


# ---------------------------------------------------------------------------------------------------------------
# Schedule (spec 5.1) and fade weights (spec 5.4)

def test_lod_schedule_formula():
    # R = 1024, 600/600 kimg (TF defaults): lod = 10 - 2 - phase - max(t - 600, 0)/600
    for kimg, expected in ((0, 8.0), (599, 8.0), (600, 8.0), (900, 7.5), (1200, 7.0), (1500, 7.0),
                           (2100, 6.5), (9000, 1.0), (9300, 0.5), (9600, 0.0), (20000, 0.0)):
        assert compute_lod(kimg, 1024, 4, 600, 600) == pytest.approx(expected), kimg
    config = resolve_config("celebahq-1024-v1")       # the paper's: 800/800, minibatch 16 then 14/6/3
    phase = training_phase(config, 800 + 400)          # halfway through fading in 8x8
    assert (phase.lod, phase.resolution, phase.fade_weight) == (pytest.approx(7.5), 8, pytest.approx(0.5))
    assert training_phase(config, 0).minibatch == 16
    fade_starts = {2 ** k: 800 + (k - 3) * 1600 for k in range(3, 11)}  # the fade-in of 2^k starts here
    assert training_phase(config, fade_starts[256] - 1).minibatch == 16
    assert [training_phase(config, fade_starts[r] + 1).minibatch for r in (256, 512, 1024)] == [14, 6, 3]
    assert training_phase(config, fade_starts[1024] + 1).resolution == 1024
    # lod bounds change at the start and the end of each fade (where Adam is reset)
    assert training_phase(config, 799).lod_bounds == (8, 8)
    assert training_phase(config, 801).lod_bounds == (7, 8)
    assert training_phase(config, 1601).lod_bounds == (7, 7)


def test_fade_weights_and_blend():
    config = resolve_config("tiny", {"resolution": 8})
    G, D = build_networks(config)
    z = torch.randn(2, config.latent_size)
    new, old = G(z, 0.0), torch.nn.functional.interpolate(G(z, 1.0), scale_factor=2, mode="nearest")
    torch.testing.assert_close(G(z, 0.25), torch.lerp(new, old, 0.25))
    image = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        x8 = D.blocks["8"](D._from_rgb(image))
        x4 = D._from_rgb(torch.nn.functional.avg_pool2d(image, 2))
        torch.testing.assert_close(D(image, 0.75), D.epilogue(torch.lerp(x8, x4, 0.75)))


# ---------------------------------------------------------------------------------------------------------------
# Layer math against hand computations

def test_minibatch_stddev_by_hand():
    x = torch.arange(8 * 2 * 1 * 2, dtype=torch.float32).reshape(8, 2, 1, 2) ** 1.5
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 3, 1, 2)
    values = x.numpy().reshape(8, 4)
    for n in range(8):
        members = values[n % 2::2]                       # group of sample n: same n mod (N / group size)
        expected = np.sqrt(members.var(axis=0) + 1e-8).mean()  # population std per feature, mean over C, H, W
        assert out[n, 2].flatten().tolist() == pytest.approx([expected] * 2, rel=1e-5)
    torch.testing.assert_close(out[:, :2], x)
    assert minibatch_stddev(x[:6], group_size=4).shape == (6, 3, 1, 2)  # 6 samples: groups of 3


def test_equalized_learning_rate_scaling():
    torch.manual_seed(0)
    conv = EqualizedConv2d(8, 4, 3)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.15)        # N(0, 1) storage
    assert conv.weight_gain == pytest.approx(math.sqrt(2) / math.sqrt(8 * 9))  # He constant at run time
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 8, 5, 5)
    expected = torch.nn.functional.conv2d(x, conv.weight * math.sqrt(2 / 72), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    dense = EqualizedLinear(512, 8192, gain=math.sqrt(2) / 4, bias=False)  # G's first layer (Theano gain)
    assert dense.weight_gain == pytest.approx(math.sqrt(2) / 4 / math.sqrt(512))
    plain = EqualizedLinear(64, 32, use_wscale=False)
    assert plain.weight_gain == 1.0 and plain.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)


# ---------------------------------------------------------------------------------------------------------------
# Training: a tiny run, exact resume, checkpoints as sources

TINY = {"lod_training_kimg": 0.5, "lod_transition_kimg": 0.5, "tick_kimg_base": 0.5, "image_snapshot_ticks": 4,
        "network_snapshot_ticks": 2, "metric_swd_images": 512}


def _stats(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def structured_images(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 NHWC: a vertical two-colour gradient with one bright disc of random colour, position and radius."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    top, bottom, disc = rng.uniform(0, 120, (count, 3)), rng.uniform(0, 120, (count, 3)), rng.uniform(150, 255, (count, 3))
    centre, radius = rng.uniform(0.25, 0.75, (count, 2)), rng.uniform(0.12, 0.25, count)
    images = top[:, None, None] * (1 - y[None, ..., None]) + bottom[:, None, None] * y[None, ..., None]
    inside = (y[None] - centre[:, 0, None, None]) ** 2 + (x[None] - centre[:, 1, None, None]) ** 2 < radius[:, None, None] ** 2
    images[inside] = np.repeat(disc[:, None, None], size * size, axis=1).reshape(count, size, size, 3)[inside]
    return np.rint(images).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny config on 1024 structured 16x16 images (full size from 2 kimg on): one uninterrupted run to
    6 kimg (~375 steps), and the same run killed after its 1 kimg snapshot, resumed and killed again at 2 kimg."""
    root = tmp_path_factory.mktemp("tiny")
    data = root / "structured.npy"
    np.save(data, structured_images(1024))
    run_training(resolve_config("tiny", {**TINY, "total_kimg": 6.0}), data, root / "full", device="cpu",
                  log=lambda line: None)
    config = resolve_config("tiny", {**TINY, "total_kimg": 6.0})
    with pytest.raises(KeyboardInterrupt):  # killed right after the snapshot of tick 2 (1.024 kimg)
        run_training(config, data, root / "split", device="cpu", log=lambda line: None,
                      progress_fn=lambda state, phase: _stop_at_tick(state, 2))
    with pytest.raises(KeyboardInterrupt):
        run_training(config, data, root / "split", resume=root / "split", device="cpu", log=lambda line: None,
                      progress_fn=lambda state, phase: _stop_at_tick(state, 4))
    return root


def _stop_at_tick(state, tick: int) -> None:
    if state.tick == tick:
        raise KeyboardInterrupt


def test_tiny_run_trains_and_swd_falls(tiny_runs):
    stats = _stats(tiny_runs / "full")
    assert round(stats[-1]["kimg"]) == 6 and stats[-1]["lod"] == 0.0
    assert [s["resolution"] for s in stats][:2] == [4, 8] and stats[-1]["resolution"] == 16
    assert all(math.isfinite(s[k]) for s in stats for k in ("loss_D", "loss_G", "gradient_penalty"))
    assert all(s["images_per_second"] > 0 and s["cpu_max_rss_mb"] > 0 for s in stats)
    assert (tiny_runs / "full" / "reals.png").is_file() and list((tiny_runs / "full").glob("fakes*.png"))
    swd_by_kimg = {round(s["kimg"]): s["metrics"]["swd"]["avg"] for s in stats if "swd" in s.get("metrics", {})}
    assert sorted(swd_by_kimg) == [2, 3, 4, 5, 6]  # at every snapshot once training runs at 16x16
    assert swd_by_kimg[6] < 0.85 * swd_by_kimg[2], swd_by_kimg


def test_resume_continues_the_same_trajectory(tiny_runs):
    full, split = _stats(tiny_runs / "full"), _stats(tiny_runs / "split")
    assert [s["kimg"] for s in split] == [s["kimg"] for s in full[:4]]
    for a, b in zip(full, split):
        assert a["lod"] == b["lod"]
        for key in ("loss_D", "loss_G", "D_real", "gradient_penalty"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["kimg"], key)
    end_full = load_checkpoint(tiny_runs / "full" / "network-snapshot-000002.pt")
    end_split = load_checkpoint(tiny_runs / "split" / "network-snapshot-000002.pt")
    for key, value in end_full["G_ema"].items():
        torch.testing.assert_close(end_split["G_ema"][key], value, rtol=1e-4, atol=1e-5)
    assert end_full["data_position"] == end_split["data_position"]


def test_checkpoint_is_a_ganeval_source(tiny_runs, monkeypatch):
    root = tiny_runs
    monkeypatch.setenv("PROGAN_SOURCE_IMAGES", "64")
    source = open_source(root / "full" / "network-snapshot-000006.pt")
    assert len(source) == 64 and source.shape == (16, 16)
    batch = source.load_batch(np.arange(8))
    assert batch.dtype == torch.uint8 and batch.shape == (8, 3, 16, 16)
    torch.testing.assert_close(source.load_batch(np.array([3])), batch[3:4])  # image i from latent (seed, i)
    result = CliRunner().invoke(progan_main, ["generate", str(root / "full" / "network-snapshot-000006.pt"),
                                              "--num", "5", "--out", str(root / "gen"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list((root / "gen").glob("*.png"))) == 5
    result = CliRunner().invoke(progan_main, ["interpolate", str(root / "full" / "network-snapshot-000006.pt"),
                                              "--frames", "8", "--smoothing", "0.07", "--out", str(root / "lerp.png"),
                                              "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (root / "lerp.png").is_file()


def test_info_json():
    result = CliRunner().invoke(progan_main, ["info", "--config", "celebahq-1024", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert round(info["G_params"] / 1e5) == 231 and round(info["D_params"] / 1e5) == 231
    assert info["per_resolution"]["1024"]["G"] == info["G_params"]
    assert info["schedule"][0]["resolution"] == 4 and info["schedule"][-1]["resolution"] == 1024


# ---------------------------------------------------------------------------------------------------------------
# Bad data

def test_bad_data_gives_clear_errors(tmp_path, real_photos):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty source"):
        TrainingData(tmp_path / "empty")
    write_images(tmp_path / "npot", real_photos[:3, :100, :100])
    with pytest.raises(UserError, match="power-of-two"):
        TrainingData(tmp_path / "npot")
    write_images(tmp_path / "oblong", real_photos[:3, :64, :128])
    with pytest.raises(UserError, match="square power-of-two"):
        TrainingData(tmp_path / "oblong")
    mixed = tmp_path / "mixed"
    write_images(mixed, real_photos[:3])
    write_images(mixed / "small", real_photos[:2, :64, :64])
    with pytest.raises(SourceError, match="differ") as error:
        TrainingData(mixed, 16).next_batch(5, 16)
    assert "small/0000.png" in str(error.value) and "has no --skip-bad" in str(error.value)
    with pytest.raises(UserError, match="smaller than the configured resolution"):
        TrainingData(EXAMPLES / "real", 256)
    result = CliRunner().invoke(progan_main, ["train", "--data", str(tmp_path / "npot"), "--out",
                                              str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2 and "error:" in result.output and "power-of-two" in result.output


def test_hdf5_levels_are_read_per_lod(tmp_path, real_photos):
    import h5py

    images = np.ascontiguousarray(real_photos[:6, :32, :32].transpose(0, 3, 1, 2))
    with h5py.File(tmp_path / "data.h5", "w") as file:
        for res in (32, 16, 8, 4):
            level = images.reshape(6, 3, res, 32 // res, res, 32 // res).astype(np.float32).mean(axis=(3, 5))
            file[f"data{res}x{res}"] = np.rint(level).astype(np.uint8) + (1 if res == 8 else 0)  # tag level 8
    data = TrainingData(tmp_path / "data.h5")
    assert data.resolution == 32 and data.num_images == 6
    batch = data.reals_uint8(np.arange(6), 8)
    torch.testing.assert_close(batch, torch.from_numpy(h5py.File(tmp_path / "data.h5")["data8x8"][:]))
    level4 = data.next_batch(6, 4)  # 4x4 NCHW (N, 3, 4, 4) must not be read as 4-channel NHWC
    assert level4.shape == (6, 3, 4, 4)
