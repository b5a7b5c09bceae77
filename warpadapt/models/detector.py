"""Faster R-CNN + FPN over any timm backbone wrapped with :func:`warpadapt.wrap` (glue only).

Everything that detects is torchvision's: ``GeneralizedRCNNTransform`` (resize, normalise, pad),
``FeaturePyramidNetwork``, ``RegionProposalNetwork`` with its ``AnchorGenerator`` and ``RPNHead``,
``RoIHeads`` (proposal sampling, ``MultiScaleRoIAlign``, ``TwoMLPHead``, ``FastRCNNPredictor``,
``fastrcnn_loss``, post-processing). This file only connects them to a timm feature extractor and
decides WHERE the warp happens:

* the boxes that guide the warp are the ground-truth boxes AFTER the transform, i.e. in pixels of
  the batched tensor the backbone actually sees (resized, normalised, padded);
* with ``warp=True`` every FPN input level is computed from the warped image and unwarped before
  the FPN, the RPN and the RoI heads (so anchors, targets and losses stay in the original geometry);
* nothing is warped unless the caller says so (``warp=False`` is the default, and eval mode never
  warps): the recipe warps only the labelled source forward.

Plain ViTs (every feature level at one stride) get a ViTDet-style simple pyramid (deconvolutions
up, max-pooling down, from the last map) in front of the FPN; it runs between the warp and the
unwarp, so every FPN input level is unwarped at its own resolution. Anchor sizes follow the levels
used: ``anchor_scale * stride`` per level (torchvision's ResNet-50 FPN: 8 x (4, 8, 16, 32, 64)).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..modules import FeatureUnwarp
from ..wrap import WarpedBackbone, wrap
from .backbone import create_backbone

__all__ = ["Detector", "DetectorOutput", "TimmFPN", "SimplePyramid"]


class SimplePyramid(nn.Module):
    """ViTDet-style pyramid from one map of stride ``s``: levels at strides s/4, s/2, s, 2s.

    Example:
        >>> p = SimplePyramid(192)
        >>> [tuple(t.shape) for t in p([torch.rand(1, 192, 4, 8)])]
        [(1, 48, 16, 32), (1, 96, 8, 16), (1, 192, 4, 8), (1, 192, 2, 4)]
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = int(channels)
        self.up4 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), nn.GroupNorm(1, c // 2), nn.GELU(),
                                 nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.up2 = nn.ConvTranspose2d(c, c // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.channels = [c // 4, c // 2, c, c]
        self.scales = [0.25, 0.5, 1.0, 2.0]

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        x = feats[-1]
        return [self.up4(x), self.up2(x), x, self.down2(x)]


class TimmFPN(nn.Module):
    """timm features (wrapped: warp in, [neck,] unwarp out) -> torchvision FPN.

    Args:
        body: a :class:`~warpadapt.WarpedBackbone` over a timm ``features_only`` model; for a plain
            ViT (one stride) its neck is a :class:`SimplePyramid` (``wrap(model, neck=SimplePyramid(c))``),
            which the body runs between the warp and the unwarp.
        out_channels: FPN channels.

    ``forward(x, boxes=None)`` returns an ``OrderedDict`` ``"0", "1", ..., "pool"`` of
    (B, out_channels, H / stride, W / stride) maps; ``strides`` lists each level's stride. Whether the
    input is warped is the body's rule (training mode and boxes given).

    Example:
        >>> body = wrap(create_backbone("resnet18", out_indices=(2, 3)))
        >>> fpn = TimmFPN(body, 32)
        >>> feats = fpn.train()(torch.rand(2, 3, 64, 96), [torch.tensor([[8., 8., 20., 30.]])] * 2)
        >>> list(feats), fpn.strides, tuple(feats["0"].shape)
        (['0', '1', 'pool'], [8, 16, 32], (2, 32, 8, 12))
    """

    def __init__(self, body: WarpedBackbone, out_channels: int = 256) -> None:
        super().__init__()
        if not isinstance(body, WarpedBackbone):
            raise TypeError(f"body must be a warpadapt.WarpedBackbone (use warpadapt.wrap), got {type(body).__name__}")
        channels = list(body.feature_info.channels())
        strides = list(body.feature_info.reduction())
        if isinstance(body.neck, SimplePyramid):
            strides = [max(1, int(strides[-1] * s)) for s in body.neck.scales]
            channels = body.neck.channels
        elif body.neck is not None:
            raise TypeError(f"body.neck: TimmFPN knows the levels of a SimplePyramid neck only, got {type(body.neck).__name__}")
        elif len(set(strides)) == 1 and len(strides) > 1:
            raise ValueError("body: every level has stride {strides[0]} (a plain ViT): give it a pyramid, "
                             "wrap(model, neck=SimplePyramid(channels))")
        self.body = body
        self.fpn = FeaturePyramidNetwork(channels, int(out_channels), extra_blocks=LastLevelMaxPool())
        self.out_channels = int(out_channels)
        self.strides = strides + [2 * strides[-1]]  # the pool level

    def forward(self, x: Tensor, boxes: list[Tensor] | None = None) -> "OrderedDict[str, Tensor]":
        feats = self.body(x, boxes)  # warp -> timm -> [pyramid] -> unwarp every level (when warping)
        if self.body.layout == "NHWC":
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class DetectorOutput(NamedTuple):
    """What a training forward returns (see :meth:`Detector.forward`).

    losses: dict ``loss_objectness``, ``loss_rpn_box_reg`` and, with ``roi_loss=True``,
    ``loss_classifier``, ``loss_box_reg``; proposals: list of B (P_i, 4) sampled proposals (the RPN's
    proposals with the targets' boxes appended, then sampled by the RoI heads) in ``images``
    coordinates; labels: list of B (P_i,) matched labels (0 = background); class_logits:
    (sum P_i, K + 1); images: the transformed :class:`ImageList` (what the backbone saw, unwarped).
    """

    losses: dict
    proposals: list
    labels: list
    class_logits: Tensor
    images: ImageList


class Detector(FasterRCNN):
    """torchvision Faster R-CNN with an FPN over ``warpadapt.wrap(timm.create_model(backbone, features_only=True))``.

    Args:
        backbone: any timm model name (ResNets, ConvNeXt, PVT-v2, Swin, plain ViTs ...).
        num_classes: torchvision convention: foreground classes + 1 (background = label 0).
        out_indices: timm feature levels to use (None: every level at stride >= 4, from timm's
            ``feature_info``: any family).
        pretrained_file: local timm weights (nothing downloads; None = random init);
            ``pretrained_strict``: see :func:`~warpadapt.models.backbone.create_backbone`.
        warp: the warp, as :func:`warpadapt.wrap` takes it (a ``SaliencyWarp``, a guidance name
            "instance" / "static" / "geometric" / "none", or a mapping of its options; None: instance).
        image_size: (H, W) of the training batches, for fixed-size timm families (None: timm's default).
        fpn_channels: FPN width. anchor_scale: anchor side = anchor_scale x level stride.
        aspect_ratios: anchor aspect ratios (h / w), the same at every level.
        min_size, max_size: torchvision's resize (the shorter side to ``min_size``).
        representation_size: width of the two-layer RoI box head.
        timm_kwargs: extra ``timm.create_model`` arguments (they win over the size arguments).
        **kwargs: any other ``torchvision.models.detection.FasterRCNN`` argument
            (``rpn_batch_size_per_image``, ``box_batch_size_per_image``, ``rpn_post_nms_top_n_train`` ...).

    Forward:
        eval mode: ``model(images)`` -> list of ``{"boxes", "scores", "labels"}`` in input pixels
        (never warped). Training mode: ``model(images, targets, warp=..., roi_loss=...)`` ->
        :class:`DetectorOutput`; ``warp=True`` warps with the transformed targets' boxes (the only
        warped forward); ``roi_loss=False`` skips the RoI losses (targets = pseudo-labels: they train
        the RPN and join the proposals; use only ``loss_objectness``, i.e. box regression weight 0).
        :meth:`rescore` runs this model's RoI box head on given proposals over its own features.

    Example:
        >>> det = Detector("resnet18", num_classes=3, out_indices=(2, 3), warp={"fwhm": 8.0}, fpn_channels=32, min_size=64,
        ...                max_size=128, representation_size=64)
        >>> imgs = torch.rand(2, 3, 64, 128)
        >>> tgts = [{"boxes": torch.tensor([[10., 10., 30., 40.]]), "labels": torch.tensor([1])}] * 2
        >>> out = det.train()(imgs, tgts, warp=True)
        >>> sorted(out.losses), out.class_logits.shape[1]
        (['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg'], 3)
        >>> logits = det.rescore(out.images, out.proposals)
        >>> logits.shape == out.class_logits.shape
        True
        >>> sorted(det.eval()(imgs)[0])
        ['boxes', 'labels', 'scores']
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 8, *, out_indices=None,
                 pretrained_file: str | None = None, pretrained_strict: bool = True, warp=None,
                 image_size=None, fpn_channels: int = 256, anchor_scale: float = 8.0, aspect_ratios=(0.5, 1.0, 2.0),
                 min_size: int = 800, max_size: int = 1333, representation_size: int = 1024,
                 timm_kwargs: dict | None = None, **kwargs) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2 (foreground classes + background), got {num_classes!r}")
        if not anchor_scale > 0:
            raise ValueError(f"anchor_scale: expected a positive number, got {anchor_scale!r}")
        model = create_backbone(backbone, out_indices, pretrained_file, image_size=image_size,
                                pretrained_strict=pretrained_strict, **(timm_kwargs or {}))
        plain = len(set(model.feature_info.reduction())) == 1  # a plain ViT: a simple pyramid from its last map
        pyramid = SimplePyramid(model.feature_info.channels()[-1]) if plain else None
        neck = TimmFPN(wrap(model, warp, neck=pyramid), fpn_channels)
        levels = [str(i) for i in range(len(neck.strides) - 1)]
        anchors = AnchorGenerator(tuple((float(anchor_scale * s),) for s in neck.strides),
                                  (tuple(float(a) for a in aspect_ratios),) * len(neck.strides))
        pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
        head = TwoMLPHead(fpn_channels * 7 * 7, int(representation_size))
        super().__init__(neck, num_classes=None, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                         box_roi_pool=pool, box_head=head,
                         box_predictor=FastRCNNPredictor(int(representation_size), num_classes), **kwargs)
        self.num_classes = num_classes

    @property
    def strides(self) -> list[int]:
        """Stride of every FPN level (the anchors follow them)."""
        return self.backbone.strides

    def features(self, images: ImageList, targets=None, warp: bool = False) -> "OrderedDict[str, Tensor]":
        """FPN features of transformed images; ``warp=True`` hands the targets' boxes to the backbone,
        which warps with them (training mode only: its rule)."""
        boxes = [t["boxes"] for t in targets] if (warp and targets is not None) else None
        return self.backbone(images.tensors, boxes)

    def forward(self, images, targets=None, *, warp: bool = False, roi_loss: bool = True):
        if not self.training:
            if warp:
                raise ValueError("warp: evaluation never warps (warp=True needs training mode)")
            return self.detect(images)
        if targets is None:
            raise ValueError("targets: training mode needs a list of {'boxes', 'labels'} (one per image)")
        images, targets = self.transform(list(images), [dict(t) for t in targets])
        feats = self.features(images, targets, warp=warp)
        proposals, losses = self.rpn(images, feats, targets)
        # The RoI heads append the targets' boxes to the proposals, then sample positives/negatives.
        proposals, _, labels, reg_targets = self.roi_heads.select_training_samples(proposals, targets)
        box_feats = self.roi_heads.box_head(self.roi_heads.box_roi_pool(feats, proposals, images.image_sizes))
        class_logits, box_regression = self.roi_heads.box_predictor(box_feats)
        if roi_loss:
            loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, reg_targets)
            losses = dict(losses, loss_classifier=loss_cls, loss_box_reg=loss_box)
        return DetectorOutput(losses, proposals, labels, class_logits, images)

    @torch.no_grad()
    def detect(self, images, return_features: bool = False):
        """Detections (eval path, never warped) in the input images' pixels.

        With ``return_features=True`` returns ``(detections, image_list, features)`` so a teacher can
        re-score proposals (:meth:`rescore`) without a second backbone pass on the same images."""
        sizes = [tuple(img.shape[-2:]) for img in images]
        il, _ = self.transform(list(images))
        feats = self.backbone(il.tensors)
        proposals, _ = self.rpn(il, feats)
        dets, _ = self.roi_heads(feats, proposals, il.image_sizes)
        dets = self.transform.postprocess(dets, il.image_sizes, sizes)
        return (dets, il, feats) if return_features else dets

    def rescore(self, images: ImageList, proposals: list[Tensor], features=None) -> Tensor:
        """Class logits (sum P_i, K + 1) of this model's RoI box head for ``proposals`` over its own
        (never warped) features of ``images`` (an :class:`ImageList` from a training forward);
        ``features``: this model's features of the same images (from ``detect(..., return_features=True)``)."""
        feats = self.backbone(images.tensors) if features is None else features
        box_feats = self.roi_heads.box_head(self.roi_heads.box_roi_pool(feats, proposals, images.image_sizes))
        return self.roi_heads.box_predictor(box_feats)[0]
