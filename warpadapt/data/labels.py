"""The class vocabulary: every class list, id table and alias table of warpadapt, defined once.

Canonical names are the Cityscapes train-id names (``CITYSCAPES_CLASSES``): one name per class,
the same in semantic maps, detection labels, readers and the synthetic data. Other datasets'
spellings are aliases (:data:`CLASS_ALIASES`, applied by :func:`canonical_class`): BDD100K's
``det_20`` release says "pedestrian" for what Cityscapes (and BDD100K's 2018 release) call
"person", and the 2018 release says "motor" and "bike".

Which classes guide the saliency by default (the segmentation recipe derives boxes from label maps
with them, :func:`guidance_train_ids`):

========================  =================================  =========================================
kind                      train ids                          classes
========================  =================================  =========================================
``"cityscapes"``          11-18                              person, rider, car, truck, bus, train,
(also ACDC, Dark Zurich)                                     motorcycle, bicycle (the "thing" classes)
``"gta"``                 6, 7, 11-18                        the things plus traffic light and sign
                                                             (GTA-style setups of the paper)
``"synthetic"``           6, 7, 11, 12, 13, 14, 18           the generator's objects: every class of
                                                             :data:`DETECTION_CLASSES`
========================  =================================  =========================================

Example:
    >>> CITYSCAPES_CLASSES[13], canonical_class("pedestrian"), guidance_train_ids("synthetic")
    ('car', 'person', (6, 7, 11, 12, 13, 14, 18))
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "CITYSCAPES_THING_TRAIN_IDS",
    "GTA_THING_TRAIN_IDS",
    "LABEL_ID_TO_TRAIN_ID",
    "LABEL_ID_LUT",
    "DETECTION_CLASSES",
    "CLASS_TO_TRAIN_ID",
    "SYNTHETIC_THING_TRAIN_IDS",
    "BDD_CLASSES",
    "CLASS_ALIASES",
    "GUIDANCE_TRAIN_IDS",
    "canonical_class",
    "train_id_of",
    "guidance_train_ids",
]

#: The 19 Cityscapes evaluation classes, indexed by train id (0..18): the canonical class names.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)

#: Label value of pixels that are ignored in training and evaluation.
IGNORE_INDEX = 255

#: Train ids of the Cityscapes "thing" classes: person, rider, car, truck, bus, train, motorcycle, bicycle.
CITYSCAPES_THING_TRAIN_IDS: tuple[int, ...] = tuple(range(11, 19))

#: GTA-style "things": traffic light (6) and traffic sign (7) besides the Cityscapes things.
GTA_THING_TRAIN_IDS: tuple[int, ...] = (6, 7) + CITYSCAPES_THING_TRAIN_IDS

#: Cityscapes label id -> train id (the official ``labels.py`` table; 255 = ignored in evaluation).
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2,
    12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}

#: :data:`LABEL_ID_TO_TRAIN_ID` as a 256-entry int64 lookup table (unlisted ids -> 255).
LABEL_ID_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
LABEL_ID_LUT[list(LABEL_ID_TO_TRAIN_ID)] = list(LABEL_ID_TO_TRAIN_ID.values())
LABEL_ID_LUT.setflags(write=False)

#: Detection classes of the synthetic generator (canonical spelling); label ``i`` (1-based) is
#: ``DETECTION_CLASSES[i - 1]``.
DETECTION_CLASSES: tuple[str, ...] = ("person", "rider", "car", "truck", "bicycle", "traffic light", "traffic sign")

#: Detection class name -> Cityscapes train id, for the synthetic generator's classes.
CLASS_TO_TRAIN_ID: dict[str, int] = {name: CITYSCAPES_CLASSES.index(name) for name in DETECTION_CLASSES}

#: Train ids of the synthetic generator's objects (instances with boxes): 6, 7, 11, 12, 13, 14, 18.
SYNTHETIC_THING_TRAIN_IDS: tuple[int, ...] = tuple(sorted(CLASS_TO_TRAIN_ID.values()))

#: The 10 BDD100K detection classes in the official ``det_20`` order, in canonical spelling
#: ("person" where ``det_20`` files say "pedestrian"; the reader maps the file's names).
BDD_CLASSES: tuple[str, ...] = (
    "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light", "traffic sign",
)

#: Other datasets' spellings -> canonical names. BDD100K ``det_20`` "pedestrian" is Cityscapes'
#: "person" (riders are a separate class in both); BDD100K 2018 "motor" and "bike" are motorcycle
#: and bicycle. Categories that are neither canonical nor listed here ("other person", "trailer",
#: "drivable area", ...) have no class.
CLASS_ALIASES: dict[str, str] = {"pedestrian": "person", "motor": "motorcycle", "bike": "bicycle"}

#: Default saliency guidance per kind of data: the train ids whose objects (instances, or connected
#: components of a semantic map) give the boxes. See the module docstring.
GUIDANCE_TRAIN_IDS: dict[str, tuple[int, ...]] = {
    "cityscapes": CITYSCAPES_THING_TRAIN_IDS,
    "gta": GTA_THING_TRAIN_IDS,
    "synthetic": SYNTHETIC_THING_TRAIN_IDS,
}


def canonical_class(name: str) -> str:
    """The canonical spelling of a class name (aliases from :data:`CLASS_ALIASES`, others unchanged).

    Example:
        >>> [canonical_class(n) for n in ("pedestrian", "bike", "car", "other person")]
        ['person', 'bicycle', 'car', 'other person']
    """
    return CLASS_ALIASES.get(name, name)


def train_id_of(name: str) -> int:
    """Cityscapes train id of a class name (canonical or alias); ValueError for other names.

    Example:
        >>> train_id_of("pedestrian"), train_id_of("traffic sign")
        (11, 7)
    """
    canonical = canonical_class(name)
    if canonical not in CITYSCAPES_CLASSES:
        raise ValueError(f"{name!r} is not a Cityscapes class; expected names among {CITYSCAPES_CLASSES} "
                         f"or aliases {sorted(CLASS_ALIASES)}")
    return CITYSCAPES_CLASSES.index(canonical)


def guidance_train_ids(kind: str = "cityscapes") -> tuple[int, ...]:
    """Train ids whose objects guide the saliency by default for a kind of data.

    Args:
        kind: "cityscapes" (also ACDC / Dark Zurich: 11-18), "gta" (6, 7, 11-18) or "synthetic"
            (the generator's objects, 6, 7, 11, 12, 13, 14, 18).

    Example:
        >>> guidance_train_ids("cityscapes")
        (11, 12, 13, 14, 15, 16, 17, 18)
        >>> guidance_train_ids("gta")[:3]
        (6, 7, 11)
    """
    if kind not in GUIDANCE_TRAIN_IDS:
        raise ValueError(f"kind must be one of {sorted(GUIDANCE_TRAIN_IDS)}, got {kind!r}")
    return GUIDANCE_TRAIN_IDS[kind]
