"""Models over wrapped timm backbones: a segmenter (all-MLP head) and a detector."""

from .backbone import create_backbone  # noqa: F401
from .segmenter import AllMLPHead, Segmenter  # noqa: F401
from .detector import Detector, DetectorOutput, SimplePyramid, TimmFPN  # noqa: F401
