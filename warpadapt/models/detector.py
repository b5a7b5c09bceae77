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

import contextlib
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..modules import FeatureUnwarp
from ..wrap import WarpedBackbone, wrap
from .backbone import create_backbone

__all__ = ["Detector", "DetectorOutput", "TimmFPN", "SimplePyramid", "convert_norm", "NORMS"]

#: ``model.norm`` choices of :func:`convert_norm`.
NORMS = ("bn", "frozen", "sync")


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
        return self.pyramid(self.body(x, boxes))  # warp -> timm -> [pyramid] -> unwarp every level (when warping)

    def pyramid(self, feats: list[Tensor]) -> "OrderedDict[str, Tensor]":
        """The FPN over the body's feature maps (``forward`` is ``pyramid(body(x, boxes))``)."""
        if self.body.layout == "NHWC":
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class DetectorOutput(NamedTuple):
    """What a training forward returns (see :meth:`Detector.forward`).

    losses: dict ``loss_objectness``, ``loss_rpn_box_reg`` and, with ``roi_loss=True``,
    ``loss_classifier``, ``loss_box_reg``; proposals: list of B (P_i, 4) sampled proposals (the RPN's
    proposals with the targets' boxes appended, then sampled by the RoI heads) in ``images``
    coordinates; labels: list of B (P_i,) matched labels (0 = background); class_logits:
    (sum P_i, K + 1); images: the transformed :class:`ImageList` (what the backbone saw, unwarped);
    box_regression: (sum P_i, 4 (K + 1)) class-specific box deltas of the proposals.
    """

    losses: dict
    proposals: list
    labels: list
    class_logits: Tensor
    images: ImageList
    box_regression: Tensor


class Detector(FasterRCNN):
    """torchvision Faster R-CNN with an FPN over ``warpadapt.wrap(timm.create_model(backbone, features_only=True))``.

    Args:
        backbone: any timm model name (ResNets, ConvNeXt, PVT-v2, Swin, plain ViTs ...).
        num_classes: torchvision convention: foreground classes + 1 (background = label 0).
        out_indices: timm feature levels to use (None: every level at stride >= 4, from timm's
            ``feature_info``: any family).
        pretrained_file: local timm weights (nothing downloads; None = random init);
            ``pretrained_strict``, ``pretrained_format`` (auto | timm | torchvision | segformer |
            hf_segformer): see :func:`~warpadapt.models.backbone.create_backbone`.
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
        (never warped). Training mode: ``model(images, targets, warp=..., roi_loss=..., scale=...,
        min_box_area=...)`` -> :class:`DetectorOutput`; ``warp=True`` warps with the transformed targets'
        boxes (the only warped forward); ``roi_loss=False`` skips the RoI losses (targets = pseudo-labels:
        they train the RPN and join the proposals; use only ``loss_objectness``, i.e. box regression
        weight 0); ``scale`` resizes the images (and their targets) to ``scale`` x the size the transform
        would give them (2PCNet's student-scale curriculum); ``min_box_area`` drops the targets whose box
        area, in the pixels the backbone sees, is not above it (2PCNet: 16 px^2 for scaled pseudo-labels).
        :meth:`rescore` runs this model's RoI box head on given proposals over its own features;
        :meth:`detections_among` returns the detections a training forward's proposals give.

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
        >>> det(imgs, tgts, scale=0.5).images.image_sizes   # 2PCNet's scaled student
        [(32, 64), (32, 64)]
        >>> sorted(det.eval()(imgs)[0])
        ['boxes', 'labels', 'scores']
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 8, *, out_indices=None,
                 pretrained_file: str | None = None, pretrained_strict: bool = True,
                 pretrained_format: str = "auto", warp=None,
                 image_size=None, fpn_channels: int = 256, anchor_scale: float = 8.0, aspect_ratios=(0.5, 1.0, 2.0),
                 min_size: int = 800, max_size: int = 1333, representation_size: int = 1024,
                 timm_kwargs: dict | None = None, **kwargs) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2 (foreground classes + background), got {num_classes!r}")
        if not anchor_scale > 0:
            raise ValueError(f"anchor_scale: expected a positive number, got {anchor_scale!r}")
        model = create_backbone(backbone, out_indices, pretrained_file, image_size=image_size,
                                pretrained_strict=pretrained_strict, pretrained_format=pretrained_format,
                                **(timm_kwargs or {}))
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

    def forward(self, images, targets=None, *, warp: bool = False, roi_loss: bool = True, scale: float = 1.0,
                min_box_area: float = 0.0):
        if not self.training:
            if warp or scale != 1.0:
                raise ValueError("warp, scale: evaluation never warps nor rescales (they need training mode)")
            return self.detect(images)
        if targets is None:
            raise ValueError("targets: training mode needs a list of {'boxes', 'labels'} (one per image)")
        with self.input_scale(scale):  # the transform resizes to scale x its usual size, boxes with the images
            images, targets = self.transform(list(images), [dict(tg) for tg in targets])
        if min_box_area > 0:
            targets = [_drop_small_boxes(tg, min_box_area) for tg in targets]
        feats = self.features(images, targets, warp=warp)
        proposals, losses = self.rpn(images, feats, targets)
        # The RoI heads append the targets' boxes to the proposals, then sample positives/negatives.
        proposals, _, labels, reg_targets = self.roi_heads.select_training_samples(proposals, targets)
        box_feats = self.roi_heads.box_head(self.roi_heads.box_roi_pool(feats, proposals, images.image_sizes))
        class_logits, box_regression = self.roi_heads.box_predictor(box_feats)
        if roi_loss:
            loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, reg_targets)
            losses = dict(losses, loss_classifier=loss_cls, loss_box_reg=loss_box)
        return DetectorOutput(losses, proposals, labels, class_logits, images, box_regression)

    @torch.no_grad()
    def detections_among(self, proposals: list[Tensor], class_logits: Tensor, box_regression: Tensor,
                         image_sizes: list, score_thresh: float | None = None, nms_thresh: float | None = None,
                         detections_per_img: int | None = None) -> list[dict]:
        """The class-specific detections that a training forward's proposals give, with the proposal each
        came from (detectron2's ``fast_rcnn_inference``, which 2PCNet's student runs on its sampled
        proposals; torchvision's ``postprocess_detections`` drops the indices).

        Per image: softmax class probabilities; each foreground class's box decoded from that class's
        deltas and clipped to the image; every (proposal, class) pair whose probability is above
        ``score_thresh`` is a candidate; NMS at ``nms_thresh`` per image and class; the
        ``detections_per_img`` best kept. One proposal can give detections of several classes. Nothing
        here carries gradients. Data-dependent sizes (thresholding, NMS) need a few host syncs; NMS runs
        once for the whole batch.

        Args:
            proposals: B (P_i, 4) boxes in transformed-image pixels (``DetectorOutput.proposals``).
            class_logits: (sum P_i, K + 1), background first; box_regression: (sum P_i, 4 (K + 1)).
            image_sizes: B (h, w) the boxes are clipped to (``DetectorOutput.images.image_sizes``).
            score_thresh, nms_thresh, detections_per_img: None takes this model's RoI heads' values.

        Returns:
            one dict per image: ``boxes`` (D_i, 4), ``scores`` (D_i,), ``labels`` (D_i,) in 1..K, ``index``
            (D_i,) the row of the image's proposals each came from, ``row`` (D_i,) that row in
            ``class_logits`` (the proposals of all images concatenated); best score first.

        Example:
            >>> det = Detector("resnet18", num_classes=3, out_indices=(2, 3), fpn_channels=16, representation_size=16)
            >>> props = [torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])]
            >>> logits = torch.tensor([[0., 4., 0.], [0., 3., 0.], [3., -9., 3.]])  # background, class 1, class 2
            >>> d = det.detections_among(props, logits, torch.zeros(3, 12), [(32, 32)])[0]
            >>> d["index"].tolist(), d["labels"].tolist()   # proposal 1 loses the NMS to proposal 0
            ([0, 2], [1, 2])
        """
        rh = self.roi_heads
        score_thresh = rh.score_thresh if score_thresh is None else score_thresh
        nms_thresh = rh.nms_thresh if nms_thresh is None else nms_thresh
        top = rh.detections_per_img if detections_per_img is None else detections_per_img
        counts = [len(p) for p in proposals]
        n, b, dev = sum(counts), len(proposals), class_logits.device
        k = class_logits.shape[1] - 1
        image = torch.repeat_interleave(torch.arange(b, device=dev), torch.tensor(counts, device=dev), output_size=n)
        boxes = rh.box_coder.decode(box_regression, list(proposals)).reshape(n, k + 1, 4)[:, 1:]
        hw = torch.tensor([list(s) for s in image_sizes], device=dev, dtype=boxes.dtype).reshape(b, 2)[image]
        wh = hw.flip(1).repeat(1, 2)[:, None, :]  # (n, 1, 4): w, h, w, h
        boxes = torch.minimum(boxes.clamp_min(0), wh)
        scores = class_logits.softmax(1)[:, 1:]
        row, cls = torch.nonzero(scores > score_thresh, as_tuple=True)
        cand_scores = scores[row, cls]
        keep = batched_nms(boxes[row, cls], cand_scores, image[row] * k + cls, nms_thresh)  # by score, descending
        img = image[row[keep]]
        img, order = torch.sort(img, stable=True)  # image by image, each still by score
        keep = keep[order]
        per_image = torch.bincount(img, minlength=b)
        rank = torch.arange(len(keep), device=dev) - (per_image.cumsum(0) - per_image)[img]
        keep = keep[rank < top]
        sizes = torch.bincount(image[row[keep]], minlength=b).tolist()
        starts = torch.tensor([0] + counts[:-1], device=dev).cumsum(0)
        out = []
        for i, sel in enumerate(keep.split(sizes)):
            r = row[sel]
            out.append({"boxes": boxes[r, cls[sel]], "scores": cand_scores[sel], "labels": cls[sel] + 1,
                        "index": r - starts[i], "row": r})
        return out

    @torch.no_grad()
    @contextlib.contextmanager
    def input_scale(self, scale: float):
        """Within the block ``self.transform`` resizes every image to ``scale`` x its usual size (its
        ``min_size`` / ``max_size`` scaled; restored on exit). Training uses it for ``forward(scale=)``;
        a test-time scale sweep wraps evaluation in it (detections stay in the input images' pixels).

        >>> det = Detector("resnet18", num_classes=2, out_indices=(3,), fpn_channels=16, min_size=64, max_size=128,
        ...                representation_size=32)
        >>> with det.input_scale(1.5):
        ...     det.transform.min_size, det.transform.max_size
        ((96.0,), 192.0)
        >>> det.transform.min_size, det.transform.max_size
        ((64,), 128)
        """
        if not isinstance(scale, (int, float)) or not 0.0 < scale <= 8.0:
            raise ValueError(f"scale: expected a number in (0, 8], got {scale!r}")
        t = self.transform
        saved = t.min_size, t.max_size
        t.min_size, t.max_size = tuple(m * scale for m in saved[0]), saved[1] * scale
        try:
            yield self
        finally:
            t.min_size, t.max_size = saved

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


def _drop_small_boxes(target: dict, min_area: float) -> dict:
    """``target`` without the boxes of area <= ``min_area`` (every per-box entry filtered alike)."""
    boxes = target["boxes"]
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > min_area
    return {k: v[keep] if isinstance(v, Tensor) and v.shape[:1] == keep.shape else v for k, v in target.items()}


def convert_norm(model: nn.Module, norm: str = "bn", distributed: bool | None = None) -> nn.Module:
    """Set the BatchNorm layers of a detector (or any module): ``model.norm`` of the twopcnet recipe.

    Args:
        model: a :class:`Detector` (``frozen`` converts its backbone, where its BatchNorm layers are) or
            any module (converted whole).
        norm: ``bn`` leaves the model as it is (batch statistics; needed from random init);
            ``frozen``: every ``BatchNorm2d`` (and timm's ``BatchNormAct2d``) becomes a
            ``FrozenBatchNorm2d`` (torchvision's; timm's ``FrozenBatchNormAct2d``) with the same
            statistics and affine values, as detectron2 runs 2PCNet's ImageNet ResNet-50 (constant
            statistics and affine, no parameters left to train; meant for pretrained weights);
            ``sync``: ``SyncBatchNorm`` (timm's ``convert_sync_batchnorm``, which calls PyTorch's layer
            and keeps timm's fused activations) when ``distributed``, else ``bn``.
        distributed: None: whether a ``torch.distributed`` process group exists.

    Returns:
        the converted model (the same object, its layers replaced in place; convert before building the
        optimiser, the EMA teacher and the DDP wrapper).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> type(convert_norm(net, "frozen")[1]).__name__
        'FrozenBatchNorm2d'
        >>> type(convert_norm(nn.Sequential(nn.BatchNorm2d(4)), "sync", distributed=True)[0]).__name__
        'SyncBatchNorm'
    """
    from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d

    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if norm == "frozen":
        part = model.backbone if isinstance(model, Detector) else model
        frozen = freeze_batch_norm_2d(part)
        if frozen is not part:
            raise TypeError("model: a bare BatchNorm layer cannot be converted in place; wrap it in a module")
    elif norm == "sync" and distributed:
        model = convert_sync_batchnorm(model)
    return model
