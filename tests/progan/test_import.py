"""`progan import`: release-format pickles (tuples of `tfutil.Network`, built here with a stand-in class of that
exact module and name) become checkpoints whose networks equal a NumPy transcription of the original's G_paper and
D_paper ('linear' structure, written from networks.py of tkarras/progressive_growing_of_gans) on the same
weights; any other class in a pickle is refused without running it."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from gancore.errors import UserError
from gancore.sources import open_source
from progan.checkpoint import generator_from_checkpoint, load_checkpoint
from progan.cli import main as progan_main
from progan.networks import Discriminator
from progan.tf_import import import_pickle, read_network_pickle

# The signatures of the original's build functions (their defaults are read from this text, as from a release
# pickle's build_module_src; the bodies are never run).
BUILD_MODULE_SRC = '''
def G_paper(latents_in, labels_in, num_channels=1, resolution=32, label_size=0, fmap_base=8192, fmap_decay=1.0,
            fmap_max=512, latent_size=None, normalize_latents=True, use_wscale=True, use_pixelnorm=True,
            pixelnorm_epsilon=1e-8, use_leakyrelu=True, dtype='float32', fused_scale=True, structure=None,
            is_template_graph=False, **kwargs):
    raise SystemExit("never executed")

def D_paper(images_in, num_channels=1, resolution=32, label_size=0, fmap_base=8192, fmap_decay=1.0, fmap_max=512,
            use_wscale=True, mbstd_group_size=4, dtype='float32', fused_scale=True, structure=None,
            is_template_graph=False, **kwargs):
    raise SystemExit("never executed")
'''

RESOLUTION, FMAP_BASE, FMAP_MAX = 32, 128, 32
LOG2 = 5


def nf(stage: int) -> int:
    return min(int(FMAP_BASE / 2.0 ** stage), FMAP_MAX)


# ---------------------------------------------------------------------------------------------------------------
# Release-format pickles


def generator_variables(rng, fused: bool, lod: float) -> OrderedDict:
    """G_paper's variables by TF local name and shape (HWIO kernels; the fused kernel is [k, k, out, in])."""
    v = OrderedDict(lod=np.float32(lod))
    v["4x4/Dense/weight"], v["4x4/Dense/bias"] = rng.standard_normal((nf(0), nf(1) * 16)), rng.standard_normal(nf(1))
    v["4x4/Conv/weight"], v["4x4/Conv/bias"] = rng.standard_normal((3, 3, nf(1), nf(1))), rng.standard_normal(nf(1))
    for res in range(3, LOG2 + 1):
        name = f"{2 ** res}x{2 ** res}"
        shape = (3, 3, nf(res - 1), nf(res - 2)) if fused else (3, 3, nf(res - 2), nf(res - 1))
        conv0 = f"{name}/Conv0_up" if fused else f"{name}/Conv0"
        v[f"{conv0}/weight"], v[f"{conv0}/bias"] = rng.standard_normal(shape), rng.standard_normal(nf(res - 1))
        v[f"{name}/Conv1/weight"] = rng.standard_normal((3, 3, nf(res - 1), nf(res - 1)))
        v[f"{name}/Conv1/bias"] = rng.standard_normal(nf(res - 1))
    for res in range(2, LOG2 + 1):
        v[f"ToRGB_lod{LOG2 - res}/weight"] = rng.standard_normal((1, 1, nf(res - 1), 3))
        v[f"ToRGB_lod{LOG2 - res}/bias"] = rng.standard_normal(3)
    return OrderedDict((k, np.asarray(a, np.float32) if k != "lod" else a) for k, a in v.items())


def discriminator_variables(rng, fused: bool) -> OrderedDict:
    v = OrderedDict(lod=np.float32(0))
    for res in range(LOG2, 1, -1):
        v[f"FromRGB_lod{LOG2 - res}/weight"] = rng.standard_normal((1, 1, 3, nf(res - 1)))
        v[f"FromRGB_lod{LOG2 - res}/bias"] = rng.standard_normal(nf(res - 1))
        if res > 2:
            name = f"{2 ** res}x{2 ** res}"
            v[f"{name}/Conv0/weight"] = rng.standard_normal((3, 3, nf(res - 1), nf(res - 1)))
            v[f"{name}/Conv0/bias"] = rng.standard_normal(nf(res - 1))
            conv1 = f"{name}/Conv1_down" if fused else f"{name}/Conv1"
            v[f"{conv1}/weight"] = rng.standard_normal((3, 3, nf(res - 1), nf(res - 2)))
            v[f"{conv1}/bias"] = rng.standard_normal(nf(res - 2))
    v["4x4/Conv/weight"], v["4x4/Conv/bias"] = rng.standard_normal((3, 3, nf(1) + 1, nf(1))), rng.standard_normal(nf(1))
    v["4x4/Dense0/weight"], v["4x4/Dense0/bias"] = rng.standard_normal((nf(1) * 16, nf(0))), rng.standard_normal(nf(0))
    v["4x4/Dense1/weight"], v["4x4/Dense1/bias"] = rng.standard_normal((nf(0), 1)), rng.standard_normal(1)
    return OrderedDict((k, np.asarray(a, np.float32) if k != "lod" else a) for k, a in v.items())


def release_module():
    """A stand-in `tfutil` module whose Network pickles as tfutil.py's __getstate__ does."""
    module = types.ModuleType("tfutil")

    class Network:
        def __init__(self, name, func, static_kwargs, variables):
            self.state = {"version": 2, "name": name, "static_kwargs": static_kwargs,
                          "build_module_src": BUILD_MODULE_SRC, "build_func_name": func,
                          "variables": list(variables.items())}

        def __getstate__(self):
            return self.state

    Network.__module__, Network.__qualname__ = "tfutil", "Network"
    module.Network = Network
    return module


def write_release_pickle(path, monkeypatch, G_fused=True, D_fused=True, lod=0.0, protocol=4, extra_kwargs=None,
                         seed=0):
    """(G, D, Gs) with random weights, as karras2018iclr-*.pkl; G_fused/D_fused: None = left to the default."""
    module = release_module()
    monkeypatch.setitem(sys.modules, "tfutil", module)
    rng = np.random.default_rng(seed)
    common = {"num_channels": 3, "resolution": RESOLUTION, "fmap_base": FMAP_BASE, "fmap_max": FMAP_MAX,
              **(extra_kwargs or {})}
    g_kwargs, d_kwargs = dict(common), {**common, "mbstd_group_size": 4}
    if G_fused is not None:
        g_kwargs["fused_scale"] = G_fused
    if D_fused is not None:
        d_kwargs["fused_scale"] = D_fused
    G_fused, D_fused = G_fused is not False, D_fused is not False
    networks = (module.Network("G", "G_paper", g_kwargs, generator_variables(rng, G_fused, lod)),
                module.Network("D", "D_paper", d_kwargs, discriminator_variables(rng, D_fused)),
                module.Network("Gs", "G_paper", g_kwargs, generator_variables(rng, G_fused, lod)))
    data = pickle.dumps(networks, protocol=protocol)
    if protocol == 2:  # the 2018 release's module names (NumPy 2 writes numpy._core)
        data = data.replace(b"cnumpy._core.", b"cnumpy.core.")
    path.write_bytes(data)
    monkeypatch.delitem(sys.modules, "tfutil")
    return [dict(net.state["variables"]) for net in networks]


# ---------------------------------------------------------------------------------------------------------------
# The original's layers in NumPy (float64), transcribed from networks.py


RELU_GAIN = np.sqrt(2)


def wscaled(w, gain=RELU_GAIN, fan_in=None):
    return w * (gain / np.sqrt(np.prod(w.shape[:-1]) if fan_in is None else fan_in))


def conv2d(x, w):
    """tf.nn.conv2d NCHW, 'SAME', stride 1, kernel [k, k, in, out] (cross-correlation)."""
    k, (_, _, h, width) = w.shape[0], x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    return sum(np.einsum("nchw,co->nohw", xp[:, :, dy:dy + h, dx:dx + width], w[dy, dx])
               for dy in range(k) for dx in range(k))


def fused_kernel(w, scale=1.0):
    w = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    return (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * scale


def upscale2d_conv2d(x, w):
    """tf.nn.conv2d_transpose of the summed 4x4 kernel [4, 4, out, in], stride 2, 'SAME' (output 2H x 2W): the
    gradient of a stride-2 'SAME' convolution (padding 1 before), i.e. out[2i + a - 1] += K[a] x[i]."""
    k = fused_kernel(wscaled(w, fan_in=9 * x.shape[1]))
    n, _, h, width = x.shape
    full = np.zeros((n, k.shape[2], 2 * h + 4, 2 * width + 4))
    for a in range(4):
        for b in range(4):
            full[:, :, a:a + 2 * h:2, b:b + 2 * width:2] += np.einsum("nihw,oi->nohw", x, k[a, b])
    return full[:, :, 1:1 + 2 * h, 1:1 + 2 * width]


def conv2d_downscale2d(x, w):
    """tf.nn.conv2d of the summed kernel x 0.25, stride 2, 'SAME' (padding 1 before, 1 after for 4x4)."""
    k = fused_kernel(wscaled(w), 0.25)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h = x.shape[2] // 2
    return sum(np.einsum("nchw,co->nohw", xp[:, :, a:a + 2 * h:2, b:b + 2 * h:2], k[a, b])
               for a in range(4) for b in range(4))


def bias(x, b):
    return x + (b if x.ndim == 2 else b.reshape(1, -1, 1, 1))


def lrelu(x):
    return np.maximum(x * 0.2, x)


def pixel_norm(x):
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def upscale2d(x, factor=2):
    return x.repeat(factor, axis=2).repeat(factor, axis=3)


def downscale2d(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def dense(x, w, gain=RELU_GAIN):
    return x.reshape(len(x), -1) @ wscaled(w, gain)


def lerp_clip(a, b, t):
    return a + (b - a) * np.clip(t, 0.0, 1.0)


def minibatch_stddev(x, group_size=4):
    g = min(group_size, len(x))
    y = x.reshape(g, -1, *x.shape[1:])
    y = np.sqrt(((y - y.mean(axis=0)) ** 2).mean(axis=0) + 1e-8).mean(axis=(1, 2, 3))
    return np.concatenate([x, np.tile(y.reshape(-1, 1, 1, 1), (g, 1, *x.shape[2:]))], axis=1)


def reference_G(v, latents, lod_in):
    """G_paper, structure='linear': images [N, 3, R, R] at full resolution for lod_in."""
    v = {k: np.asarray(a, np.float64) for k, a in v.items()}

    def block(x, res):
        name = f"{2 ** res}x{2 ** res}"
        if res == 2:
            x = dense(pixel_norm(x), v["4x4/Dense/weight"], gain=np.sqrt(2) / 4).reshape(len(x), nf(1), 4, 4)
            x = pixel_norm(lrelu(bias(x, v["4x4/Dense/bias"])))
            return pixel_norm(lrelu(bias(conv2d(x, wscaled(v["4x4/Conv/weight"])), v["4x4/Conv/bias"])))
        if f"{name}/Conv0_up/weight" in v:
            x = pixel_norm(lrelu(bias(upscale2d_conv2d(x, v[f"{name}/Conv0_up/weight"]), v[f"{name}/Conv0_up/bias"])))
        else:
            x = upscale2d(x)
            x = pixel_norm(lrelu(bias(conv2d(x, wscaled(v[f"{name}/Conv0/weight"])), v[f"{name}/Conv0/bias"])))
        return pixel_norm(lrelu(bias(conv2d(x, wscaled(v[f"{name}/Conv1/weight"])), v[f"{name}/Conv1/bias"])))

    def torgb(x, res):
        name = f"ToRGB_lod{LOG2 - res}"
        return bias(conv2d(x, wscaled(v[f"{name}/weight"], gain=1)), v[f"{name}/bias"])

    x = block(latents.astype(np.float64), 2)
    images = torgb(x, 2)
    for res in range(3, LOG2 + 1):
        x = block(x, res)
        images = lerp_clip(torgb(x, res), upscale2d(images), lod_in - (LOG2 - res))
    return images


def reference_D(v, images, lod_in):
    """D_paper, structure='linear': scores [N, 1] of full-resolution images."""
    v = {k: np.asarray(a, np.float64) for k, a in v.items()}

    def fromrgb(x, res):
        name = f"FromRGB_lod{LOG2 - res}"
        return lrelu(bias(conv2d(x, wscaled(v[f"{name}/weight"])), v[f"{name}/bias"]))

    def block(x, res):
        name = f"{2 ** res}x{2 ** res}"
        if res >= 3:
            x = lrelu(bias(conv2d(x, wscaled(v[f"{name}/Conv0/weight"])), v[f"{name}/Conv0/bias"]))
            if f"{name}/Conv1_down/weight" in v:
                return lrelu(bias(conv2d_downscale2d(x, v[f"{name}/Conv1_down/weight"]), v[f"{name}/Conv1_down/bias"]))
            return downscale2d(lrelu(bias(conv2d(x, wscaled(v[f"{name}/Conv1/weight"])), v[f"{name}/Conv1/bias"])))
        x = lrelu(bias(conv2d(minibatch_stddev(x), wscaled(v["4x4/Conv/weight"])), v["4x4/Conv/bias"]))
        x = lrelu(bias(dense(x, v["4x4/Dense0/weight"]), v["4x4/Dense0/bias"]))
        return bias(dense(x, v["4x4/Dense1/weight"], gain=1), v["4x4/Dense1/bias"])

    img = images.astype(np.float64)
    x = fromrgb(img, LOG2)
    for res in range(LOG2, 2, -1):
        x = block(x, res)
        img = downscale2d(img)
        x = lerp_clip(x, fromrgb(img, res - 1), lod_in - (LOG2 - res))
    return block(x, 2)


# ---------------------------------------------------------------------------------------------------------------
# Tests

LODS = [0.0, 0.5, 1.0, 1.3, 2.75, 3.0]
ORDERS = [(True, True), (False, False), (True, False)]  # the TF default, the Theano-converted release, mixed


@pytest.mark.parametrize("G_fused, D_fused", ORDERS)
def test_imported_generator_equals_the_original(tmp_path, monkeypatch, G_fused, D_fused):
    G_vars, _, Gs_vars = write_release_pickle(tmp_path / "net.pkl", monkeypatch, G_fused, D_fused)
    import_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")
    state = load_checkpoint(tmp_path / "net.pt")
    assert state["config"]["fused_scale"] == D_fused
    ours = generator_from_checkpoint(state, torch.device("cpu")).double()
    latents = np.random.default_rng(1).standard_normal((5, nf(0)))
    for lod in LODS:
        with torch.no_grad():
            image = ours(torch.from_numpy(latents), lod)
        image = F.interpolate(image, size=RESOLUTION, mode="nearest").numpy()
        np.testing.assert_allclose(image, reference_G(Gs_vars, latents, lod), atol=1e-5, rtol=1e-5,
                                   err_msg=f"lod {lod}")
    G = generator_from_checkpoint({**state, "G_ema": state["G"]}, torch.device("cpu")).double()
    with torch.no_grad():
        np.testing.assert_allclose(G(torch.from_numpy(latents), 0.0).numpy(), reference_G(G_vars, latents, 0.0),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("D_fused", [True, False])
def test_imported_discriminator_equals_the_original(tmp_path, monkeypatch, D_fused):
    _, D_vars, _ = write_release_pickle(tmp_path / "net.pkl", monkeypatch, True, D_fused)
    import_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")
    state = load_checkpoint(tmp_path / "net.pt")
    from progan.configs import TrainingConfig

    D = Discriminator(TrainingConfig.from_dict(state["config"]))
    D.load_state_dict(state["D"])
    D = D.double().eval()
    images = np.random.default_rng(2).standard_normal((8, 3, RESOLUTION, RESOLUTION))
    for lod in LODS:
        working = F.avg_pool2d(torch.from_numpy(images), 2 ** int(lod)) if lod >= 1 else torch.from_numpy(images)
        with torch.no_grad():
            scores = D(working, lod).numpy()
        np.testing.assert_allclose(scores, reference_D(D_vars, images, lod), atol=1e-5, rtol=1e-5,
                                   err_msg=f"lod {lod}")


def test_release_defaults_module_names_and_lod(tmp_path, monkeypatch):
    """fused_scale missing from static_kwargs -> build_module_src's default (True); a protocol-2 pickle naming
    numpy.core (as in 2018) reads; the Gs lod is kept; unknown build arguments are ignored and reported."""
    write_release_pickle(tmp_path / "net.pkl", monkeypatch, None, None, lod=1.5, protocol=2,
                         extra_kwargs={"use_gdrop": True})
    assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / "net.pkl").read_bytes()
    result = import_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")
    assert result.config.fused_scale is True and result.lod == 1.5 and result.ignored_kwargs == ["use_gdrop"]
    G = generator_from_checkpoint(load_checkpoint(tmp_path / "net.pt"), torch.device("cpu"))
    assert G.working_resolution(float(G.lod)) == RESOLUTION // 2


def test_cli_import_then_generate_and_ganeval_source(tmp_path, monkeypatch):
    write_release_pickle(tmp_path / "karras2018iclr-test.pkl", monkeypatch)
    runner = CliRunner()
    result = runner.invoke(progan_main, ["import", str(tmp_path / "karras2018iclr-test.pkl"), str(tmp_path / "g.pt")])
    assert result.exit_code == 0, result.output
    assert "32x32" in result.output and "fused_scale True" in result.output
    result = runner.invoke(progan_main, ["generate", str(tmp_path / "g.pt"), "--num", "3", "--out",
                                         str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".gancore-output", "000000.png", "000001.png",
                                                                     "000002.png"]
    monkeypatch.setenv("PROGAN_SOURCE_IMAGES", "4")
    source = open_source(str(tmp_path / "g.pt"))
    assert len(source) == 4 and source.load_batch([0, 1]).shape == (2, 3, RESOLUTION, RESOLUTION)
    result = runner.invoke(progan_main, ["import", str(tmp_path / "karras2018iclr-test.pkl"), str(tmp_path / "g.pkl")])
    assert result.exit_code == 2 and "ending in .pt" in result.output


class Payload:
    """Pickles as a call of os.system: loading it unrestricted would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "inside a variable"])
def test_other_classes_are_refused_without_running(tmp_path, monkeypatch, where):
    marker = tmp_path / "pwned"
    if where == "top":
        payload = Payload(marker)
    else:
        module = release_module()
        monkeypatch.setitem(sys.modules, "tfutil", module)
        network = module.Network("G", "G_paper", {}, {"lod": Payload(marker)})
        payload = (network, network, network)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UserError, match=r"refused: it names (posix|os)\.system"):
        read_network_pickle(tmp_path / "evil.pkl")
    result = CliRunner().invoke(progan_main, ["import", str(tmp_path / "evil.pkl"), str(tmp_path / "out.pt")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "error:" in result.output
    assert "Traceback" not in result.output and not marker.exists() and not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("data", [
    b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R.",                                  # ndarray((2**30,))
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85C\x01b\x87R.",
    b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x0a\x00\x00\x00V400000000\x85RC\x00\x86R.",
], ids=["ndarray-call", "reconstruct-shape", "huge-scalar"])
def test_numpy_reconstructors_cannot_allocate_beyond_the_file(tmp_path, data):
    """The NumPy names a pickle needs are guarded: hundreds of MB asked by a 60-byte file fail before allocating."""
    (tmp_path / "big.pkl").write_bytes(data)
    with pytest.raises(UserError, match="not a readable network pickle"):
        read_network_pickle(tmp_path / "big.pkl")


def test_unsupported_networks_are_refused(tmp_path, monkeypatch):
    write_release_pickle(tmp_path / "net.pkl", monkeypatch, extra_kwargs={"label_size": 10})
    with pytest.raises(UserError, match="label_size = 10"):
        import_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")
    for kwargs, message in [({"resolution": 64}, "has no variable 64x64/"), ({"resolution": "abc"}, "unusable"),
                            ({"resolution": 48}, "not a power of two"), ({"fmap_max": 64}, "does not fit its build")]:
        write_release_pickle(tmp_path / "net.pkl", monkeypatch, extra_kwargs=kwargs)
        with pytest.raises(UserError, match=message):
            import_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([np.zeros(3)]))
    with pytest.raises(UserError, match="tuple of three tfutil.Network"):
        import_pickle(tmp_path / "list.pkl", tmp_path / "net.pt")
    (tmp_path / "theano.pkl").write_bytes(b"\x80\x02cnetwork\nNetwork\n)\x81}b.")
    with pytest.raises(UserError, match="Theano-era network .* misc.load_pkl"):
        import_pickle(tmp_path / "theano.pkl", tmp_path / "net.pt")
    (tmp_path / "torn.pkl").write_bytes((tmp_path / "net.pkl").read_bytes()[:500])
    with pytest.raises(UserError, match="not a readable network pickle"):
        import_pickle(tmp_path / "torn.pkl", tmp_path / "net.pt")
    assert not (tmp_path / "net.pt").exists()
