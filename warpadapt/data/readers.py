"""Readers for real driving datasets (and the synthetic data exported to disk in the same formats).

Every reader is a :class:`torch.utils.data.Dataset` whose items follow the shared SAMPLE CONTRACT:

- ``"image"``: float32 tensor (3, H, W) with values in [0, 1];
- ``"boxes"``: float32 tensor (N, 4), xyxy in continuous pixel coordinates (pascal_voc style: a box
  covering the whole image is ``(0, 0, W, H)``);
- ``"labels"``: int64 tensor (N,) of detection class indices 1..K, ``dataset.classes[label - 1]`` is
  the class name (0 is reserved for background, torchvision style);
- ``"semantic"``: int64 tensor (H, W) of Cityscapes train ids, 255 = ignore (segmentation readers);
- ``"instance"``: int64 tensor (H, W) instance-id map, when the dataset has one;
- ``"meta"``: dict with at least ``"file_name"`` and ``"index"``.

Each reader has a ``classes`` list and accepts an optional ``transforms`` callable that receives the
sample dict and returns a sample dict.

Readers (this module re-exports them; class tables come from :mod:`warpadapt.data.labels`):

- :class:`CocoDetection`: COCO-format detection json (BDD100K, Foggy Cityscapes, DENSE are commonly
  converted to it; the synthetic exporter writes it too).
- :class:`BDD100KDetection`: BDD100K's own label json (``det_20`` release and the older
  ``bdd100k_labels_images_<split>.json``), with time-of-day / weather / scene filters.
- :class:`CityscapesSegmentation`: Cityscapes, ACDC and Dark Zurich folder layouts (semantic map,
  optional instance map, boxes derived from instances); in ``segmentation_readers.py``.

The detection readers live in ``detection_readers.py``, shared file reading in ``reader_utils.py``.
"""
from __future__ import annotations

from .detection_readers import BDD100KDetection, CocoDetection
from .labels import (  # noqa: F401  (the old import path of the class tables)
    BDD_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_THING_TRAIN_IDS, LABEL_ID_TO_TRAIN_ID,
)
from .segmentation_readers import (  # noqa: F401  (_instance_boxes, _semantic_boxes: tested here)
    CityscapesSegmentation, _instance_boxes, _semantic_boxes, label_ids_to_train_ids,
)

__all__ = [
    "BDD_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_THING_TRAIN_IDS",
    "LABEL_ID_TO_TRAIN_ID",
    "label_ids_to_train_ids",
    "CocoDetection",
    "BDD100KDetection",
    "CityscapesSegmentation",
]
