"""DDP setup through torchrun's environment: NCCL on GPUs, gloo on CPUs.

    torchrun --nproc-per-node 2 -m training --preset tiny --data DIR --out RUN

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we run as a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_request: str = "auto") -> DistInfo:
    """Read torchrun's environment, pick the device, and join the process group if needed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request == "cuda" or (device_request == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but torch sees no CUDA device")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            # A rank that died leaves the others blocked in a collective; give up after this.
            timeout=datetime.timedelta(minutes=10),
        )
    return DistInfo(rank, local_rank, world_size, device)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (in place; returns it). A no-op for one process."""
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def agree_on_error(error: str | None, info: DistInfo) -> str | None:
    """Rank 0's error message (or None) on every rank. Where only rank 0 does something that
    may fail (take the run's lock, write a checkpoint), the other ranks would otherwise wait
    for it in their next collective until the timeout; with this they stop at once, with the
    same message. The other ranks wait here until rank 0 is done. A no-op for one process."""
    if not info.enabled:
        return error
    box = [error if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
