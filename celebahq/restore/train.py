"""`celebahq train-restorer`: train the cleanup or SR network on random patches of photographs.

Degradations are synthesised per patch (celebahq.restore.degrade): JPEG at a random quality in 10–60 for cleanup;
an antialiased 4× downscale, with probability `sr_jpeg_probability` followed by mild JPEG (quality 75–95), for SR.
Patches are augmented with the 8 flips/rotations. Every step's randomness comes from (seed, step), so a resumed
run draws the same patches as an uninterrupted one. L1 loss, Adam, cosine learning-rate decay; SR can add a
non-saturating GAN term from a small patch discriminator (`adversarial_weight`, 0 = off).

Output: `out` holds the best weights so far (by validation PSNR gain over the baseline), `out` + ".ckpt" the
latest full state (model, optimiser, step) for resuming. Both load with torch.load(weights_only=True).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gancore.errors import UserError
from gancore.runtime import progress_bar, resolve_device, torch_save_atomic
from gancore.sources import BadImage, decode_image

from .degrade import SR_SCALE, bicubic_upscale, downscale, jpeg_roundtrip
from .eval import psnr
from .infer import photo_files
from .models import build_model, model_config, warm_start

VAL_QUALITY = 20  # the cleanup target's JPEG quality
VAL_CROP = 192  # validation crops (high-resolution side), up to VAL_CROPS_PER_PHOTO per photograph
VAL_CROPS_PER_PHOTO = 4


@dataclass
class TrainOptions:
    """Settings of one training run (CLI flags of `celebahq train-restorer`)."""

    steps: int = 20000
    patch: int = 96  # high-resolution patch side (SR input patches are patch / 4)
    batch: int = 16
    lr: float = 4e-4
    seed: int = 0
    quality_range: tuple[int, int] = (10, 60)
    sr_jpeg_probability: float = 0.1
    adversarial_weight: float = 0.0
    val_every: int = 500
    device: str | None = None
    threads: int | None = None
    resume: bool = True
    progress: bool = True
    config: dict = field(default_factory=dict)  # model constructor arguments (default: the shipped sizes)
    init: str | None = None  # weight file to start from (warm start; see warm_start)


# --------------------------------------------------------------------------------------------------------------
# Data


def load_photos(folders, min_side: int) -> dict[str, np.ndarray]:
    """Decode every image of `folders` (uint8 HWC RGB), keyed by path; images smaller than min_side are dropped."""
    photos = {}
    for path in photo_files(folders):
        try:
            image = decode_image(path)
        except BadImage:
            continue
        if min(image.shape[:2]) >= min_side:
            photos[path.as_posix()] = image
    if not photos:
        raise UserError(f"no usable photographs (≥ {min_side} px a side) in {', '.join(map(str, folders))}")
    return photos


def augment(patch: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations of a HWC patch (code 0..7)."""
    patch = np.rot90(patch, code % 4)
    return np.ascontiguousarray(patch[:, ::-1] if code >= 4 else patch)


def degrade_patch(kind: str, clean: np.ndarray, rng: np.random.Generator, options: TrainOptions) -> np.ndarray:
    """The network input for a clean uint8 HWC patch."""
    if kind == "cleanup":
        low, high = options.quality_range
        return jpeg_roundtrip(clean, int(rng.integers(low, high + 1)))
    small = downscale(clean)
    if rng.random() < options.sr_jpeg_probability:
        small = jpeg_roundtrip(small, int(rng.integers(75, 96)))
    return small


def sample_batch(kind: str, photos: list[np.ndarray], weights: np.ndarray, seed: int, step: int,
                 options: TrainOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean) float NCHW batches in [0, 1] for one step, drawn from (seed, step) only."""
    rng = np.random.default_rng([seed, step])
    inputs, targets = [], []
    for _ in range(options.batch):
        photo = photos[rng.choice(len(photos), p=weights)]
        height, width = photo.shape[:2]
        top, left = rng.integers(0, height - options.patch + 1), rng.integers(0, width - options.patch + 1)
        clean = augment(photo[top:top + options.patch, left:left + options.patch], int(rng.integers(8)))
        inputs.append(degrade_patch(kind, clean, rng, options))
        targets.append(clean)
    return to_tensor(np.stack(inputs)), to_tensor(np.stack(targets))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return torch.from_numpy(np.require(images, requirements="W")).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 NHWC (rounded, clipped)."""
    return x.detach().float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def validation_set(kind: str, photos: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed (degraded, baseline, clean) uint8 crops: up to 4 VAL_CROP² crops per photo, centred on a grid."""
    crops = []
    for photo in photos.values():
        height, width = photo.shape[:2]
        side = min(VAL_CROP, height, width) // 8 * 8
        for row in range(2):
            for col in range(VAL_CROPS_PER_PHOTO // 2):
                top = (height - side) * (2 * row + 1) // 4
                left = (width - side) * (2 * col + 1) // 4
                clean = photo[top:top + side, left:left + side]
                if kind == "cleanup":
                    degraded = baseline = jpeg_roundtrip(clean, VAL_QUALITY)
                else:
                    degraded = downscale(clean)
                    baseline = bicubic_upscale(degraded, SR_SCALE)
                crops.append((degraded, baseline, clean))
    return crops


@torch.no_grad()
def validate(model: nn.Module, crops, device: torch.device) -> dict:
    """Mean PSNR (dB, RGB, uint8 outputs) of the network and of the baseline over the validation crops."""
    model.eval()
    ours, base = [], []
    for degraded, baseline, clean in crops:
        out = to_uint8(model(to_tensor(degraded[None]).to(device)))[0]
        ours.append(psnr(out, clean))
        base.append(psnr(baseline, clean))
    model.train()
    ours, base = float(np.mean(ours)), float(np.mean(base))
    return {"psnr": round(ours, 4), "baseline_psnr": round(base, 4), "gain_db": round(ours - base, 4)}


# --------------------------------------------------------------------------------------------------------------
# Adversarial term (SR only)


class PatchDiscriminator(nn.Module):
    """A small fully convolutional critic: one logit per ~16×16 patch of a [0, 1] NCHW image."""

    def __init__(self, channels: int = 32):
        super().__init__()
        layers, width = [], 3
        for out in (channels, 2 * channels, 4 * channels, 4 * channels):
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        self.net = nn.Sequential(*layers, nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


# --------------------------------------------------------------------------------------------------------------
# Weight files


def weights_payload(kind: str, model: nn.Module, training: dict, validation: dict) -> dict:
    """The shipped weight-file layout: tensors and plain types only (torch.load(weights_only=True) reads it)."""
    return {"format": "celebahq-restorer-1", "kind": kind, "config": model_config(model),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "training": training, "validation": validation}


# --------------------------------------------------------------------------------------------------------------
# Training


def train_restorer(kind: str, images, out: str | os.PathLike, val_images=(),
                   options: TrainOptions | None = None) -> dict:
    """Train (or resume) a `kind` ("cleanup" or "sr") network; returns the best validation figures."""
    options = options or TrainOptions()
    _check_options(kind, options)
    if options.threads:
        torch.set_num_threads(options.threads)
    run = RestorerTraining(kind, images, val_images, Path(out), options)
    run.load_start()
    return run.train()


def _check_options(kind: str, options: TrainOptions) -> None:
    if kind not in ("cleanup", "sr"):
        raise UserError(f"unknown restorer {kind!r}: cleanup or sr")
    if options.patch % 8 or options.patch < 32:
        raise UserError(f"--patch {options.patch}: must be a multiple of 8, ≥ 32")
    if options.adversarial_weight and kind != "sr":
        raise UserError("--adversarial-weight is for the sr network only")


class RestorerTraining:
    """One training run of a restoration network: the photographs and validation crops, the model (and the SR
    critic), their optimizers, the learning-rate schedule and the counters that a checkpoint keeps."""

    def __init__(self, kind: str, images, val_images, out: Path, options: TrainOptions):
        self.kind, self.out, self.options = kind, out, options
        self.device = resolve_device(options.device)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = out.with_name(out.name + ".ckpt")
        photos = load_photos(images, options.patch)
        self.val_photos = load_photos(val_images, 32) if val_images else {}
        self.names = sorted(photos)
        self.arrays = [photos[name] for name in self.names]
        areas = np.array([a.shape[0] * a.shape[1] for a in self.arrays], dtype=np.float64)
        self.weights = areas / areas.sum()  # patches are drawn uniformly over all pixels
        self.crops = validation_set(kind, self.val_photos)
        self._build_model()
        self.start, self.best, self.history, self.seconds = 0, None, [], 0.0

    def _build_model(self) -> None:
        options, device = self.options, self.device
        torch.manual_seed(options.seed)
        try:
            self.model = build_model(self.kind, options.config).to(device)
        except TypeError as error:
            raise UserError(f"bad network config {options.config}: {error}") from None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr)
        self.critic = self.critic_optimizer = None
        if options.adversarial_weight:
            self.critic = PatchDiscriminator().to(device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=options.lr, betas=(0.5, 0.999))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, options.steps) / options.steps)))
        self.use_amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def load_start(self) -> None:
        """Continue from OUT.ckpt (`resume`, when it exists), else start from `init`'s weights when given."""
        options = self.options
        if options.resume and self.checkpoint_path.is_file():
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
            if state["kind"] != self.kind or state["config"] != model_config(self.model):
                raise UserError(f"{self.checkpoint_path} is for another network; delete it or choose another --out")
            self.model.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if self.critic is not None and "critic" in state:
                self.critic.load_state_dict(state["critic"])
                self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.start, self.best, self.history = state["step"], state["best"], state["history"]
            self.seconds = state.get("seconds", 0.0)
        elif options.init:
            init = torch.load(options.init, map_location=self.device, weights_only=True)
            if init.get("kind") != self.kind:
                raise UserError(f"--init {options.init}: weights of a {init.get('kind')!r} network, not "
                                f"{self.kind!r}")
            warm_start(self.model, init["state_dict"])

    def train(self) -> dict:
        """Steps up to `options.steps`, validating (and keeping the best weights in OUT, the full state in
        OUT.ckpt) every `val_every` steps and at the end. Returns the best validation figures."""
        options = self.options
        self.model.train()
        with progress_bar(options.steps, f"train {self.kind}", options.progress, unit="step") as bar:
            bar.update(self.start)
            for step in range(self.start, options.steps):
                loss = self._step(step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", best=f"{(self.best or {}).get('gain_db', float('nan')):+.2f}dB")
                done = step + 1
                if done % options.val_every == 0 or done == options.steps:
                    self._validate(done)
        if self.best is None:  # resumed a finished run
            self.best = torch.load(self.out, weights_only=True)["validation"]
        return self.best

    def _step(self, step: int) -> float:
        """One optimizer step on the batch of (seed, step) (and one of the critic); returns the model's loss."""
        options, device, critic = self.options, self.device, self.critic
        began = time.perf_counter()
        degraded, clean = (t.to(device) for t in sample_batch(self.kind, self.arrays, self.weights, options.seed,
                                                                step, options))
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
            restored = self.model(degraded)
            loss = F.l1_loss(restored.float(), clean)
            if critic is not None:
                loss = loss + options.adversarial_weight * F.softplus(-critic(restored)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        if critic is not None:
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
                critic_loss = F.softplus(-critic(clean)).mean() + F.softplus(critic(restored.detach())).mean()
            self.critic_optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(critic_loss).backward()
            self.scaler.step(self.critic_optimizer)
        self.scaler.update()
        self.schedule.step()
        self.seconds += time.perf_counter() - began
        return loss.item()

    def _validate(self, done: int) -> None:
        """Validation figures after `done` steps; the best weights so far to OUT, the full state to OUT.ckpt."""
        figures = dict(validate(self.model, self.crops, self.device), step=done) if self.crops else {"step": done}
        self.history.append(figures)
        if self.best is None or figures.get("gain_db", 0.0) >= self.best.get("gain_db", 0.0):
            self.best = figures
            torch_save_atomic(weights_payload(self.kind, self.model, self._training_record(done), self.best),
                              self.out)
        self._save_checkpoint(done)

    def _training_record(self, step: int) -> dict:
        return {"steps": step, "images": self.names, "val_images": sorted(self.val_photos),
                "seconds": round(self.seconds, 1), "device": str(self.device), "torch": str(torch.__version__),
                "options": {k: v for k, v in asdict(self.options).items() if k not in ("progress", "device")}}

    def _save_checkpoint(self, step: int) -> None:
        state = weights_payload(self.kind, self.model, self._training_record(step), self.best or {})
        state.update(optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(), step=step,
                     best=self.best, history=self.history, seconds=self.seconds)
        if self.critic is not None:
            state.update(critic=self.critic.state_dict(), critic_optimizer=self.critic_optimizer.state_dict())
        torch_save_atomic(state, self.checkpoint_path)
