"""DAFormer's ImageNet feature distance (Hoyer et al., CVPR 2022, section 3.3; ``lhoyer/DAFormer``'s
``mmseg/models/uda/dacs.py``): keep the student's bottleneck features of SOURCE images close to those of
a frozen copy of its ImageNet-pretrained backbone, on the pixels of thing classes only, so adaptation
does not forget what ImageNet taught about objects.

    L_FD = lambda_FD * mean over masked feature pixels of || F_student(x_S) - F_ImageNet(x_S) ||_2

The mask is the source label brought to the feature map's size by a majority rule: a feature pixel
keeps its patch's most frequent class if that class covers at least ``min_ratio`` (DAFormer: 0.75) of
the patch, else it is ignored; the loss runs over the pixels whose class is a thing class (DAFormer:
Cityscapes train ids 6, 7, 11-18). Only meaningful with a pretrained backbone (``model.pretrained_file``).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["downscale_label_ratio", "feature_distance", "ImageNetFeatures"]


def downscale_label_ratio(labels: Tensor, size: Sequence[int], min_ratio: float, num_classes: int,
                          ignore_index: int = 255) -> Tensor:
    """Labels (B, H, W) -> (B, h, w): each output pixel takes the most frequent class of its input patch
    if that class covers >= ``min_ratio`` of the patch (ignored pixels count as their own class),
    else ``ignore_index`` (DAFormer's ``downscale_label_ratio``). ``H, W`` must be multiples of ``h, w``.

    >>> y = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 3], [4, 4, 0, 0], [4, 255, 0, 0]]])
    >>> downscale_label_ratio(y, (2, 2), 0.75, 5).tolist()
    [[[1, 2], [4, 0]]]
    >>> downscale_label_ratio(y, (2, 2), 0.8, 5).tolist()   # 3 of 4 pixels are not enough now
    [[[1, 255], [255, 0]]]
    """
    if labels.dim() != 3:
        raise ValueError(f"labels: expected (B, H, W), got {tuple(labels.shape)}")
    (H, W), (h, w) = labels.shape[-2:], tuple(int(v) for v in size)
    if H % h or W % w:
        raise ValueError(f"size: the label size {(H, W)} must be a multiple of {(h, w)}")
    if not 0.0 < min_ratio <= 1.0:
        raise ValueError(f"min_ratio: expected a number in (0, 1], got {min_ratio}")
    ids = torch.where(labels == ignore_index, torch.full_like(labels, num_classes), labels)
    share = F.avg_pool2d(F.one_hot(ids, num_classes + 1).permute(0, 3, 1, 2).float(), (H // h, W // w))
    best, cls = share.max(1)
    keep = (best >= min_ratio - 1e-6) & (cls < num_classes)
    return torch.where(keep, cls, torch.full_like(cls, ignore_index))


def feature_distance(student: Tensor, imagenet: Tensor, labels: Tensor, classes: Sequence[int],
                     min_ratio: float = 0.75, num_classes: int = 19, ignore_index: int = 255) -> Tensor:
    """The mean L2 distance (over channels) between ``student`` and ``imagenet`` features (B, C, h, w) on
    the feature pixels whose downscaled source label is one of ``classes``; 0 when there is none (DAFormer's
    mean of an empty set would be NaN). The ImageNet features carry no gradient.

    >>> s = torch.zeros(1, 2, 1, 2); t = torch.tensor([[[[3.0, 1.0]], [[4.0, 1.0]]]])
    >>> y = torch.tensor([[[13, 13, 0, 0], [13, 13, 0, 0]]])          # car left, road right
    >>> float(feature_distance(s, t, y, classes=[13]))                 # only the car pixel: || (3, 4) ||
    5.0
    >>> float(feature_distance(s, t, torch.zeros(1, 2, 4, dtype=torch.long), classes=[13]))
    0.0
    """
    if student.shape != imagenet.shape:
        raise ValueError(f"features: student {tuple(student.shape)} and ImageNet {tuple(imagenet.shape)} differ")
    (H, W), (h, w) = labels.shape[-2:], student.shape[-2:]
    if H % h or W % w:  # a feature map of ceil size (an odd input): the label nearest-resized to whole patches
        size = (h * -(-H // h), w * -(-W // w))
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    small = downscale_label_ratio(labels, (h, w), min_ratio, num_classes, ignore_index)
    mask = torch.isin(small, torch.as_tensor(list(classes), device=small.device)).to(student.dtype)
    dist = (student.float() - imagenet.detach().float()).norm(p=2, dim=1)
    return (dist * mask).sum() / mask.sum().clamp(min=1.0)


class ImageNetFeatures(nn.Module):
    """A frozen copy of a wrapped backbone as it was loaded (its ImageNet weights): the bottleneck (last)
    feature map (B, C, h, w) of plain, never warped, normalised images, in eval mode, without gradients.
    Make it before training changes the student. (A backbone with a neck, a plain ViT's pyramid, is
    copied with its neck: that part is not from ImageNet.)

    >>> from warpadapt import wrap
    >>> import timm
    >>> net = wrap(timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3)))
    >>> ImageNetFeatures(net)(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 256, 4, 4])
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ImageNetFeatures":  # always eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        last = self.backbone(images)[-1]
        return last.permute(0, 3, 1, 2) if getattr(self.backbone, "layout", "NCHW") == "NHWC" else last
