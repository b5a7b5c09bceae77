"""Data: class vocabulary, synthetic driving scenes, domain effects, domain pairs and readers.

Public names are re-exported here and imported on first use (``import warpadapt.data`` stays cheap:
:mod:`warpadapt.data.labels` and :mod:`warpadapt.data.boxes` load without the renderers or readers).
The core (saliency, maps, warp, modules, wrap) never imports this package; the package's top level
re-exports :func:`~warpadapt.data.boxes.boxes_from_semantic` and
:func:`~warpadapt.data.boxes.boxes_from_instance_map`. Other submodules may append eager imports below.

Modules: ``labels`` (every class list and id table), ``boxes`` (boxes from label maps),
``synthetic`` (+ ``scene_*``: procedural scenes), ``effects``, ``pairs`` (domain pairs and
:class:`SyntheticDrivingDataset`), ``detection_readers`` (:class:`CocoDetection`,
:class:`BDD100KDetection`), ``segmentation_readers`` (:class:`CityscapesSegmentation`: Cityscapes,
ACDC and Dark Zurich folder layouts), ``reader_utils`` (shared file reading), ``prepared``
(:class:`Prepared`: resized segmentation items with their guidance boxes, :func:`collate_segmentation`).

Every reader (and :class:`SyntheticDrivingDataset`) is a :class:`torch.utils.data.Dataset` whose
items follow the SAMPLE CONTRACT:

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
"""
from __future__ import annotations

import importlib

# name -> submodule that defines it
_LAZY = {
    **dict.fromkeys(
        ("CITYSCAPES_CLASSES", "CITYSCAPES_THING_TRAIN_IDS", "GTA_THING_TRAIN_IDS", "SYNTHETIC_THING_TRAIN_IDS",
         "CLASS_TO_TRAIN_ID", "DETECTION_CLASSES", "BDD_CLASSES", "CLASS_ALIASES", "IGNORE_INDEX",
         "LABEL_ID_TO_TRAIN_ID", "GUIDANCE_TRAIN_IDS", "canonical_class", "train_id_of", "guidance_train_ids"),
        "labels"),
    **dict.fromkeys(("boxes_from_semantic", "boxes_from_instance_map"), "boxes"),
    "generate_scene": "synthetic",
    "STYLES": "scene_styles",
    "SceneParams": "scene_layout",
    **dict.fromkeys(("apply_effects", "get_effect", "list_effects", "register_effect"), "effects"),
    **dict.fromkeys(("SyntheticDrivingDataset", "collate", "get_pair", "list_pairs", "pair_scene_seed",
                     "render_pair_sample"), "pairs"),
    **dict.fromkeys(("BDD100KDetection", "CocoDetection"), "detection_readers"),
    **dict.fromkeys(("CityscapesSegmentation", "label_ids_to_train_ids"), "segmentation_readers"),
    **dict.fromkeys(("Prepared", "collate_segmentation"), "prepared"),
    **dict.fromkeys(("TrainView", "DrawKeys", "rescale_size", "crop_boxes", "hflip_boxes", "random_crop_box"),
                    "pipeline"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'warpadapt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"warpadapt.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
