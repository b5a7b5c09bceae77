"""Build a timm ``features_only`` backbone by name, never downloading (shared by both models)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
from torch import nn

__all__ = ["create_backbone"]


def create_backbone(name: str, out_indices: Sequence[int] | None = None, pretrained_file: str | None = None,
                    *, min_reduction: int = 1, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True)``, random init or weights from a local file.

    Args:
        name: any timm model name (``timm.list_models()``; a ``name.tag`` form is accepted).
        out_indices: feature levels to return (timm's ``out_indices``); None = every level of timm's
            default whose stride is at least ``min_reduction``.
        pretrained_file: a local timm checkpoint (``pretrained_cfg_overlay=dict(file=...)``); None =
            random init. Nothing is ever downloaded.
        min_reduction: with ``out_indices=None``, leave out levels finer than this stride (the
            segmenter drops the ResNet stem at stride 2 with 4).
        kwargs: passed to ``timm.create_model``.

    Plain ViTs (every level at one stride) are built with ``dynamic_img_size=True`` so any input size
    that is a multiple of the patch size works (padded detection batches, other crops).

    Example:
        >>> create_backbone("resnet18", out_indices=(2, 3)).feature_info.reduction()
        [8, 16]
        >>> create_backbone("resnet18", min_reduction=4).feature_info.reduction()
        [4, 8, 16, 32]
        >>> create_backbone("resnet9000")
        Traceback (most recent call last):
        ...
        ValueError: model.backbone: unknown timm model 'resnet9000' (see timm.list_models())
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model.backbone: expected a timm model name (str), got {name!r}")
    known = set(timm.list_models())
    if name not in known and name.split(".")[0] not in known:
        raise ValueError(f"model.backbone: unknown timm model {name!r} (see timm.list_models())")
    if pretrained_file is not None and not Path(pretrained_file).is_file():
        raise FileNotFoundError(f"model.pretrained_file: no file at {str(pretrained_file)!r}")
    kw = dict(kwargs, features_only=True, pretrained=pretrained_file is not None)
    if pretrained_file is not None:
        kw["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
    if out_indices is not None:
        kw["out_indices"] = tuple(int(i) for i in out_indices)
    model = timm.create_model(name, **kw)
    if len(set(model.feature_info.reduction())) == 1 and "dynamic_img_size" not in kw:
        try:  # a plain ViT: positional embeddings follow the input size
            model = timm.create_model(name, dynamic_img_size=True, **kw)
        except TypeError:
            pass
    if out_indices is None and min_reduction > 1:
        strides = model.feature_info.reduction()
        keep = [i for i, r in zip(model.feature_info.out_indices, strides) if r >= min_reduction]
        if not keep:
            raise ValueError(f"model.backbone: {name} has no feature level with stride >= {min_reduction} "
                             f"(strides {strides})")
        if len(keep) < len(strides):  # rebuild without the fine levels
            return create_backbone(name, keep, pretrained_file, **kwargs)
    return model
