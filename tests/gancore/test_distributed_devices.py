"""Which GPU a torchrun rank takes (its own, or with `share_gpus` one of fewer in turn), and the device timer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore import distributed
from gancore.runtime import host_to_device
from toolkit_testing.subprocesses import torchrun


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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_host_to_device_copies_and_converts(device):
    """host_to_device: the array's values on the device (on CUDA through pinned memory, asynchronously; the copy
    must be complete before the host array is reused), converted to `dtype` when given."""
    array = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    got = host_to_device(array, device, torch.float32)
    assert got.device.type == device and got.dtype == torch.float32
    array[:] = -1  # the staging copy is the tensor's, not the array's
    np.testing.assert_array_equal(got.cpu().numpy(), (np.arange(12).reshape(3, 4) / 7).astype(np.float32))
    photo = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    assert torch.equal(host_to_device(photo, device).cpu(), torch.from_numpy(photo))


def test_each_rank_leaves_its_process_group_before_the_interpreter_ends(tmp_path):
    """Left to interpreter finalization, gloo's threads now and then abort a finished rank (SIGABRT); the group is
    destroyed by an exit handler instead. A handler registered before the group's runs after it and sees it gone."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import atexit, torch, torch.distributed as dist\n"
        "from gancore import distributed\n"
        "atexit.register(lambda: print(f'<initialized at exit: {dist.is_initialized()}>', flush=True))\n"
        "distributed.start_from_environment(torch.device('cpu'))\n"
        "distributed.barrier()\n")
    output = torchrun([str(script)])
    assert output.count("<initialized at exit: False>") == 2, output
