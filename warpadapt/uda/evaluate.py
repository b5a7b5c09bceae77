"""Evaluation loops shared by the recipes: a detector's mAP and a segmenter's mIoU on a dataset.

Both take a dataset following warpadapt's sample contract (``image`` (3, H, W) float in [0, 1],
``boxes`` / ``labels`` or ``semantic``), read its first ``max_images`` items, split them over the
processes of a distributed run and combine the results, so every rank returns the same numbers.
Models are put in eval mode (no warp) and run without gradients.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..eval import ConfusionMatrix, detection_map
from .dist import DistInfo, all_gather_objects

__all__ = ["evaluate_detection", "evaluate_segmentation"]


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


@torch.no_grad()
def evaluate_detection(model: nn.Module, dataset, classes: Sequence[str], *, device="cpu",
                       batch_size: int = 4, max_images: int | None = None, info: DistInfo | None = None,
                       progress: bool = False) -> dict:
    """COCO metrics of ``model`` on ``dataset`` (see :func:`warpadapt.eval.detection_map`).

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
    bar = tqdm(list(_batches(indices, batch_size)), desc="eval", leave=False,
               disable=not (progress and info.is_main))
    for chunk in bar:
        items = [dataset[i] for i in chunk]
        out = model([it["image"].to(device) for it in items])
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


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset, num_classes: int, *, device="cpu",
                          batch_size: int = 4, max_images: int | None = None,
                          info: DistInfo | None = None, ignore_index: int = 255,
                          progress: bool = False) -> dict:
    """Confusion-matrix metrics (``miou``, per-class ``iou``, ``pixel_acc`` ...) of ``model``.

    ``model(images (B, 3, H, W))`` in eval mode must return logits (B, K, h, w); they are upsampled
    bilinearly to the label size before the argmax. Items of different sizes are evaluated one by one.

    >>> class Copy(nn.Module):  # "predicts" class 1 where the red channel is bright
    ...     def forward(self, x):
    ...         return torch.cat([1 - x[:, :1], x[:, :1]], 1)
    >>> img = torch.zeros(3, 4, 4); img[0, :2] = 1
    >>> sem = torch.zeros(4, 4, dtype=torch.long); sem[:2] = 1
    >>> evaluate_segmentation(Copy(), [{"image": img, "semantic": sem}] * 2, 2)["miou"]
    1.0
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    indices = _shard(dataset, max_images, info)
    bar = tqdm(list(_batches(indices, batch_size)), desc="eval", leave=False,
               disable=not (progress and info.is_main))
    for chunk in bar:
        items = [dataset[i] for i in chunk]
        same = len({tuple(it["image"].shape) for it in items}) == 1
        groups = [items] if same else [[it] for it in items]
        for group in groups:
            images = torch.stack([it["image"] for it in group]).to(device)
            labels = torch.stack([it["semantic"] for it in group]).to(device)
            logits = model(images)
            if logits.shape[-2:] != labels.shape[-2:]:
                logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear",
                                       align_corners=False)
            cm.update(logits.argmax(1), labels)
    model.train(was_training)
    cm.all_reduce()
    return cm.compute()
