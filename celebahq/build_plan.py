"""`BuildOptions` resolved once into a `BuildPlan`: which stage implementation runs, where, on which device and
with which network (celebahq/build_stages.py holds the stages; celebahq/pipeline.py runs them).

Where the restoration networks (celebahq.restore, "net"; loaded lazily, once per process) run:

    backend  cleanup  in the decode workers               in the main process, on the device
    pil      none     decode, plan, shrink + crop         render_pil with the SR stage (Lanczos or the net)
    pil      net      decode, plan, cleanup net, s. + c.  render_pil with the SR stage
    torch    none     decode, plan, shrink + crop         render_torch_tensor with the SR stage
    torch    net      decode, plan (the whole photo)      cleanup net, shrink + crop, render_torch_tensor

With the torch backend both networks run on tensors on the device (no host round trip on CUDA); with the pil
backend on uint8 arrays on the host. "none"/"lanczos" are the original release's stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .build_options import BuildOptions
from .build_stages import (
    BatchRenderer,
    PilRenderer,
    PrepareStage,
    Recipe,
    TorchRenderer,
    WriteStage,
)
from .render import DeviceUpscale, lanczos_upscale
from .restore.infer import cleanup_image, cleanup_tensor, net_upscale, net_upscale_tensor


@dataclass(frozen=True)
class BuildPlan:
    """One build's stages, chosen once; the passes only run them."""

    options: BuildOptions  # resolved (every default filled in)
    device: torch.device  # where the render and score run
    prepare: PrepareStage  # in the decode workers
    renderer: BatchRenderer  # render and score, in the main process on `device`
    recipe: Recipe  # what the manifest records of how the images were made
    write: WriteStage  # pass 2's outputs

    @property
    def shard(self) -> tuple[int, int]:
        """(index, count): this build does every count-th source from index."""
        return self.options.shard

    @property
    def manifest_name(self) -> str:
        index, count = self.shard
        return "manifest.jsonl" if count == 1 else f"manifest-{index}-of-{count}.jsonl"

    @property
    def report_name(self) -> str:
        index, count = self.shard
        return "report.json" if count == 1 else f"report-{index}-of-{count}.json"


def plan_build(options: BuildOptions) -> BuildPlan:
    """Resolve `options` (defaults, checks: UserError for a bad value) and choose the stages."""
    options = options.resolved()
    device = torch.device(options.device)
    cleanup_on_device = options.backend == "torch" and options.cleanup != "none"
    prepare = PrepareStage(resolution=options.resolution, accept_odd_landmarks=options.accept_odd_landmarks,
                           cleanup=cleanup_image if options.cleanup == "net" and not cleanup_on_device else None,
                           crop=not cleanup_on_device, num_workers=options.num_workers)
    if options.backend == "pil":
        renderer = PilRenderer(options.resolution, options.downscale,
                               upscale=net_upscale if options.sr == "net" else lanczos_upscale)
    else:
        renderer = TorchRenderer(options.resolution, options.downscale, device,
                                 cleanup=cleanup_tensor if cleanup_on_device else None,
                                 upscale=DeviceUpscale(net_upscale_tensor) if options.sr == "net" else None)
    recipe = Recipe(options.cleanup, options.sr, options.backend, options.downscale, options.resolution)
    write = WriteStage(png=options.png, h5=options.h5, zip=options.zip, num_writers=options.num_writers,
                       queue_limit=4 * options.batch_size, resolution=options.resolution)
    return BuildPlan(options, device, prepare, renderer, recipe, write)
