"""Evaluation loops shared by the recipes: a detector's mAP and a segmenter's mIoU on a dataset.

Both take a dataset following warpadapt's sample contract (``image`` (3, H, W) float in [0, 1],
``boxes`` / ``labels`` or ``semantic``), read its first ``max_images`` items, split them over the
processes of a distributed run and combine the results, so every rank returns the same numbers.
Models are put in eval mode (no warp) and run without gradients.

Segmentation is scored at the LABEL's resolution, as mmseg does: the model sees the image as the
dataset gives it (e.g. resized to the domain's scale, :class:`~warpadapt.data.Prepared` ``scale=`` with
``keep_labels=True``), its logits are upsampled bilinearly to the label size before the argmax
(:func:`segmentation_logits`), from one forward over the whole image (``mode="whole"``, mmseg's
``whole_inference``) or from overlapping windows (``mode="slide"``, :func:`slide_logits`, mmseg's
``slide_inference``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..eval import ConfusionMatrix, detection_map
from .dist import DistInfo, all_gather_objects

__all__ = ["evaluate_detection", "evaluate_segmentation", "segmentation_logits", "slide_logits", "slide_windows"]

EVAL_MODES = ("whole", "slide")


def _shard(dataset, max_images: int | None, info: DistInfo) -> list[int]:
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    if n <= 0:
        raise ValueError(f"max_images: expected at least one image to evaluate, got {n}")
    return list(range(info.rank, n, info.world_size))


def _batches(indices: list[int], batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    for i in range(0, len(indices), batch_size):
        yield indices[i:i + batch_size]


def _items(dataset, chunks: list[list[int]], num_workers: int, device):
    """The items of each chunk, as lists: read in this process (``num_workers=0``) or by a DataLoader's
    worker processes while the model runs (pinned memory on CUDA)."""
    if num_workers < 0:
        raise ValueError(f"num_workers: expected an int >= 0, got {num_workers}")
    if num_workers == 0:
        return ([dataset[i] for i in chunk] for chunk in chunks)
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=chunks, collate_fn=list, num_workers=num_workers,
                                            pin_memory=torch.device(device).type == "cuda"))


@torch.no_grad()
def evaluate_detection(model: nn.Module, dataset, classes: Sequence[str], *, device="cpu",
                       batch_size: int = 4, max_images: int | None = None, info: DistInfo | None = None,
                       progress: bool = False, num_workers: int = 0) -> dict:
    """COCO metrics of ``model`` on ``dataset`` (see :func:`warpadapt.eval.detection_map`); ``num_workers``
    processes read the items while the model runs (0: read in this process).

    ``model(list of (3, H, W) images)`` in eval mode must return one torchvision-style dict per image
    (``boxes`` xyxy in that image's pixels, ``scores``, ``labels`` in 1..K).

    >>> class Oracle(nn.Module):  # predicts the ground truth of a one-box dataset
    ...     def forward(self, images):
    ...         return [{"boxes": torch.tensor([[2., 2., 6., 6.]]), "scores": torch.ones(1),
    ...                  "labels": torch.ones(1, dtype=torch.long)} for _ in images]
    >>> ds = [{"image": torch.zeros(3, 8, 8), "boxes": torch.tensor([[2., 2., 6., 6.]]),
    ...        "labels": torch.tensor([1])}] * 3
    >>> evaluate_detection(Oracle(), ds, ["car"])["mAP50"]
    1.0
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    preds, targets = [], []
    indices = _shard(dataset, max_images, info)
    chunks = list(_batches(indices, batch_size))
    bar = tqdm(_items(dataset, chunks, num_workers, device), total=len(chunks), desc="eval", leave=False,
               disable=not (progress and info.is_main))
    for items in bar:
        out = model([it["image"].to(device, non_blocking=True) for it in items])
        for it, p in zip(items, out):
            preds.append({k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")})
            targets.append({"boxes": it["boxes"], "labels": it["labels"]})
    model.train(was_training)
    gathered = all_gather_objects((indices, preds, targets))
    order, all_preds, all_targets = [], [], []
    for idx, p, t in gathered:
        order += idx
        all_preds += p
        all_targets += t
    perm = sorted(range(len(order)), key=order.__getitem__)
    return detection_map([all_preds[i] for i in perm], [all_targets[i] for i in perm], classes)


def slide_windows(size, crop_size, stride) -> list[tuple[int, int, int, int]]:
    """The ``(y1, y2, x1, x2)`` windows of mmseg's ``slide_inference`` over an image of ``size`` (H, W).

    ``ceil((H - h) / stride_h) + 1`` rows of windows (one when ``h >= H``), each ``h`` high (``H`` when
    the window is larger than the image), starting every ``stride_h`` pixels, the last one moved back
    to end at the border; columns alike.

    >>> slide_windows((10, 4), (4, 4), (3, 3))
    [(0, 4, 0, 4), (3, 7, 0, 4), (6, 10, 0, 4)]
    >>> slide_windows((8, 8), (16, 16), (8, 8))  # a window larger than the image: the image
    [(0, 8, 0, 8)]
    """
    (H, W), (h, w), (sh, sw) = size, crop_size, stride
    if min(h, w, sh, sw) < 1:
        raise ValueError(f"crop_size / stride: expected ints >= 1, got crop_size={crop_size}, stride={stride}")
    if sh > h or sw > w:
        raise ValueError(f"stride: expected <= crop_size so that windows cover the image, got stride={tuple(stride)}, "
                         f"crop_size={tuple(crop_size)}")
    rows = max(H - h + sh - 1, 0) // sh + 1
    cols = max(W - w + sw - 1, 0) // sw + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + h, H), min(c * sw + w, W)
            out.append((max(y2 - h, 0), y2, max(x2 - w, 0), x2))
    return out


def slide_logits(model: nn.Module, images: torch.Tensor, crop_size, stride) -> torch.Tensor:
    """mmseg's ``slide_inference``: logits (B, K, H, W) of ``images`` (B, 3, H, W) from overlapping windows.

    Each window (:func:`slide_windows`) goes through ``model`` alone; its logits (upsampled bilinearly to
    the window size if the model returns another size) are summed into place and every pixel is
    divided by the number of windows covering it.

    >>> class Pixelwise(nn.Module):  # logits of a pixel depend on that pixel only
    ...     def forward(self, x):
    ...         return torch.cat([x[:, :1], 1 - x[:, :1]], 1)
    >>> x = torch.rand(2, 3, 10, 12)
    >>> torch.allclose(slide_logits(Pixelwise(), x, (4, 6), (3, 4)), Pixelwise()(x))
    True
    """
    B, _, H, W = images.shape
    total, count = None, images.new_zeros((1, 1, H, W))
    for y1, y2, x1, x2 in slide_windows((H, W), tuple(crop_size), tuple(stride)):
        out = model(images[:, :, y1:y2, x1:x2])
        if out.shape[-2:] != (y2 - y1, x2 - x1):
            out = F.interpolate(out.float(), size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
        if total is None:
            total = out.new_zeros((B, out.shape[1], H, W))
        total[:, :, y1:y2, x1:x2] += out
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def segmentation_logits(model: nn.Module, images: torch.Tensor, size=None, *, mode: str = "whole",
                        crop_size=None, stride=None) -> torch.Tensor:
    """Logits (B, K, h, w) of ``images`` (B, 3, H, W), upsampled bilinearly to ``size`` = (h, w) (None: as is).

    As in mmseg, logits the model returns at another size than its input are first upsampled to the
    input's size (``encode_decode``; a window's to the window's), then to ``size``. ``mode="whole"``: one
    forward (mmseg ``whole_inference``); ``"slide"``: :func:`slide_logits` with
    windows ``crop_size`` (h, w) (None: the whole image, one window) every ``stride`` (h, w) (None:
    ``crop_size``, windows that touch, the last ones moved back to the border). The
    model is called as it is (put it in eval mode first); the upsampling to ``size`` (the label's
    resolution) comes after the windows are combined, before any argmax.

    >>> class Copy(nn.Module):
    ...     def forward(self, x):
    ...         return torch.cat([1 - x[:, :1], x[:, :1]], 1)
    >>> x = torch.rand(1, 3, 8, 16)
    >>> segmentation_logits(Copy(), x, (16, 32), mode="slide", crop_size=(8, 8), stride=(8, 4)).shape
    torch.Size([1, 2, 16, 32])
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode: expected one of {EVAL_MODES}, got {mode!r}")
    if mode == "whole":
        logits = model(images)
        if logits.shape[-2:] != images.shape[-2:]:  # mmseg's encode_decode: first to the input size
            logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    else:
        crop = tuple(images.shape[-2:]) if crop_size is None else tuple(crop_size)
        logits = slide_logits(model, images, crop, crop if stride is None else tuple(stride))
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset, num_classes: int, *, device="cpu",
                          batch_size: int = 4, max_images: int | None = None,
                          info: DistInfo | None = None, ignore_index: int = 255,
                          progress: bool = False, mode: str = "whole", crop_size=None, stride=None,
                          num_workers: int = 0) -> dict:
    """Confusion-matrix metrics (``miou``, per-class ``iou``, ``pixel_acc`` ...) of ``model``.

    ``model(images (B, 3, H, W))`` in eval mode must return logits (B, K, h, w); they are upsampled
    bilinearly to the label size (which may differ from the image's: labels at their own resolution)
    before the argmax. ``mode``, ``crop_size``, ``stride``: see :func:`segmentation_logits` (``"slide"``
    runs windows of ``crop_size`` every ``stride``). Items whose image and label sizes differ from their
    batch's are evaluated one by one. ``num_workers`` processes read the items while the model runs.

    >>> class Copy(nn.Module):  # "predicts" class 1 where the red channel is bright
    ...     def forward(self, x):
    ...         return torch.cat([1 - x[:, :1], x[:, :1]], 1)
    >>> img = torch.zeros(3, 4, 4); img[0, :2] = 1
    >>> sem = torch.zeros(4, 4, dtype=torch.long); sem[:2] = 1
    >>> evaluate_segmentation(Copy(), [{"image": img, "semantic": sem}] * 2, 2)["miou"]
    1.0
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode: expected one of {EVAL_MODES}, got {mode!r}")
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    indices = _shard(dataset, max_images, info)
    chunks = list(_batches(indices, batch_size))
    bar = tqdm(_items(dataset, chunks, num_workers, device), total=len(chunks), desc="eval", leave=False,
               disable=not (progress and info.is_main))
    for items in bar:
        same = len({(tuple(it["image"].shape), tuple(it["semantic"].shape)) for it in items}) == 1
        groups = [items] if same else [[it] for it in items]
        for group in groups:
            images = torch.stack([it["image"] for it in group]).to(device, non_blocking=True)
            labels = torch.stack([it["semantic"] for it in group]).to(device, non_blocking=True)
            logits = segmentation_logits(model, images, labels.shape[-2:], mode=mode, crop_size=crop_size,
                                         stride=stride)
            cm.update(logits.argmax(1), labels)
    model.train(was_training)
    cm.all_reduce()
    return cm.compute()
