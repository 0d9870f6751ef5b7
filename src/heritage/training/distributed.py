"""Data-parallel training across processes and machines, plugged into the engine.

Launched by ``torchrun`` (``torchrun --nproc-per-node 2 -m heritage train DATA --out RUN``),
every process trains the same model on its share of each batch; :class:`DataParallel` is the
piece that makes them one run:

* the process group (gloo on CPU, NCCL on CUDA; one GPU per process, ``LOCAL_RANK``);
* every *global* batch is the batch a one-process run would draw (same sampler, same seed),
  cut into one equal slice per process (:class:`ShardedBatchSampler`), so the schedule, the
  epochs and the checkpoints mean the same whatever the number of processes;
* after each backward pass the gradients are averaged across processes (one flattened
  all-reduce, as ``DistributedDataParallel`` does in buckets). heritage averages them itself
  rather than wrapping the model in ``DistributedDataParallel``, because its objectives call
  the model's parts (features, then the head on mixed features: SynerMix, feature
  regularisers), which DDP's forward-hook bookkeeping does not see;
* every process validates (the same weights give the same scores); only rank 0 writes the run
  folder; the resume state holds every process's random generators.

Several machines: start the same command on each with a rendezvous, e.g.
``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400
-m heritage train DATA --out RUN`` (the run folder on storage every machine sees).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's slice of every batch of ``batches``: the global batches stay those of
    a one-process run, whichever sampler draws them."""

    def __init__(self, batches: Any, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.batches, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield list(np.array_split(np.asarray(batch), self.world_size)[self.rank])


@dataclass
class DataParallel:
    """One process of a data-parallel run (see the module's docstring)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @classmethod
    def from_env(cls, device: str = "auto") -> DataParallel | None:
        """The process's place in a ``torchrun`` launch; None when started alone."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size < 2:
            return None
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        where = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        return cls(rank, world_size, local_rank, where)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self) -> None:
        """Join the process group (one GPU per process on CUDA)."""
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if not self.is_main:  # one process speaks for the run
            from heritage.progress import console

            console.quiet = True

    def threads(self) -> int:
        """Intra-op threads for this process: the machine's cores shared by its processes."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        return max(1, (cores or os.cpu_count() or 1) // local)

    def teardown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        dist.barrier()

    def shard(self, loader: DataLoader, batch_size: int) -> DataLoader:
        """The same loader drawing this process's slice of each global batch."""
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} does not split evenly over {self.world_size} "
                "processes: choose a multiple of the number of processes"
            )
        return DataLoader(
            loader.dataset,
            batch_sampler=ShardedBatchSampler(loader.batch_sampler, self.rank, self.world_size),
            num_workers=loader.num_workers,
            persistent_workers=loader.num_workers > 0,
            pin_memory=loader.pin_memory,
            generator=loader.generator,  # the one the inner sampler draws from (resume)
        )

    def sync_gradients(self, model: nn.Module) -> None:
        """Average the gradients across processes in one all-reduce."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums across processes (an epoch's loss and image count)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out
