"""The real-resolution segmentation pipeline of DAFormer / MIC (mmseg): keep-ratio resize, random crop, flip.

What the original runs, step by step (DAFormer's ``uda_cityscapes_to_acdc_512x512`` dataset config), and
where it lives here:

1. ``Resize(img_scale=(W, H), keep_ratio=True)`` per domain (Cityscapes 2048 x 1024 -> 1024 x 512, ACDC /
   Dark Zurich 1920 x 1080 -> 960 x 540): :func:`rescale_size` gives the size, :func:`resize_image` /
   :func:`resize_labels` resize (image bilinear as OpenCV's ``INTER_LINEAR``, labels nearest).
   :class:`~warpadapt.data.prepared.Prepared` does this once per item (``scale=``) and caches the result
   as uint8.
2. ``RandomCrop(crop_size, cat_max_ratio=0.75)`` (source; the target's crop has no ratio test, its labels
   are not loaded), ``RandomFlip(prob=0.5)``, ``Pad(crop_size, seg_pad_val=255)``: :class:`TrainView`,
   applied per draw AFTER the cache, with the guidance boxes moved along (:func:`crop_boxes`,
   :func:`hflip_boxes`).
3. Evaluation: the image resized like training, the logits upsampled to the label's own resolution
   (:func:`warpadapt.uda.evaluate.segmentation_logits`, whole or sliding-window).

Randomness: the crop and flip of a draw come from a numpy Generator seeded with
``(seed..., draw, index)`` (:meth:`TrainView.rng`), nothing global. A training loop passes
``(index, draw)`` keys, ``draw`` = the draw's position in the sampler's stream (:class:`DrawKeys`), so a
resumed run (same stream from ``start_step``) sees exactly the same crops, and DataLoader workers (which
only receive keys) cannot change them.

Sizes follow mmseg's conventions: a *scale* is ``(W, H)`` (``img_scale``), a *crop size* ``(H, W)``.

Example (one Cityscapes-sized item through steps 1-2):
    >>> import torch
    >>> rescale_size((1024, 2048), (1024, 512)), rescale_size((1080, 1920), (960, 540))
    ((512, 1024), (540, 960))
    >>> item = {"image": torch.zeros(3, 512, 1024, dtype=torch.uint8),
    ...         "semantic": torch.zeros(512, 1024, dtype=torch.uint8), "boxes": torch.tensor([[500., 100., 600., 200.]])}
    >>> out = TrainView((512, 512), flip=True, seed=0)(item, index=3, draw=17)
    >>> out["image"].shape, out["semantic"].shape, out["boxes"].shape[1]
    (torch.Size([3, 512, 512]), torch.Size([512, 512]), 4)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import IGNORE_INDEX

__all__ = ["rescale_size", "resize_image", "resize_labels", "crop_boxes", "hflip_boxes", "random_crop_box",
           "TrainView", "DrawKeys", "as_size"]

#: What mmseg's ``Pad`` after ``Normalize`` (pad value 0 in normalised space) is in [0, 1] RGB: the
#: ImageNet mean the models normalise with (``warpadapt.models.segmenter.IMAGENET_MEAN``; not imported
#: here, so the data package stays free of the models).
PAD_RGB = (0.485, 0.456, 0.406)

#: mmseg RandomCrop's number of ratio tests before it takes an untested crop.
CAT_MAX_RATIO_TRIES = 10


def as_size(value, name: str, *, minimum: int = 1, order: str = "(h, w)") -> tuple[int, int] | None:
    """``value`` as a pair of ints >= ``minimum`` (None stays None), else a ValueError naming ``name``.

    >>> as_size([512, 1024], "crop_size")
    (512, 1024)
    >>> as_size([512], "data.crop_size", order="[H, W]")
    Traceback (most recent call last):
    ...
    ValueError: data.crop_size: expected [H, W], two ints >= 1, got [512]
    """
    if value is None:
        return None
    pair = None if isinstance(value, str) or not hasattr(value, "__iter__") else list(value)
    ok = pair is not None and len(pair) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in pair)
    if not ok:
        raise ValueError(f"{name}: expected {order}, two ints >= {minimum}, got {value if pair is None else pair!r}")
    return int(pair[0]), int(pair[1])


def rescale_size(size: Sequence[int], scale: Sequence[int]) -> tuple[int, int]:
    """The ``(h, w)`` that mmseg's ``Resize(img_scale=scale, keep_ratio=True)`` gives an ``(h, w)`` image.

    mmcv's ``rescale_size``: the factor ``min(max(scale) / max(h, w), min(scale) / min(h, w))`` (the
    largest that fits the long edge into the long side of ``scale`` and the short edge into its short
    side; for a landscape image and a landscape ``scale = (W, H)`` that is "fit into the W x H box"),
    each side ``int(side * factor + 0.5)``.

    Args:
        size: ``(h, w)`` of the image.
        scale: ``(W, H)`` (mmseg's ``img_scale`` order).

    >>> rescale_size((1024, 2048), (1024, 512)), rescale_size((1080, 1920), (960, 540))
    ((512, 1024), (540, 960))
    >>> rescale_size((100, 300), (1024, 512))  # the long edge limits: x 3.413
    (341, 1024)
    """
    h, w = as_size(size, "size")
    long_side, short_side = max(scale), min(scale)
    factor = min(long_side / max(h, w), short_side / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_image(image: torch.Tensor, size: Sequence[int], *, antialias: bool = False) -> torch.Tensor:
    """A float (3, H, W) image resized bilinearly to ``size`` (h, w).

    ``antialias=False`` is OpenCV's ``INTER_LINEAR`` (what mmcv's resize runs; at the 2x reductions of
    Cityscapes and ACDC it is the 2 x 2 mean); ``antialias=True`` low-pass filters first (what
    :class:`~warpadapt.data.prepared.Prepared` does for its fixed ``size``).

    >>> x = torch.arange(16.).view(1, 4, 4).expand(3, 4, 4)
    >>> resize_image(x, (2, 2))[0].tolist()  # each output pixel: the mean of a 2 x 2 block
    [[2.5, 4.5], [10.5, 12.5]]
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None].float(), tuple(size), mode="bilinear", antialias=antialias,
                         align_corners=False)[0]


def resize_labels(labels: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor | None:
    """An integer (H, W) label map resized to ``size`` (h, w) with nearest neighbour (int64; None stays None).

    Nearest reads source pixel ``floor(i * H / h)``, like OpenCV's ``INTER_NEAREST``; values are never blended.

    >>> resize_labels(torch.tensor([[1, 2], [3, 4]]), (4, 4)).tolist()[1]
    [1, 1, 2, 2]
    """
    if labels is None or tuple(labels.shape[-2:]) == tuple(size):
        return None if labels is None else labels.long()
    # float32 holds every label value exactly (instance ids < 2**24)
    return F.interpolate(labels[None, None].float(), tuple(size), mode="nearest")[0, 0].long()


def crop_boxes(boxes: torch.Tensor, y1: int, x1: int, h: int, w: int) -> torch.Tensor:
    """xyxy ``boxes`` (N, 4) of an image seen through the crop ``[y1, y1 + h) x [x1, x1 + w)``.

    Shifted by ``(-x1, -y1)``, clipped to ``[0, w] x [0, h]``; boxes with no area left are dropped.

    >>> crop_boxes(torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [1., 1., 4., 4.]]), 5, 5, 10, 10).tolist()
    [[0.0, 0.0, 5.0, 5.0]]
    """
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).float()
    b = boxes.float() - torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
    b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """xyxy ``boxes`` (N, 4) of an image of ``width`` pixels mirrored left-right: ``x -> width - x``.

    >>> hflip_boxes(torch.tensor([[1., 2., 4., 5.]]), 10).tolist()
    [[6.0, 2.0, 9.0, 5.0]]
    """
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).float()
    b = boxes.float()
    return torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)


def _crop_ok(semantic: torch.Tensor, crop, cat_max_ratio: float, ignore_index: int) -> bool:
    """mmseg's test: more than one class in the crop and none over ``cat_max_ratio`` of its labelled pixels."""
    y1, y2, x1, x2 = crop
    values = semantic[y1:y2, x1:x2].reshape(-1).long()
    counts = torch.bincount(values[values != ignore_index])  # label maps hold non-negative ints
    counts = counts[counts > 0]
    return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio


def random_crop_box(size: Sequence[int], crop_size: Sequence[int], rng: np.random.Generator,
                    semantic: torch.Tensor | None = None, cat_max_ratio: float = 1.0,
                    ignore_index: int = IGNORE_INDEX) -> tuple[int, int, int, int]:
    """mmseg ``RandomCrop``'s window ``(y1, y2, x1, x2)`` for an image of ``size`` (H, W).

    The offsets are uniform in ``[0, H - h] x [0, W - w]`` (``crop_size = (h, w)``; a side larger than
    the image gives the whole side). With ``cat_max_ratio < 1`` and a ``semantic`` (H, W) map, a window
    is tested up to 10 times: accepted when it holds more than one class (``ignore_index`` excluded) and
    none takes ``cat_max_ratio`` or more of its labelled pixels; after 10 rejections a new window is
    drawn and taken untested (what mmseg does: 11 draws at most).

    >>> rng = np.random.default_rng(0)
    >>> sem = torch.zeros(8, 8, dtype=torch.uint8); sem[:, 6:] = 1  # class 1 only in the two right columns
    >>> y1, y2, x1, x2 = random_crop_box((8, 8), (4, 4), rng, sem, cat_max_ratio=0.75)
    >>> (y2 - y1, x2 - x1), x2 >= 7  # a 4 x 4 window that sees class 1 in at least 2 of its 4 columns
    ((4, 4), True)
    """
    H, W = as_size(size, "size")
    h, w = as_size(crop_size, "crop_size")

    def draw():
        oy = int(rng.integers(0, max(H - h, 0) + 1))
        ox = int(rng.integers(0, max(W - w, 0) + 1))
        return oy, min(oy + h, H), ox, min(ox + w, W)

    crop = draw()
    if cat_max_ratio < 1.0 and semantic is not None:
        for _ in range(CAT_MAX_RATIO_TRIES):
            if _crop_ok(semantic, crop, cat_max_ratio, ignore_index):
                break
            crop = draw()
    return crop


def _seed_entropy(seed) -> list[int]:
    values = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"seed: expected an int or a sequence of ints, got {seed!r}")
    return [int(v) % 2**63 for v in values]  # SeedSequence takes non-negative ints


@dataclass(frozen=True)
class TrainView:
    """DAFormer's training view of one item: random crop (category max-ratio retry), horizontal flip, pad.

    ``view(item, index, draw)`` -> the item seen through this draw's window: mmseg's ``RandomCrop``
    (:func:`random_crop_box`), then ``RandomFlip(prob=0.5)``, then ``Pad`` to ``crop_size`` (image with
    ``pad_value``, labels with ``ignore_index``, at the bottom / right). The window and the flip depend
    only on ``(seed, draw, index)`` (:meth:`rng`).

    Guidance boxes follow the window: shifted and clipped to it, dropped when no area is left, mirrored
    on a flip (:func:`crop_boxes`, :func:`hflip_boxes`). They are not recomputed from the cropped label
    maps because (1) the cache then needs no instance map (an int map as large as the image, several
    times the uint8 item) and no per-draw labelling; (2) an object keeps its ONE box however the crop
    cuts it, like the instance map's box of an occluded object, while connected components of a cropped
    semantic map would split it. For objects whose pixels fill their box (unoccluded rectangles) both
    give the same boxes (tests/test_pipeline.py checks it); for other shapes cut by the window edge the
    clipped box can be larger than the visible pixels' box.

    Args:
        crop_size: ``(h, w)`` of the window; None: the whole item (then only the flip).
        flip: mirror left-right with probability 0.5.
        cat_max_ratio: mmseg's ratio test (1.0: none; DAFormer's source crops 0.75).
        seed: an int or a sequence of ints (e.g. ``(train.seed, domain)``).
        ignore_index: the label excluded from the ratio test and used for padding.
        pad_value: RGB in [0, 1] of padded image pixels (default: the ImageNet mean, i.e. 0 after
            normalisation, what mmseg pads with); uint8 images get it x 255, rounded.

    Items: dicts with ``image`` (3, H, W), ``semantic`` (H, W) (any dtypes; kept), ``boxes`` (N, 4) xyxy;
    other keys are passed on (an ``instance`` map is cropped and flipped too). The result has ``image``
    (3, h, w), ``semantic`` (h, w), ``boxes`` (M, 4) float32 and ``view`` = ``{"crop": (y1, y2, x1, x2),
    "flip": bool}`` (the window in the input item's pixels).

    Example:
        >>> item = {"image": torch.arange(2 * 6.).view(1, 2, 6).expand(3, 2, 6),  # row 0: 0 1 2 3 4 5
        ...         "semantic": torch.zeros(2, 6, dtype=torch.long), "boxes": torch.tensor([[1., 0., 3., 2.]])}
        >>> view = TrainView((2, 4), flip=True, seed=0)
        >>> a, b = view(item, index=0, draw=0), view(item, index=0, draw=0)
        >>> torch.equal(a["image"], b["image"]) and a["view"] == b["view"]  # the same key: the same view
        True
        >>> a["view"], a["image"][0, 0].tolist(), a["boxes"].tolist()  # columns 2..5 mirrored; the box clipped, mirrored
        ({'crop': (0, 2, 2, 6), 'flip': True}, [5.0, 4.0, 3.0, 2.0], [[3.0, 0.0, 4.0, 2.0]])
    """

    crop_size: tuple[int, int] | None = (512, 512)
    flip: bool = True
    cat_max_ratio: float = 1.0
    seed: int | tuple[int, ...] = 0
    ignore_index: int = IGNORE_INDEX
    pad_value: tuple[float, float, float] = PAD_RGB

    def __post_init__(self):
        object.__setattr__(self, "crop_size", as_size(self.crop_size, "crop_size"))
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip: expected true or false, got {self.flip!r}")
        r = self.cat_max_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f"cat_max_ratio: expected a number in (0, 1] (1: no ratio test), got {r!r}")
        _seed_entropy(self.seed)
        if len(tuple(self.pad_value)) != 3:
            raise ValueError(f"pad_value: expected an RGB triple in [0, 1], got {self.pad_value!r}")

    def rng(self, index: int, draw: int) -> np.random.Generator:
        """The Generator of draw ``draw`` of item ``index``: seeded with ``(*seed, draw, index)``, nothing else.

        >>> v = TrainView()
        >>> v.rng(1, 2).random() == v.rng(1, 2).random(), v.rng(1, 2).random() == v.rng(1, 3).random()
        (True, False)
        """
        return np.random.default_rng([*_seed_entropy(self.seed), int(draw) % 2**63, int(index) % 2**63])

    def params(self, size: Sequence[int], index: int, draw: int, semantic: torch.Tensor | None = None) -> dict:
        """``{"crop": (y1, y2, x1, x2), "flip": bool}`` of this draw for an item of ``size`` (H, W).

        >>> TrainView((4, 4), seed=1).params((8, 16), index=0, draw=0)
        {'crop': (2, 6, 6, 10), 'flip': False}
        """
        H, W = size
        rng = self.rng(index, draw)
        if self.crop_size is None:
            crop = (0, H, 0, W)
        else:
            crop = random_crop_box((H, W), self.crop_size, rng, semantic, self.cat_max_ratio, self.ignore_index)
        flip = bool(rng.random() < 0.5) if self.flip else False
        return {"crop": crop, "flip": flip}

    def __call__(self, item: dict, index: int, draw: int = 0) -> dict:
        image = item["image"]
        sem = item.get("semantic")
        p = self.params(tuple(image.shape[-2:]), index, draw, sem)
        y1, y2, x1, x2 = p["crop"]
        out = dict(item)
        maps = {k: item[k] for k in ("image", "semantic", "instance") if item.get(k) is not None}
        for k, v in maps.items():
            v = v[..., y1:y2, x1:x2]
            out[k] = v.flip(-1) if p["flip"] else v
        boxes = crop_boxes(item.get("boxes", torch.zeros(0, 4)), y1, x1, y2 - y1, x2 - x1)
        out["boxes"] = hflip_boxes(boxes, x2 - x1) if p["flip"] else boxes
        if self.crop_size is not None and (y2 - y1, x2 - x1) != self.crop_size:  # mmseg Pad: bottom / right
            h, w = self.crop_size
            for k in maps:
                v = out[k]
                if k == "image":
                    fill = torch.tensor(self.pad_value, dtype=torch.float32)
                    fill = (fill * 255).round() if v.dtype == torch.uint8 else fill
                    padded = fill.to(v.dtype).view(-1, 1, 1).expand(v.shape[0], h, w).clone()
                else:
                    padded = torch.full((h, w), self.ignore_index if k == "semantic" else 0, dtype=v.dtype)
                padded[..., :v.shape[-2], :v.shape[-1]] = v
                out[k] = padded
        else:
            out.update({k: out[k].contiguous() for k in maps})
        out["view"] = p
        return out


class DrawKeys(torch.utils.data.Sampler):
    """A batch sampler's index lists as ``(index, draw)`` keys, ``draw`` = the index's position in the stream.

    ``batch_sampler`` yields one list of ``batch_size`` indices per step from ``start_step`` on, for
    rank ``rank`` of ``world_size``: a :class:`warpadapt.uda.data.InfiniteSampler` or any sampler with
    the attributes ``batch_size``, ``rank``, ``start_step`` (and ``world_size``, or pass it, e.g. for
    :class:`warpadapt.uda.rcs.RareClassSampler`). Draw ``j`` of step ``s`` is keyed with the position
    ``(s * world_size + rank) * batch_size + j`` (InfiniteSampler's stream layout). It depends on the
    step, not on when or in which worker the item is loaded, so a run resumed at ``start_step`` (and,
    with InfiniteSampler, a run with more ranks and the same global stream) keys every draw as
    before; no two draws of a run share a key.

    >>> class Stream:  # the InfiniteSampler layout, in order
    ...     batch_size, rank, world_size, start_step = 2, 1, 2, 3
    ...     def __iter__(self):
    ...         yield [7, 8]
    >>> next(iter(DrawKeys(Stream())))  # step 3, rank 1: positions (3 * 2 + 1) * 2 + 0, + 1
    [(7, 14), (8, 15)]
    """

    def __init__(self, batch_sampler, world_size: int | None = None) -> None:
        for name in ("batch_size", "rank", "start_step") + (("world_size",) if world_size is None else ()):
            if not hasattr(batch_sampler, name):
                raise TypeError(f"DrawKeys: the batch sampler has no {name!r} (an InfiniteSampler has; "
                                "pass world_size= for samplers without it)")
        self.batch_sampler = batch_sampler
        self.world_size = int(batch_sampler.world_size if world_size is None else world_size)
        if not 0 <= batch_sampler.rank < self.world_size:
            raise ValueError(f"world_size: expected > rank={batch_sampler.rank}, got {self.world_size}")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.batch_sampler
        step = s.start_step
        for batch in s:
            start = (step * self.world_size + s.rank) * s.batch_size
            yield [(int(i), start + j) for j, i in enumerate(batch)]
            step += 1
