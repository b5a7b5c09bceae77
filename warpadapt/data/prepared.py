"""Segmentation items prepared for training: resized, quantised, with their guidance boxes.

:class:`Prepared` wraps a dataset that follows the sample contract (:mod:`warpadapt.data`), e.g.
:class:`~warpadapt.data.pairs.SyntheticDrivingDataset` or
:class:`~warpadapt.data.segmentation_readers.CityscapesSegmentation`; :func:`collate_segmentation`
batches its items.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import boxes_from_instance_map, boxes_from_semantic
from .labels import IGNORE_INDEX
from .segmentation_readers import label_ids_to_train_ids

__all__ = ["Prepared", "collate_segmentation"]


class Prepared(torch.utils.data.Dataset):
    """``dataset[i]`` resized to ``size`` with the guidance boxes from its label maps, memoised if ``cache``.

    Boxes: one box per instance of the instance map where the data has one (instance ids
    ``class * 1000 + k``; classes >= 24 are Cityscapes label ids and are mapped to train ids, smaller
    ones are train ids), else one box per connected component of each thing class of the semantic
    map; only the classes ``thing_ids`` give boxes. Images are quantised to uint8 (what a PNG on disk
    holds), so a cached and a fresh item are the same.

    Resizing (when the item's size is not ``size``): the image bilinearly with antialiasing, the label
    maps with nearest neighbour (label values are kept); the boxes are computed on the resized maps.
    An item without ``semantic`` gets an all-ignore (255) map; without ``instance``, the boxes come
    from the semantic map.

    Args:
        dataset: a dataset whose items have ``image`` float (3, H, W) in [0, 1] and optionally
            ``semantic`` integer (H, W) train ids (255 = ignore) and ``instance`` integer (H, W) ids.
        size: ``(h, w)`` of the prepared items.
        thing_ids: the train ids whose objects give boxes (e.g.
            :func:`~warpadapt.data.labels.guidance_train_ids`).
        cache: memoise each prepared item (uint8 image and semantic map, boxes) in memory.

    Items are dicts with ``image`` float32 (3, h, w) in [0, 1], multiples of 1/255; ``semantic``
    int64 (h, w) train ids, 255 = ignore; ``boxes`` float32 (N, 4) xyxy pixels of the resized image.

    Example:
        >>> from warpadapt.data import SyntheticDrivingDataset, get_pair, guidance_train_ids
        >>> raw = SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(64, 128), length=2)
        >>> ds = Prepared(raw, (32, 64), guidance_train_ids("synthetic"), cache=True)
        >>> item = ds[0]
        >>> len(ds), item["image"].shape, item["image"].dtype, item["semantic"].dtype, item["boxes"].shape[1]
        (2, torch.Size([3, 32, 64]), torch.float32, torch.int64, 4)
    """

    def __init__(self, dataset, size, thing_ids, cache: bool):
        self.dataset, self.size, self.thing_ids = dataset, tuple(size), tuple(thing_ids)
        self.cache = {} if cache else None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.cache.get(i) if self.cache is not None else None
        if item is None:
            item = self.prepare(self.dataset[i])
            if self.cache is not None:
                self.cache[i] = item
        return {**item, "image": item["image"].float() / 255, "semantic": item["semantic"].long()}

    def prepare(self, s):
        """The stored form of sample ``s``: ``image`` uint8 (3, h, w), ``semantic`` uint8 (h, w), ``boxes``."""
        image, h, w = s["image"], *self.size
        sem = s.get("semantic", torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.long))
        labels = {"semantic": sem, "instance": s.get("instance")}
        if image.shape[-2:] != (h, w):
            image = F.interpolate(image[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
            labels = {k: None if v is None else F.interpolate(v[None, None].float(), (h, w), mode="nearest")[0, 0].long()
                      for k, v in labels.items()}
        if labels["instance"] is not None:  # ids >= 24 are Cityscapes label ids, smaller ones train ids
            boxes, _ = boxes_from_instance_map(labels["instance"], 1000, self.thing_ids,
                                               class_of=lambda c: torch.where(c >= 24, label_ids_to_train_ids(c), c))
        else:
            boxes, _ = boxes_from_semantic(labels["semantic"], self.thing_ids)
        return {"image": (image.clamp(0, 1) * 255).round().to(torch.uint8),  # uint8 in memory, like PNG files
                "semantic": labels["semantic"].to(torch.uint8), "boxes": boxes}  # train ids and 255 fit in uint8


def collate_segmentation(items):
    """Batch :class:`Prepared` items (all of the same size).

    Returns a dict with ``images`` float32 (B, 3, h, w), ``semantic`` int64 (B, h, w) and ``boxes``
    a list of B float32 (N_i, 4) tensors (the number of boxes differs between images).

    Example:
        >>> from warpadapt.data import SyntheticDrivingDataset, get_pair, guidance_train_ids
        >>> raw = SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(64, 128), length=2)
        >>> ds = Prepared(raw, (64, 128), guidance_train_ids("synthetic"), cache=False)
        >>> batch = collate_segmentation([ds[0], ds[1]])
        >>> batch["images"].shape, batch["semantic"].shape, batch["semantic"].dtype, len(batch["boxes"])
        (torch.Size([2, 3, 64, 128]), torch.Size([2, 64, 128]), torch.int64, 2)
    """
    return {"images": torch.stack([it["image"] for it in items]),
            "semantic": torch.stack([it["semantic"] for it in items]), "boxes": [it["boxes"] for it in items]}
