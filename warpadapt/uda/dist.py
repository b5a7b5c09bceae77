"""Distributed set-up from torchrun's environment, and the few collective helpers the recipes use.

``torchrun --nproc_per_node=N recipe.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup_distributed` reads them and starts the process group (``nccl`` on CUDA, ``gloo`` on
CPU). Run without torchrun (or with one process) everything here is a cheap no-op, so a recipe has
one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "barrier", "all_reduce_mean",
           "all_gather_objects", "wrap_ddp", "unwrap"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, ``device``.

    >>> DistInfo().is_main, DistInfo(rank=1, world_size=2).is_main
    (True, False)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None, backend: str | None = None) -> DistInfo:
    """Start the process group if launched by torchrun with more than one process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        backend: process-group backend; default ``nccl`` on CUDA, ``gloo`` on CPU.

    >>> info = setup_distributed("cpu")  # not under torchrun: a single process
    >>> info.world_size, info.enabled, info.device
    (1, False, device(type='cpu'))
    """
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu', 'cuda' or None, got {device!r}")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for but torch.cuda.is_available() is False")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world <= 1:
        return DistInfo(0, 1, 0, dev, False)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return DistInfo(rank, world, local, dev, True)


def cleanup_distributed() -> None:
    """Destroy the process group if one was started (safe to call always).

    >>> cleanup_distributed()
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (no-op in a single process).

    >>> barrier()
    """
    if _active():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Mean over processes of a tensor or a float (returned as the same kind).

    >>> all_reduce_mean(2.5), all_reduce_mean(torch.tensor([1.0, 3.0]))
    (2.5, tensor([1., 3.]))
    """
    if not _active():
        return value
    is_float = not isinstance(value, torch.Tensor)
    t = torch.tensor(float(value), dtype=torch.float64) if is_float else value.detach().clone()
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = t / dist.get_world_size()
    return float(t) if is_float else t.to(value.device)


def all_gather_objects(obj: Any) -> list:
    """Every process's ``obj`` as a list in rank order (``[obj]`` in a single process).

    >>> all_gather_objects({"a": 1})
    [{'a': 1}]
    """
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself.

    >>> m = nn.Linear(2, 2); wrap_ddp(m, DistInfo()) is m
    True
    """
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or the module itself).

    >>> m = nn.Linear(2, 2); unwrap(m) is m
    True
    """
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
