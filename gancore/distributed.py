"""Rank/world helpers shared by every command: several processes under `torchrun` split the images.

Under `torchrun --nproc_per_node K ganeval …` each process evaluates a disjoint share of every image stream
(blocks of consecutive stream positions, dealt round-robin) and the accumulated features, descriptors or
sums are combined with torch.distributed, so the numbers equal a single process's (up to the order of
floating-point sums). Outside torchrun everything here is a no-op for a world of one.
"""

from __future__ import annotations

import atexit
import contextlib
import os

import torch
import torch.distributed as dist

from .errors import UserError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE > 1) started this process as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def local_device(device: torch.device, share_gpus: bool = False) -> torch.device:
    """Under torchrun, an index-less 'cuda' means this rank's GPU, cuda:LOCAL_RANK; any other device is kept.
    `share_gpus`: more ranks than GPUs take turns on them, cuda:(LOCAL_RANK mod the GPU count).

    Pure: reads the environment, changes nothing."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if share_gpus and torch.cuda.device_count() > 0:
            local_rank %= torch.cuda.device_count()
        return torch.device("cuda", local_rank)
    return device


def start_from_environment(device: torch.device, share_gpus: bool = False) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's device.

    Called explicitly by each entry point (the CLIs, a user's script), never by library helpers. With CUDA, rank r
    uses cuda:LOCAL_RANK (NCCL); on the CPU the group uses gloo. `share_gpus` (a job whose ranks only wait for
    each other, like `celebahq build`): several ranks may share a GPU (`local_device`), and the group uses gloo,
    which, unlike NCCL, allows that. Outside torchrun it returns `device` unchanged.
    """
    if not launched_by_torchrun():
        return device
    device = local_device(device, share_gpus)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if device.type == "cuda" and not share_gpus else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "gloo":  # NCCL's destroy waits for pending collectives: a failing rank could hang in it
            atexit.register(_leave_process_group)
    return device


def _leave_process_group() -> None:
    """Destroy the process group at exit, while the interpreter is still whole: left to interpreter finalization,
    gloo's worker threads are destroyed unjoined now and then and the rank dies of SIGABRT ('terminate called
    without an active exception') after its work is done. Gloo only (its destroy waits for no other rank)."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # a group already broken by a dead peer: nothing left to tidy
            dist.destroy_process_group()


def _communication_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all ranks (a new tensor on the input's device; the input when alone)."""
    if not is_distributed():
        return tensor
    work = tensor.to(_communication_device(tensor), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def barrier() -> None:
    """Wait until every rank gets here (a no-op alone); works on gloo and NCCL alike."""
    if is_distributed():
        all_reduce_sum(torch.zeros(1))


def peer_failure(error: BaseException) -> str | None:
    """Why a collective failed, when `error` is its failure because another rank stopped or died (torch's DistError
    family; gloo's connection errors, plain RuntimeErrors): the first sentence of the reason, without the source
    location; None for any other error, or outside torchrun."""
    if not is_distributed() or not isinstance(error, RuntimeError):
        return None
    text = " ".join(str(error).split())
    if not (isinstance(error, dist.DistError) or ("gloo" in text and "peer" in text)):
        return None
    return text.split("] ", 1)[-1].split(". ", 1)[0]


def is_main_process() -> bool:
    return rank() == 0


def owns_block(block_index: int) -> bool:
    """Whether this rank evaluates block `block_index` of a stream (blocks dealt round-robin)."""
    return block_index % world_size() == rank()
