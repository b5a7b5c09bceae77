"""Instance-Warp as a kornia augmentation: :class:`RandomSaliencyWarp` (image and labels together).

For ``kornia.augmentation.AugmentationSequential`` (image, ``bbox_xyxy`` / ``bbox`` / ``bbox_xywh``,
``mask``, ``keypoints``), with ``inverse``. The warp is a :class:`~warpadapt.SaliencyWarp` (given, or
built from its options). kornia private members are used only through ``_kornia_internals``.

How the boxes reach the kornia transform. kornia draws an augmentation's parameters from the batch
SHAPE only (``forward_parameters(batch_shape)``) and ``AugmentationSequential`` transforms the image
before the boxes, so no kornia hook hands the boxes to a child before its image call. Here the warp is
a pure function of the parameters: ``params["map_y"]`` (B, gh) and ``params["map_x"]`` (B, gw) hold the
two monotone maps, computed in :meth:`RandomSaliencyWarp.forward_parameters` from *guidance boxes*.
Every handler (image, mask, boxes, keypoints and their inverses) rebuilds the same :class:`Warp` from
those two tensors, so replaying ``params`` and ``AugmentationSequential.inverse`` work as for any
kornia augmentation. The guidance boxes are given, for the next draw only, by

- ``aug(images, saliency_boxes=boxes)`` when the augmentation is called on its own;
- :func:`attach_box_guidance` (``attach_box_guidance(container)``): a forward pre-hook on the container
  that reads its box data key (``bbox_xyxy``, ``bbox`` or ``bbox_xywh``) and hands those boxes to every
  :class:`RandomSaliencyWarp` inside it. The hook sees the boxes as given to the container, so put the
  warp before any augmentation that moves boxes (crops, flips, affine), or guide it yourself;
- :meth:`RandomSaliencyWarp.set_guidance` for any other source (e.g. boxes from a semantic map).

An "instance" warp asked for parameters without guidance boxes raises (never a silent identity).

Coordinate conventions (as in the rest of warpadapt):

- boxes are continuous pixel coordinates, pascal_voc style (a box covering the image is (0, 0, W, H)).
  kornia stores a ``Boxes`` as four vertices; for its ``*_plus`` modes (the ``bbox_xyxy`` and ``bbox``
  keys) the vertices ARE those continuous corners, for the other modes (``bbox_xywh``, ``Boxes`` built
  with ``mode="xyxy"``) the maximum vertex is the last pixel index, i.e. the continuous edge minus one.
  Both are handled; the round trip through the warp and its inverse is exact up to float rounding.
- keypoints use the kornia / albumentations convention: integer coordinates are pixel centres, so a
  keypoint ``k`` sits at continuous ``k + 0.5``.
- ``transform_matrix`` is an identity placeholder: the warp is not a homography, and kornia's combined
  ``AugmentationSequential.transform_matrix`` does not describe a pipeline containing it.
"""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
from kornia.constants import DataKey, Resample
from kornia.core.ops import eye_like
from kornia.geometry.boxes import Boxes
from kornia.geometry.keypoints import Keypoints
from torch import Tensor

from .._utils import check_probability
from ..modules import SaliencyWarp, as_saliency_warp
from ..warp import Warp
from ._kornia_internals import applied_mask, blend_applied, resolve_params, with_data

__all__ = ["RandomSaliencyWarp", "attach_box_guidance", "boxes_from_kornia"]

_Params = dict[str, Tensor]
_Flags = dict[str, Any]

_BOX_KEYS = {DataKey.BBOX: "vertices_plus", DataKey.BBOX_XYXY: "xyxy_plus", DataKey.BBOX_XYWH: "xywh"}


def boxes_from_kornia(boxes: Boxes | Tensor | list, mode: str = "xyxy_plus") -> Tensor | list[Tensor]:
    """Continuous xyxy pixel boxes (pascal_voc) from a kornia ``Boxes`` or a box tensor in a kornia mode.

    ``*_plus`` modes store the continuous corners; the other modes store the last pixel index as the
    maximum vertex, so one is added there. Rotated quadrilaterals give their axis-aligned hull.

    Args:
        boxes: a ``kornia.geometry.boxes.Boxes``, a (B, N, 4) / (N, 4) tensor (``(..., 4, 2)`` vertices for
            the vertex modes) or a list of B such (N_i, 4) tensors.
        mode: the kornia mode of a tensor input ("xyxy_plus" for the ``bbox_xyxy`` data key,
            "vertices_plus" for ``bbox``, "xywh" for ``bbox_xywh``); ignored for a ``Boxes``.

    Returns:
        (B, N, 4) / (N, 4) tensor, or a list of (N_i, 4) tensors for a list input.

    Example:
        >>> boxes_from_kornia(torch.tensor([[[10., 20., 5., 5.]]]), mode="xywh").tolist()
        [[[10.0, 20.0, 15.0, 25.0]]]
    """
    if not isinstance(boxes, Boxes):
        if isinstance(boxes, (list, tuple)) and all(isinstance(b, Tensor) and b.numel() == 0 for b in boxes):
            return [torch.zeros(0, 4) for _ in boxes]
        boxes = Boxes.from_tensor(boxes if isinstance(boxes, list) else torch.as_tensor(boxes), mode=mode)
    plus = boxes.mode.endswith("_plus")
    return boxes.to_tensor("xyxy_plus" if plus else "xyxy")


class RandomSaliencyWarp(K.GeometricAugmentationBase2D):
    """Instance-Warp as a kornia augmentation that warps the image and its labels together.

    The image is resampled at the separable saliency warp of its guidance boxes (see the module
    docstring for how the boxes arrive); masks are warped with nearest neighbour, boxes and keypoints
    are mapped exactly with :meth:`Warp.forward_boxes` / :meth:`Warp.forward_points`, and ``inverse``
    maps them back exactly (images and masks approximately: resampling loses detail where the warp
    compressed it). An image without guidance boxes gets the identity warp.

    Args:
        warp: the :class:`~warpadapt.SaliencyWarp` to use, a guidance name ("instance": the sample's
            boxes, "static", "geometric", "none"), or None (instance guidance); see
            :func:`~warpadapt.modules.as_saliency_warp`.
        p: probability of warping each sample, default 1.
        same_on_batch: kornia's flag (draws one ``p`` decision for the whole batch).
        keepdim: kornia's flag (keep the input rank).
        **warp_options: :class:`~warpadapt.SaliencyWarp`'s options (``guidance``, ``grid_size``, ``fwhm``,
            ``prior`` ...) when ``warp`` is not a module.

    Shape:
        - input: (B, C, H, W), (C, H, W) or (H, W) floating point.
        - saliency_boxes (standalone call): list of B tensors (N_i, 4) or a (B, N, 4) tensor, xyxy pixels.
        - params: ``map_y`` (B, gh), ``map_x`` (B, gw), ``batch_prob`` (B,), ``forward_input_shape``.

    Raises:
        ValueError: bad options (the message names the argument), or instance guidance without boxes.

    Example:
        >>> aug = RandomSaliencyWarp()
        >>> seq = K.AugmentationSequential(aug, data_keys=["input", "bbox_xyxy", "keypoints"])
        >>> handle = attach_box_guidance(seq)
        >>> img, boxes = torch.rand(1, 3, 64, 96), torch.tensor([[[40., 20., 56., 36.]]])
        >>> out, wboxes, wkps = seq(img, boxes, torch.tensor([[[48., 28.]]]))
        >>> bool((wboxes[..., 2] - wboxes[..., 0] > 16).all())  # the object got more pixels
        True
        >>> back = seq.inverse(out, wboxes, wkps)
        >>> torch.allclose(back[1], boxes, atol=1e-3)
        True
    """

    def __init__(
        self,
        warp: SaliencyWarp | str | None = None,
        p: float = 1.0,
        same_on_batch: bool = False,
        keepdim: bool = False,
        **warp_options: Any,
    ) -> None:
        super().__init__(p=check_probability(p), same_on_batch=same_on_batch, keepdim=keepdim)
        self.warper = as_saliency_warp(warp, **warp_options)
        # "resample" in flags lets kornia's mask handlers switch masks to nearest (forward and inverse).
        self.flags = {"resample": Resample.BILINEAR}
        self._guidance: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.warper.extra_repr()}, p={self.p})"

    # -- parameters ---------------------------------------------------------------------------
    def set_guidance(self, boxes) -> None:
        """Boxes that guide the NEXT parameter draw only: list of B (N_i, 4) tensors or (B, N, 4), xyxy pixels."""
        self._guidance = boxes

    def forward_parameters(self, batch_shape) -> dict[str, Tensor]:
        """kornia's parameters plus the warp maps ``map_y`` (B, gh) and ``map_x`` (B, gw).

        Consumes the guidance boxes set by :meth:`set_guidance` / :func:`attach_box_guidance` /
        ``saliency_boxes=``.
        """
        params = super().forward_parameters(batch_shape)
        boxes, self._guidance = self._guidance, None
        b, h, w = int(batch_shape[0]), int(batch_shape[-2]), int(batch_shape[-1])
        if self.warper.guidance == "instance" and boxes is None:
            raise ValueError(
                "RandomSaliencyWarp(guidance='instance') needs the sample's boxes: call "
                "attach_box_guidance(container) once for an AugmentationSequential with a bbox data key, "
                "pass saliency_boxes=... when calling the augmentation itself, or call set_guidance(boxes)"
            )
        if b == 0:
            gh, gw = self.warper.grid_size
            warp = Warp.identity(0, (gh, gw), (h, w))
        else:
            warp = self.warper.make_warp((h, w), boxes, batch_size=b)
        params["map_y"] = warp.map_y.detach().float().cpu()
        params["map_x"] = warp.map_x.detach().float().cpu()
        return params

    def forward(self, input: Tensor, params: dict[str, Tensor] | None = None, saliency_boxes=None, **kwargs) -> Tensor:
        """Warp ``input``; ``saliency_boxes`` (list of B (N_i, 4) tensors) guide a fresh draw."""
        if saliency_boxes is not None:
            if params is not None:
                raise ValueError("give either params or saliency_boxes, not both (params already hold the warp)")
            self.set_guidance(saliency_boxes)
        return super().forward(input, params=params, **kwargs)

    @staticmethod
    def warp_from_params(params: dict[str, Tensor], device=None) -> Warp:
        """The :class:`Warp` a parameter dict describes (the one every handler uses)."""
        if "map_y" not in params or "map_x" not in params:
            raise ValueError("params must hold 'map_y' and 'map_x' (draw them with forward_parameters)")
        shape = params["forward_input_shape"].tolist()
        my, mx = params["map_y"], params["map_x"]
        f32 = dict(device=device, dtype=torch.float32)
        return Warp(my.to(**f32), mx.to(**f32), (int(shape[-2]), int(shape[-1])))

    # -- matrices: an identity placeholder -----------------------------------------------------
    def compute_transformation(self, input: Tensor, params: _Params, flags: _Flags) -> Tensor:
        return eye_like(3, input)

    def compute_inverse_transformation(self, transform: Tensor) -> Tensor:
        return transform

    # -- images and masks ---------------------------------------------------------------------
    @staticmethod
    def _mode(flags: dict[str, Any]) -> str:
        r = flags.get("resample", Resample.BILINEAR)
        name = r.name if isinstance(r, Resample) else str(r)
        return "nearest" if name.lower() == "nearest" else "bilinear"

    def _resample(self, input: Tensor, params: _Params, flags: _Flags, inverse: bool) -> Tensor:
        warp = self.warp_from_params(params, input.device)
        if warp.batch_size != input.shape[0]:
            raise ValueError(f"input has batch size {input.shape[0]} but params describe {warp.batch_size} warps")
        mode = self._mode(flags)
        return warp.unapply(input, mode=mode) if inverse else warp.apply(input, mode=mode)

    def apply_transform(self, input: Tensor, params: _Params, flags: _Flags, transform=None) -> Tensor:
        return self._resample(input, params, flags, inverse=False)

    def apply_transform_mask(self, input: Tensor, params: _Params, flags: _Flags, transform=None) -> Tensor:
        # kornia's transform_masks sets flags["resample"] = nearest unless the caller chose another one.
        return self._resample(input, params, flags, inverse=False)

    def inverse_inputs(self, input: Tensor, params: _Params, flags: _Flags, transform=None, **kwargs) -> Tensor:
        in_tensor = self.transform_tensor(input)
        params, flags = resolve_params(self, params, flags, **kwargs)
        to_apply = applied_mask(self, params)
        if in_tensor.shape[0] == 0 or not bool(to_apply.any()):
            return in_tensor
        out = self._resample(in_tensor, params, flags, inverse=True)
        return blend_applied(self, out, in_tensor, to_apply)

    # -- boxes and keypoints ------------------------------------------------------------------
    def _map_box_vertices(self, boxes: Boxes, params: dict[str, Tensor], inverse: bool) -> Boxes:
        data = boxes.data
        batched = data.dim() == 4
        d = data if batched else data[None]  # (B, N, 4, 2)
        if d.numel() == 0:
            return boxes
        warp = self.warp_from_params(params, d.device)
        # Exclusive modes store the last pixel index as the maximum vertex: that vertex's continuous edge is
        # one further. Shift each vertex by 0 at the box minimum to 1 at its maximum (exact for axis-aligned
        # boxes, smooth for rotated quadrilaterals), map, and shift back.
        off = 0.0 if boxes.mode.endswith("_plus") else 1.0
        if off:
            lo, hi = d.amin(dim=-2, keepdim=True), d.amax(dim=-2, keepdim=True)
            t = torch.where(hi > lo, (d - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(d)) * off
        else:
            t = torch.zeros_like(d)
        b, n = d.shape[:2]
        pts = (d + t).reshape(b, n * 4, 2)
        mapped = warp.inverse_points(pts) if inverse else warp.forward_points(pts)
        new = mapped.reshape(b, n, 4, 2).to(d.dtype) - t
        return with_data(boxes, new if batched else new[0])

    def _map_keypoints(self, kps: Keypoints, params: dict[str, Tensor], inverse: bool) -> Keypoints:
        data = kps.data
        batched = data.dim() == 3
        d = data if batched else data[None]
        if d.numel() == 0:
            return kps
        warp = self.warp_from_params(params, d.device)
        # integer keypoints are pixel centres: continuous position = k + 0.5
        mapped = (warp.inverse_points(d + 0.5) if inverse else warp.forward_points(d + 0.5)).to(d.dtype) - 0.5
        return with_data(kps, mapped if batched else mapped[0])

    def apply_transform_box(self, input: Boxes, params: _Params, flags: _Flags, transform=None) -> Boxes:
        return self._map_box_vertices(input, params, inverse=False)

    def apply_transform_keypoint(self, input: Keypoints, params: _Params, flags: _Flags, transform=None) -> Keypoints:
        return self._map_keypoints(input, params, inverse=False)

    def _inverse_labels(self, input, params: _Params, flags: _Flags, mapper, batched_dim: int, **kwargs):
        """Shared inverse of boxes / keypoints: undo the warp where it was applied (per-sample gate)."""
        params, flags = resolve_params(self, params, flags, **kwargs)
        to_apply = applied_mask(self, params)
        if not bool(to_apply.any()):
            return input.clone()
        out = mapper(input, params, inverse=True)
        if input.data.dim() == batched_dim:
            out = with_data(out, blend_applied(self, out.data, input.data, to_apply))
        return out

    def inverse_boxes(self, input: Boxes, params: _Params, flags: _Flags, transform=None, **kwargs) -> Boxes:
        return self._inverse_labels(input, params, flags, self._map_box_vertices, 4, **kwargs)

    def inverse_keypoints(
        self, input: Keypoints, params: _Params, flags: _Flags, transform=None, **kwargs
    ) -> Keypoints:
        return self._inverse_labels(input, params, flags, self._map_keypoints, 3, **kwargs)


def _warps_in(container: torch.nn.Module) -> list[RandomSaliencyWarp]:
    return [m for m in container.modules() if isinstance(m, RandomSaliencyWarp)]


def attach_box_guidance(container: torch.nn.Module, data_key: str | DataKey | None = None):
    """Let a kornia container's box data key guide the :class:`RandomSaliencyWarp` s inside it.

    Registers a forward pre-hook on ``container`` (an ``AugmentationSequential``) that, on every call
    without explicit ``params``, reads the boxes passed for ``data_key`` (default: the first of
    ``bbox_xyxy``, ``bbox``, ``bbox_xywh`` in the call's data keys, positional or dict input), converts
    them to continuous xyxy pixels (:func:`boxes_from_kornia`) and hands them to every
    :class:`RandomSaliencyWarp` in the container for that call's parameter draw.

    The boxes are those given to the container: put the warp before augmentations that move boxes.

    Args:
        container: the kornia container.
        data_key: which box key to read, if the call has several.

    Returns:
        The ``torch.utils.hooks.RemovableHandle`` (``handle.remove()`` detaches the guidance).

    Raises:
        ValueError: the container holds no RandomSaliencyWarp.

    Example:
        >>> seq = K.AugmentationSequential(RandomSaliencyWarp(), data_keys=["input", "bbox_xyxy"])
        >>> h = attach_box_guidance(seq)
        >>> out, boxes = seq(torch.rand(2, 1, 32, 32), torch.tensor([[[8., 8., 12., 12.]], [[0., 0., 0., 0.]]]))
        >>> boxes[1].tolist()  # a zero-area box does not guide: identity for that image
        [[0.0, 0.0, 0.0, 0.0]]
    """
    warps = _warps_in(container)
    if not warps:
        raise ValueError("container holds no RandomSaliencyWarp to guide")
    wanted = None if data_key is None else DataKey.get(data_key)
    if wanted is not None and wanted not in _BOX_KEYS:
        raise ValueError(f"data_key must be one of 'bbox_xyxy', 'bbox', 'bbox_xywh', got {data_key!r}")

    def pick(pairs):
        for key, value in pairs:
            if key in _BOX_KEYS and (wanted is None or key == wanted):
                return key, value
        return None, None

    def hook(module, args, kwargs):
        if kwargs.get("params") is not None:
            return None
        pairs = []
        if len(args) == 1 and isinstance(args[0], dict):
            for name, value in args[0].items():
                try:
                    pairs.append((DataKey.get(name), value))
                except Exception:
                    continue
        else:
            keys = kwargs.get("data_keys") or getattr(module, "data_keys", None) or []
            pairs = [(DataKey.get(k), v) for k, v in zip(keys, args)]
        key, value = pick(pairs)
        if key is None:
            return None  # no box key: the warps raise at their draw if they need boxes
        boxes = boxes_from_kornia(value, _BOX_KEYS[key])
        for w in _warps_in(module):
            w.set_guidance(boxes)
        return None

    return container.register_forward_pre_hook(hook, with_kwargs=True)
