"""Segmentation items prepared for training: resized, quantised, with their guidance boxes.

:class:`Prepared` wraps a dataset that follows the sample contract (:mod:`warpadapt.data`), e.g.
:class:`~warpadapt.data.pairs.SyntheticDrivingDataset` or
:class:`~warpadapt.data.segmentation_readers.CityscapesSegmentation`; :func:`collate_segmentation`
batches its items. The real-resolution options (keep-ratio ``scale``, labels kept at their own
resolution for evaluation, a random crop / flip ``view`` per draw) are those of DAFormer / MIC
(:mod:`warpadapt.data.pipeline`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import boxes_from_instance_map, boxes_from_semantic
from .labels import IGNORE_INDEX
from .pipeline import TrainView, as_size, rescale_size, resize_image, resize_labels
from .segmentation_readers import label_ids_to_train_ids

__all__ = ["Prepared", "collate_segmentation"]


def _key(key) -> tuple[int, int]:
    """``i`` or ``(i, draw)`` -> ``(i, draw)`` (a plain index is draw 0)."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"Prepared: expected an index or an (index, draw) pair, got {key!r}")
        return int(key[0]), int(key[1])
    return int(key), 0


class Prepared(torch.utils.data.Dataset):
    """``dataset[i]`` resized with the guidance boxes from its label maps, memoised if ``cache``; a train view per draw.

    Boxes: one box per instance of the instance map where the data has one (instance ids
    ``class * 1000 + k``; classes >= 24 are Cityscapes label ids and are mapped to train ids, smaller
    ones are train ids), else one box per connected component of each thing class of the semantic
    map; only the classes ``thing_ids`` give boxes. Images are quantised to uint8 (what a PNG on disk
    holds), so a cached and a fresh item are the same.

    Resizing, once per item (before the cache), one of:

    - ``size=(h, w)``: every item to that size, aspect ratio ignored; the image bilinearly with
      antialiasing (the behaviour before ``scale`` existed);
    - ``scale=(W, H)``: mmseg's ``Resize(img_scale=(W, H), keep_ratio=True)``
      (:func:`~warpadapt.data.pipeline.rescale_size`: Cityscapes 2048 x 1024 at ``(1024, 512)`` -> 1024 x
      512), the image bilinearly like OpenCV (no antialiasing);
    - neither: items keep their own size.

    The label maps are resized with nearest neighbour (label values are kept) and the boxes are
    computed on the resized maps. ``keep_labels=True`` stores the ORIGINAL semantic map instead of the
    resized one (evaluation at the label's own resolution; the image and its boxes are resized). An item
    without ``semantic`` gets an all-ignore (255) map; without ``instance``, the boxes come from the
    semantic map.

    ``view`` (a :class:`~warpadapt.data.pipeline.TrainView`: random crop, flip, pad) is applied to the
    stored item on every read, AFTER the cache (the cache holds whole resized uint8 items). Its window
    and flip depend on ``(seed, draw, index)`` only: ``ds[(i, draw)]`` reads draw ``draw`` of item ``i``
    and ``ds[i]`` is ``ds[(i, 0)]``. Training loops pass the draw number of
    :class:`~warpadapt.data.pipeline.DrawKeys` (:func:`warpadapt.uda.build.segmentation_loader`); a plain
    index stream would crop each item the same way every epoch. Without a view the draw is ignored.

    Args:
        dataset: a dataset whose items have ``image`` float (3, H, W) in [0, 1] and optionally
            ``semantic`` integer (H, W) train ids (255 = ignore) and ``instance`` integer (H, W) ids.
        size: ``(h, w)`` of the prepared items, or None (then ``scale``, or no resize).
        thing_ids: the train ids whose objects give boxes (e.g.
            :func:`~warpadapt.data.labels.guidance_train_ids`).
        cache: memoise each prepared item (uint8 image and semantic map, boxes) in memory.
        scale: ``(W, H)`` keep-ratio target (mmseg's ``img_scale`` order); not with ``size``.
        keep_labels: keep ``semantic`` at the dataset's resolution (evaluation sets); not with ``view``.
        view: the per-draw training view, or None.

    Items are dicts with ``image`` float32 (3, h, w) in [0, 1], multiples of 1/255; ``semantic``
    int64 (h, w) train ids, 255 = ignore (with ``keep_labels``: (H, W), the dataset's size);
    ``boxes`` float32 (N, 4) xyxy pixels of the returned image; with a ``view`` also ``view``
    (``{"crop": (y1, y2, x1, x2), "flip": bool}``, the window in the stored item's pixels).

    Example:
        >>> from warpadapt.data import SyntheticDrivingDataset, get_pair, guidance_train_ids
        >>> raw = SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(64, 128), length=2)
        >>> ds = Prepared(raw, (32, 64), guidance_train_ids("synthetic"), cache=True)
        >>> item = ds[0]
        >>> len(ds), item["image"].shape, item["image"].dtype, item["semantic"].dtype, item["boxes"].shape[1]
        (2, torch.Size([3, 32, 64]), torch.float32, torch.int64, 4)
        >>> val = Prepared(raw, None, guidance_train_ids("synthetic"), cache=False, scale=(64, 32), keep_labels=True)
        >>> val[0]["image"].shape, val[0]["semantic"].shape  # the model's input at the scale, the labels as they are
        (torch.Size([3, 32, 64]), torch.Size([64, 128]))
        >>> from warpadapt.data.pipeline import TrainView
        >>> train = Prepared(raw, None, guidance_train_ids("synthetic"), cache=True, view=TrainView((48, 48), seed=0))
        >>> train[(1, 7)]["image"].shape, train[(1, 7)]["view"] == train[(1, 7)]["view"]
        (torch.Size([3, 48, 48]), True)
    """

    def __init__(self, dataset, size, thing_ids, cache: bool, *, scale=None, keep_labels: bool = False,
                 view: TrainView | None = None):
        self.dataset, self.thing_ids = dataset, tuple(thing_ids)
        self.size = as_size(size, "size")
        self.scale = as_size(scale, "scale", order="(W, H)")
        if self.size is not None and self.scale is not None:
            raise ValueError(f"scale: give a fixed size or a keep-ratio scale, not both (size={self.size}, "
                             f"scale={self.scale})")
        if view is not None and not isinstance(view, TrainView):
            raise TypeError(f"view: expected a warpadapt.data.pipeline.TrainView or None, got {type(view).__name__}")
        if view is not None and keep_labels:
            raise ValueError("keep_labels: the original-resolution labels are for evaluation sets; a view crops "
                             "the resized item (use one or the other)")
        self.keep_labels, self.view = bool(keep_labels), view
        self.cache = {} if cache else None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        i, draw = _key(key)
        item = self._stored(i)
        if self.view is not None:
            item = self.view(item, i, draw)
        return {**item, "image": item["image"].float() / 255, "semantic": item["semantic"].long()}

    def _stored(self, i):
        item = self.cache.get(i) if self.cache is not None else None
        if item is None:
            item = self.prepare(self.dataset[i])
            if self.cache is not None:
                self.cache[i] = item
        return item

    def whole(self, i: int) -> dict:
        """Item ``i`` as stored, without the training view (resized, the whole image; e.g. class statistics
        over the full label maps, as DAFormer's rare-class sampling counts them).

        >>> from warpadapt.data.pipeline import TrainView
        >>> ds = Prepared([{"image": torch.zeros(3, 40, 80)}], None, (), False, view=TrainView((32, 32)))
        >>> ds[0]["semantic"].shape, ds.whole(0)["semantic"].shape
        (torch.Size([32, 32]), torch.Size([40, 80]))
        """
        item = self._stored(i)
        return {**item, "image": item["image"].float() / 255, "semantic": item["semantic"].long()}

    def target_size(self, size) -> tuple[int, int]:
        """The ``(h, w)`` an item of ``size`` (H, W) is stored at.

        >>> Prepared([], None, (), False, scale=(1024, 512)).target_size((1024, 2048))
        (512, 1024)
        """
        if self.size is not None:
            return self.size
        if self.scale is not None:
            return rescale_size(size, self.scale)
        return tuple(size)

    def prepare(self, s):
        """The stored form of sample ``s``: ``image`` uint8 (3, h, w), ``semantic`` uint8 (h, w), ``boxes``."""
        image = s["image"]
        sem = s.get("semantic", torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.long))
        labels = {"semantic": sem, "instance": s.get("instance")}
        h, w = self.target_size(tuple(image.shape[-2:]))
        resized = labels
        if image.shape[-2:] != (h, w):
            if self.size is not None:  # the fixed size: antialiased, as before scale existed
                image = F.interpolate(image[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
            else:  # mmseg / OpenCV bilinear
                image = resize_image(image, (h, w), antialias=False)
            resized = {k: resize_labels(v, (h, w)) for k, v in labels.items()}
        if resized["instance"] is not None:  # ids >= 24 are Cityscapes label ids, smaller ones train ids
            boxes, _ = boxes_from_instance_map(resized["instance"], 1000, self.thing_ids,
                                               class_of=lambda c: torch.where(c >= 24, label_ids_to_train_ids(c), c))
        else:
            boxes, _ = boxes_from_semantic(resized["semantic"], self.thing_ids)
        semantic = labels["semantic"] if self.keep_labels else resized["semantic"]
        return {"image": (image.clamp(0, 1) * 255).round().to(torch.uint8),  # uint8 in memory, like PNG files
                "semantic": semantic.to(torch.uint8), "boxes": boxes}  # train ids and 255 fit in uint8


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
