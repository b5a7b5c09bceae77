"""warpadapt: saliency-guided image warping (Instance-Warp) for any timm backbone."""

__version__ = "0.1.0"
