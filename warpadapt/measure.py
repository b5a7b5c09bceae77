"""Measurements that are not pictures: how much of an image objects cover, before and after a warp.

No matplotlib here (:mod:`warpadapt.viz` re-exports these for the pictures' titles), so benchmarks,
recipes and tests can measure without a plotting stack.

Example:
    >>> import torch
    >>> from warpadapt import SaliencyWarp
    >>> boxes = torch.tensor([[40., 20., 60., 40.]])
    >>> _, warp = SaliencyWarp()(torch.rand(1, 3, 64, 128), [boxes])
    >>> pixel_share(boxes, (64, 128)) < pixel_share(boxes, (64, 128), warp)
    True
"""

from __future__ import annotations

import numpy as np
import torch

from ._utils import as_size
from .warp import Warp

__all__ = ["pixel_share", "box_union_area"]


def _as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    if isinstance(boxes, torch.Tensor):
        arr = boxes.detach().to("cpu").float().numpy()
    else:
        try:
            arr = np.asarray(boxes, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: expected an (N, 4) array of xyxy boxes, got {type(boxes).__name__}") from e
    if arr.size == 0:
        return np.zeros((0, 4), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4) xyxy, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite coordinates")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError(f"{name}: expected xyxy boxes with x2 >= x1 and y2 >= y1")
    return arr


def _one_warp(warp, index: int, name: str = "warp") -> Warp:
    if not isinstance(warp, Warp):
        raise ValueError(f"{name}: expected a warpadapt.Warp, got {type(warp).__name__}")
    if not -warp.batch_size <= index < warp.batch_size:
        raise ValueError(f"index: {index} out of range for a warp of batch size {warp.batch_size}")
    return warp[index].detach().to("cpu")


def pixel_share(boxes=None, image_size=None, warp: Warp | None = None, mask=None, index: int = 0) -> float:
    """Fraction of image pixels covered by objects, before or after a warp.

    Objects are the union of ``boxes`` (its exact area; after the warp the boxes are
    mapped with :meth:`Warp.forward_boxes`, exact for a separable warp) or a boolean ``mask``
    ((H, W), e.g. ``instance > 0``; warped with nearest sampling).

    Args:
        boxes: (N, 4) xyxy pixels (ignored when ``mask`` is given).
        image_size: (H, W) (an int n means (n, n)); taken from ``mask`` when it is given.
        warp: a :class:`~warpadapt.Warp`, or None for the share in the original image.
        mask: optional (H, W) boolean / 0-1 object mask.
        index: which image of a batched ``warp``.

    Returns:
        the share in [0, 1].

    Example:
        >>> pixel_share(torch.tensor([[0., 0., 32., 16.]]), (64, 64))
        0.125
    """
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.dim() != 2:
            raise ValueError(f"mask: expected an (H, W) array, got shape {tuple(m.shape)}")
        m = (m != 0).float()[None, None]
        if warp is not None:
            m = _one_warp(warp, index).apply(m, mode="nearest")
        return float(m.mean())
    h, w = as_size(image_size, "image_size")
    b = _as_boxes(boxes)
    if warp is not None and len(b):
        b = _one_warp(warp, index).forward_boxes([torch.from_numpy(b)], (h, w))[0].numpy()
    return box_union_area(np.clip(b, 0, [w, h, w, h])) / (h * w)


def box_union_area(boxes) -> float:
    """Exact area (square pixels) of the union of xyxy boxes, by coordinate compression.

    Args:
        boxes: (N, 4) xyxy boxes (tensor, array or list of 4-lists).

    Example:
        >>> box_union_area([[0., 0., 10., 10.], [5., 5., 15., 15.]])  # 100 + 100 - 25
        175.0
    """
    b = _as_boxes(boxes)
    if len(b) == 0:
        return 0.0
    xs, ys = np.unique(b[:, [0, 2]]), np.unique(b[:, [1, 3]])
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inx = (b[:, 0, None] <= cx) & (cx <= b[:, 2, None])  # (N, nx - 1)
    iny = (b[:, 1, None] <= cy) & (cy <= b[:, 3, None])  # (N, ny - 1)
    covered = (iny[:, :, None] & inx[:, None, :]).any(0)
    return float((np.diff(ys)[:, None] * np.diff(xs)[None, :] * covered).sum())
