"""Which GPU a torchrun rank takes (its own, or with `share_gpus` one of fewer in turn), and the device timer."""

from __future__ import annotations

import torch

from gancore import distributed


def test_ranks_take_their_gpu_or_share_fewer(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = torch.device("cuda")
    assert distributed.local_device(cuda) == torch.device("cuda", 3)  # one rank per GPU (NCCL's rule)
    assert distributed.local_device(cuda, share_gpus=True) == torch.device("cuda", 1)  # 4 ranks on 2 GPUs
    assert distributed.local_device(torch.device("cuda", 0), share_gpus=True) == torch.device("cuda", 0)  # as given
    assert distributed.local_device(torch.device("cpu"), share_gpus=True) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.local_device(cuda, share_gpus=True) == cuda  # outside torchrun: unchanged


def test_device_timer_sums_nested_spans_on_the_cpu():
    import time

    from gancore.runtime import DeviceTimer

    timer = DeviceTimer("cpu")
    nap = timer.wrap("inner", lambda seconds: time.sleep(seconds))
    with timer.span("outer"):
        nap(0.02)
        nap(0.02)
    first = timer.collect()
    assert 0.04 <= first["inner"] <= first["outer"] < 1.0
    with timer.span("outer"):
        pass
    assert timer.collect()["outer"] >= first["outer"]  # totals accumulate over collects
