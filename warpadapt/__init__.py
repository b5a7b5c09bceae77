"""warpadapt: saliency-guided image warping (Instance-Warp) for any timm backbone.

Public names::

    wrap, WarpedBackbone          a timm backbone that warps in training and unwarps its features
    SaliencyWarp, FeatureUnwarp   the two modules (images + boxes -> warped, warp; features -> unwarped)
    Warp                          the warp object: two monotone 1-D maps per image, exact inverse
    instance_saliency, boxes_from_semantic, boxes_from_instance_map,
    fit_static_prior, save_prior, load_prior, geometric_prior   saliency builders (plain functions)
"""

from .modules import GUIDANCES, FeatureUnwarp, SaliencyWarp
from .saliency import (
    CITYSCAPES_THING_CLASSES,
    boxes_from_instance_map,
    boxes_from_semantic,
    fit_static_prior,
    geometric_prior,
    instance_saliency,
    load_prior,
    save_prior,
    uniform_saliency,
)
from .warp import Warp, invert_map, interp_map, resample, saliency_to_maps
from .wrap import WarpedBackbone, wrap

__version__ = "0.1.0"

__all__ = [
    "GUIDANCES",
    "CITYSCAPES_THING_CLASSES",
    "FeatureUnwarp",
    "SaliencyWarp",
    "Warp",
    "WarpedBackbone",
    "boxes_from_instance_map",
    "boxes_from_semantic",
    "fit_static_prior",
    "geometric_prior",
    "instance_saliency",
    "interp_map",
    "invert_map",
    "load_prior",
    "resample",
    "saliency_to_maps",
    "save_prior",
    "uniform_saliency",
    "wrap",
]
