"""BatchNorm running statistics: keep them to the forwards they should describe, or re-estimate them.

A BatchNorm layer in training mode normalises with the batch's statistics and folds them into its
running statistics, which are what evaluation (and an EMA teacher in eval mode) normalises with.
Self-training runs the student on images no test image looks like (ClassMix collages with colour
jitter, MIC's images with most patches blacked out): folded in, their statistics pull the running
ones away from real images. ``frozen_bn_stats`` lets such forwards normalise with their own batch
statistics while leaving the running ones as they were; ``recompute_bn_stats`` re-estimates the
running statistics of a trained model from plain images (a cumulative average, "precise BN").
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

from .dist import unwrap

__all__ = ["frozen_bn_stats", "recompute_bn_stats"]

_BN = nn.modules.batchnorm._BatchNorm


def _bn_layers(module: nn.Module) -> list[_BN]:
    return [m for m in unwrap(module).modules() if isinstance(m, _BN) and m.track_running_stats]


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, BatchNorm layers of ``module`` still normalise with batch statistics in training
    mode, but their running mean / variance and batch counter stay as they were. Gradients are unchanged.

    >>> bn = nn.BatchNorm1d(2).train()
    >>> with frozen_bn_stats(bn):
    ...     _ = bn(torch.randn(8, 2) * 5 + 3)
    >>> bn.running_mean.tolist(), bn.running_var.tolist(), int(bn.num_batches_tracked)
    ([0.0, 0.0], [1.0, 1.0], 0)
    >>> _ = bn(torch.full((4, 2), 10.0)); bn.running_mean.tolist()  # outside: updated again
    [1.0, 1.0]
    """
    layers = _bn_layers(module)
    saved = [m.momentum for m in layers]
    counts = [m.num_batches_tracked.clone() for m in layers]
    try:
        for m in layers:  # momentum 0: running = 1 * running + 0 * batch (None would mean a cumulative average)
            m.momentum = 0.0
        yield module
    finally:
        for m, mom, n in zip(layers, saved, counts):
            m.momentum = mom
            m.num_batches_tracked.copy_(n)


@torch.no_grad()
def recompute_bn_stats(module: nn.Module, batches: Iterable[Tensor | tuple | list | dict], forward=None) -> int:
    """Re-estimate the running statistics of every BatchNorm layer in ``module`` from ``batches``:
    reset them, then average the batch statistics of all batches with equal weight (cumulative average).

    Args:
        module: the model (its training / eval mode is restored afterwards; weights are not touched).
        batches: what to run the model on, each a tensor or anything ``forward`` accepts.
        forward: ``forward(module, batch)``; default ``module(batch)``.

    Returns:
        The number of batches used (0 leaves the statistics reset, so it raises instead).

    >>> torch.manual_seed(0) is not None
    True
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    >>> data = [torch.randn(16, 3) for _ in range(4)]
    >>> recompute_bn_stats(net, data)
    4
    >>> expected = torch.stack([net[0](x).mean(0) for x in data]).mean(0)
    >>> torch.allclose(net[1].running_mean, expected)
    True
    """
    layers = _bn_layers(module)
    net = unwrap(module)
    was_training = net.training
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen after the reset
    net.train()
    n = 0
    try:
        for batch in batches:
            if forward is None:
                net(batch)
            else:
                forward(net, batch)
            n += 1
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom
        net.train(was_training)
    if n == 0:
        raise ValueError("batches: expected at least one batch, got none (the running statistics would stay reset)")
    return n
