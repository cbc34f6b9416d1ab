"""The trainer's speed and memory options compute the fp32 reference function: channels_last networks, in-place
activations (fewer tensors kept for backward), D's weights made once for its three passes, the foreach EMA update,
bf16 autocast with a finite penalty; and the device suite's projection of a whole run."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from progan import networks
from progan.configs import resolve_config
from progan.loss import WGANGP
from progan.networks import build_networks
from progan.training_loop import make_optimizers, update_ema
from toolkit_testing.fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread on the shared machine)


def _config(fused_scale: bool):
    return resolve_config("tiny", {"resolution": 32, "fused_scale": fused_scale, "fmap_max": 16})


def _D_step_gradients(G, D, config, lod: float, seed: int = 0, shared: bool = False
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(D loss, D's parameter gradients) of one WGAN-GP D step on seeded inputs at `lod` (`shared`: D's weights
    made once for its three passes, as the trainer does)."""
    generator = torch.Generator().manual_seed(seed)
    n, r = 8, G.working_resolution(lod)
    reals = torch.rand(n, 3, r, r, generator=generator) * 2 - 1
    z = torch.randn(n, config.latent_size, generator=generator)
    mixing = torch.rand(n, 1, 1, 1, generator=generator)
    with torch.no_grad():
        fakes = G(z, lod)
    D.zero_grad(set_to_none=True)
    with networks.shared_weights(D) if shared else contextlib.nullcontext():
        loss, _ = WGANGP(config).D_loss(D, reals, fakes, lod, mixing)
    loss.backward()
    return loss.detach(), [p.grad.clone() if p.grad is not None else None for p in D.parameters()]


def _pair(config):
    """The same networks (same weights) in NCHW and channels_last."""
    torch.manual_seed(3)
    G0, D0 = build_networks(config, channels_last=False)
    G1, D1 = build_networks(config, channels_last=True)
    G1.load_state_dict(G0.state_dict())
    D1.load_state_dict(D0.state_dict())
    return (G0, D0), (G1, D1)


@pytest.mark.parametrize("fused_scale", [False, True])
@pytest.mark.parametrize("lod", [0.0, 0.5, 2.0])
def test_channels_last_networks_compute_the_nchw_function(fused_scale, lod):
    config = _config(fused_scale)
    (G0, D0), (G1, D1) = _pair(config)
    assert G1.to_rgb["32"].weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(6, config.latent_size, generator=torch.Generator().manual_seed(1))
    images0, images1 = G0(z, lod), G1(z, lod)
    torch.testing.assert_close(images1, images0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D1(images0, lod), D0(images0, lod), rtol=1e-5, atol=1e-5)
    loss0, grads0 = _D_step_gradients(G0, D0, config, lod)
    loss1, grads1 = _D_step_gradients(G1, D1, config, lod)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    for g0, g1 in zip(grads0, grads1):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused_scale", [False, True])
@pytest.mark.parametrize("lod", [0.0, 0.5, 2.0])
def test_weights_made_once_for_D_three_passes_give_the_same_step(fused_scale, lod, monkeypatch):
    config = _config(fused_scale)
    torch.manual_seed(3)
    G, D = build_networks(config)
    loss0, grads0 = _D_step_gradients(G, D, config, lod)
    made = []
    for layer in D.modules():
        if isinstance(layer, networks.EffectiveWeight):
            monkeypatch.setattr(layer, "make_weight", lambda make=layer.make_weight: made.append(1) or make())
    loss1, grads1 = _D_step_gradients(G, D, config, lod, shared=True)
    used = {name for name, p in D.named_parameters() if p.grad is not None and name.endswith("weight")}
    assert len(made) == len(used)  # once per layer that runs at this lod, not once per pass
    assert not any(layer.shared is not None for layer in D.modules() if isinstance(layer, networks.EffectiveWeight))
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)  # the same values
    for g0, g1 in zip(grads0, grads1):  # gradients summed at the weight, then scaled: rounding only
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-7)


def test_a_pass_without_gradients_does_not_serve_the_passes_with_them():
    config = _config(True)
    torch.manual_seed(3)
    _, D = build_networks(config)
    images = torch.randn(4, 3, 32, 32)
    with networks.shared_weights(D):
        with torch.no_grad():
            D(images, 0.0)
        D(images, 0.0).sum().backward()
    assert all(p.grad is not None for name, p in D.named_parameters() if name.startswith(("from_rgb.32", "blocks")))


def _saved_bytes(function) -> int:
    """Bytes of the distinct storages autograd saves while `function()` runs (its graph kept until counted)."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage()._cdata] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        kept = function()
    del kept
    return sum(storages.values())


def test_in_place_activations_keep_less_for_backward_and_give_the_same_gradients(monkeypatch):
    config = _config(fused_scale=False)
    torch.manual_seed(5)
    G, D = build_networks(config, channels_last=False)

    def step():
        return _D_step_gradients(G, D, config, 0.0)

    loss_in_place, grads_in_place = step()
    saved_in_place = _saved_bytes(lambda: WGANGP(config).D_loss(D, *_inputs(G, config)))
    with monkeypatch.context() as patch:  # the reference: out-of-place LReLU everywhere
        patch.setattr(networks, "leaky_relu_", lambda x: F.leaky_relu(x, networks.LRELU_SLOPE))
        for module in G.modules():
            if isinstance(module, torch.nn.LeakyReLU):
                patch.setattr(module, "inplace", False)
        loss_reference, grads_reference = step()
        saved_reference = _saved_bytes(lambda: WGANGP(config).D_loss(D, *_inputs(G, config)))
    torch.testing.assert_close(loss_in_place, loss_reference, rtol=0, atol=0)
    for a, b in zip(grads_in_place, grads_reference):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert saved_in_place < 0.8 * saved_reference, (saved_in_place, saved_reference)


def _inputs(G, config):
    generator = torch.Generator().manual_seed(9)
    reals = torch.rand(8, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        fakes = G(torch.randn(8, config.latent_size, generator=generator), 0.0)
    return reals, fakes, 0.0, torch.rand(8, 1, 1, 1, generator=generator)


def test_update_ema_is_the_per_parameter_lerp():
    config = _config(fused_scale=True)
    torch.manual_seed(0)
    G, _ = build_networks(config)
    G_ema, _ = build_networks(config)
    G.lod.fill_(1.5)
    expected = [e + (p - e) * (1 - 0.99) for e, p in zip(G_ema.parameters(), G.parameters())]
    update_ema(G_ema, G, 0.99)
    for got, want in zip(G_ema.parameters(), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert float(G_ema.lod) == 1.5


def test_bf16_autocast_keeps_the_penalty_finite_and_near_fp32():
    config = _config(fused_scale=True)
    torch.manual_seed(2)
    G, D = build_networks(config)
    reals, fakes, lod, mixing = _inputs(G, config)
    _, fp32_stats = WGANGP(config).D_loss(D, reals, fakes, lod, mixing)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_loss, bf16_stats = WGANGP(config).D_loss(D, reals, fakes, lod, mixing)
    bf16_loss.backward()
    assert torch.isfinite(bf16_stats["gradient_penalty"]) and bf16_loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
    bf16_norm, fp32_norm = (float(stats["gradient_norm"].detach()) for stats in (bf16_stats, fp32_stats))
    assert bf16_norm == pytest.approx(fp32_norm, rel=0.05)


def test_projected_hours_walk_the_schedule():
    import device_train  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

    config = resolve_config("celebahq-1024")
    constant = dict.fromkeys([2 ** k for k in range(2, 11)], 100.0)
    assert device_train.projected_hours(config, constant) == pytest.approx(config.total_kimg * 1000 / 100 / 3600)
    slow_top = {**constant, 1024: 50.0}
    # 1024² is worked on from its fade (9000-9600 kimg) to the end (12,000): 3000 kimg at half speed
    extra = 3000 * 1000 / 100 / 3600
    assert device_train.projected_hours(config, slow_top) == pytest.approx(
        config.total_kimg * 1000 / 100 / 3600 + extra)


def test_fused_adam_is_the_per_parameter_update():
    config = _config(fused_scale=True)
    torch.manual_seed(4)
    G, D = build_networks(config)
    G_ref, D_ref = build_networks(config)
    G_ref.load_state_dict(G.state_dict())
    D_ref.load_state_dict(D.state_dict())
    G_opt, _ = make_optimizers(G, D, config, fused=True)  # what a CUDA run uses
    reference = torch.optim.Adam(G_ref.parameters(), lr=config.G_lr, betas=(config.adam_beta1, config.adam_beta2),
                                 eps=config.adam_epsilon, foreach=False)
    assert G_opt.defaults["fused"]
    z = torch.randn(4, config.latent_size, generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # lod 1: the 32² layers get no gradient and must stay as they are
        for network, optimizer in ((G, G_opt), (G_ref, reference)):
            optimizer.zero_grad(set_to_none=True)
            network(z, 1.0).square().mean().backward()
            optimizer.step()
    for got, want in zip(G.parameters(), G_ref.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_all_finite_is_every_element_of_every_tensor():
    from progan.training_loop import all_finite

    tensors = [torch.ones(3, 3), torch.zeros(5)]
    assert all_finite(tensors) and all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = [t.clone() for t in tensors]
        broken[1][4] = bad
        assert not all_finite(broken)
