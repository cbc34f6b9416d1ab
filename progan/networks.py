"""ProGAN generator and discriminator (paper Table 2, spec 5.4), every resolution built up front.

Both networks hold the layers of all resolutions 4..R; `lod` (level of detail, 0 = full resolution) picks how
many run. The generator returns images at the working resolution r = 2^(log2 R - floor(lod)) and the
discriminator takes them there. The original feeds D full-size R×R images (nearest-upsampled by f = R / r) and
D box-downsamples them by f first, so its forward values equal ours; its input gradients do not: they are ours
nearest-upsampled and divided by f², norm ‖ours‖ / f. The gradient penalty therefore rescales the norm
(`progan.loss.original_gradient_norms`); tests/progan/test_training_networks.py checks both against a
full-resolution transcription of the original's D. During a fade (fractional lod) the newest layer's toRGB /
fromRGB path is blended with the previous resolution's by lod - floor(lod).

`fused_scale` (config key named as in the TF release, default False = the paper's and Theano's order) selects
the TF release's fused resampling: G's upsample + first conv become one transposed convolution (`conv0_up`, the
same function family), D's second conv + pool one stride-2 convolution (`conv1_down`) with the pool before the
bias and LReLU (a different function).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .configs import TrainingConfig

LRELU_SLOPE = 0.2


class EffectiveWeight:
    """The weight a layer computes with (its parameter × the equalized-LR gain, and for the fused resampling
    layers the (k+1)² kernel): made on each call, or once while `shared_weights` is on, for every pass."""

    shared: torch.Tensor | None = None
    sharing: bool = False

    def make_weight(self) -> torch.Tensor:
        return self.weight * self.weight_gain

    def weight_for_pass(self) -> torch.Tensor:
        if not (self.sharing and torch.is_grad_enabled()):  # one made without a graph must not serve a pass with
            return self.make_weight()                       # one
        if self.shared is None:
            self.shared = self.make_weight()
        return self.shared


@contextlib.contextmanager
def shared_weights(module: nn.Module) -> Iterator[None]:
    """Within: each equalized layer of `module` makes its effective weight once, on first use, and every pass
    reuses that tensor (D's three passes in a WGAN-GP step: reals, fakes, the penalty's mix). The same values;
    autograd sums the passes' gradients into that one tensor and takes them back to the parameter once. Passes
    under `torch.no_grad` make their own. Must close before the optimizer changes the parameters (the backward may
    run after it closes)."""
    layers = [layer for layer in module.modules() if isinstance(layer, EffectiveWeight)]
    for layer in layers:
        layer.sharing, layer.shared = True, None
    try:
        yield
    finally:
        for layer in layers:
            layer.sharing, layer.shared = False, None


def feature_maps(stage: int, fmap_base: int, fmap_max: int) -> int:
    """nf(stage) = min(fmap_base / 2^stage, fmap_max); the block at resolution 2^k uses nf(k-1)."""
    return min(int(fmap_base / 2.0 ** stage), fmap_max)


class EqualizedLinear(EffectiveWeight, nn.Module):
    """Dense layer with equalized learning rate: N(0,1) weights multiplied at run time by gain/sqrt(fan_in).

    With use_wscale=False the weights are He-initialised instead (std gain/sqrt(fan_in)) and used as is.
    """

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2), use_wscale: bool = True,
                 bias: bool = True):
        super().__init__()
        he_std = gain / math.sqrt(in_features)
        self.weight_gain = he_std if use_wscale else 1.0
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (1.0 if use_wscale else he_std))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_for_pass(), self.bias)


class EqualizedConv2d(EffectiveWeight, nn.Module):
    """k×k convolution, 'same' padding, equalized learning rate as `EqualizedLinear` (fan_in = C_in·k²)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = math.sqrt(2),
                 use_wscale: bool = True):
        super().__init__()
        he_std = gain / math.sqrt(in_channels * kernel_size ** 2)
        self.weight_gain = he_std if use_wscale else 1.0
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size)
                                   * (1.0 if use_wscale else he_std))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_for_pass(), self.bias, padding=self.padding)


def fused_kernel(weight: torch.Tensor) -> torch.Tensor:
    """[..., k, k] -> [..., k+1, k+1]: the sum of the kernel's four one-pixel shifts (the TF release's fused ops)."""
    w = F.pad(weight, (1, 1, 1, 1))
    return w[..., 1:, 1:] + w[..., :-1, 1:] + w[..., 1:, :-1] + w[..., :-1, :-1]


class EqualizedConv2dDown(EqualizedConv2d):
    """k×k convolution then 2×2 average pooling as one stride-2 convolution with the (k+1)² kernel
    `fused_kernel(w) / 4` (the TF release's conv2d_downscale2d): [N, C_in, H, W] -> [N, C_out, H/2, W/2].
    The bias is added after the pooling; H and W must be even."""

    def make_weight(self) -> torch.Tensor:
        return fused_kernel(self.weight * self.weight_gain) * 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_for_pass(), self.bias, stride=2, padding=self.padding)


class EqualizedConv2dUp(EqualizedConv2d):
    """Nearest 2× upsampling then a k×k convolution as one stride-2 transposed convolution with the (k+1)² kernel
    `fused_kernel(w)` (the TF release's upscale2d_conv2d): [N, C_in, H, W] -> [N, C_out, 2H, 2W].

    The weight is stored in the transposed-convolution layout [C_in, C_out, k, k] (the TF variable [k, k, C_out,
    C_in]); it equals upsampling then `conv2d` with the weight transposed to [C_out, C_in] and flipped in space.
    Equalized learning rate with fan_in = C_in·k², as the original."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = math.sqrt(2),
                 use_wscale: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, gain, use_wscale)
        self.weight = nn.Parameter(self.weight.detach().transpose(0, 1).contiguous())  # [C_in, C_out, k, k]

    def make_weight(self) -> torch.Tensor:
        return fused_kernel(self.weight * self.weight_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight_for_pass(), self.bias, stride=2, padding=self.padding)


def pixel_norm(x: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Pixelwise feature normalisation: x / sqrt(mean over channels (dim 1) of x² + ε)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + epsilon)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x)


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append the minibatch standard deviation as one feature map: [N, C, H, W] -> [N, C+1, H, W].

    As the original: samples are split into groups of `group_size` (sample n is member n // M of group n % M,
    M = N / group size), the std over each group's members of every feature and pixel (sqrt(var + 1e-8),
    population variance) is averaged over C, H, W, and that scalar fills the new map of the group's samples.
    The group size is min(group_size, N), lowered to a divisor of N when N is not a multiple of it.
    """
    n, c, h, w = x.shape
    group = min(group_size, n)
    while n % group:
        group -= 1
    y = x.float().reshape(group, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = torch.sqrt(y + 1e-8).mean(dim=(1, 2, 3))                    # [M]
    y = y.to(x.dtype).reshape(-1, 1, 1, 1).repeat(group, 1, h, w)   # [N, 1, H, W]
    return torch.cat([x, y], dim=1)


def _activation(name: str) -> nn.Module:
    """G's activation, in place: autograd then keeps one tensor per layer (the activation, which the next layer
    saves anyway) instead of the conv output as well; the same values and gradients."""
    return nn.LeakyReLU(LRELU_SLOPE, inplace=True) if name == "lrelu" else nn.ReLU(inplace=True)


def leaky_relu_(x: torch.Tensor) -> torch.Tensor:
    """LReLU(0.2) in place on a fresh layer output (a conv's or a norm's, which nothing else keeps): its backward
    reads the result, so D's passes, the gradient penalty's double backward included, keep one tensor per layer
    instead of two."""
    return F.leaky_relu_(x, LRELU_SLOPE)


class GeneratorBlock(nn.Module):
    """Resolution 4: [latent] -> dense to C×4×4 -> act -> norm -> conv3×3 -> act -> norm.
    Higher: nearest 2× upsample -> conv3×3 -> act -> norm -> conv3×3 -> act -> norm; with `fused_scale` the
    upsample and first conv are one transposed convolution (`conv0_up`, the same function family)."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, config: TrainingConfig):
        super().__init__()
        self.resolution, self.out_channels = resolution, out_channels
        wscale = config.use_wscale
        if resolution == 4:
            # gain sqrt(2)/4 on the first dense layer matches the Theano original (spec 5.4)
            self.dense = EqualizedLinear(in_channels, out_channels * 16, gain=math.sqrt(2) / 4, use_wscale=wscale,
                                         bias=False)
            self.dense_bias = nn.Parameter(torch.zeros(out_channels))
        elif config.fused_scale:
            self.conv0_up = EqualizedConv2dUp(in_channels, out_channels, 3, use_wscale=wscale)
        else:
            self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, use_wscale=wscale)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, use_wscale=wscale)
        self.act = _activation(config.G_activation)
        self.norm0, self.norm1 = (self._norm(config.G_norm, out_channels) for _ in range(2))

    @staticmethod
    def _norm(kind: str, channels: int) -> nn.Module:
        return {"pixel": PixelNorm(), "batch": nn.BatchNorm2d(channels), "none": nn.Identity()}[kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution == 4:
            x = self.dense(x).reshape(-1, self.out_channels, 4, 4) + self.dense_bias.reshape(1, -1, 1, 1)
        elif hasattr(self, "conv0_up"):
            x = self.conv0_up(x)
        else:
            x = self.conv0(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.norm0(self.act(x))
        return self.norm1(self.act(self.conv1(x)))


class Generator(nn.Module):
    """z [N, latent_size] -> float NCHW images in about [-1, 1] at the working resolution of `lod`."""

    def __init__(self, config: TrainingConfig):
        super().__init__()
        self.resolution = config.resolution
        self.resolution_log2 = int(math.log2(config.resolution))
        self.latent_size, self.normalize_latents = config.latent_size, config.normalize_latents
        self.tanh = config.output_activation == "tanh"

        def nf(stage: int) -> int:
            return feature_maps(stage, config.fmap_base, config.fmap_max)

        self.blocks, self.to_rgb = nn.ModuleDict(), nn.ModuleDict()
        for log2 in range(2, self.resolution_log2 + 1):
            res = 2 ** log2
            in_channels = config.latent_size if log2 == 2 else nf(log2 - 2)
            self.blocks[str(res)] = GeneratorBlock(res, in_channels, nf(log2 - 1), config)
            self.to_rgb[str(res)] = EqualizedConv2d(nf(log2 - 1), 3, 1, gain=1.0, use_wscale=config.use_wscale)
        self.register_buffer("lod", torch.zeros(()))  # the schedule's lod, copied into checkpoints

    def working_resolution(self, lod: float) -> int:
        return 2 ** (self.resolution_log2 - math.floor(lod))

    def _rgb(self, x: torch.Tensor, res: int) -> torch.Tensor:
        image = self.to_rgb[str(res)](x)
        return torch.tanh(image) if self.tanh else image

    def forward(self, z: torch.Tensor, lod: float | None = None) -> torch.Tensor:
        lod = float(self.lod) if lod is None else lod
        target = self.working_resolution(lod)
        old_weight = lod - math.floor(lod)
        x = pixel_norm(z) if self.normalize_latents else z
        previous = None
        for res in (2 ** k for k in range(2, int(math.log2(target)) + 1)):
            previous, x = x, self.blocks[str(res)](x)
        image = self._rgb(x, target)
        if old_weight > 0 and target > 4:
            coarse = F.interpolate(self._rgb(previous, target // 2), scale_factor=2, mode="nearest")
            image = torch.lerp(image, coarse, old_weight)
        return image


class DiscriminatorBlock(nn.Module):
    """conv3×3 -> act -> conv3×3 -> act -> 2×2 average pool (C_in -> C_out, resolution halves): the paper's and the
    Theano code's order. With `fused_scale` (the TF release's default) the second conv and the pool are one
    stride-2 convolution (`conv1_down`) and the pool comes before the bias and LReLU: conv3×3 -> act -> conv3×3
    (no bias) -> 2×2 average pool -> bias -> act, a different function.

    With the LSGAN option each conv's input gets multiplicative Gaussian noise of std `noise_std` (Appendix B);
    with D_norm='layer' each conv output is layer-normalised over C, H, W (Gulrajani et al.'s critic)."""

    def __init__(self, in_channels: int, out_channels: int, config: TrainingConfig):
        super().__init__()
        wscale = config.use_wscale
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, use_wscale=wscale)
        self.fused_scale = config.fused_scale
        if self.fused_scale:
            self.conv1_down = EqualizedConv2dDown(in_channels, out_channels, 3, use_wscale=wscale)
        else:
            self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, use_wscale=wscale)
        layer_norm = config.D_norm == "layer"
        self.norm0 = nn.GroupNorm(1, in_channels) if layer_norm else nn.Identity()
        self.norm1 = nn.GroupNorm(1, out_channels) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor, noise_std: float = 0.0) -> torch.Tensor:
        x = leaky_relu_(self.norm0(self.conv0(_multiplicative_noise(x, noise_std))))
        x = _multiplicative_noise(x, noise_std)
        if self.fused_scale:
            return leaky_relu_(self.norm1(self.conv1_down(x)))
        return F.avg_pool2d(leaky_relu_(self.norm1(self.conv1(x))), 2)


def _multiplicative_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    return x * (1.0 + std * torch.randn_like(x)) if std > 0 else x


class DiscriminatorEpilogue(nn.Module):
    """4×4: [minibatch stddev] -> conv3×3 -> act -> dense (conv 4×4) -> act -> dense to 1 (linear, gain 1)."""

    def __init__(self, channels: int, hidden: int, config: TrainingConfig):
        super().__init__()
        self.mbstd_group_size = config.mbstd_group_size
        extra = 1 if config.mbstd_group_size > 1 else 0  # the original: group size 0 or 1 = no layer
        wscale = config.use_wscale
        self.conv = EqualizedConv2d(channels + extra, channels, 3, use_wscale=wscale)
        self.dense = EqualizedLinear(channels * 16, hidden, use_wscale=wscale)
        self.out = EqualizedLinear(hidden, 1, gain=1.0, use_wscale=wscale)
        layer_norm = config.D_norm == "layer"
        self.norm_conv = nn.GroupNorm(1, channels) if layer_norm else nn.Identity()
        self.norm_dense = nn.LayerNorm(hidden) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor, noise_std: float = 0.0) -> torch.Tensor:
        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size)
        x = leaky_relu_(self.norm_conv(self.conv(_multiplicative_noise(x, noise_std))))
        x = _multiplicative_noise(x.flatten(1), noise_std)
        x = leaky_relu_(self.norm_dense(self.dense(x)))
        return self.out(x)


class Discriminator(nn.Module):
    """float NCHW images at the working resolution of `lod` -> scores [N, 1] (linear)."""

    def __init__(self, config: TrainingConfig):
        super().__init__()
        self.resolution_log2 = int(math.log2(config.resolution))
        base = config.D_fmap_base or config.fmap_base

        def nf(stage: int) -> int:
            return feature_maps(stage, base, config.fmap_max)

        self.from_rgb, self.blocks = nn.ModuleDict(), nn.ModuleDict()
        for log2 in range(self.resolution_log2, 1, -1):
            res = 2 ** log2
            self.from_rgb[str(res)] = EqualizedConv2d(3, nf(log2 - 1), 1, use_wscale=config.use_wscale)
            if log2 > 2:
                self.blocks[str(res)] = DiscriminatorBlock(nf(log2 - 1), nf(log2 - 2), config)
        self.epilogue = DiscriminatorEpilogue(nf(1), nf(0), config)
        self.noise_std = 0.0  # set by the LSGAN loss each step

    def _from_rgb(self, image: torch.Tensor) -> torch.Tensor:
        return leaky_relu_(self.from_rgb[str(image.shape[-1])](image))

    def forward(self, image: torch.Tensor, lod: float) -> torch.Tensor:
        old_weight = lod - math.floor(lod)
        res = image.shape[-1]
        if res != 2 ** (self.resolution_log2 - math.floor(lod)):
            raise ValueError(f"images of {res}x{res} given to D at lod {lod}")
        x = self._from_rgb(image)
        while res > 4:
            x = self.blocks[str(res)](x, self.noise_std)
            if res == image.shape[-1] and old_weight > 0:
                x = torch.lerp(x, self._from_rgb(F.avg_pool2d(image, 2)), old_weight)
            res //= 2
        return self.epilogue(x, self.noise_std)


# ----------------------------------------------------------------------------------------------------------------
# Parameter counts


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameters_at(G: Generator, D: Discriminator, resolution: int) -> dict[str, int]:
    """Trainable parameters the networks use when working at `resolution` (stable, not fading): the blocks up
    to it plus that resolution's toRGB / fromRGB, as the paper's Table 2 counts the 1024² networks."""
    levels = [str(2 ** k) for k in range(2, int(math.log2(resolution)) + 1)]
    g = sum(count_parameters(G.blocks[r]) for r in levels) + count_parameters(G.to_rgb[str(resolution)])
    d = sum(count_parameters(D.blocks[r]) for r in levels if r in D.blocks)
    d += count_parameters(D.from_rgb[str(resolution)]) + count_parameters(D.epilogue)
    return {"G": g, "D": d}


def build_networks(config: TrainingConfig, channels_last: bool = False) -> tuple[Generator, Discriminator]:
    """G and D for `config` (config.resolution must be set), initialised from the torch RNG.

    `channels_last`: the conv weights stored NHWC (`torch.channels_last`), so every convolution takes and returns
    NHWC activations, the layout oneDNN (CPU) and cuDNN's tensor-core kernels run natively (no layout reorder per
    call); the trainer builds them so on CUDA. The same function: values as the NCHW networks' to fp32 rounding
    (tests/progan/test_training_speed.py); state dicts load into either layout (a saved channels_last tensor
    keeps its NHWC storage order)."""
    G, D = Generator(config), Discriminator(config)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D
