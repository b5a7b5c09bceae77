"""Data: synthetic driving scenes, domain effects, domain pairs (and readers).

Public names are re-exported here; other submodules may append imports below.
"""
from warpadapt.data.synthetic import (  # noqa: F401
    CLASS_TO_TRAIN_ID,
    DETECTION_CLASSES,
    IGNORE_INDEX,
    STYLES,
    TRAIN_ID_NAMES,
    SceneParams,
    generate_scene,
)
from warpadapt.data.effects import apply_effects, get_effect, list_effects, register_effect  # noqa: F401
from warpadapt.data.pairs import (  # noqa: F401
    SyntheticDrivingDataset,
    collate,
    get_pair,
    list_pairs,
    pair_scene_seed,
    render_pair_sample,
)
from warpadapt.data.readers import BDD_CLASSES, CITYSCAPES_CLASSES, BDD100KDetection, CityscapesSegmentation, CocoDetection, label_ids_to_train_ids  # noqa: F401,E501
