"""Training configurations: one flat dataclass of every setting, and the paper's and the released code's presets.

`resolve_config(name, overrides, gpus)` gives a `TrainingConfig`; a preset with per-GPU-count variants (the
released code's v2 presets) takes the one for `gpus`. Overrides are ``key=value`` strings (values parsed as JSON,
else kept as text) or a dict, checked against the field types, so any value can be changed from the command
line. Dictionaries keyed by resolution (``minibatch_dict`` …) accept string keys (JSON) and are stored with int
keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field

from gancore.errors import UserError
from ganeval.metric_main import parse_metric_names

TF_TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 20, 1024: 10}


@dataclass
class TrainingConfig:
    # Data and output size.
    resolution: int | None = None             # Output side R (power of two); None = the data's.
    mirror: bool = True                       # Horizontal flips of the reals with p = 0.5.

    # Networks (paper Table 2, spec 5.4).
    latent_size: int = 512                    # Components of z (the paper: nf(0) = 512).
    normalize_latents: bool = True            # Pixel-norm of z: latents on the radius-sqrt(latent_size) hypersphere.
    fmap_base: int = 8192                     # nf(stage) = min(fmap_base / 2^stage, fmap_max) in G.
    D_fmap_base: int | None = None            # The same for D; None = fmap_base.
    fmap_max: int = 512
    use_wscale: bool = True                   # Equalized learning rate (N(0,1) weights scaled at run time).
    G_norm: str = "pixel"                     # After every 3x3 conv in G: pixel | batch | none.
    D_norm: str = "none"                      # In D's 3x3 and 4x4 convs: none | layer.
    G_activation: str = "lrelu"               # lrelu (0.2) | relu.
    output_activation: str = "linear"         # G's toRGB: linear | tanh.
    mbstd_group_size: int = 4                 # Minibatch stddev at 4x4, groups per GPU; 0 or 1 = off.
    fused_scale: bool = False                 # True: the TF release's fused resampling (G: one transposed conv;
                                              # D: pool before bias + LReLU). False: the paper's and Theano's order.

    # Loss (spec 5.3, Appendix B).
    loss: str = "wgangp"                      # wgangp | lsgan.
    wgan_lambda: float = 10.0                 # Gradient-penalty weight.
    wgan_target: float = 1.0                  # Gradient-norm target gamma.
    wgan_epsilon: float = 0.001               # Drift term weight on D(x)^2.
    lsgan_noise_coef: float = 0.2             # Noise std = coef * max(0, d_avg - lim)^exp.
    lsgan_noise_lim: float = 0.5
    lsgan_noise_exp: float = 2.0
    lsgan_output_decay: float = 0.9           # d_avg <- 0.1 d + 0.9 d_avg.
    D_repeats: int = 1                        # D steps per G step (n_critic).

    # Optimisation.
    G_lr: float = 0.001
    D_lr: float = 0.001
    G_lr_dict: dict = field(default_factory=dict)      # {resolution: G lr}, the original's G_lrate_dict.
    D_lr_dict: dict = field(default_factory=dict)      # {resolution: D lr}, the original's D_lrate_dict.
    lr_rampup_kimg: float = 0.0               # Theano's lr * exp(-5 (1 - kimg/ramp)^2); 0 = none (TF).
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-8
    reset_opt_for_new_lod: bool = True        # Reset the Adam moments when floor(lod) or ceil(lod) changes.
    G_ema_beta: float = 0.999                 # EMA generator (G_smoothing) per D step; kept across growth.

    # Schedule (spec 5.1).
    progressive: bool = True                  # False: train at full resolution from the start.
    lod_initial_resolution: int = 4
    lod_training_kimg: float = 600.0          # Stabilise for this long at each resolution.
    lod_transition_kimg: float = 600.0        # Fade the next resolution in over this long.
    total_kimg: float = 12000.0
    minibatch_base: int = 16                  # Global minibatch, divided evenly among GPUs.
    minibatch_dict: dict = field(default_factory=dict)          # {resolution: global minibatch}.
    max_minibatch_per_gpu: dict = field(default_factory=dict)   # {resolution: cap per GPU}.
    minibatch_repeats: int = 4                # Rounds between schedule updates.
    tick_kimg_base: float = 160.0
    tick_kimg_dict: dict = field(default_factory=lambda: dict(TF_TICK_KIMG))

    # Snapshots and metrics.
    image_snapshot_ticks: int = 1
    network_snapshot_ticks: int = 10
    metric_swd_images: int = 16384            # SWD of the EMA G at each network snapshot; 0 = off.
    metric_fid_images: int = 10000            # FID when Inception weights are on disk; 0 = off.
    metrics: list = field(default_factory=lambda: ["swd", "fid"])  # ganeval registry names scored at snapshots:
    # swd, msssim (metric_swd_images // 2 pairs), and with Inception weights on disk fid, is, kid, pr
    # (metric_fid_images each); a metric whose count is 0 is off.
    grid_size: list | None = None             # [columns, rows] of the image grids; None = by resolution.

    # Engineering.
    seed: int = 1000
    bf16: bool = False                        # bf16 autocast of G and D forward passes (CUDA or CPU).
    allow_tf32: bool = True                   # TF32 matmuls/convs on Ampere+ GPUs.
    data_cache_mb: int = 4096                 # Keep a data level in RAM when it is at most this big.
    data_workers: int = 4                     # Threads decoding images (folders, zips, HDF5 reads).
    tensorboard: bool = True                  # TensorBoard scalars in the run directory when it is installed.

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainingConfig:
        """A checked config from plain values (JSON types): each value must fit its field's type; the legacy
        `lr_dict` (one dict for G and D) fills both G_lr_dict and D_lr_dict. UserError names the bad key."""
        values = dict(values)
        if "lr_dict" in values:
            legacy = values.pop("lr_dict")
            values.setdefault("G_lr_dict", legacy)
            values.setdefault("D_lr_dict", legacy)
        types = typing.get_type_hints(cls)
        unknown = set(values) - set(types)
        if unknown:
            raise UserError(f"unknown config key(s) {sorted(unknown)}; see `progan info --config NAME --json`")
        config = cls(**{key: _typed_value(key, value, types[key]) for key, value in values.items()})
        config.check()
        return config

    def check(self) -> None:
        """UserError for a value outside its range or choices."""
        choices = {"G_norm": ("pixel", "batch", "none"), "D_norm": ("none", "layer"),
                   "G_activation": ("lrelu", "relu"), "output_activation": ("linear", "tanh"),
                   "loss": ("wgangp", "lsgan")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} = {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.resolution is not None and not is_power_of_two(self.resolution, minimum=4):
            raise UserError(f"resolution {self.resolution} is not a power of two ≥ 4")
        if not is_power_of_two(self.lod_initial_resolution, minimum=4):
            raise UserError(f"lod_initial_resolution {self.lod_initial_resolution} is not a power of two ≥ 4")
        for name in ("D_repeats", "minibatch_repeats", "minibatch_base", "latent_size", "fmap_base", "fmap_max",
                     "image_snapshot_ticks", "network_snapshot_ticks"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} = {getattr(self, name)} must be at least 1")
        for name in ("G_lr", "D_lr", "total_kimg", "tick_kimg_base"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} = {getattr(self, name)} must be positive")
        for name in ("lod_training_kimg", "lod_transition_kimg", "lr_rampup_kimg", "mbstd_group_size",
                     "metric_swd_images", "metric_fid_images", "wgan_lambda", "wgan_epsilon"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} = {getattr(self, name)} must not be negative")
        for name in ("adam_beta1", "adam_beta2", "G_ema_beta", "lsgan_output_decay"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} = {getattr(self, name)} must lie in [0, 1]")
        if self.wgan_target <= 0:
            raise UserError(f"wgan_target = {self.wgan_target} must be positive")
        if self.grid_size is not None and (len(self.grid_size) != 2 or not all(isinstance(v, int) and v >= 1
                                                                                for v in self.grid_size)):
            raise UserError(f"grid_size = {self.grid_size}: give [columns, rows], both ≥ 1")
        if self.metrics:
            parse_metric_names(self.metrics)  # unknown names fail when the config is read, not at the first snapshot


_RESOLUTION_DICTS = {"G_lr_dict": float, "D_lr_dict": float, "minibatch_dict": int, "max_minibatch_per_gpu": int,
                     "tick_kimg_dict": float}


def _typed_value(key: str, value, annotation):
    """`value` (a JSON value) checked against the field's annotation and converted (int -> float, string keys of
    the per-resolution dicts -> int); UserError naming the key and the expected type otherwise."""
    if key in _RESOLUTION_DICTS:
        return _resolution_dict(key, value, _RESOLUTION_DICTS[key])
    kinds = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in kinds:
        return None
    if bool in kinds and isinstance(value, bool):
        return value
    if int in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"config {key} = {value}: not a finite number")
        return float(value)
    if str in kinds and isinstance(value, str):
        return value
    if list in kinds and isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool)
                                                          for v in value):
        return value
    expected = " or ".join("null" if kind is type(None) else "a list" if kind is list else kind.__name__
                           for kind in kinds)
    raise UserError(f"config {key} = {json.dumps(value) if not isinstance(value, str) else value!r}: "
                    f"expected {expected}")


def _resolution_dict(key: str, value, kind: type) -> dict:
    """{resolution: number} from JSON (string keys allowed); UserError for anything else."""
    example = '{"256": 8}' if kind is int else '{"1024": 0.0015}'
    if not isinstance(value, dict):
        raise UserError(f"config {key} = {value!r}: expected an object keyed by resolution, e.g. {example}")
    result = {}
    for resolution, number in value.items():
        try:
            resolution = int(resolution)
        except ValueError:
            raise UserError(f"config {key}: key {resolution!r} is not a resolution, e.g. {example}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                or number <= 0 or (kind is int and number != int(number)):
            raise UserError(f"config {key}[{resolution}] = {number!r}: expected a positive "
                            f"{'integer' if kind is int else 'number'}")
        result[resolution] = kind(number)
    return result


def is_power_of_two(value: int, minimum: int = 1) -> bool:
    return value >= minimum and value & (value - 1) == 0


# ----------------------------------------------------------------------------------------------------------------
# Presets. Sources: paper Appendix A (Table 2, A.1, A.2), spec 5.2 (config.py / Theano configs).

_PAPER_1GPU = {"mbstd_group_size": 16, "minibatch_base": 16, "minibatch_dict": {256: 14, 512: 6, 1024: 3},
                   "lod_training_kimg": 800, "lod_transition_kimg": 800}

# Table 1: each row adds one contribution on top of the previous. Low-capacity network (A.2: fmap_base 2048
# leaves 32 feature maps at 128x128), 600/600 kimg, stopped at 10M real images.
_TABLE1_BASE = {"resolution": 128, "fmap_base": 2048, "lod_training_kimg": 600, "lod_transition_kimg": 600,
                    "total_kimg": 10000, "mbstd_group_size": 4, "minibatch_base": 16, "tick_kimg_base": 100,
                    "tick_kimg_dict": {}, "mirror": True}
_GULRAJANI = {"progressive": False, "minibatch_base": 64, "G_lr": 1e-4, "D_lr": 1e-4, "adam_beta2": 0.9, "D_repeats": 5,
                  "wgan_epsilon": 0.0, "mbstd_group_size": 0, "use_wscale": False, "G_activation": "relu",
                  "output_activation": "tanh", "G_norm": "batch", "D_norm": "layer", "latent_size": 128,
                  "normalize_latents": False}
_TABLE1_STEPS = {
    "a": _GULRAJANI,                                                   # Gulrajani et al. (2017)
    "b": {"progressive": True},                                       # + progressive growing
    "c": {"minibatch_base": 16},                                      # + small minibatch
    "d": {"G_lr": 0.001, "D_lr": 0.001, "adam_beta2": 0.99, "D_repeats": 1,    # + revised hyperparameters, no BN/LN
              "wgan_epsilon": 0.001, "G_activation": "lrelu", "output_activation": "linear", "G_norm": "none",
              "D_norm": "none", "latent_size": 512, "normalize_latents": True},
    "e": {"mbstd_group_size": 4},                                     # + minibatch stddev
    "f": {"use_wscale": True},                                        # + equalized learning rate
    "g": {"G_norm": "pixel"},                                         # + pixelwise normalization
}


def _table1_row(letter: str) -> dict:
    values = dict(_TABLE1_BASE)
    for step in "abcdefg"[: "abcdefg".index(letter) + 1]:
        values.update(_TABLE1_STEPS[step])
    return values


# The released code's config.py: 'preset-v2-<N>gpus' with '-fp32' (max_minibatch_per_gpu), D's default mbstd
# group 4, 600/600 kimg, 12000 kimg; G_lrate_dict and D_lrate_dict are equal in every preset.
_V2_FP32 = {"resolution": 1024, "total_kimg": 12000, "lod_training_kimg": 600, "lod_transition_kimg": 600,
            "mbstd_group_size": 4, "max_minibatch_per_gpu": {256: 16, 512: 8, 1024: 4}}
_V2_GPUS = {
    1: {"minibatch_base": 4, "minibatch_dict": {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        "lr_dict": {1024: 0.0015}},
    2: {"minibatch_base": 8, "minibatch_dict": {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8},
        "lr_dict": {512: 0.0015, 1024: 0.002}},
    4: {"minibatch_base": 16, "minibatch_dict": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        "lr_dict": {256: 0.0015, 512: 0.002, 1024: 0.003}},
    8: {"minibatch_base": 32, "minibatch_dict": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32},
        "lr_dict": {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}},
}


def _v2_preset(gpus: int) -> dict:
    values = {**_V2_FP32, **_V2_GPUS[gpus]}
    lr = values.pop("lr_dict")
    return {**values, "G_lr_dict": dict(lr), "D_lr_dict": dict(lr)}


# Presets with one variant per GPU count: --gpus N takes variant N, or the largest one below N.
GPU_VARIANTS: dict[str, dict[int, dict]] = {"celebahq-1024": {gpus: _v2_preset(gpus) for gpus in _V2_GPUS}}

PRESETS: dict[str, dict] = {
    # The released code's CelebA-HQ presets (v2, fp32), the variant chosen by the GPU count (GPU_VARIANTS).
    "celebahq-1024": _v2_preset(1),
    # The paper's CelebA-HQ 1024x1024 (A.1, preset-v1, 1 GPU): 800/800 kimg, minibatch 16 then 14/6/3, group 16.
    "celebahq-1024-v1": dict(resolution=1024, total_kimg=19000, **_PAPER_1GPU),
    # Table 1 (h): the full network, longer training on CelebA 128x128.
    "celeba-128": dict(resolution=128, total_kimg=20000, **_PAPER_1GPU),
    **{f"table1-{letter}": _table1_row(letter) for letter in "abcdefg"},
    # Appendix D / Theano config: CIFAR-10 32x32, gamma 750, 400/400 kimg, fmap_base 4096, 128 latents.
    "cifar10": {"resolution": 32, "fmap_base": 4096, "fmap_max": 128, "latent_size": 128, "wgan_target": 750.0,
                    "lod_training_kimg": 400, "lod_transition_kimg": 400, "total_kimg": 12000, "mirror": False,
                    "minibatch_base": 64},
    # LSUN 256x256 (the paper's LSUN config): 800/800 kimg, 20000 kimg.
    "lsun-256": dict(resolution=256, total_kimg=20000, **_PAPER_1GPU),
    # Appendix E MNIST-1K mode test: 3 digits as RGB at 32x32, a low-capacity G and a crippled D.
    "mnist-rgb": {"resolution": 32, "fmap_base": 256, "D_fmap_base": 32, "fmap_max": 64, "latent_size": 64,
                      "lod_training_kimg": 500, "lod_transition_kimg": 2000, "total_kimg": 12000, "mirror": False,
                      "minibatch_base": 64},
    # A few-minute CPU run at 16x16 (~500 steps): 32 feature maps, 1/1 kimg phases, a short EMA.
    "tiny": {"resolution": 16, "fmap_base": 256, "fmap_max": 32, "latent_size": 32, "mbstd_group_size": 4,
             "minibatch_base": 16, "lod_training_kimg": 1.0, "lod_transition_kimg": 1.0, "total_kimg": 8.0,
             "minibatch_repeats": 1, "tick_kimg_base": 1.0, "tick_kimg_dict": {}, "G_ema_beta": 0.95,
             "image_snapshot_ticks": 2, "network_snapshot_ticks": 2, "metric_swd_images": 1024,
             "metric_fid_images": 0, "data_workers": 2, "grid_size": [8, 4]},
}


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' -> (key, value parsed as JSON, else the text itself)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r}: expected key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def gpu_variant(name: str, gpus: int) -> int | None:
    """The GPU count of the variant of preset `name` used on `gpus` GPUs (the largest ≤ gpus); None when the
    preset has no variants."""
    counts = sorted(GPU_VARIANTS.get(name, {}))
    usable = [count for count in counts if count <= gpus]
    return (usable[-1] if usable else counts[0]) if counts else None


def resolve_config(name: str = "tiny", overrides: list[str] | dict | None = None, gpus: int = 1) -> TrainingConfig:
    """The named preset (its variant for `gpus` GPUs, see `gpu_variant`) with `overrides` ('key=value' strings or
    a dict) applied."""
    if name not in PRESETS:
        raise UserError(f"unknown config {name!r}; choose from {', '.join(PRESETS)}")
    variant = gpu_variant(name, gpus)
    values = dict(PRESETS[name] if variant is None else GPU_VARIANTS[name][variant])
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        values.update(parse_override(text) for text in overrides or [])
    return TrainingConfig.from_dict(values)
