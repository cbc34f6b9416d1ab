"""The two restoration networks: JPEG cleanup (RED-Net-like encoder-decoder) and 4× super-resolution (SRResNet-like).

Both take and return float NCHW RGB in [0, 1] and are residual: they predict a correction that is added to the
input (cleanup) or to a bicubic upsample of the input (SR), so an untrained network is the identity / bicubic and a
short CPU training run already improves on it. The last layer of each starts at zero for that reason.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gancore.errors import UserError


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class _ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (no batch norm: restoration nets do better without it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.ReLU(inplace=True), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-d tensor is stored channels_last (NHWC) and not also plain contiguous (NCHW)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pixel_shuffle_as(x: torch.Tensor, factor: int, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """F.pixel_shuffle's values in one copy, cast to `dtype` and stored NHWC or NCHW as asked:
    [N, C·f², H, W] (any layout) -> [N, C, f·H, f·W].

    F.pixel_shuffle returns NCHW whatever its input (on CUDA a copy through a generic reshape), and a cast or the
    next channels_last convolution copies the result again; this writes the result once, in its final layout."""
    n, channels, height, width = x.shape
    out_channels = channels // factor ** 2
    source = x.unflatten(1, (out_channels, factor, factor))  # [N, C, i, j, H, W]: a view, whatever x's strides
    if channels_last:
        out = x.new_empty((n, height * factor, width * factor, out_channels), dtype=dtype)
        out.view(n, height, factor, width, factor, out_channels).copy_(source.permute(0, 4, 2, 5, 3, 1))
        return out.permute(0, 3, 1, 2)
    out = x.new_empty((n, out_channels, height * factor, width * factor), dtype=dtype)
    out.view(n, out_channels, height, factor, width, factor).copy_(source.permute(0, 1, 4, 2, 5, 3))
    return out


def pixel_unshuffle_as(x: torch.Tensor, factor: int, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """F.pixel_unshuffle's values in one copy, cast to `dtype` and stored NHWC or NCHW as asked:
    [N, C, f·H, f·W] (any layout) -> [N, C·f², H, W]."""
    n, channels, height, width = x.shape
    height, width = height // factor, width // factor
    source = x.unflatten(3, (width, factor)).unflatten(2, (height, factor))  # [N, C, H, i, W, j]
    if channels_last:
        out = x.new_empty((n, height, width, channels * factor ** 2), dtype=dtype)
        out.view(n, height, width, channels, factor, factor).copy_(source.permute(0, 2, 4, 1, 3, 5))
        return out.permute(0, 3, 1, 2)
    out = x.new_empty((n, channels * factor ** 2, height, width), dtype=dtype)
    out.view(n, channels, factor, factor, height, width).copy_(source.permute(0, 1, 3, 5, 2, 4))
    return out


class _PixelShuffle(nn.Module):
    """nn.PixelShuffle whose output keeps its input's layout (channels_last stays channels_last: one copy)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_as(x, self.factor, x.dtype, is_channels_last(x))


def _zero_(layer: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class CleanupNet(nn.Module):
    """JPEG artifact removal: a residual encoder-decoder with symmetric skip connections (after Mao et al. 2016).

    The image is pixel-unshuffled by 2, then encoded at 1/2, 1/4 and 1/8 of its size (the coarsest level sees whole
    8×8 JPEG blocks and their neighbours), decoded with pixel-shuffle upsampling, each decoder level adding the
    encoder features of the same size, and the result is a correction added to the input.
    The network is shift-equivariant for shifts that are multiples of `ALIGN` (= 8, also the JPEG block size), so
    tiles must start at multiples of 8 (see infer.py). Input sides need not be multiples of 8 (padded inside).
    """

    ALIGN = 8

    def __init__(self, widths: tuple[int, int, int] = (32, 48, 64), blocks: tuple[int, int, int] = (1, 1, 2)):
        super().__init__()
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        (w1, w2, w3), (b1, b2, b3) = self.widths, self.blocks

        def residual(width: int, count: int) -> list[nn.Module]:
            return [_ResidualBlock(width) for _ in range(count)]

        self.head = nn.Sequential(_conv(12, w1), nn.ReLU(inplace=True), *residual(w1, b1))
        self.down2 = nn.Sequential(_conv(w1, w2, stride=2), nn.ReLU(inplace=True), *residual(w2, b2))
        self.down3 = nn.Sequential(_conv(w2, w3, stride=2), nn.ReLU(inplace=True), *residual(w3, b3))
        self.up3 = nn.Sequential(_conv(w3, 4 * w2), _PixelShuffle(2))
        self.decode2 = nn.Sequential(*residual(w2, b2))
        self.up2 = nn.Sequential(_conv(w2, 4 * w1), _PixelShuffle(2))
        self.decode1 = nn.Sequential(*residual(w1, b1))
        self.tail = _zero_(_conv(w1, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3, H, W] in [0, 1] -> the cleaned image, same shape and dtype (not clamped).

        The layers run in the parameters' dtype (float16 after `.half()`), the input skip in x's: a half model on
        float32 input computes what autocast does with the float32 model, without casting the weights per call."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.ALIGN, -width % self.ALIGN
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        weight = self.tail.weight  # the layers' dtype and layout (channels_last on CUDA)
        level1 = self.head(pixel_unshuffle_as(padded, 2, weight.dtype, is_channels_last(weight)))
        level2 = self.down2(level1)
        level3 = self.down3(level2)
        level2 = self.decode2(self.up3(level3) + level2)
        level1 = self.decode1(self.up2(level2) + level1)
        out = pixel_shuffle_as(self.tail(level1), 2, padded.dtype, channels_last=False).add_(padded)
        return out[..., :height, :width]


class SRNet(nn.Module):
    """4× super-resolution: an SRResNet-style generator (after Ledig et al. 2016) with two ×2 pixel-shuffle stages.

    Residual blocks at the low resolution with a long skip, then conv + pixel-shuffle twice, and the output is a
    correction added to the bicubic upsample of the input. Shift-equivariant (tiles may start anywhere).
    """

    SCALE = 4
    ALIGN = 1

    def __init__(self, channels: int = 48, blocks: int = 5, upsample_channels: int = 32):
        super().__init__()
        self.channels, self.blocks, self.upsample_channels = channels, blocks, upsample_channels
        self.head = _conv(3, channels)
        self.body = nn.Sequential(*[_ResidualBlock(channels) for _ in range(blocks)], _conv(channels, channels))
        self.upsample = nn.Sequential(
            _conv(channels, 4 * upsample_channels), _PixelShuffle(2), nn.ReLU(inplace=True),
            _conv(upsample_channels, 4 * upsample_channels), _PixelShuffle(2), nn.ReLU(inplace=True))
        self.tail = _zero_(_conv(upsample_channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3, h, w] in [0, 1] -> [N, 3, 4h, 4w] of x's dtype (not clamped). Layers run in the
        parameters' dtype, the bicubic base in x's (see CleanupNet.forward)."""
        weight = self.tail.weight  # the layers' dtype and layout (channels_last on CUDA)
        layout = torch.channels_last if is_channels_last(weight) else torch.contiguous_format
        features = self.head(x.to(dtype=weight.dtype, memory_format=layout))
        features = features + self.body(features)
        base = F.interpolate(x, scale_factor=self.SCALE, mode="bicubic", align_corners=False)
        return base.add_(self.tail(self.upsample(features)))  # float16 correction added in base's float32


KINDS = {"cleanup": CleanupNet, "sr": SRNet}


def model_config(model: nn.Module) -> dict:
    """The constructor arguments of a CleanupNet or SRNet (plain types, stored in weight files)."""
    if isinstance(model, CleanupNet):
        return {"widths": list(model.widths), "blocks": list(model.blocks)}
    return {"channels": model.channels, "blocks": model.blocks, "upsample_channels": model.upsample_channels}


def build_model(kind: str, config: dict | None = None) -> nn.Module:
    config = {key: tuple(value) if isinstance(value, list) else value for key, value in (config or {}).items()}
    return KINDS[kind](**config)


def warm_start(model: nn.Module, state_dict: dict) -> list[str]:
    """Load the tensors of `state_dict` whose name and shape match `model`'s; returns the names left as built.

    Residual blocks missing from `state_dict` (a deeper `blocks` config) start as the identity (their last conv
    zeroed), so a grown network computes exactly what the smaller one did before its first training step.
    """
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError("the weights share no layer with this network")
    model.load_state_dict(matching, strict=False)
    fresh = sorted(set(own) - set(matching))
    for name, module in model.named_modules():
        if isinstance(module, _ResidualBlock) and f"{name}.body.2.weight" in fresh:
            _zero_(module.body[2])
    return fresh


# ----------------------------------------------------------------------------------------------------------------
# Weight files from outside: loaded safely, checked before use


class WeightFileError(UserError):
    """A restorer weight file that cannot be used (foreign, damaged, for the other network, malicious)."""


def _reason(error: Exception) -> str:
    """The first line of a loader's message, never PyTorch's hint to load untrusted files without the guard."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return type(error).__name__ if "weights_only" in text else text[:200]


def read_weight_file(path: str | os.PathLike, kind: str) -> dict:
    """The payload of a `celebahq train-restorer` weight file for network `kind`, checked: a dict with `kind`,
    `config` and a `state_dict` of finite tensors. Loads tensors and plain types only (no code runs); anything
    else raises WeightFileError naming the file."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightFileError(f"{path}: refused: not a file of tensors and plain types only, as celebahq "
                              "train-restorer writes (a foreign or damaged file, or Python objects that could run "
                              "code)") from None
    except OSError as error:
        raise WeightFileError(f"{path}: {error.strerror or _reason(error)}") from None
    except (RuntimeError, ValueError, EOFError, zipfile.BadZipFile, KeyError, AttributeError, TypeError,
            IndexError, MemoryError) as error:
        raise WeightFileError(f"{path}: not a PyTorch weight file ({_reason(error)})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise WeightFileError(f"{path}: not a restorer weight file (no state_dict; celebahq train-restorer writes "
                              "kind, config and state_dict)")
    if payload.get("kind") != kind:
        raise WeightFileError(f"{path}: weights for {payload.get('kind')!r}, not {kind!r}")
    for name, tensor in payload["state_dict"].items():
        if not isinstance(tensor, torch.Tensor):
            raise WeightFileError(f"{path}: state_dict entry {name!r} is not a tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightFileError(f"{path}: non-finite values (NaN or inf) in {name}")
    return payload


def load_restorer(path: str | os.PathLike, kind: str) -> tuple[nn.Module, dict]:
    """Build network `kind` from a weight file: (float32 model in eval mode on the CPU, the file's other fields).
    A config or tensors that do not fit the network raise WeightFileError."""
    payload = read_weight_file(path, kind)
    config = payload.get("config") or {}
    if not isinstance(config, dict):
        raise WeightFileError(f"{path}: config is {type(config).__name__}, expected a mapping")
    try:
        with torch.device("meta"):  # shapes only: a config asking for a huge network allocates nothing
            shapes = {name: tuple(t.shape) for name, t in build_model(kind, config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as error:
        raise WeightFileError(f"{path}: config {str(config)[:200]} does not describe a {kind} network "
                              f"({_reason(error)})") from None
    found = {name: tuple(t.shape) for name, t in payload["state_dict"].items()}
    if shapes != found:
        name = sorted(set(shapes) ^ set(found)) or [n for n in shapes if shapes[n] != found[n]]
        raise WeightFileError(f"{path}: the tensors do not fit the {kind} network of its config (first "
                              f"difference: {name[0]}: network {shapes.get(name[0])}, file {found.get(name[0])})")
    model = build_model(kind, config)
    try:
        model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise WeightFileError(f"{path}: the tensors do not fit the {kind} network of its config ({detail})") from None
    return model.eval(), {k: v for k, v in payload.items() if k != "state_dict"}
