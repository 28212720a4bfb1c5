"""``torch.distributed`` for training under ``torchrun``: joining the group, a resumable
sampler, and the one per-step agreement that keeps ranks in step.

Every rank must enter the same collectives in the same order, or the group waits forever.
So whatever one rank alone can observe (a STOP file, a batch whose every image was
unreadable) is agreed on by all before it changes what they do: one small ``all_reduce``
per step (:func:`agree`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from segdemo import runtime


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = "nccl" if runtime.resolve_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def agree(flags: list[bool], device: torch.device, enabled: bool) -> list[bool]:
    """Each flag becomes True on every rank when it is True on any rank (one all_reduce).

    Without a process group the flags are returned as they are.
    """
    if not enabled:
        return list(flags)
    votes = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]


def barrier(enabled: bool) -> None:
    if enabled:
        dist.barrier()


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) that can skip the first samples of an
    epoch, so a resumed run sees exactly the batches the stopped run had not seen."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)
