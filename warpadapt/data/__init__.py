"""Data: class vocabulary, synthetic driving scenes, domain effects, domain pairs and readers.

Public names are re-exported here and imported on first use (``import warpadapt.data`` stays cheap,
and the core can import :mod:`warpadapt.data.labels` without loading the renderers or readers).
Other submodules may append eager imports below.
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
    **dict.fromkeys(("STYLES", "TRAIN_ID_NAMES", "SceneParams", "generate_scene"), "synthetic"),
    **dict.fromkeys(("apply_effects", "get_effect", "list_effects", "register_effect"), "effects"),
    **dict.fromkeys(("SyntheticDrivingDataset", "collate", "get_pair", "list_pairs", "pair_scene_seed",
                     "render_pair_sample"), "pairs"),
    **dict.fromkeys(("BDD100KDetection", "CocoDetection"), "detection_readers"),
    **dict.fromkeys(("CityscapesSegmentation", "label_ids_to_train_ids"), "segmentation_readers"),
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
