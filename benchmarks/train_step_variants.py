"""Our training step (D step + EMA + G step) on the CPU in four forms, timed in one process and one run: D's
weights made for every pass (as before `networks.shared_weights`), made once per D step (the trainer), the
trainer's step with channels_last networks (the CUDA default), and the trainer's step with only the stride-2 fused
convolutions in channels_last (their forward alone is faster so on the CPU). Same config and minibatches as
train_vs_original.py (celebahq-1024 at fmap_base 2048, the 1-GPU preset's minibatch, stable phase, fp32).
The variants run one after another at each resolution.
Also says whether `torch.compile` accepts the D step (its gradient penalty needs a double backward).

    python benchmarks/train_step_variants.py [--resolutions 4,8,16,32,64] [--threads 2] [--steps 2] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import results_record
import torch
import torch.nn.functional as F

from progan.configs import TrainingConfig, resolve_config
from progan.dataset import to_float_reals
from progan.loss import make_loss
from progan.networks import build_networks
from progan.training_loop import discriminator_step, generator_step, make_optimizers, update_ema

VARIANTS = ("weights per pass", "weights once per D step", "once per D step + channels_last",
            "once per D step + fused convs channels_last")


@contextlib.contextmanager
def fused_convolutions_channels_last():
    """For the block: the stride-2 fused convolutions (D's conv + downscale, G's upscale + conv) take their input
    in channels_last and give NCHW back (the rest of the step stays NCHW): these convolutions alone run faster
    forward in channels_last on the CPU."""
    from progan.networks import EqualizedConv2dDown, EqualizedConv2dUp

    layout = torch.channels_last
    originals = EqualizedConv2dDown.forward, EqualizedConv2dUp.forward

    def down(self, x):
        return F.conv2d(x.contiguous(memory_format=layout), self.weight_for_pass(), self.bias, stride=2,
                        padding=self.padding).contiguous()

    def up(self, x):
        return F.conv_transpose2d(x.contiguous(memory_format=layout), self.weight_for_pass(), self.bias, stride=2,
                                  padding=self.padding).contiguous()

    EqualizedConv2dDown.forward, EqualizedConv2dUp.forward = down, up
    try:
        yield
    finally:
        EqualizedConv2dDown.forward, EqualizedConv2dUp.forward = originals


def make_step(config: TrainingConfig, resolution: int, lod: float, minibatch: int, variant: str):
    """One training step of `variant` as a function (its networks and optimizers built once)."""
    from progan import training_loop

    torch.manual_seed(1000)
    G, D = build_networks(config, channels_last=variant.endswith("+ channels_last"))
    G_ema = build_networks(config)[0].requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    G_opt, D_opt = make_optimizers(G, D, config)
    loss, autocast = make_loss(config), torch.autocast("cpu", enabled=False)
    reals_uint8 = torch.randint(0, 256, (minibatch, 3, resolution, resolution), dtype=torch.uint8)
    per_pass = variant == "weights per pass"
    layout = fused_convolutions_channels_last if variant.endswith("fused convs channels_last") else (
        contextlib.nullcontext)

    def step():
        sharing = training_loop.shared_weights
        if per_pass:  # the D step as it was: no sharing context
            training_loop.shared_weights = lambda module: contextlib.nullcontext()
        try:
            with layout():
                reals = to_float_reals(reals_uint8, resolution, torch.device("cpu"))
                z = torch.randn(minibatch, config.latent_size)
                discriminator_step(G, D, D_opt, loss, reals, z, torch.rand(minibatch, 1, 1, 1), lod, autocast)
                update_ema(G_ema, G, config.G_ema_beta)
                generator_step(G, D, G_opt, loss, torch.randn(minibatch, config.latent_size), lod, autocast)
        finally:
            training_loop.shared_weights = sharing

    return step


def images_per_second(step, minibatch: int, steps: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * minibatch / (time.perf_counter() - started)


def compile_verdict(config: TrainingConfig) -> str:
    """What `torch.compile` says to a D step with the gradient penalty, at 8² (4² for a 4² config; one small step)."""
    D = build_networks(config)[1]
    side = min(8, config.resolution)
    lod = math.log2(config.resolution) - math.log2(side)
    reals = torch.rand(4, 3, side, side) * 2 - 1
    try:
        D_loss, _ = make_loss(config).D_loss(torch.compile(D), reals, reals.flip(3), lod, torch.rand(4, 1, 1, 1))
        D_loss.backward()
    except Exception as error:  # noqa: BLE001 -- the verdict is the message
        return f"refused: {str(error).splitlines()[0][:160]}"
    return "accepted"


def step_shape_parser(description: str) -> argparse.ArgumentParser:
    """The options of the CPU step benchmarks' shapes (resolutions, fmap_base, threads) and --record."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="4,8,16,32,64")
    parser.add_argument("--fmap-base", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help=results_record.RECORD_HELP)
    return parser


def parse_step_shapes(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[int], TrainingConfig]:
    """The arguments, with this process's threads set; the measured resolutions; celebahq-1024 at `--fmap-base`
    with the largest of them as its resolution, fused_scale on."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    resolutions = [int(text) for text in args.resolutions.split(",")]
    config = resolve_config("celebahq-1024", {"resolution": max(resolutions), "fmap_base": args.fmap_base,
                                              "fused_scale": True})
    return args, resolutions, config


def main() -> None:
    parser = step_shape_parser(__doc__)
    parser.add_argument("--steps", type=int, default=2, help="Timed steps per variant and resolution.")
    args, resolutions, config = parse_step_shapes(parser)
    print(f"celebahq-1024 at fmap_base {args.fmap_base}, fused_scale, fp32, {args.threads} threads, "
          f"{args.steps} timed steps after 1; img/s")
    print(results_record.markdown_table(
        ["resolution", "minibatch", *VARIANTS, "once / per pass", "channels_last / NCHW",
         "fused channels_last / NCHW"], []))
    for resolution in resolutions:
        minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
        lod = math.log2(max(resolutions)) - math.log2(resolution)
        speed = {variant: images_per_second(make_step(config, resolution, lod, minibatch, variant), minibatch,
                                            args.steps) for variant in VARIANTS}
        print(f"| {resolution}² | {minibatch} | " + " | ".join(f"{speed[v]:.1f}" for v in VARIANTS)
              + f" | {speed[VARIANTS[1]] / speed[VARIANTS[0]]:.2f}× | {speed[VARIANTS[2]] / speed[VARIANTS[1]]:.2f}×"
              f" | {speed[VARIANTS[3]] / speed[VARIANTS[1]]:.2f}× |", flush=True)
    print(f"\ntorch.compile of the D step: {compile_verdict(config)}")


if __name__ == "__main__":
    results_record.run_main("progan: training step variants (CPU)", main)
