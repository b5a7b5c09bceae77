"""Build a timm ``features_only`` backbone by name, never downloading (shared by both models).

Any timm family works with the defaults: the levels are chosen from timm's ``feature_info`` (every level
at stride >= 4 unless ``out_indices`` says otherwise), families with fixed-size positional tables are built
for the training size, and a local weights file must cover the backbone or the build fails naming the
counts. The model is probed on PyTorch's ``meta`` device first (no memory, no random numbers drawn), so
the real model is built exactly once and a seeded build gives the same weights as ``timm.create_model``.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

__all__ = ["create_backbone", "timm_kwargs_for"]


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"model.backbone: expected a timm model name (str), got {name!r}")
    known = set(timm.list_models())
    if name not in known and name.split(".")[0] not in known:
        raise ValueError(f"model.backbone: unknown timm model {name!r} (see timm.list_models())")


def timm_kwargs_for(name: str, image_size: Sequence[int] | None = None) -> dict:
    """The size arguments ``name`` needs to run at ``image_size`` (H, W): what :func:`create_backbone` adds.

    - plain ViTs (every level at one stride) that support it: ``dynamic_img_size=True``, so any input
      size that is a multiple of the patch works (padded detection batches, other crops);
    - families whose constructor takes ``img_size`` (Swin, EfficientFormerV2, ...): ``img_size=image_size``,
      and ``strict_img_size=False`` where the family has it (Swin then also takes other sizes);
    - everything else (ResNet, ConvNeXt, PVT-v2, ...): nothing.

    Example:
        >>> timm_kwargs_for("resnet18", (128, 256)), timm_kwargs_for("vit_tiny_patch16_224", (128, 256))
        ({}, {'dynamic_img_size': True})
        >>> timm_kwargs_for("swin_tiny_patch4_window7_224", (128, 256))
        {'img_size': (128, 256), 'strict_img_size': False}
    """
    _check_name(name)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
        feats = timm.create_model(name, pretrained=False, features_only=True)
    params = inspect.signature(type(model).__init__).parameters
    plain = len(set(feats.feature_info.reduction())) == 1
    if plain and "dynamic_img_size" in params:
        return {"dynamic_img_size": True}
    out = {}
    if "img_size" in params and image_size is not None:
        out["img_size"] = tuple(int(v) for v in image_size)
        if "strict_img_size" in params:
            out["strict_img_size"] = False
    return out


@contextmanager
def _recorded_loads():
    """Record every ``nn.Module.load_state_dict`` result while timm builds a model (timm loads a
    pretrained file non-strictly and only logs what did not match; we need the counts)."""
    results, original = [], nn.Module.load_state_dict

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        results.append((self, result))
        return result

    nn.Module.load_state_dict = recording
    try:
        yield results
    finally:
        nn.Module.load_state_dict = original


def create_backbone(name: str, out_indices: Sequence[int] | None = None, pretrained_file: str | None = None,
                    *, min_reduction: int = 4, image_size: Sequence[int] | None = None,
                    pretrained_strict: bool = True, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True)``, random init or weights from a local file.

    Args:
        name: any timm model name (``timm.list_models()``; a ``name.tag`` form is accepted).
        out_indices: feature levels to return (timm's ``out_indices``); None = every level of timm's
            default whose stride is at least ``min_reduction``.
        pretrained_file: a local timm checkpoint (loaded by timm, ``pretrained_cfg_overlay=dict(file=...)``,
            so timm's own key filters and position-table resampling apply); None = random init. Nothing is
            ever downloaded.
        min_reduction: with ``out_indices=None``, leave out levels finer than this stride (default 4: the
            ResNet stem at stride 2 is dropped; every family has levels at strides 4-32 or one at 16).
        image_size: (H, W) the model will see in training; fixed-size families are built for it
            (:func:`timm_kwargs_for`). None: timm's default size.
        pretrained_strict: True: a ``pretrained_file`` that leaves any backbone tensor unset fails, naming
            the counts of missing and unexpected keys. False: print the counts and go on.
        kwargs: passed to ``timm.create_model`` (they win over the size arguments chosen here).

    Example:
        >>> create_backbone("resnet18", out_indices=(2, 3)).feature_info.reduction()
        [8, 16]
        >>> create_backbone("resnet18").feature_info.reduction()
        [4, 8, 16, 32]
        >>> create_backbone("swin_tiny_patch4_window7_224", image_size=(64, 128), depths=(1, 1, 1, 1))(
        ...     torch.rand(1, 3, 64, 128))[0].shape  # Swin's features are NHWC
        torch.Size([1, 16, 32, 96])
        >>> create_backbone("resnet9000")
        Traceback (most recent call last):
        ...
        ValueError: model.backbone: unknown timm model 'resnet9000' (see timm.list_models())
    """
    _check_name(name)
    if pretrained_file is not None and not Path(pretrained_file).is_file():
        raise FileNotFoundError(f"model.pretrained_file: no file at {str(pretrained_file)!r}")
    kw = {**timm_kwargs_for(name, image_size), **kwargs, "features_only": True, "pretrained": False}
    if out_indices is not None:
        kw["out_indices"] = tuple(int(i) for i in out_indices)
    else:
        with torch.device("meta"):  # which levels exist: no memory, no random numbers
            info = timm.create_model(name, **kw).feature_info
        strides, indices = info.reduction(), info.out_indices
        keep = [i for i, r in zip(indices, strides) if r >= min_reduction]
        if not keep:
            raise ValueError(f"model.backbone: {name} has no feature level with stride >= {min_reduction} "
                             f"(strides {strides}); pass model.out_indices")
        if len(keep) < len(indices):
            kw["out_indices"] = tuple(keep)
    if pretrained_file is None:
        return timm.create_model(name, **kw)
    kw.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    with _recorded_loads() as loads:
        model = timm.create_model(name, **kw)
    _check_coverage(name, model, loads, pretrained_file, pretrained_strict)
    return model


def _check_coverage(name, model, loads, path, strict: bool) -> None:
    """Missing keys = tensors of the returned features model the file did not set (a pruned head does
    not count); unexpected = the file's keys the model has no place for (classifier heads land here)."""
    if not loads:
        raise RuntimeError(f"model.pretrained_file: timm did not load {str(path)!r} into {name}")
    full, result = loads[0]  # timm's load into the full model (nested loads belong to it)
    # the features model holds the full model's own modules (renamed, the head pruned): compare tensors
    own = {id(t) for t in model.state_dict(keep_vars=True).values()}
    tensors = full.state_dict(keep_vars=True)
    missing = [k for k in result.missing_keys if k in tensors and id(tensors[k]) in own]
    unexpected = list(result.unexpected_keys)
    if not missing:
        return
    total = sum(1 for k in model.state_dict() if not k.endswith("num_batches_tracked"))  # BatchNorm makes its own
    msg = (f"model.pretrained_file: {str(path)!r} leaves {len(missing)} of {total} tensors of {name} unset "
           f"({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected keys"
           f"{', e.g. ' + str(unexpected[:3]) if unexpected else ''})")
    if strict:
        raise ValueError(msg + "; is it a checkpoint of this architecture? model.pretrained_strict=false "
                               "loads what matches and goes on")
    print(msg + "; going on (model.pretrained_strict=false)")
