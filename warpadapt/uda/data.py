"""Resumable, rank-sharded, endless batches for iteration-based training loops.

The index stream is the concatenation of per-epoch permutations, epoch ``e`` drawn from
``(seed, e)``; step ``s`` of rank ``r`` reads the ``batch_size`` indices at position
``(s * world_size + r) * batch_size`` of that stream. So the batches depend only on (seed, step,
rank, world size): a resumed run passes ``start_step`` and sees exactly the batches it would have
seen, and the ranks of one step never share an index within an epoch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .dist import DistInfo

__all__ = ["InfiniteSampler", "infinite_loader"]


class InfiniteSampler(Sampler):
    """Yields one list of ``batch_size`` dataset indices per step, forever, from ``start_step`` on.

    Args:
        length: dataset length (> 0).
        batch_size: indices per step and rank.
        seed: seeds the epoch permutations.
        rank, world_size: this process's shard.
        start_step: the first step to yield (resume).
        shuffle: False streams 0, 1, 2, ... in order.

    >>> s = iter(InfiniteSampler(5, 2, seed=0, shuffle=False))
    >>> [next(s) for _ in range(3)]
    [[0, 1], [2, 3], [4, 0]]
    >>> a = iter(InfiniteSampler(10, 3, seed=1)); b = iter(InfiniteSampler(10, 3, seed=1, start_step=2))
    >>> _ = next(a), next(a); next(a) == next(b)
    True
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start_step: int = 0, shuffle: bool = True) -> None:
        for name, v, lo in (("length", length, 1), ("batch_size", batch_size, 1),
                            ("world_size", world_size, 1), ("start_step", start_step, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank!r}")
        self.length, self.batch_size, self.seed = length, batch_size, int(seed)
        self.rank, self.world_size, self.start_step, self.shuffle = rank, world_size, start_step, shuffle

    def _epoch(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.length)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.length, generator=g)

    def __iter__(self) -> Iterator[list]:
        step = self.start_step
        cached_epoch, perm = -1, None
        while True:
            start = (step * self.world_size + self.rank) * self.batch_size
            batch = []
            for pos in range(start, start + self.batch_size):
                epoch, offset = divmod(pos, self.length)
                if epoch != cached_epoch:  # one host list per epoch, not a tensor read per index
                    cached_epoch, perm = epoch, self._epoch(epoch).tolist()
                batch.append(perm[offset])
            yield batch
            step += 1


def infinite_loader(dataset: Dataset, batch_size: int, *, seed: int = 0, info: DistInfo | None = None,
                    start_step: int = 0, collate_fn: Callable | None = None, num_workers: int = 0,
                    shuffle: bool = True) -> Iterator:
    """Endless batches of ``dataset`` for this rank, starting at ``start_step`` (see module doc); on a CUDA
    ``info.device`` the batches come in pinned memory (copy them with ``non_blocking=True``).

    The loader has its own generator, so creating it does not consume the global torch RNG (a
    resumed run stays bit-identical).

    >>> ds = torch.utils.data.TensorDataset(torch.arange(6.0))
    >>> it = infinite_loader(ds, 4, shuffle=False)
    >>> next(it)[0].tolist(), next(it)[0].tolist()
    ([0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 0.0, 1.0])
    """
    info = info or DistInfo()
    sampler = InfiniteSampler(len(dataset), batch_size, seed, info.rank, info.world_size,
                              start_step, shuffle)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(int(seed) + info.rank),
                        persistent_workers=num_workers > 0,
                        pin_memory=info.device.type == "cuda")  # pinned: .to(device, non_blocking=True)
    return iter(loader)
