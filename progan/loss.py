"""Losses (spec 5.3): WGAN-GP with the drift term, and LSGAN with Appendix B's adaptive discriminator noise.

Each loss returns a scalar (batch mean, as the original's reduce_mean) and a dict of detached statistics.
"""

from __future__ import annotations

import math

import torch

from gancore.distributed import all_reduce_sum, world_size

from .configs import TrainingConfig


def original_gradient_norms(gradient: torch.Tensor, lod: float) -> torch.Tensor:
    """Per-sample L2 norms [N] of D's input gradient [N, C, r, r] (taken at the working resolution r = R / f,
    f = 2^⌊lod⌋) as the original measures them: on the full-size R×R mixed image.

    The original feeds D images nearest-upsampled by f and D box-downsamples them by f first, so its D is ours
    after an f×f average pool: its gradient is ours nearest-upsampled and divided by f², whose norm is exactly
    ‖ours‖ / f (tests/progan/test_training_networks.py computes both)."""
    return gradient.float().flatten(1).norm(dim=1) / 2.0 ** math.floor(lod)


class WGANGP:
    """D: D(G(z)) - D(x) + λ/γ² (‖∇D(x̂)‖ - γ)² + ε_drift D(x)², x̂ = x + u (G(z) - x), u ~ U(0, 1) per sample,
    ‖∇D(x̂)‖ measured on the full-resolution image as the original (`original_gradient_norms`). G: -D(G(z))."""

    def __init__(self, config: TrainingConfig):
        self.wgan_lambda, self.wgan_target, self.wgan_epsilon = (config.wgan_lambda, config.wgan_target,
                                                                 config.wgan_epsilon)

    def D_loss(self, D, reals: torch.Tensor, fakes: torch.Tensor, lod: float, mixing: torch.Tensor):
        real_scores = D(reals, lod).float()
        fake_scores = D(fakes, lod).float()
        mixed = torch.lerp(reals, fakes, mixing).detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(D(mixed, lod).float().sum(), mixed, create_graph=True)
        norms = original_gradient_norms(gradient, lod)
        penalty = (norms - self.wgan_target).square() * (self.wgan_lambda / self.wgan_target ** 2)
        loss = fake_scores.squeeze(1) - real_scores.squeeze(1) + penalty
        loss = loss + self.wgan_epsilon * real_scores.squeeze(1).square()
        stats = {"D_real": real_scores.mean(), "D_fake": fake_scores.mean(), "gradient_penalty": penalty.mean(),
                 "gradient_norm": norms.mean()}
        return loss.mean(), stats

    def G_loss(self, D, fakes: torch.Tensor, lod: float):
        return -D(fakes, lod).float().mean(), {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LSGAN:
    """D: (D(x) - 1)² + D(G(z))²; G: (D(G(z)) - 1)². Multiplicative Gaussian noise at the input of every conv
    of D with std coef · max(0, d̂ - lim)^exp, d̂ ← 0.1 · mean D(x) + 0.9 · d̂ (Appendix B).

    Under torchrun the mean is over the global minibatch (every rank's equal share averaged), so all ranks keep
    one d̂ and one noise level, those of a single process with the whole minibatch."""

    def __init__(self, config: TrainingConfig):
        self.config = config
        self.output_average = 0.0

    @property
    def noise_std(self) -> float:
        c = self.config
        return c.lsgan_noise_coef * max(0.0, self.output_average - c.lsgan_noise_lim) ** c.lsgan_noise_exp

    def D_loss(self, D, reals: torch.Tensor, fakes: torch.Tensor, lod: float, mixing: torch.Tensor):
        D.noise_std = self.noise_std
        real_scores, fake_scores = D(reals, lod).float(), D(fakes, lod).float()
        decay = self.config.lsgan_output_decay
        real_mean = float(all_reduce_sum(real_scores.detach().mean())) / world_size()
        self.output_average = (1 - decay) * real_mean + decay * self.output_average
        loss = (real_scores - 1).square().mean() + fake_scores.square().mean()
        return loss, {"D_real": real_scores.mean(), "D_fake": fake_scores.mean(),
                      "lsgan_noise": torch.tensor(D.noise_std)}

    def G_loss(self, D, fakes: torch.Tensor, lod: float):
        D.noise_std = self.noise_std
        return (D(fakes, lod).float() - 1).square().mean(), {}

    def state_dict(self) -> dict:
        return {"output_average": self.output_average}

    def load_state_dict(self, state: dict) -> None:
        self.output_average = float(state["output_average"])


def make_loss(config: TrainingConfig):
    return WGANGP(config) if config.loss == "wgangp" else LSGAN(config)
