"""progan networks and loss against the released TF code's definitions: the fused resampling ops (`fused_scale`),
and the gradient penalty measured in the original's full-resolution space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.configs import resolve_config
from progan.loss import WGANGP, original_gradient_norms
from progan.networks import LRELU_SLOPE, DiscriminatorBlock, GeneratorBlock, build_networks, count_parameters
from toolkit_testing.fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread on the shared machine)


def _randomise_biases(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.normal_()


# ---------------------------------------------------------------------------------------------------------------
# fused_scale: the TF release's conv2d_downscale2d and upscale2d_conv2d


def test_fused_discriminator_block_pools_before_bias_and_lrelu():
    torch.manual_seed(0)
    config = resolve_config("tiny", {"fused_scale": True})
    block = DiscriminatorBlock(6, 10, config)
    _randomise_biases(block)
    x = torch.randn(3, 6, 8, 8)
    with torch.no_grad():
        hidden = F.leaky_relu(block.conv0(x), LRELU_SLOPE)
        conv = block.conv1_down
        pooled = F.avg_pool2d(F.conv2d(hidden, conv.weight * conv.weight_gain, None, padding=1), 2)
        expected = F.leaky_relu(pooled + conv.bias.reshape(1, -1, 1, 1), LRELU_SLOPE)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)
        # the paper's order (pool last) is a different function of the same weights
        paper = F.avg_pool2d(F.leaky_relu(F.conv2d(hidden, conv.weight * conv.weight_gain, conv.bias, padding=1),
                                          LRELU_SLOPE), 2)
        assert (block(x) - paper).abs().max() > 1e-3


def _tf_upscale2d_conv2d(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """NumPy transcription of the original's upscale2d_conv2d: w [k, k, out, in] padded and summed over its four
    one-pixel shifts to (k+1)², then tf.nn.conv2d_transpose(stride 2, 'SAME') written as a scatter: input pixel
    (y, x) adds w · x[:, y, x] to the output window starting at (2y - 1, 2x - 1). x [in, H, W] -> [out, 2H, 2W]."""
    w = np.pad(weight, [[1, 1], [1, 1], [0, 0], [0, 0]])
    w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]              # [4, 4, out, in]
    _, height, width = x.shape
    out = np.zeros((w.shape[2], 2 * height + 4, 2 * width + 4))       # 2 pixels of margin on every side
    for y in range(height):
        for x_ in range(width):
            window = np.einsum("abon,n->oab", w, x[:, y, x_])
            out[:, 2 * y + 1:2 * y + 5, 2 * x_ + 1:2 * x_ + 5] += window  # origin (2y - 1) + margin 2
    return out[:, 2:-2, 2:-2]


def test_fused_generator_conv_equals_the_original_transposed_conv():
    torch.manual_seed(0)
    config = resolve_config("tiny", {"fused_scale": True})
    block = GeneratorBlock(8, 5, 7, config)
    _randomise_biases(block)
    conv = block.conv0_up.double()
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    weight = (conv.weight * conv.weight_gain).detach()                   # [in, out, 3, 3]
    with torch.no_grad():
        ours = conv(x)
    tf_weight = weight.permute(2, 3, 1, 0).numpy()                       # the TF variable layout [k, k, out, in]
    for n in range(2):
        reference = _tf_upscale2d_conv2d(x[n].numpy(), tf_weight) + conv.bias.detach().numpy()[:, None, None]
        np.testing.assert_allclose(ours[n].numpy(), reference, rtol=1e-10, atol=1e-12)
    # the same function as nearest upsampling then a 3×3 conv with the kernel transposed and flipped
    upsampled = F.interpolate(x, scale_factor=2, mode="nearest")
    separate = F.conv2d(upsampled, weight.transpose(0, 1).flip(2, 3), conv.bias, padding=1)
    torch.testing.assert_close(ours, separate)


def test_fused_networks_have_the_original_names_and_sizes():
    paper, fused = resolve_config("tiny"), resolve_config("tiny", {"fused_scale": True})
    (G0, D0), (G1, D1) = build_networks(paper), build_networks(fused)
    assert count_parameters(G0) == count_parameters(G1) and count_parameters(D0) == count_parameters(D1)
    assert "blocks.8.conv0_up.weight" in G1.state_dict() and "blocks.8.conv0.weight" not in G1.state_dict()
    assert "blocks.8.conv1_down.weight" in D1.state_dict() and "blocks.8.conv1.weight" not in D1.state_dict()
    z = torch.randn(4, fused.latent_size)
    for lod in (2.0, 1.5, 0.0):
        images = G1(z, lod)
        assert D1(images, lod).shape == (4, 1)


def test_minibatch_stddev_off_for_group_size_one_as_the_original():
    D = build_networks(resolve_config("tiny", {"mbstd_group_size": 1}))[1]
    assert D.epilogue.conv.weight.shape[1] == D.epilogue.conv.weight.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# The gradient penalty in the original's space


def _linear_discriminator(D, images: torch.Tensor, lod: float) -> torch.Tensor:
    """The original's 'linear' D_paper on full-size R×R images: every block runs at full size, the image is
    box-downsampled (tf.nn.avg_pool) at each level and lerp_clip blends each level's fromRGB path with
    weight clip(lod - level lod, 0, 1)."""
    log2 = D.resolution_log2
    x = F.leaky_relu(D.from_rgb[str(2 ** log2)](images), LRELU_SLOPE)
    for res_log2 in range(log2, 2, -1):
        x = D.blocks[str(2 ** res_log2)](x)
        images = F.avg_pool2d(images, 2)
        y = F.leaky_relu(D.from_rgb[str(2 ** (res_log2 - 1))](images), LRELU_SLOPE)
        x = x + (y - x) * min(max(lod - (log2 - res_log2), 0.0), 1.0)
    return D.epilogue(x)


def _upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(images, scale_factor=factor, mode="nearest")


@pytest.mark.parametrize("fused_scale", [False, True])
def test_gradient_penalty_equals_the_original_full_resolution_one(fused_scale):
    torch.manual_seed(1)
    config = resolve_config("tiny", {"resolution": 32, "fused_scale": fused_scale})
    D = build_networks(config)[1]
    _randomise_biases(D)
    loss = WGANGP(config)
    for lod in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
        factor = 2 ** math.floor(lod)
        size = 32 // factor
        reals, fakes = torch.randn(8, 3, size, size), torch.randn(8, 3, size, size)
        mixing = torch.rand(8, 1, 1, 1)
        # the original: reals and fakes nearest-upsampled to 32×32, the gradient taken on the full-size mix
        mixed_full = torch.lerp(_upsample(reals, factor), _upsample(fakes, factor), mixing).requires_grad_(True)
        scores_full = _linear_discriminator(D, mixed_full, lod)
        torch.testing.assert_close(scores_full, D(torch.lerp(reals, fakes, mixing), lod), rtol=1e-5, atol=1e-5)
        (gradient_full,) = torch.autograd.grad(scores_full.sum(), mixed_full)
        expected_norms = gradient_full.flatten(1).norm(dim=1)
        # ours: the gradient at the working resolution, rescaled
        mixed = torch.lerp(reals, fakes, mixing).requires_grad_(True)
        (gradient,) = torch.autograd.grad(D(mixed, lod).sum(), mixed)
        torch.testing.assert_close(original_gradient_norms(gradient, lod), expected_norms, rtol=1e-5, atol=0)
        _, stats = loss.D_loss(D, reals, fakes, lod, mixing)
        expected_penalty = (10.0 * (expected_norms - 1.0).square()).mean()
        torch.testing.assert_close(stats["gradient_penalty"], expected_penalty, rtol=1e-5, atol=0)
        if factor > 1:  # the working-resolution norm is f times the original's
            assert gradient.flatten(1).norm(dim=1).mean().item() == pytest.approx(
                factor * expected_norms.mean().item(), rel=1e-4)
