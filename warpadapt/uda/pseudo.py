"""Pseudo-labels for detection: keep the teacher's confident detections."""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import box_iou

__all__ = ["filter_detections", "pseudo_label_quality"]


def filter_detections(detections: Sequence[dict], threshold: float) -> list[dict]:
    """Keep the detections whose score is above ``threshold`` (2PCNet: 0.8, one threshold for all classes).

    Args:
        detections: one torchvision-style dict per image: ``boxes`` (N, 4), ``scores`` (N,),
            ``labels`` (N,).
        threshold: score threshold in [0, 1]; a detection is kept when ``score > threshold``.

    Returns:
        one dict per image with the kept ``boxes`` (M, 4) float32, ``labels`` (M,) int64 and
        ``scores`` (M,), detached (pseudo-labels carry no gradient). Images may end up with M = 0.

    Example:
        >>> det = [{"boxes": torch.tensor([[0., 0., 4., 4.], [1., 1., 5., 5.]]),
        ...         "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([2, 1])}]
        >>> out = filter_detections(det, 0.8)
        >>> out[0]["boxes"].tolist(), out[0]["labels"].tolist()
        ([[0.0, 0.0, 4.0, 4.0]], [2])
        >>> filter_detections(det, 0.95)[0]["boxes"].shape
        torch.Size([0, 4])
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
    if not isinstance(detections, (list, tuple)):
        raise TypeError(f"detections: expected a list of dicts (boxes, scores, labels), got {type(detections).__name__}")
    out = []
    for i, d in enumerate(detections):
        if not all(k in d for k in ("boxes", "scores", "labels")):
            raise ValueError(f"detections[{i}]: expected keys 'boxes', 'scores', 'labels', got {sorted(d)}")
        keep = d["scores"] > threshold
        out.append({"boxes": d["boxes"][keep].detach().float().reshape(-1, 4),
                    "labels": d["labels"][keep].detach().long(),
                    "scores": d["scores"][keep].detach()})
    return out


def pseudo_label_quality(pseudo: Sequence[dict], targets: Sequence[dict], iou: float = 0.5) -> dict:
    """How good pseudo-labels are against the ground truth the method never sees (a diagnostic).

    Per image, pseudo boxes are matched greedily in descending score order to unmatched ground-truth
    boxes of the same label with IoU >= ``iou`` (each ground-truth box matches at most once).

    Args:
        pseudo: one dict per image: ``boxes`` (M, 4) xyxy, ``labels`` (M,), ``scores`` (M,).
        targets: one dict per image: ``boxes`` (G, 4) xyxy, ``labels`` (G,).
        iou: the IoU a match needs, in (0, 1].

    Returns:
        ``{"images", "pseudo", "gt", "tp", "precision", "recall", "pseudo_per_image", "gt_per_image"}``;
        precision (tp / pseudo) and recall (tp / gt) are NaN when their denominator is 0.

    Example:
        >>> gt = [{"boxes": torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]]), "labels": torch.tensor([1, 2])}]
        >>> ps = [{"boxes": torch.tensor([[1., 1., 10., 10.], [0., 0., 10., 10.], [20., 20., 30., 30.]]),
        ...        "labels": torch.tensor([1, 1, 1]), "scores": torch.tensor([0.9, 0.8, 0.95])}]
        >>> q = pseudo_label_quality(ps, gt)   # the car-box is labelled 1 (wrong class); box 2 duplicates box 1
        >>> q["tp"], q["precision"], q["recall"]
        (1, 0.3333333333333333, 0.5)
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou: expected a number in (0, 1], got {iou!r}")
    if len(pseudo) != len(targets):
        raise ValueError(f"pseudo, targets: expected one dict per image in both, got {len(pseudo)} and {len(targets)}")
    n_pseudo = n_gt = tp = 0
    for p, t in zip(pseudo, targets):
        pb, gb = p["boxes"].reshape(-1, 4).float(), t["boxes"].reshape(-1, 4).float()
        n_pseudo, n_gt = n_pseudo + len(pb), n_gt + len(gb)
        if not len(pb) or not len(gb):
            continue
        ious = box_iou(pb, gb)
        ious[p["labels"].reshape(-1, 1) != t["labels"].reshape(1, -1)] = -1.0
        free = torch.ones(len(gb), dtype=torch.bool)
        for k in torch.argsort(p["scores"], descending=True).tolist():
            cand = torch.where(free, ious[k], torch.full_like(ious[k], -1.0))
            j = int(cand.argmax())
            if cand[j] >= iou:
                free[j] = False
                tp += 1
    n = len(pseudo)
    return {"images": n, "pseudo": n_pseudo, "gt": n_gt, "tp": tp,
            "precision": tp / n_pseudo if n_pseudo else float("nan"), "recall": tp / n_gt if n_gt else float("nan"),
            "pseudo_per_image": n_pseudo / n if n else float("nan"), "gt_per_image": n_gt / n if n else float("nan")}
