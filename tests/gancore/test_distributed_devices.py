"""Which GPU a torchrun rank takes: its own (LOCAL_RANK), or with `share_gpus` one of fewer GPUs in turn."""

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
