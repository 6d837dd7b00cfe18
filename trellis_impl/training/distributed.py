"""Process group set-up from torchrun's environment (``torchrun --nproc_per_node K -m trellis_impl train ...``).

torchrun (and its multi-node rendezvous) exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; a plain
``python -m trellis_impl train`` has none of them and runs as a single process. NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass
class DistributedContext:
    """rank / world_size of this process, the device it trains on, and whether it opened the group."""
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: Union[str, torch.device, None] = None) -> DistributedContext:
    """Join torchrun's process group when launched by it (one GPU per local rank on CUDA).

    Args:
        device: 'cuda', 'cpu' or None (CUDA when available). Under torchrun on CUDA each process
            takes ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world_size > 1 or wanted.index is None:
            wanted = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(wanted)
    if world_size == 1:
        return DistributedContext(0, 1, wanted)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if wanted.type == "cuda" else "gloo"
        kwargs = {"device_id": wanted} if backend == "nccl" else {}
        dist.init_process_group(backend, **kwargs)
        owns = True
    return DistributedContext(dist.get_rank(), dist.get_world_size(), wanted, owns)


def mean_over_processes(values: Dict[str, float], context: Optional[DistributedContext]) -> Dict[str, float]:
    """Per key, the mean of the logged ``values`` over the processes that have that key (a stage's
    terms may differ between processes, e.g. when a mesh comes out empty)."""
    if context is None or context.world_size == 1:
        return dict(values)
    gathered: List[Dict[str, float]] = [{} for _ in range(context.world_size)]
    dist.all_gather_object(gathered, values)
    keys = dict.fromkeys(k for d in gathered for k in d)
    return {k: sum(d[k] for d in gathered if k in d) / sum(k in d for d in gathered) for k in keys}
