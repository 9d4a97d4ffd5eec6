"""Running under ``torchrun``: process group, rank and the sharded training loader.

When ``WORLD_SIZE`` > 1 in the environment the process group is initialised (gloo on CPU, nccl on
CUDA), the train set is sharded with a ``DistributedSampler`` and only rank 0 writes files.
"""
from __future__ import annotations

import os

import torch

from core.errors import PruneStudioError


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 when not set)."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise PruneStudioError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None


def init_distributed(device: str = "cpu") -> tuple[int, int, torch.device]:
    """Initialise the process group when launched under torchrun; returns (rank, world, device)."""
    import torch.distributed as dist
    rank, world, local = dist_env()
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PruneStudioError(f"device '{device}' was asked for, but no CUDA GPU is available here")
        if world > 1:
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, dev


def barrier(world):
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


def train_loader(data, epoch: int, seed: int, world: int, rank: int):
    """The epoch's training batches; under torchrun, this rank's shard (``DistributedSampler``)."""
    if world <= 1:
        return data.train_loader(epoch, seed)
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    ds = data.train_set
    if isinstance(ds, DataLoader):
        base = ds
        sampler = DistributedSampler(base.dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(base.dataset, batch_size=base.batch_size, sampler=sampler,
                          collate_fn=base.collate_fn, num_workers=base.num_workers)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return data.train_loader(epoch, seed, sampler=sampler)
