"""Data-loader transforms that warp the image AND its labels ("warp the labels too" mode).

For pipelines that cannot unwarp features (an off-the-shelf detector, a segmentation loss computed on
the warped image), the sample's own boxes drive an Instance-Warp of the image and every label is moved
consistently: masks are resampled with nearest neighbour, boxes and keypoints are mapped exactly (a
separable monotone warp keeps axis-aligned boxes axis-aligned, so mapping the two corners is exact).

Two front ends over the same :class:`~warpadapt.SaliencyWarp` and :class:`~warpadapt.warp.Warp`; each
takes a ``SaliencyWarp`` (or a guidance name, or ``SaliencyWarp``'s options, read in one place:
:func:`~warpadapt.modules.as_saliency_warp`):

- :class:`RandomSaliencyWarp` (``kornia_warp.py``): a kornia augmentation for
  ``kornia.augmentation.AugmentationSequential`` (image, ``bbox_xyxy`` / ``bbox`` / ``bbox_xywh``,
  ``mask``, ``keypoints``), with ``inverse``; :func:`attach_box_guidance` hands a container's boxes to it.
- :class:`AlbuSaliencyWarp` (``albumentations_warp.py``): an albumentations 2.0.8 ``DualTransform``
  (image, mask(s), bboxes in any format, keypoints), numpy in, numpy out.

Example:
    >>> import torch
    >>> from warpadapt import SaliencyWarp
    >>> aug = RandomSaliencyWarp(SaliencyWarp(fwhm=9.0))
    >>> out = aug(torch.rand(1, 3, 32, 64), saliency_boxes=[torch.tensor([[20., 8., 30., 16.]])])
    >>> out.shape, aug.warper.fwhm
    (torch.Size([1, 3, 32, 64]), 9.0)
"""

from .albumentations_warp import AlbuSaliencyWarp
from .kornia_warp import RandomSaliencyWarp, attach_box_guidance, boxes_from_kornia

__all__ = ["RandomSaliencyWarp", "AlbuSaliencyWarp", "attach_box_guidance", "boxes_from_kornia"]
