"""Evaluation metrics: semantic-segmentation IoU (confusion matrix) and detection mAP (COCOeval).

- :class:`ConfusionMatrix` / :func:`miou`: vectorised (``torch.bincount``) per-class IoU, mIoU,
  pixel accuracy; works on CPU or CUDA tensors and can be summed across processes.
- :func:`detection_map`: COCO AP, AP50 and AP by object size through ``pycocotools.COCOeval``,
  built in memory from torchvision-style prediction / target dicts, without pycocotools' printing.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "miou", "detection_map"]


class ConfusionMatrix:
    """Accumulating confusion matrix for semantic segmentation.

    ``mat[t, p]`` counts pixels of target class ``t`` predicted as ``p`` (int64, (C, C)).

    Args:
        num_classes: number of classes C (class ids 0..C-1).
        ignore_index: target value that is skipped (default 255). Target values outside 0..C-1 are
            skipped too.
        device: device of the matrix (default: that of the first ``update``).

    ``update(pred, target)``:
        pred: int tensor (N, H, W) or (H, W) of class ids, or logits / scores (N, C, H, W)
            (argmax over dim 1 is taken); target: int tensor (N, H, W) or (H, W).
        Predicted ids outside 0..C-1 on counted pixels raise ValueError.

    ``compute()`` returns a dict:
        ``iou``: float64 tensor (C,), NaN for classes absent from both target and prediction;
        ``miou``: mean of ``iou`` over the classes present in the target OR the prediction (a class
        only predicted, never in the target, counts with IoU 0); NaN if nothing was counted;
        ``acc``: per-class recall (C,), NaN for classes absent from the target;
        ``macc``: mean of ``acc`` over classes present in the target;
        ``pixel_acc``: correctly classified pixels / counted pixels.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 255]]))
        >>> r = cm.compute()
        >>> r["iou"].tolist(), round(r["miou"], 4), round(r["pixel_acc"], 4)
        ([1.0, 0.5, 0.0], 0.5, 0.6667)
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device=None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                               device=device)

    def reset(self) -> None:
        """Zero the matrix.

        Example:
            >>> cm = ConfusionMatrix(2); cm.update(torch.tensor([0]), torch.tensor([1])); cm.reset()
            >>> int(cm.mat.sum())
            0
        """
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: pred (N, H, W) ids or (N, C, H, W) scores, target (N, H, W) ids.

        Example:
            >>> cm = ConfusionMatrix(2)
            >>> scores = torch.tensor([[[[2.0], [0.0]], [[0.1], [1.0]]]])  # (1, 2, 2, 1)
            >>> cm.update(scores, torch.tensor([[[0], [1]]]))
            >>> cm.mat.tolist()
            [[1, 0], [0, 1]]
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"score tensor pred has {pred.shape[1]} channels, expected "
                                 f"num_classes={self.num_classes}")
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have "
                             f"the same shape (or pred (N, C, H, W) scores)")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("pred and target must hold integer class ids (or pred be (N, C, H, W) "
                            "scores)")
        if self.mat.device != target.device:
            if self.mat.sum() == 0:
                self.mat = self.mat.to(target.device)
            else:
                target = target.to(self.mat.device)
        pred = pred.to(target.device).reshape(-1).long()
        target = target.reshape(-1).long()
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        pred, target = pred[keep], target[keep]
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= self.num_classes):
            raise ValueError(f"pred holds class ids outside 0..{self.num_classes - 1} "
                             f"(min {int(pred.min())}, max {int(pred.max())})")
        counts = torch.bincount(target * self.num_classes + pred,
                                minlength=self.num_classes ** 2)
        self.mat += counts.reshape(self.num_classes, self.num_classes).to(self.mat.device)

    def all_reduce(self) -> None:
        """Sum the matrix over processes when ``torch.distributed`` is initialised (else no-op).

        Example:
            >>> cm = ConfusionMatrix(2); cm.all_reduce(); cm.mat.shape
            torch.Size([2, 2])
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)

    def compute(self) -> dict:
        """Per-class IoU, mIoU, per-class accuracy, mean accuracy and pixel accuracy.

        Example:
            >>> cm = ConfusionMatrix(2); cm.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
            >>> r = cm.compute(); r["iou"].tolist(), r["miou"]
            ([nan, 1.0], 1.0)
        """
        mat = self.mat.double().cpu()
        tp = mat.diag()
        in_target = mat.sum(1)
        in_pred = mat.sum(0)
        union = in_target + in_pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        acc = torch.where(in_target > 0, tp / in_target.clamp(min=1),
                          torch.full_like(tp, math.nan))
        total = mat.sum()
        present = union > 0
        return {
            "iou": iou,
            "miou": float(iou[present].mean()) if present.any() else math.nan,
            "acc": acc,
            "macc": float(acc[in_target > 0].mean()) if (in_target > 0).any() else math.nan,
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        }


def miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
         ignore_index: int = 255) -> float:
    """Mean IoU of one prediction against one target (see :class:`ConfusionMatrix` for the rules).

    Args:
        pred: (N, H, W) / (H, W) class ids or (N, C, H, W) scores.
        target: (N, H, W) / (H, W) class ids; ``ignore_index`` pixels are skipped.
        num_classes: C.

    Example:
        >>> miou(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), 2)
        0.5833333333333333
    """
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    cm.update(pred, target)
    return cm.compute()["miou"]


def _xyxy_to_xywh(boxes) -> np.ndarray:
    b = torch.as_tensor(boxes, dtype=torch.float64).detach().cpu().numpy().reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _np(x, dtype) -> np.ndarray:
    return torch.as_tensor(x).detach().cpu().numpy().astype(dtype).reshape(-1)


def detection_map(predictions: Sequence[dict], targets: Sequence[dict],
                  classes: Sequence[str], max_dets: int = 100) -> dict:
    """COCO detection metrics through ``pycocotools.COCOeval`` (bbox), computed in memory.

    Args:
        predictions: one dict per image with ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,),
            ``labels`` (N,) ints in 1..K (torchvision style). Images with no prediction: N = 0.
        targets: one dict per image (same order) with ``boxes`` (M, 4) xyxy and ``labels`` (M,) in
            1..K; optional ``iscrowd`` (M,) (crowd boxes are ignored regions, COCO rules). Images
            with no target: M = 0 (their predictions are false positives).
        classes: the K class names; label k is ``classes[k - 1]``.
        max_dets: detections kept per image (COCO: 100).

    Returns:
        dict with ``mAP50`` (AP at IoU 0.5), ``mAP75``, ``AP`` (mean over IoU 0.50:0.05:0.95),
        ``AP_small`` / ``AP_medium`` / ``AP_large`` (COCO area ranges: < 32^2, 32^2..96^2,
        > 96^2 pixels, box area), ``AR`` (recall at ``max_dets``), ``AP50_per_class`` and
        ``AP_per_class`` (``{name: value}``). Values are in [0, 1]; a value is NaN when COCOeval has
        nothing to average (no ground truth of that class / size anywhere: COCO's -1). Classes
        with ground truth but no detection give 0.

    Example:
        >>> t = [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "labels": torch.tensor([1])}]
        >>> p = [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "scores": torch.tensor([0.9]),
        ...       "labels": torch.tensor([1])}]
        >>> r = detection_map(p, t, ["car"])
        >>> round(r["mAP50"], 6), round(r["AP"], 6), round(r["AP_small"], 6), math.isnan(r["AP_large"])
        (1.0, 1.0, 1.0, True)
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"predictions ({len(predictions)}) and targets ({len(targets)}) must have "
                         f"one entry per image")
    classes = list(classes)
    images, gts, dts = [], [], []
    for img_id, (pred, tgt) in enumerate(zip(predictions, targets), start=1):
        images.append({"id": img_id})
        boxes = _xyxy_to_xywh(tgt["boxes"])
        labels = _np(tgt["labels"], np.int64)
        crowd = _np(tgt["iscrowd"], np.int64) if "iscrowd" in tgt else np.zeros(len(labels), int)
        if not (len(boxes) == len(labels) == len(crowd)):
            raise ValueError(f"target {img_id - 1}: boxes, labels (and iscrowd) differ in length")
        for b, lab, c in zip(boxes, labels, crowd):
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": int(lab),
                        "bbox": b.tolist(), "area": float(b[2] * b[3]), "iscrowd": int(c)})
        boxes = _xyxy_to_xywh(pred["boxes"])
        labels = _np(pred["labels"], np.int64)
        scores = _np(pred["scores"], np.float64)
        if not (len(boxes) == len(labels) == len(scores)):
            raise ValueError(f"prediction {img_id - 1}: boxes, scores and labels differ in length")
        for b, lab, s in zip(boxes, labels, scores):
            # ids start at 1: COCOeval uses 0 in its match arrays to mean "unmatched".
            dts.append({"id": len(dts) + 1, "image_id": img_id, "category_id": int(lab),
                        "bbox": b.tolist(), "area": float(b[2] * b[3]), "score": float(s),
                        "iscrowd": 0})
    bad = {a["category_id"] for a in gts + dts} - set(range(1, len(classes) + 1))
    if bad:
        raise ValueError(f"labels {sorted(bad)} are outside 1..{len(classes)} (len(classes))")
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        coco_dt.dataset = {"images": images, "annotations": dts, "categories": categories}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()

    precision = ev.eval["precision"]  # (T iou, R recall points, K classes, A areas, M maxDets)
    recall = ev.eval["recall"]  # (T, K, A, M)
    iou_thrs = ev.params.iouThrs
    area = {lbl: i for i, lbl in enumerate(ev.params.areaRngLbl)}  # all, small, medium, large

    def mean(x) -> float:
        x = x[x > -1]
        return float(np.mean(x)) if x.size else math.nan

    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    out = {
        "mAP50": mean(precision[t50, :, :, area["all"], -1]),
        "mAP75": mean(precision[t75, :, :, area["all"], -1]),
        "AP": mean(precision[:, :, :, area["all"], -1]),
        "AP_small": mean(precision[:, :, :, area["small"], -1]),
        "AP_medium": mean(precision[:, :, :, area["medium"], -1]),
        "AP_large": mean(precision[:, :, :, area["large"], -1]),
        "AR": mean(recall[:, :, area["all"], -1]),
        "AP50_per_class": {n: mean(precision[t50, :, k, area["all"], -1])
                           for k, n in enumerate(classes)},
        "AP_per_class": {n: mean(precision[:, :, k, area["all"], -1])
                         for k, n in enumerate(classes)},
    }
    return out
