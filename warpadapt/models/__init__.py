"""Models over wrapped timm backbones: a segmenter (all-MLP head) and a detector."""

from .segmenter import AllMLPHead, Segmenter, build_backbone  # noqa: F401
from .detector import Detector, DetectorOutput, SimplePyramid, TimmFPN, create_timm_features  # noqa: F401
