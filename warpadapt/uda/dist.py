"""Distributed set-up from torchrun's environment, and the few collective helpers the recipes use.

``torchrun --nproc_per_node=N recipe.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup_distributed` reads them and starts the process group (``nccl`` on CUDA, ``gloo`` on
CPU). Run without torchrun (or with one process) everything here is a cheap no-op, so a recipe has
one code path.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "barrier", "all_reduce_mean",
           "all_gather_objects", "wrap_ddp", "unwrap", "grad_sync", "rank0_buffers", "weights_digest"]


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


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False,
             broadcast_buffers: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself.

    ``broadcast_buffers=False`` (PyTorch's default is True): DDP does not copy rank 0's buffers (BatchNorm
    running statistics) to every rank before each forward, which for a recipe with several forwards per
    step is one broadcast per forward. Each rank's running statistics follow its own batches instead
    (what they are for in training: BatchNorm normalises with the batch's statistics either way); the
    recipes evaluate under :func:`rank0_buffers`, save every rank's buffers with the run
    (:class:`~warpadapt.uda.run.RunState`), and ``model.norm=sync`` makes them global.

    >>> m = nn.Linear(2, 2); wrap_ddp(m, DistInfo()) is m
    True
    """
    if not info.enabled:
        return model
    import inspect

    ids = [info.device.index] if info.device.type == "cuda" else None
    # newer PyTorch renames the switch (forward_sync_buffers; rank 0's buffers still reach every rank at init)
    new_name = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": broadcast_buffers}
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters, **sync)
    with torch.no_grad():  # every rank starts from rank 0's buffers whatever the version does at init
        for b in model.buffers():
            dist.broadcast(b, src=0)
    return ddp


def grad_sync(model: nn.Module, sync: bool):
    """The context of one forward + backward of a step with several: ``sync=False`` keeps DDP from
    all-reducing the gradients (``model.no_sync()``: they accumulate on this rank), ``sync=True`` (the
    step's LAST backward) all-reduces the accumulated sum once. A no-op for a module that is not DDP.

    >>> m = nn.Linear(2, 1)
    >>> with grad_sync(m, sync=False):
    ...     m(torch.ones(1, 2)).sum().backward()
    >>> m.weight.grad.tolist()
    [[1.0, 1.0]]
    """
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return model.no_sync()


@contextmanager
def rank0_buffers(*modules: nn.Module, info: DistInfo):
    """Inside: every rank's ``modules`` hold rank 0's buffers (BatchNorm running statistics); on exit each
    rank gets its own back. Evaluation runs in here, so a sharded evaluation scores ONE model (rank 0's,
    the one the checkpoint holds) and the training state of the other ranks is left as it was (a
    resumed run stays exact). A no-op in a single process.

    >>> bn = nn.BatchNorm1d(2)
    >>> with rank0_buffers(bn, info=DistInfo()):
    ...     bn.running_mean.tolist()
    [0.0, 0.0]
    """
    if not info.enabled:
        yield
        return
    bufs = [b for m in modules for b in unwrap(m).buffers()]
    own = [b.detach().clone() for b in bufs]
    with torch.no_grad():
        for b in bufs:
            dist.broadcast(b, src=0)
    try:
        yield
    finally:
        with torch.no_grad():
            for b, o in zip(bufs, own):
                b.copy_(o)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters, names and exact bytes in order: equal
    digests mean bit-identical weights (the ranks of a DDP run must agree). Reads every tensor on the
    host: call it at the end of a run, not per step.

    >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    >>> _ = b.load_state_dict(a.state_dict()); weights_digest(a) == weights_digest(b)
    True
    >>> with torch.no_grad(): _ = b.weight.view(-1)[0].add_(1e-7)
    >>> weights_digest(a) == weights_digest(b)
    False
    """
    h = hashlib.sha256()
    for name, t in unwrap(module).named_parameters():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or the module itself).

    >>> m = nn.Linear(2, 2); unwrap(m) is m
    True
    """
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
