"""Pseudo-labels for detection: keep the teacher's confident detections."""
from __future__ import annotations

from typing import Sequence

import torch  # noqa: F401  (the examples use it)

__all__ = ["filter_detections"]


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
