"""Instance-Warp as an albumentations 2.0.8 transform: :class:`AlbuSaliencyWarp` (numpy in, numpy out).

Image, mask(s), bboxes in any ``BboxParams`` format and keypoints are warped together by one
:class:`~warpadapt.SaliencyWarp` (given, or built from its options) driven by the sample's own boxes.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor

from .._utils import check_probability
from ..modules import SaliencyWarp, as_saliency_warp
from ..warp import Warp

__all__ = ["AlbuSaliencyWarp"]


class AlbuSaliencyWarp(A.DualTransform):
    """Instance-Warp as an albumentations 2.0.8 transform: image, masks, bboxes and keypoints together.

    The guidance is the sample's own ``bboxes`` (in any ``BboxParams`` format: ``Compose`` hands them
    over normalised, as (N, 4 + extra) arrays, and converts them back). Images are resampled bilinearly
    (uint8 images are rounded back to uint8, float32 stays float32), masks with nearest neighbour, boxes
    and keypoints (x, y; angle and scale columns are left unchanged) are mapped exactly. The warp of the
    last call is ``get_applied_params()["warp"]`` (a :class:`Warp`, for unwarping predictions). Use it
    inside ``A.Compose(..., bbox_params=A.BboxParams(...))``: a bare call gets un-normalised boxes.

    Args:
        warp: the :class:`~warpadapt.SaliencyWarp` to use, a guidance name, or None (instance
            guidance); see :func:`~warpadapt.modules.as_saliency_warp`.
        p: probability of applying the transform.
        **warp_options: :class:`~warpadapt.SaliencyWarp`'s options when ``warp`` is not a module.

    Targets:
        image, mask, masks, bboxes, keypoints

    Image types:
        uint8, float32

    Example:
        >>> import albumentations as A, numpy as np
        >>> tf = A.Compose([AlbuSaliencyWarp()], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
        >>> out = tf(image=np.zeros((64, 96, 3), np.uint8), bboxes=[[40, 20, 56, 36]], labels=[1])
        >>> x1, y1, x2, y2 = out["bboxes"][0]
        >>> out["image"].dtype, bool(x2 - x1 > 16)
        (dtype('uint8'), True)
    """

    def __init__(self, warp: SaliencyWarp | str | None = None, p: float = 1.0, **warp_options: Any) -> None:
        super().__init__(p=check_probability(p))
        self.warper = as_saliency_warp(warp, **warp_options)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("warper",)  # repr and serialisation show the SaliencyWarp (its options live there)

    @property
    def targets_as_params(self) -> list[str]:
        return ["bboxes"] if self.warper.guidance == "instance" else []

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = int(params["shape"][0]), int(params["shape"][1])
        boxes = None
        if self.warper.guidance == "instance":
            raw = data.get("bboxes")
            arr = np.zeros((0, 4)) if raw is None or len(raw) == 0 else np.asarray(raw, dtype=np.float64)
            xyxy = arr.reshape(len(arr), -1)[:, :4] if len(arr) else np.zeros((0, 4))
            xyxy = xyxy * np.array([w, h, w, h], dtype=np.float64)
            boxes = [torch.from_numpy(xyxy).float()]
        warp = self.warper.make_warp((h, w), boxes, batch_size=1)
        return {"warp": warp}

    # -- arrays -------------------------------------------------------------------------------
    @staticmethod
    def _to_nchw(arr: np.ndarray, dtype) -> tuple[Tensor, bool]:
        squeeze = arr.ndim == 2
        a = arr[..., None] if squeeze else arr
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype).permute(2, 0, 1)[None]
        return t, squeeze

    @staticmethod
    def _from_nchw(t: Tensor, squeeze: bool) -> np.ndarray:
        a = t[0].permute(1, 2, 0).numpy()
        return a[..., 0] if squeeze else a

    def apply(self, img: np.ndarray, warp: Warp, **params: Any) -> np.ndarray:
        if img.dtype not in (np.uint8, np.float32, np.float64):
            raise TypeError(f"img must be uint8, float32 or float64, got {img.dtype}")
        work = torch.float64 if img.dtype == np.float64 else torch.float32
        t, squeeze = self._to_nchw(img, work)
        out = self._from_nchw(warp.apply(t), squeeze)
        if img.dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(img.dtype, copy=False)

    def apply_to_mask(self, mask: np.ndarray, warp: Warp, **params: Any) -> np.ndarray:
        dtype = mask.dtype
        m = mask.astype(np.uint8) if dtype == np.bool_ else mask
        t, squeeze = self._to_nchw(m, torch.float64)  # exact for every integer label below 2**53
        out = self._from_nchw(warp.apply(t, mode="nearest"), squeeze)
        return out.astype(dtype)

    def apply_to_bboxes(self, bboxes: np.ndarray, warp: Warp, **params: Any) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        h, w = warp.image_size
        out = np.array(bboxes, dtype=np.float64, copy=True)
        xyxy = torch.from_numpy(out[:, :4] * np.array([w, h, w, h]))[None]
        mapped = warp.forward_boxes(xyxy.float(), (h, w))[0].double().numpy()
        out[:, :4] = mapped / np.array([w, h, w, h])
        return out.astype(np.asarray(bboxes).dtype, copy=False)

    def apply_to_keypoints(self, keypoints: np.ndarray, warp: Warp, **params: Any) -> np.ndarray:
        if len(keypoints) == 0:
            return keypoints
        out = np.array(keypoints, dtype=np.float64, copy=True)
        pts = torch.from_numpy(out[:, :2] + 0.5).float()[None]  # integer keypoints are pixel centres
        out[:, :2] = warp.forward_points(pts)[0].double().numpy() - 0.5
        return out.astype(np.asarray(keypoints).dtype, copy=False)
