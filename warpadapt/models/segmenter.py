"""A semantic segmenter: ``warpadapt.wrap`` over any timm ``features_only`` backbone + an all-MLP head.

The head is the SegFormer / DAFormer "all-MLP" decoder: every backbone level gets its own linear
projection (a 1x1 convolution) to ``embed_dim`` channels, is upsampled bilinearly to stride 4 of the
input, the levels are concatenated and fused (1x1 convolution, BatchNorm, ReLU), then classified
(dropout, 1x1 convolution). The logits are upsampled to the input size.

The backbone is wrapped (:func:`warpadapt.wrap`): in training with ``boxes`` the image is warped,
the backbone runs on the warped image and EVERY level is unwarped before the head sees it; in eval
mode, or with ``boxes=None``, it is exactly the bare backbone (nothing is warped).

Backbones: any timm model that supports ``features_only=True``: hierarchical transformers
(``pvt_v2_b0``, the MiT-B0 design of SegFormer / DAFormer, the default), CNNs (ResNet, ConvNeXt, ...)
and plain ViTs. Levels finer than stride 4 (the ResNet stem at stride 2) are left out by default. A
plain ViT has a single stride (16): its last blocks are the "levels", all at stride 16, and the head
upsamples them to stride 4 like any other level; ViTs are built with ``dynamic_img_size=True`` so
any image size that is a multiple of the patch size works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..wrap import WarpedBackbone, wrap
from .backbone import create_backbone

__all__ = ["AllMLPHead", "Segmenter", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AllMLPHead(nn.Module):
    """SegFormer / DAFormer all-MLP decoder: per-level projection, upsample to stride 4, fuse, classify.

    Args:
        in_channels: channels of each level (``feature_info.channels()``).
        num_classes: K output classes.
        embed_dim: channels of every projected level and of the fused map (SegFormer-B0: 256).
        dropout: dropout before the classifier (SegFormer: 0.1).

    Shape:
        - features: list of L tensors (B, C_l, h_l, w_l), any strides.
        - size: (h, w) the fused map is computed at (stride 4 of the input).
        - output: (B, K, h, w) logits.

    Example:
        >>> head = AllMLPHead([8, 16], num_classes=5, embed_dim=12)
        >>> head([torch.rand(2, 8, 16, 32), torch.rand(2, 16, 8, 16)], (16, 32)).shape
        torch.Size([2, 5, 16, 32])
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        if len(in_channels) == 0:
            raise ValueError("in_channels must list at least one level")
        if int(num_classes) < 1 or int(embed_dim) < 1:
            raise ValueError(f"num_classes and embed_dim must be >= 1, got {num_classes}, {embed_dim}")
        self.proj = nn.ModuleList(nn.Conv2d(int(c), embed_dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, int(num_classes), 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        if len(features) != len(self.proj):
            raise ValueError(f"features: expected {len(self.proj)} levels, got {len(features)}")
        size = tuple(int(s) for s in size)
        ups = [
            F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else p(f)
            for p, f in zip(self.proj, features)
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(ups, dim=1))))


class Segmenter(nn.Module):
    """Semantic segmentation over a wrapped timm backbone: ``forward(images, boxes=None) -> logits``.

    Args:
        backbone: a timm model name (built by :func:`~warpadapt.models.backbone.create_backbone`) or a timm ``features_only``
            model.
        num_classes: K (Cityscapes train ids: 19).
        out_indices: feature levels (None: strides >= 4, see :func:`~warpadapt.models.backbone.create_backbone`).
        pretrained_file: local timm checkpoint for the backbone (None: random init).
        embed_dim, dropout: of the :class:`AllMLPHead`.
        warp: the warp, as :func:`warpadapt.wrap` takes it (a ``SaliencyWarp``, a guidance name
            "instance" / "static" / "geometric" / "none", or a mapping of its options; None: instance).
        pretrained_strict, pretrained_format: see :func:`~warpadapt.models.backbone.create_backbone`.
        image_size: (H, W) of the training images, for fixed-size timm families (None: timm's default).
        timm_kwargs: extra ``timm.create_model`` arguments.

    ``forward(images, boxes=None)``:
        images: (B, 3, H, W) RGB in [0, 1] (normalised inside with the ImageNet mean / std).
        boxes: list of B tensors (N_i, 4) xyxy pixels; in training mode they warp the backbone's input
            (features are unwarped before the head). None, or eval mode: no warp.
        returns logits (B, K, H, W) at the input size (bilinear from stride 4); with
        ``return_features=True`` also the (unwarped) backbone features, NCHW, one per level.

    ``param_groups(lr, head_lr_mult)`` splits backbone and head parameters for the optimiser.

    Example:
        >>> net = Segmenter("resnet18", num_classes=4, embed_dim=16).train()
        >>> x = torch.rand(2, 3, 64, 96)
        >>> net(x, boxes=[torch.tensor([[10., 20., 30., 40.]]), torch.zeros(0, 4)]).shape
        torch.Size([2, 4, 64, 96])
        >>> net.eval()(x).shape
        torch.Size([2, 4, 64, 96])
    """

    def __init__(
        self,
        backbone: str | nn.Module = "pvt_v2_b0",
        num_classes: int = 19,
        out_indices: Sequence[int] | None = None,
        pretrained_file: str | None = None,
        embed_dim: int = 256,
        dropout: float = 0.1,
        warp=None,
        *,
        pretrained_strict: bool = True,
        pretrained_format: str = "auto",
        image_size: Sequence[int] | None = None,
        timm_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            model = create_backbone(backbone, out_indices, pretrained_file, image_size=image_size,
                                    pretrained_strict=pretrained_strict, pretrained_format=pretrained_format,
                                    **(timm_kwargs or {}))
        elif isinstance(backbone, nn.Module):
            model = backbone
        else:
            raise TypeError(f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}")
        self.backbone: WarpedBackbone = wrap(model, warp)
        self.num_classes = int(num_classes)
        self.head = AllMLPHead(model.feature_info.channels(), self.num_classes, embed_dim, dropout)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> ImageNet-normalised (what the backbone receives when not warped)."""
        return (images - self.mean) / self.std

    def forward(self, images: Tensor, boxes=None, return_features: bool = False):
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        h, w = images.shape[-2:]
        feats = self.backbone(self.normalize(images), boxes=boxes)  # warped + unwarped in training with boxes
        if self.backbone.layout == "NHWC":  # e.g. Swin
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        logits = self.head(feats, (math.ceil(h / 4), math.ceil(w / 4)))
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return (logits, feats) if return_features else logits

    def param_groups(self, lr: float, head_lr_mult: float = 10.0, weight_decay: float = 0.01) -> list[dict]:
        """Optimiser parameter groups: backbone at ``lr``, head at ``lr * head_lr_mult`` (DAFormer: x10).

        Example:
            >>> groups = Segmenter("resnet18", num_classes=3, embed_dim=8).param_groups(1e-3)
            >>> [g["lr"] for g in groups]
            [0.001, 0.01]
        """
        return [
            dict(params=list(self.backbone.parameters()), lr=lr, weight_decay=weight_decay),
            dict(params=list(self.head.parameters()), lr=lr * head_lr_mult, weight_decay=weight_decay),
        ]
