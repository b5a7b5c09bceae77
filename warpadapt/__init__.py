"""warpadapt: saliency-guided image warping (Instance-Warp) for any timm backbone.

Public names::

    wrap, WarpedBackbone          a timm backbone that warps in training and unwarps its features
    SaliencyWarp, FeatureUnwarp   the two modules (images + boxes -> warped, warp; features -> unwarped)
    GUIDANCES                     the guidance names SaliencyWarp accepts
    Warp                          the warp object: two monotone 1-D maps per image, exact inverse
    instance_saliency, uniform_saliency, geometric_prior, boxes_from_semantic, boxes_from_instance_map,
    fit_static_prior, save_prior, load_prior                   saliency builders (plain functions)

Elsewhere: the low-level map functions (``saliency_to_maps``, ``invert_map``, ``interp_map``,
``resample``) in :mod:`warpadapt.maps`; the boxes-from-label-maps functions in
:mod:`warpadapt.data.boxes` (re-exported here); class lists and default guidance classes in
:mod:`warpadapt.data.labels`; pictures in :mod:`warpadapt.viz`, measurements in
:mod:`warpadapt.measure`; data-loader transforms in :mod:`warpadapt.transforms`.
"""

from .data.boxes import boxes_from_instance_map, boxes_from_semantic
from .modules import GUIDANCES, FeatureUnwarp, SaliencyWarp
from .saliency import (
    fit_static_prior,
    geometric_prior,
    instance_saliency,
    load_prior,
    save_prior,
    uniform_saliency,
)
from .warp import Warp
from .wrap import WarpedBackbone, wrap

__version__ = "0.1.0"

__all__ = [
    "wrap",
    "WarpedBackbone",
    "SaliencyWarp",
    "FeatureUnwarp",
    "GUIDANCES",
    "Warp",
    "instance_saliency",
    "uniform_saliency",
    "geometric_prior",
    "boxes_from_semantic",
    "boxes_from_instance_map",
    "fit_static_prior",
    "save_prior",
    "load_prior",
]
