"""``wrap()``: make any timm backbone warp in training and unwarp its features, for free at test time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .modules import FeatureUnwarp, SaliencyWarp, as_saliency_warp
from .warp import Warp

__all__ = ["WarpedBackbone", "wrap"]

_PREFIX = "model."


def _layout_of(model: nn.Module) -> str:
    fmt = getattr(model, "output_fmt", None)
    fmt = getattr(fmt, "value", fmt)  # timm's Format enum
    return "NHWC" if str(fmt).upper() == "NHWC" else "NCHW"


def _is_features_only(model: nn.Module) -> bool:
    # timm: features_only models carry a FeatureInfo object; plain models a list of dicts.
    info = getattr(model, "feature_info", None)
    return info is not None and not isinstance(info, (list, tuple))


class WarpedBackbone(nn.Module):
    """A timm backbone that warps its input in training and unwarps every feature level.

    Built by :func:`wrap`. Runs ``warp -> model -> neck (optional) -> unwarp``: the neck (for example a
    ViTDet-style pyramid over a plain ViT) sees the warped geometry, and every map it returns is unwarped
    at its own resolution. Holds the model as ``self.model`` and adds no parameters or buffers besides
    the neck's; without a neck its ``state_dict()`` has exactly the bare model's keys and loads into it
    (and back); a neck's keys come under ``neck.``.

    When it warps (the one rule; callers only say whether they want it):
    training mode, guidance other than "none", and ``warp=True`` or, with ``warp`` left None, ``boxes``
    given. Otherwise ``forward`` is exactly ``neck(model(images))`` (the bare model without a neck). A
    warp asked for in eval mode is an error: evaluation never warps.

    ``resample_only`` (a plain attribute, default False) is an ablation control: where it would warp, the
    model runs on the image as it is and every feature map is warped by the same warp and unwarped
    (``U(W(f(x)))``). The heads get the warp's interpolation of the features without its geometry: what
    resampling twice costs on its own, against the full warp ``U(f(W(x)))``.
    """

    def __init__(self, model: nn.Module, warper: SaliencyWarp, mode: str = "auto", neck: nn.Module | None = None) -> None:
        super().__init__()
        if mode not in ("auto", "features", "intermediates"):
            raise ValueError(f"mode must be 'auto', 'features' or 'intermediates', got {mode!r}")
        if mode == "auto":
            mode = "features" if _is_features_only(model) else "intermediates"
        if mode == "intermediates" and not hasattr(model, "forward_intermediates"):
            raise TypeError(
                f"model ({type(model).__name__}) is neither a timm features_only model nor has "
                "forward_intermediates(); build it with timm.create_model(..., features_only=True)"
            )
        if not isinstance(warper, SaliencyWarp):
            raise TypeError(f"warper must be a warpadapt.SaliencyWarp, got {type(warper).__name__}")
        if neck is not None and not isinstance(neck, nn.Module):
            raise TypeError(f"neck must be an nn.Module or None, got {type(neck).__name__}")
        self.model = model
        self.warper = warper
        self.mode = mode
        self.neck = neck
        self.resample_only = False
        # a neck returns NCHW maps; without one the features keep the model's layout
        layout = _layout_of(model) if (mode == "features" and neck is None) else "NCHW"
        self.unwarp = FeatureUnwarp(layout, warper.method)
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)
        self.register_load_state_dict_post_hook(_report_bare_keys)

    @property
    def layout(self) -> str:
        """"NCHW" or "NHWC": the layout of the maps ``forward`` returns (a neck's are NCHW)."""
        return self.unwarp.layout

    # timm-style introspection passes through
    @property
    def feature_info(self):
        """The model's ``feature_info`` (a neck's levels are the neck's business)."""
        return self.model.feature_info

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self._modules.get("model")
            if model is None or name.startswith("__"):
                raise
            return getattr(model, name)

    def warps(self, boxes=None, warp: bool | None = None) -> bool:
        """Whether ``forward(images, boxes, warp=warp)`` warps (the rule in the class docstring)."""
        wanted = (boxes is not None) if warp is None else bool(warp)
        if wanted and not self.training and warp:
            raise ValueError("warp: evaluation never warps (warp=True needs training mode)")
        return wanted and self.training and self.warper.guidance != "none"

    def forward(self, images: Tensor, boxes=None, *, warp: bool | None = None, return_warp: bool = False, **kwargs):
        """Args:
            images: (B, C, H, W).
            boxes: list of B tensors (N_i, 4) xyxy pixels of ``images``; in training they trigger the warp.
            warp: True warps without boxes (static / geometric guidance), False never warps; None: warp
                when boxes are given. Only in training mode.
            return_warp: also return the :class:`Warp` used (None when not warped).
            kwargs: passed to ``forward_intermediates`` for plain (not features_only) models.

        Returns:
            the model's features (list / dict / tensor, same shapes; the neck's output if there is a
            neck), or ``(features, warp)``.
        """
        w = None
        if self.warps(boxes, warp):
            images, w = self._warp_input(images, boxes)
        feats = self._run(images, **kwargs)
        if self.neck is not None:
            feats = self.neck(feats)
        if w is not None:
            unwarp = self.unwarp
            if self.mode == "intermediates" and str(kwargs.get("output_fmt", "NCHW")).upper() == "NHWC":
                unwarp = FeatureUnwarp("NHWC", self.unwarp.method)
            feats = self._unwarp_output(unwarp, feats, w)
        return (feats, w) if return_warp else feats

    def _warp_input(self, images: Tensor, boxes):
        """(what the model runs on, the warp): the warped images, or with ``resample_only`` the images as
        they are."""
        if self.resample_only:
            if not isinstance(images, Tensor) or images.dim() != 4:
                raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
            return images, self.warper.make_warp(images.shape[-2:], boxes, images.shape[0], images.device)
        return self.warper(images, boxes)

    def _unwarp_output(self, unwarp: FeatureUnwarp, feats, w):
        if self.resample_only:  # into the warped geometry first: the features resampled there and back
            feats = unwarp(feats, w, inverse=False)
        return unwarp(feats, w)

    def _run(self, images: Tensor, **kwargs):
        if self.mode == "features":
            return self.model(images)
        return self.model.forward_intermediates(images, intermediates_only=True, **kwargs)

    def forward_intermediates(self, images: Tensor, boxes=None, *, warp: bool | None = None, **kwargs):
        """timm's ``forward_intermediates`` with the warp (same rule as ``forward``; the neck is not
        applied): intermediates unwarped; a 4-D final feature map (CNNs) is unwarped too; token outputs
        (ViT final ``(B, L, C)``) are returned as computed."""
        if not hasattr(self.model, "forward_intermediates"):
            raise TypeError(f"{type(self.model).__name__} has no forward_intermediates()")
        if not self.warps(boxes, warp):
            return self.model.forward_intermediates(images, **kwargs)
        warped, w = self._warp_input(images, boxes)
        out = self.model.forward_intermediates(warped, **kwargs)
        unwarp = FeatureUnwarp("NHWC" if str(kwargs.get("output_fmt", "NCHW")).upper() == "NHWC" else "NCHW", self.unwarp.method)
        if kwargs.get("intermediates_only", False):
            return self._unwarp_output(unwarp, out, w)
        final, inter = out
        if isinstance(final, Tensor) and final.dim() == 4:
            final = self._unwarp_output(unwarp, final, w)
        return final, self._unwarp_output(unwarp, inter, w)


def _rename(mapping: dict, renames: dict) -> None:
    """Rename keys of ``mapping`` in one step (so a new name may equal another key's old name)."""
    values = {old: mapping.pop(old) for old in renames}
    for old, new in renames.items():
        mapping[new] = values[old]


def _strip_prefix(module, state_dict, prefix, local_metadata) -> None:
    """state_dict post-hook: ``<prefix>model.<key>`` -> ``<prefix><key>`` (exactly one level: a model whose
    own keys start with ``model.``, e.g. timm's ``FeatureGetterNet``, keeps its own ``model.``)."""
    inner = prefix + _PREFIX
    _rename(state_dict, {k: prefix + k[len(inner):] for k in state_dict if k.startswith(inner)})
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:  # module versions follow their keys (the wrapper's own entry is replaced)
        renames = {k: prefix + k[len(inner):] for k in meta if k.startswith(inner)}
        if prefix + "model" in meta:
            renames[prefix + "model"] = prefix[:-1]
        _rename(meta, renames)


def _add_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: accept the bare model's keys (what ``state_dict()`` returns) and the wrapped
    module's own keys (``model.`` + bare key, e.g. saved with ``nn.Module.state_dict`` hooks bypassed).

    A key is read as bare when it is one of the model's keys, as already wrapped when it is ``model.`` plus
    one of them, and as bare otherwise (then it is reported unexpected under the name it was given). The
    model's own keys decide, so models whose keys already start with ``model.`` load correctly.
    """
    inner = prefix + _PREFIX
    own = set(module.model.state_dict(keep_vars=True))
    renames = {}
    for key in state_dict:
        if not key.startswith(prefix):
            continue
        rel = key[len(prefix):]
        if module.neck is not None and rel.startswith("neck."):
            continue  # the neck's own keys
        if rel not in own and rel.startswith(_PREFIX) and rel[len(_PREFIX):] in own:
            continue  # already in the wrapped form
        renames[key] = inner + rel
    _rename(state_dict, renames)
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None and renames:  # bare keys come with bare module versions: copy them to the model's paths
        moved = {}
        for k, v in meta.items():
            if k == prefix[:-1]:
                moved[inner[:-1]] = v
            elif k.startswith(prefix):
                moved[inner + k[len(prefix):]] = v
        meta.update(moved)
    module._load_prefix = prefix


def _report_bare_keys(module, incompatible_keys) -> None:
    """load_state_dict post-hook: report missing / unexpected keys under their bare names."""
    prefix = getattr(module, "_load_prefix", "")
    inner = prefix + _PREFIX
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        keys[:] = [prefix + k[len(inner):] if k.startswith(inner) else k for k in keys]


def wrap(model: nn.Module, warp: SaliencyWarp | str | Mapping | None = None, *, neck: nn.Module | None = None,
         mode: str = "auto", **warp_options) -> WarpedBackbone:
    """Wrap a timm backbone so it trains on saliency-warped images with unwarped features.

    Args:
        model: a timm model built with ``features_only=True`` (any output format: NCHW, NHWC such as
            Swin, ViT features through ``FeatureGetterNet``), or any timm model with
            ``forward_intermediates`` (its forward then returns the intermediates).
        warp: the warp, read by :func:`~warpadapt.modules.as_saliency_warp` (as everywhere in the
            library): a :class:`~warpadapt.SaliencyWarp`, a guidance name ("instance", "static",
            "geometric", "none"), a mapping of its options, or None (the default instance warp).
        neck: an optional module run on the features between the warp and the unwarp (it must
            return NCHW maps); e.g. a simple pyramid over a plain ViT.
        mode: "auto" (detect), "features" or "intermediates".
        **warp_options: :class:`~warpadapt.SaliencyWarp` keyword arguments (``guidance``, ``grid_size``,
            ``fwhm``, ``bandwidth_scale``, ``amplitude_scale``, ``prior``, ``vanishing_point``,
            ``geometric_sigma``, ``method``, ``dtype``), range-checked there.

    Returns:
        a :class:`WarpedBackbone` with the model's ``feature_info``.

    Example:
        >>> import timm
        >>> net = wrap(timm.create_model("resnet18", features_only=True, pretrained=False, out_indices=(2, 3)))
        >>> x = torch.rand(2, 3, 64, 96)
        >>> feats = net.train()(x, boxes=[torch.tensor([[10., 10., 30., 40.]]), torch.zeros(0, 4)])
        >>> [tuple(f.shape) for f in feats]
        [(2, 128, 8, 12), (2, 256, 4, 6)]
        >>> bare = net.eval()(x)  # eval: exactly the bare model
        >>> all(a.equal(b) for a, b in zip(bare, net.model(x)))
        True
        >>> wrap(timm.create_model("resnet18", features_only=True), {"guidance": "geometric", "fwhm": 6.0}).warper.fwhm
        6.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a timm model), got {type(model).__name__}")
    if isinstance(model, WarpedBackbone):
        raise ValueError("model is already wrapped")
    return WarpedBackbone(model, as_saliency_warp(warp, **warp_options), mode=mode, neck=neck)
