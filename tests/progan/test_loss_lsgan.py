"""progan's LSGAN loss (Appendix B): the losses, the running average d̂ of D(x) and the noise it sets, alone and
under 2 gloo processes (one d̂ for all ranks: the single process's with the whole minibatch)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from progan.configs import resolve_config
from progan.loss import LSGAN

CONFIG = resolve_config("tiny", {"loss": "lsgan"})


class _ScoreByMean(torch.nn.Module):
    """A stand-in D: the mean of each image (plus a bias) as its score [N, 1]; remembers the noise it was given."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(0.25))
        self.noise_std = 0.0

    def forward(self, images: torch.Tensor, lod: float) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None] + self.bias


def _batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(8, 3, 4, 4, generator=generator) * 4,
            torch.rand(8, 3, 4, 4, generator=generator) - 0.5)


def _losses_and_averages(loss: LSGAN, D: _ScoreByMean, reals: torch.Tensor, fakes: torch.Tensor,
                         steps: int = 3) -> list[tuple[float, float, float]]:
    """(D loss, d̂ after the step, noise D got) for `steps` D steps on the same batch."""
    rows = []
    for _ in range(steps):
        value, _ = loss.D_loss(D, reals, fakes, 0.0, None)
        rows.append((float(value.detach()), loss.output_average, D.noise_std))
    return rows


def test_lsgan_losses_running_average_and_noise_follow_appendix_b():
    reals, fakes = _batches()
    D = _ScoreByMean()
    rows = _losses_and_averages(LSGAN(CONFIG), D, reals, fakes)
    real_scores, fake_scores = D(reals, 0.0).detach(), D(fakes, 0.0).detach()
    average, previous_noise = 0.0, 0.0
    for loss_value, got_average, noise in rows:
        assert noise == previous_noise  # the noise of a step comes from d̂ before it
        assert loss_value == pytest.approx(float((real_scores - 1).square().mean() + fake_scores.square().mean()))
        average = 0.1 * float(real_scores.mean()) + 0.9 * average
        assert got_average == pytest.approx(average, rel=1e-6)
        previous_noise = 0.2 * max(0.0, average - 0.5) ** 2
    assert previous_noise > 0  # d̂ passed the limit: the test saw the noise switch on
    G_value, _ = LSGAN(CONFIG).G_loss(D, fakes, 0.0)
    assert float(G_value.detach()) == pytest.approx(float((fake_scores - 1).square().mean()))


def _rank_main(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        reals, fakes = _batches()
        share = slice(rank * 4, rank * 4 + 4)  # each rank its half of the global minibatch of 8
        results[rank] = _losses_and_averages(LSGAN(CONFIG), _ScoreByMean(), reals[share], fakes[share])
    finally:
        dist.destroy_process_group()


def test_lsgan_ranks_share_one_running_average(tmp_path):
    """2 gloo processes, each with half of the minibatch: every rank's d̂ and noise are the 1-process values (the
    two halves' D(x) means differ, so a per-rank d̂ would not be)."""
    reals, fakes = _batches()
    alone = _losses_and_averages(LSGAN(CONFIG), _ScoreByMean(), reals, fakes)
    halves = [float(_ScoreByMean()(reals[i:i + 4], 0.0).mean().detach()) for i in (0, 4)]
    assert abs(halves[0] - halves[1]) > 0.01
    results = mp.Manager().dict()
    mp.start_processes(_rank_main, args=(str(tmp_path / "rendezvous"), results), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        for (_, average, noise), (_, expected_average, expected_noise) in zip(results[rank], alone):
            assert average == pytest.approx(expected_average, rel=1e-6)
            assert noise == pytest.approx(expected_noise, rel=1e-6, abs=1e-12)
