"""`plan_build`: BuildOptions resolved once into the stages that run, where, and with which network."""

from __future__ import annotations

import pytest
import torch

from celebahq.build_options import BuildOptions
from celebahq.build_plan import plan_build
from celebahq.build_stages import PilRenderer, TorchRenderer
from celebahq.render import DeviceUpscale, lanczos_upscale
from celebahq.restore.infer import cleanup_image, cleanup_tensor, net_upscale, net_upscale_tensor
from gancore.errors import UserError


def plan(**options):
    return plan_build(BuildOptions(device="cpu", num_workers=0, num_writers=1, **options))


def test_pil_backend_cleans_up_in_the_workers_and_renders_on_the_host():
    stand_in = plan(backend="pil", cleanup="none", sr="lanczos")
    assert stand_in.prepare.cleanup is None and stand_in.prepare.crop
    assert isinstance(stand_in.renderer, PilRenderer) and stand_in.renderer.upscale is lanczos_upscale
    nets = plan(backend="pil", cleanup="net", sr="net")
    assert nets.prepare.cleanup is cleanup_image and nets.prepare.crop
    assert nets.renderer.upscale is net_upscale


def test_torch_backend_with_a_cleanup_gets_whole_photos_and_cleans_them_on_the_device():
    nets = plan(backend="torch", cleanup="net", sr="net")
    assert nets.prepare.cleanup is None and not nets.prepare.crop  # the workers send the whole photo
    assert isinstance(nets.renderer, TorchRenderer) and nets.renderer.device == torch.device("cpu")
    assert nets.renderer.cleanup is cleanup_tensor and nets.renderer.upscale == DeviceUpscale(net_upscale_tensor)
    stand_in = plan(backend="torch", cleanup="none", sr="lanczos")
    assert stand_in.prepare.crop and stand_in.renderer.cleanup is None and stand_in.renderer.upscale is None


def test_the_plan_carries_the_recipe_the_writers_and_the_file_names():
    resolved = plan(backend="pil", cleanup="none", sr="lanczos", resolution=256, downscale="box", batch_size=3,
                    shard=(1, 4), png=True)
    assert (resolved.recipe.backend, resolved.recipe.sr, resolved.recipe.downscale) == ("pil", "lanczos", "box")
    assert resolved.recipe.resolution == resolved.prepare.resolution == resolved.write.resolution == 256
    assert resolved.write.queue_limit == 12 and resolved.write.num_writers == 1
    assert (resolved.manifest_name, resolved.report_name) == ("manifest-1-of-4.jsonl", "report-1-of-4.json")
    alone = plan(backend="pil", cleanup="none", sr="lanczos")
    assert (alone.manifest_name, alone.report_name) == ("manifest.jsonl", "report.json")


def test_a_bad_option_is_refused_while_planning():
    with pytest.raises(UserError, match="--sr 'bicubic': choose one of lanczos, net"):
        plan(sr="bicubic")
