"""Boxes from label maps: the guidance boxes of segmentation data (semantic or instance-id maps).

:func:`boxes_from_semantic` boxes the connected components of the "thing" classes of a semantic map;
:func:`boxes_from_instance_map` boxes every instance of a Cityscapes-encoded instance-id map. Both
return float32 (N, 4) xyxy boxes covering whole pixels (what :func:`warpadapt.instance_saliency`
takes) and int64 (N,) class ids. The default classes are the Cityscapes things (train ids 11-18,
:data:`warpadapt.data.labels.CITYSCAPES_THING_TRAIN_IDS`); other kinds of data:
:func:`warpadapt.data.labels.guidance_train_ids`. Both are re-exported as ``warpadapt.boxes_from_semantic``
and ``warpadapt.boxes_from_instance_map``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from .labels import CITYSCAPES_THING_TRAIN_IDS

__all__ = ["boxes_from_semantic", "boxes_from_instance_map"]


def _boxes_from_label_array(lab: np.ndarray, ids: Iterable[int], connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out_boxes, out_labels = [], []
    for cls in ids:
        comp, n = ndimage.label(lab == cls, structure=structure)
        if n == 0:
            continue
        for sl in ndimage.find_objects(comp):
            if sl is None:
                continue
            ys, xs = sl
            out_boxes.append((xs.start, ys.start, xs.stop, ys.stop))
            out_labels.append(cls)
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return np.asarray(out_boxes, np.float32), np.asarray(out_labels, np.int64)


def boxes_from_semantic(
    semantic: Tensor | np.ndarray,
    thing_classes: Iterable[int] = CITYSCAPES_THING_TRAIN_IDS,
    connectivity: int = 8,
    min_area: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Boxes of the connected components of the "thing" classes of a semantic label map.

    A box covers whole pixels: a component spanning columns 3..5 gives x1 = 3, x2 = 6. Boxes whose
    area is below ``min_area`` square pixels are dropped.

    Args:
        semantic: (H, W) integer label map (e.g. Cityscapes train ids; 255 = ignore).
        thing_classes: the class ids that are objects (default Cityscapes 11-18; other kinds of data:
            :func:`warpadapt.data.labels.guidance_train_ids`).
        connectivity: 4 or 8 neighbours.
        min_area: smallest kept box area in pixels.

    Returns:
        ``(boxes, labels)``: float32 (N, 4) xyxy and int64 (N,) class ids.

    Example:
        >>> sem = torch.zeros(6, 8, dtype=torch.long); sem[1:3, 2:5] = 13; sem[4:6, 6:8] = 11
        >>> b, l = boxes_from_semantic(sem)
        >>> b.tolist(), l.tolist()
        ([[6.0, 4.0, 8.0, 6.0], [2.0, 1.0, 5.0, 3.0]], [11, 13])
        >>> from warpadapt.data.labels import guidance_train_ids
        >>> sem[0, 0] = 7  # a traffic sign: an object of the synthetic data, not a Cityscapes thing
        >>> boxes_from_semantic(sem)[1].tolist(), boxes_from_semantic(sem, guidance_train_ids("synthetic"))[1].tolist()
        ([11, 13], [7, 11, 13])
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    arr = semantic.detach().cpu().numpy() if isinstance(semantic, Tensor) else np.asarray(semantic)
    if arr.ndim != 2:
        raise ValueError(f"semantic must be a 2-D (H, W) label map, got shape {arr.shape}")
    boxes, labels = _boxes_from_label_array(arr, sorted({int(c) for c in thing_classes}), connectivity)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = area >= min_area
    return torch.from_numpy(boxes[keep]), torch.from_numpy(labels[keep])


def boxes_from_instance_map(
    instance: Tensor | np.ndarray,
    label_divisor: int = 1000,
    thing_classes: Iterable[int] | None = CITYSCAPES_THING_TRAIN_IDS,
    class_of=None,
) -> tuple[Tensor, Tensor]:
    """Tight boxes of every instance in an instance-id map (Cityscapes encoding).

    Pixels with id >= ``label_divisor`` belong to instance ``id``, of class ``id // label_divisor``;
    smaller ids are "stuff" or crowds and are skipped. Vectorised (one scatter-reduce, no loop).

    Args:
        instance: (H, W) integer instance-id map.
        label_divisor: class = id // label_divisor (Cityscapes: 1000).
        thing_classes: keep only these classes (None keeps all).
        class_of: optional callable mapping a tensor of raw classes ``id // label_divisor`` to the class
            ids used for ``thing_classes`` and the returned labels (e.g. Cityscapes label ids -> train ids).

    Returns:
        ``(boxes, labels)``: float32 (N, 4) xyxy covering whole pixels, int64 (N,) class ids, sorted by id.

    Example:
        >>> inst = torch.zeros(4, 6, dtype=torch.long); inst[1:3, 1:4] = 13000; inst[0, 5] = 11001
        >>> b, l = boxes_from_instance_map(inst)
        >>> b.tolist(), l.tolist()
        ([[5.0, 0.0, 6.0, 1.0], [1.0, 1.0, 4.0, 3.0]], [11, 13])
    """
    shape = tuple(instance.shape) if isinstance(instance, Tensor) else np.shape(instance)
    if len(shape) != 2:
        raise ValueError(f"instance must be a 2-D (H, W) id map, got shape {shape}")
    h, w = shape
    if isinstance(instance, Tensor):
        flat = instance.long().reshape(-1)
        pix = torch.nonzero(flat >= label_divisor).squeeze(1)
        values = flat[pix]
    else:  # select in numpy: the torch ops below then see the object pixels only (no thread pool wake-up)
        flat_np = np.asarray(instance).astype(np.int64, copy=False).reshape(-1)
        pix_np = np.flatnonzero(flat_np >= label_divisor)
        pix, values = torch.from_numpy(pix_np), torch.from_numpy(flat_np[pix_np])
    if pix.numel() == 0:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    ids, inv = torch.unique(values, return_inverse=True)
    ys, xs = (pix // w).float(), (pix % w).float()
    n = ids.numel()
    big = float(max(h, w) + 1)
    x1 = torch.full((n,), big).scatter_reduce(0, inv, xs, "amin")
    y1 = torch.full((n,), big).scatter_reduce(0, inv, ys, "amin")
    x2 = torch.full((n,), -1.0).scatter_reduce(0, inv, xs, "amax") + 1
    y2 = torch.full((n,), -1.0).scatter_reduce(0, inv, ys, "amax") + 1
    boxes = torch.stack([x1, y1, x2, y2], 1)
    labels = ids // label_divisor
    if class_of is not None:
        labels = torch.as_tensor(class_of(labels), dtype=torch.long)
    if thing_classes is not None:
        keep = torch.isin(labels, torch.tensor(list(thing_classes), dtype=torch.long))
        boxes, labels = boxes[keep], labels[keep]
    return boxes, labels
