"""Rare-class sampling (DAFormer, CVPR 2022): source images drawn so that rare classes come up more often.

DAFormer's ``UDADataset`` (lhoyer/DAFormer ``mmseg/datasets/uda_dataset.py``, ``get_rcs_class_probs``
and ``get_rare_class_sample``) counts the pixels of every class over the source training labels,
turns the class frequencies ``f_c`` into sampling probabilities ``P(c) = softmax((1 - f_c) / T)``
(T = 0.01; classes with no pixel are never drawn), and builds each source sample by drawing a class
``c ~ P``, then an image uniformly among those holding more than ``min_pixels`` pixels of ``c``
(3000 on Cityscapes' 2048 x 1024 label maps).

:class:`RareClassSampler` yields batches of such indices with :class:`~warpadapt.uda.data.InfiniteSampler`'s
contract: step ``s`` of rank ``r`` depends only on ``(seed, s, r)``, so a resumed run passes
``start_step`` and sees the batches it would have seen. :func:`rare_class_loader` is the matching
endless loader (what :func:`~warpadapt.uda.data.infinite_loader` is for the uniform stream).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .dist import DistInfo

__all__ = ["class_pixel_counts", "rcs_class_probs", "RareClassSampler", "rare_class_loader"]


def class_pixel_counts(labels: Iterable[Tensor], num_classes: int) -> Tensor:
    """Pixels of each class in each label map: (N, K) int64 (other values, e.g. the ignore label, uncounted).

    Args:
        labels: N integer label maps (any shape), e.g. ``(ds[i]["semantic"] for i in range(len(ds)))``;
            DAFormer counts the full label files, before any crop.
        num_classes: K.

    Example:
        >>> class_pixel_counts([torch.tensor([[0, 0, 255], [2, 2, 2]])], 3).tolist()
        [[2, 0, 3]]
    """
    rows = []
    for lab in labels:
        lab = torch.as_tensor(lab).reshape(-1).long()
        lab = lab[(lab >= 0) & (lab < num_classes)]
        rows.append(torch.bincount(lab, minlength=num_classes)[:num_classes])
    if not rows:
        raise ValueError("labels: expected at least one label map, got none")
    return torch.stack(rows)


def rcs_class_probs(counts: Tensor, temperature: float = 0.01) -> Tensor:
    """DAFormer's class probabilities ``softmax((1 - f_c) / T)``, ``f_c`` = share of the pixels of class c.

    Args:
        counts: (K,) pixels per class, or (N, K) per image (summed over images).
        temperature: T (DAFormer: 0.01); smaller T puts more weight on the rarest classes.

    Returns:
        (K,) float64 probabilities; classes without pixels get 0 (DAFormer's statistics never list them).

    Example:
        >>> p = rcs_class_probs(torch.tensor([75, 25, 0]), temperature=1.0)  # f = 0.75, 0.25
        >>> [round(v, 4) for v in p.tolist()]  # softmax(0.25, 0.75) over the two present classes
        [0.3775, 0.6225, 0.0]
    """
    if not float(temperature) > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    counts = torch.as_tensor(counts, dtype=torch.float64)
    counts = counts.sum(0) if counts.dim() == 2 else counts
    if counts.dim() != 1 or not bool((counts >= 0).all()) or not float(counts.sum()) > 0:
        raise ValueError("counts: expected non-negative (K,) or (N, K) pixel counts with at least one pixel")
    logits = (1.0 - counts / counts.sum()) / float(temperature)
    return torch.softmax(logits.masked_fill(counts == 0, float("-inf")), dim=0)


class RareClassSampler(Sampler):
    """Yields one list of ``batch_size`` source indices per step, forever, drawn by rare-class sampling.

    Each index: a class ``c ~ P`` (:func:`rcs_class_probs`), then an image uniformly among those with
    more than ``min_pixels`` pixels of ``c`` (all images holding ``c`` when none has that many).
    Draws with replacement, from a generator seeded with ``(seed, step, rank)``.

    Args:
        counts: (N, K) pixels per class per image (:func:`class_pixel_counts`).
        batch_size: indices per step and rank.
        seed: the stream's seed.
        rank: this process's rank (world size does not matter: ranks draw independently).
        start_step: the first step to yield (resume).
        temperature: T (DAFormer: 0.01).
        min_pixels: DAFormer's ``min_pixels`` at the resolution of ``counts`` (3000 at 2048 x 1024).

    >>> counts = torch.tensor([[100, 0], [100, 0], [90, 10]])  # class 1 only in image 2
    >>> s = iter(RareClassSampler(counts, 4, seed=0, temperature=0.01))
    >>> next(s)  # class 1 is rare: nearly every draw is image 2
    [2, 2, 2, 2]
    >>> a = iter(RareClassSampler(counts, 2, seed=1, temperature=1.0))
    >>> b = iter(RareClassSampler(counts, 2, seed=1, temperature=1.0, start_step=2))  # resume at step 2
    >>> _ = next(a), next(a); next(a) == next(b)
    True
    """

    def __init__(self, counts: Tensor, batch_size: int, seed: int = 0, rank: int = 0, start_step: int = 0,
                 temperature: float = 0.01, min_pixels: float = 0) -> None:
        for name, v, lo in (("batch_size", batch_size, 1), ("rank", rank, 0), ("start_step", start_step, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        counts = torch.as_tensor(counts)
        if counts.dim() != 2:
            raise ValueError(f"counts: expected (N, K) pixel counts per image, got shape {tuple(counts.shape)}")
        self.probs = rcs_class_probs(counts, temperature).numpy()
        self.classes = np.flatnonzero(self.probs > 0)
        self.images = {}  # class -> the images it is drawn from
        for c in self.classes.tolist():
            eligible = torch.nonzero(counts[:, c] > min_pixels).flatten()
            self.images[c] = (eligible if len(eligible) else torch.nonzero(counts[:, c] > 0).flatten()).numpy()
        self.batch_size, self.seed, self.rank, self.start_step = batch_size, int(seed), rank, start_step

    def batch(self, step: int) -> list[int]:
        """The indices of step ``step`` (a function of (seed, step, rank) only)."""
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        p = self.probs[self.classes]
        drawn = rng.choice(self.classes, size=self.batch_size, p=p / p.sum())
        return [int(self.images[c][rng.integers(len(self.images[c]))]) for c in drawn.tolist()]

    def __iter__(self) -> Iterator[list]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def rare_class_loader(dataset: Dataset, batch_size: int, counts: Tensor, *, seed: int = 0,
                      info: DistInfo | None = None, start_step: int = 0, collate_fn: Callable | None = None,
                      num_workers: int = 0, temperature: float = 0.01, min_pixels: float = 0) -> Iterator:
    """Endless batches of ``dataset`` drawn by :class:`RareClassSampler`, for this rank, from ``start_step``.

    Takes :func:`~warpadapt.uda.data.infinite_loader`'s arguments plus the class statistics. The
    loader has its own generator, so creating it does not consume the global torch RNG.

    >>> ds = torch.utils.data.TensorDataset(torch.arange(3.0))
    >>> it = rare_class_loader(ds, 2, torch.tensor([[5, 0], [5, 0], [4, 1]]), seed=0)
    >>> next(it)[0].tolist()
    [2.0, 2.0]
    """
    info = info or DistInfo()
    sampler = RareClassSampler(counts, batch_size, seed, info.rank, start_step, temperature, min_pixels)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(int(seed) + info.rank),
                        persistent_workers=num_workers > 0)
    return iter(loader)
