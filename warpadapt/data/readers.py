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

Readers:

- :class:`CocoDetection`: COCO-format detection json (BDD100K, Foggy Cityscapes, DENSE are commonly
  converted to it; the synthetic exporter writes it too).
- :class:`BDD100KDetection`: BDD100K's own label json (``det_20`` release and the older
  ``bdd100k_labels_images_<split>.json``), with time-of-day / weather / scene filters.
- :class:`CityscapesSegmentation`: Cityscapes, ACDC and Dark Zurich folder layouts (semantic map,
  optional instance map, boxes derived from instances).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..saliency import boxes_from_instance_map as _core_instance_boxes
from .labels import (  # noqa: F401  (CITYSCAPES_THING_TRAIN_IDS, LABEL_ID_TO_TRAIN_ID: the old import path)
    BDD_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_THING_TRAIN_IDS, LABEL_ID_LUT, LABEL_ID_TO_TRAIN_ID, canonical_class,
    train_id_of,
)
from ..saliency import boxes_from_semantic as _core_semantic_boxes

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

logger = logging.getLogger(__name__)

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------------
# Small helpers (file reading, box bookkeeping)
# --------------------------------------------------------------------------------------------------

def _as_list(value) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _read_image(path: Path) -> torch.Tensor:
    """Read an RGB image as float32 (3, H, W) in [0, 1]; a corrupt file raises naming the file."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"cannot decode image file {path}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel label PNG (8 or 16 bit) as an int64 (H, W) array."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise ValueError(f"expected a single-channel label image, got mode {img.mode!r}")
            arr = np.array(img, dtype=np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"cannot decode label file {path}: {err}") from err
    if arr.ndim != 2:
        raise ValueError(f"label file {path} has shape {arr.shape}, expected (H, W)")
    return arr


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err


def _clip_boxes(boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip xyxy boxes (M, 4) to per-box image sizes (M, 2) = (W, H).

    Returns (clipped boxes, was_clipped (M,) bool, keep (M,) bool = positive width and height).
    """
    lo = np.zeros_like(boxes)
    hi = np.concatenate([sizes, sizes], axis=1).astype(boxes.dtype)
    clipped = np.clip(boxes, lo, hi)
    was_clipped = np.any(clipped != boxes, axis=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, was_clipped, keep


def _group_by_image(n_images: int, image_index: np.ndarray, boxes: np.ndarray,
                    labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split flat per-box arrays into one (boxes (N_i, 4), labels (N_i,)) pair per image."""
    order = np.argsort(image_index, kind="stable")
    image_index, boxes, labels = image_index[order], boxes[order], labels[order]
    bounds = np.searchsorted(image_index, np.arange(n_images + 1))
    return [(boxes[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _to_sample(image: torch.Tensor, boxes: np.ndarray, labels: np.ndarray, meta: dict) -> dict:
    return {
        "image": image,
        "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
        "meta": meta,
    }


class _DetectionBase(Dataset):
    """Shared storage for detection readers: per-image file paths, boxes and labels."""

    classes: list[str]
    stats: dict

    def __len__(self) -> int:
        return len(self._files)

    def _load(self, index: int, meta: dict) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        path = self._files[index]
        image = _read_image(path)
        boxes, labels = self._targets[index]
        h, w = image.shape[-2:]
        if boxes.shape[0]:
            # Guard against an annotation file whose width/height disagrees with the actual image.
            boxes, _, keep = _clip_boxes(boxes, np.tile([[w, h]], (boxes.shape[0], 1)))
            boxes, labels = boxes[keep], labels[keep]
        meta = {"file_name": self._names[index], "index": index, "path": str(path), **meta}
        sample = _to_sample(image, boxes, labels, meta)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _finish_targets(self, n_images: int, image_index: np.ndarray, boxes_xyxy: np.ndarray,
                        labels: np.ndarray, sizes: np.ndarray, stats: dict) -> None:
        """Clip, drop degenerate boxes, group per image, record counts in ``self.stats``."""
        boxes_xyxy = boxes_xyxy.reshape(-1, 4).astype(np.float64)
        if boxes_xyxy.shape[0]:
            finite = np.isfinite(boxes_xyxy).all(axis=1)
            boxes_xyxy = np.where(finite[:, None], boxes_xyxy, 0.0)
            clipped, was_clipped, keep = _clip_boxes(boxes_xyxy, sizes[image_index])
            keep &= finite
        else:
            clipped = boxes_xyxy
            was_clipped = keep = np.zeros(0, dtype=bool)
        stats["boxes_clipped"] = int((was_clipped & keep).sum())
        stats["boxes_dropped_degenerate"] = int((~keep).sum())
        stats["boxes_kept"] = int(keep.sum())
        self._targets = _group_by_image(n_images, image_index[keep],
                                        clipped[keep].astype(np.float32), labels[keep])
        self.stats = stats
        if stats["boxes_clipped"] or stats["boxes_dropped_degenerate"]:
            logger.warning("%s: %d boxes clipped to the image, %d degenerate boxes dropped "
                           "(zero width or height after clipping)", type(self).__name__,
                           stats["boxes_clipped"], stats["boxes_dropped_degenerate"])


# --------------------------------------------------------------------------------------------------
# COCO format
# --------------------------------------------------------------------------------------------------

_COCO_LAYOUT = ("COCO detection json: {'images': [{'id', 'file_name', 'width', 'height'}], "
                "'annotations': [{'image_id', 'category_id', 'bbox': [x, y, w, h], 'iscrowd'}], "
                "'categories': [{'id', 'name'}]}, images at <root>/<file_name>")


class CocoDetection(_DetectionBase):
    """COCO-format detection dataset (also BDD100K / Foggy Cityscapes / DENSE converted to COCO).

    Args:
        root: folder the images' ``file_name`` entries are relative to.
        ann_file: path of the COCO json (``images``, ``annotations``, ``categories``).
        classes: optional list of category names. ``None``: every category, mapped to 1..K sorted by
            category id. Given: labels follow this order (``classes[label - 1]``) and annotations of
            other categories are dropped; a name missing from the json raises ValueError.
        transforms: optional callable ``sample -> sample``.
        remove_empty: drop images that have no box left after filtering.

    Boxes ``[x, y, w, h]`` become xyxy, are clipped to the image (json ``width``/``height``, or the
    image header when missing), and boxes with zero width or height after clipping are dropped.
    ``iscrowd`` annotations are skipped. Counts live in ``dataset.stats`` (keys ``boxes_total``,
    ``crowd_skipped``, ``other_class_skipped``, ``boxes_clipped``, ``boxes_dropped_degenerate``,
    ``boxes_kept``) and a warning is logged when any box was clipped or dropped.

    Items: ``image`` (3, H, W) float32, ``boxes`` (N, 4) float32 xyxy, ``labels`` (N,) int64 in 1..K,
    ``meta`` with ``file_name``, ``index``, ``image_id``, ``path``.

    Example:
        >>> import json, tempfile, os
        >>> from PIL import Image
        >>> d = tempfile.TemporaryDirectory()
        >>> Image.new("RGB", (40, 30)).save(os.path.join(d.name, "a.png"))
        >>> coco = {"images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
        ...         "annotations": [{"id": 1, "image_id": 7, "category_id": 3,
        ...                          "bbox": [30, 5, 20, 10], "iscrowd": 0}],
        ...         "categories": [{"id": 3, "name": "car"}]}
        >>> with open(os.path.join(d.name, "ann.json"), "w") as f:
        ...     json.dump(coco, f)
        >>> ds = CocoDetection(d.name, os.path.join(d.name, "ann.json"))
        >>> s = ds[0]
        >>> s["image"].shape, s["boxes"].tolist(), s["labels"].tolist(), ds.classes
        (torch.Size([3, 30, 40]), [[30.0, 5.0, 40.0, 15.0]], [1], ['car'])
        >>> ds.stats["boxes_clipped"]
        1
        >>> d.cleanup()
    """

    def __init__(self, root: str | os.PathLike, ann_file: str | os.PathLike,
                 classes: Sequence[str] | None = None, transforms: Callable | None = None,
                 remove_empty: bool = False):
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root} (expected {_COCO_LAYOUT})")
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.ann_file} "
                                    f"(expected {_COCO_LAYOUT})")
        try:
            with open(self.ann_file) as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"annotation file {self.ann_file} is not valid json: {err}") from err
        if not isinstance(data, dict) or not all(k in data for k in ("images", "categories")):
            raise ValueError(f"annotation file {self.ann_file} is not a COCO detection json "
                             f"(expected {_COCO_LAYOUT})")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        name_of = {c["id"]: c["name"] for c in categories}
        if classes is None:
            self.classes = [c["name"] for c in categories]
            label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
        else:
            self.classes = list(classes)
            missing = [n for n in self.classes if n not in name_of.values()]
            if missing:
                raise ValueError(f"classes {missing} are not categories of {self.ann_file}; "
                                 f"available: {sorted(set(name_of.values()))}")
            index_of = {n: i + 1 for i, n in enumerate(self.classes)}
            label_of = {cid: index_of[n] for cid, n in name_of.items() if n in index_of}

        images = data["images"]
        pos_of = {img["id"]: i for i, img in enumerate(images)}
        self._names = [img["file_name"] for img in images]
        self._files = [self.root / n for n in self._names]
        self._image_ids = [img["id"] for img in images]
        sizes = np.array([(img.get("width", -1), img.get("height", -1)) for img in images],
                         dtype=np.float64).reshape(-1, 2)
        for i in np.nonzero((sizes <= 0).any(axis=1))[0]:
            sizes[i] = _image_size(self._files[i])

        anns = data.get("annotations", [])
        stats = {"images": len(images), "boxes_total": len(anns)}
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        label = np.array([label_of.get(a["category_id"], 0) for a in anns], dtype=np.int64)
        try:
            image_index = np.array([pos_of[a["image_id"]] for a in anns], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"annotation refers to image_id {err.args[0]} that is not in "
                             f"'images' of {self.ann_file}") from None
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        stats["crowd_skipped"] = int(crowd.sum())
        stats["other_class_skipped"] = int(((label == 0) & ~crowd).sum())
        use = ~crowd & (label > 0)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[use]
        self._finish_targets(len(images), image_index[use], xyxy, label[use], sizes, stats)

        if remove_empty:
            keep = [i for i, (b, _) in enumerate(self._targets) if len(b)]
            self._names = [self._names[i] for i in keep]
            self._files = [self._files[i] for i in keep]
            self._image_ids = [self._image_ids[i] for i in keep]
            self._targets = [self._targets[i] for i in keep]
        if len(self) == 0:
            why = "remove_empty=True (no image has a box)" if remove_empty and images else \
                "no 'images' entries"
            raise ValueError(f"empty dataset from {self.ann_file}: {why}")

    def __getitem__(self, index: int) -> dict:
        return self._load(index, {"image_id": self._image_ids[index]})


# --------------------------------------------------------------------------------------------------
# BDD100K
# --------------------------------------------------------------------------------------------------

_BDD_LAYOUT = ("<root>/labels/det_20/det_<split>.json (100K release) or "
               "<root>/labels/bdd100k_labels_images_<split>.json (older release), "
               "images at <root>/images/100k/<split>/<name>")


class BDD100KDetection(_DetectionBase):
    """BDD100K detection from its own label json, with attribute filters for domain splits.

    Layout::

        <root>/labels/det_20/det_<split>.json              (100K release, preferred)
        <root>/labels/bdd100k_labels_images_<split>.json    (older release, used if the first is absent)
        <root>/images/100k/<split>/<name>

    Each json is a list of frames ``{"name", "attributes": {"weather", "timeofday", "scene"},
    "labels": [{"category", "box2d": {"x1", "y1", "x2", "y2"}}, ...]}``. Labels without ``box2d``
    (lanes, drivable area) are ignored.

    Args:
        root: dataset root folder.
        split: ``"train"`` or ``"val"``.
        timeofday, weather, scene: optional filters, a string or a list of accepted values
            (e.g. ``timeofday="night"``, ``weather=["rainy", "snowy"]``).
        classes: category names, label = position + 1 (default :data:`~warpadapt.data.labels.BDD_CLASSES`).
            Names in the file and here are made canonical with
            :func:`~warpadapt.data.labels.canonical_class` (``det_20`` "pedestrian" -> "person", 2018
            "motor" -> "motorcycle", "bike" -> "bicycle"), so ``classes`` holds canonical names;
            other categories are dropped.
        transforms: optional callable ``sample -> sample``.
        image_size: (W, H) used to clip boxes when indexing (all BDD100K images are 1280 x 720);
            boxes are clipped again to the decoded image's real size in ``__getitem__``.
        inclusive_corners: BDD100K (Scalabel) stores the corner PIXELS, the official COCO converter
            uses ``w = x2 - x1 + 1``; with True (default) boxes become ``(x1, y1, x2 + 1, y2 + 1)``
            in continuous coordinates. False keeps ``(x1, y1, x2, y2)``.

    Items follow the sample contract; ``meta`` also has ``attributes``. Box counts in ``stats``.

    Example:
        >>> import json, tempfile, os
        >>> from PIL import Image
        >>> d = tempfile.TemporaryDirectory()
        >>> os.makedirs(os.path.join(d.name, "labels", "det_20"))
        >>> os.makedirs(os.path.join(d.name, "images", "100k", "val"))
        >>> for n in ("a.jpg", "b.jpg"):
        ...     Image.new("RGB", (64, 36)).save(os.path.join(d.name, "images", "100k", "val", n))
        >>> frames = [
        ...     {"name": "a.jpg", "attributes": {"timeofday": "night", "weather": "clear"},
        ...      "labels": [{"category": "car", "box2d": {"x1": 2, "y1": 3, "x2": 9, "y2": 7}}]},
        ...     {"name": "b.jpg", "attributes": {"timeofday": "daytime", "weather": "rainy"},
        ...      "labels": []}]
        >>> with open(os.path.join(d.name, "labels", "det_20", "det_val.json"), "w") as f:
        ...     json.dump(frames, f)
        >>> ds = BDD100KDetection(d.name, "val", timeofday="night", image_size=(64, 36))
        >>> len(ds), ds[0]["boxes"].tolist(), ds[0]["labels"].tolist(), ds.classes[2]
        (1, [[2.0, 3.0, 10.0, 8.0]], [3], 'car')
        >>> d.cleanup()
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 timeofday: str | Iterable[str] | None = None,
                 weather: str | Iterable[str] | None = None,
                 scene: str | Iterable[str] | None = None,
                 classes: Sequence[str] = BDD_CLASSES, transforms: Callable | None = None,
                 image_size: tuple[int, int] = (1280, 720), inclusive_corners: bool = True):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.classes = [canonical_class(c) for c in classes]
        candidates = [self.root / "labels" / "det_20" / f"det_{split}.json",
                      self.root / "labels" / f"bdd100k_labels_images_{split}.json"]
        label_file = next((p for p in candidates if p.is_file()), None)
        if label_file is None:
            raise FileNotFoundError(f"no BDD100K label file for split {split!r} under {self.root}; "
                                    f"expected {_BDD_LAYOUT}")
        image_dir = self.root / "images" / "100k" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"BDD100K image folder not found: {image_dir}; "
                                    f"expected {_BDD_LAYOUT}")
        self.label_file, self.image_dir = label_file, image_dir
        try:
            with open(label_file) as f:
                frames = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"BDD100K label file {label_file} is not valid json: {err}") from err
        if isinstance(frames, dict) and "frames" in frames:  # Scalabel dataset wrapper
            frames = frames["frames"]
        if not isinstance(frames, list):
            raise ValueError(f"BDD100K label file {label_file} should hold a list of frames "
                             f"{{'name', 'attributes', 'labels'}}")

        filters = {"timeofday": _as_list(timeofday), "weather": _as_list(weather),
                   "scene": _as_list(scene)}
        seen = {k: set() for k in filters}
        kept = []
        for fr in frames:
            attrs = fr.get("attributes") or {}
            ok = True
            for key, allowed in filters.items():
                seen[key].add(attrs.get(key))
                if allowed is not None and attrs.get(key) not in allowed:
                    ok = False
            if ok:
                kept.append(fr)
        if not kept:
            active = {k: v for k, v in filters.items() if v is not None}
            found = {k: sorted(str(x) for x in seen[k]) for k in active}
            raise ValueError(f"empty BDD100K dataset: no frame of {label_file} matches the filter "
                             f"{active}; values present: {found}")

        index_of = {n: i + 1 for i, n in enumerate(self.classes)}
        self._names = [fr["name"] for fr in kept]
        self._files = [image_dir / n for n in self._names]
        self._attributes = [fr.get("attributes") or {} for fr in kept]
        image_index, boxes, labels = [], [], []
        total = other = 0
        for i, fr in enumerate(kept):
            for lab in fr.get("labels") or []:
                box = lab.get("box2d")
                if box is None:
                    continue
                total += 1
                cat = canonical_class(lab.get("category"))
                if cat not in index_of:
                    other += 1
                    continue
                image_index.append(i)
                boxes.append((box["x1"], box["y1"], box["x2"], box["y2"]))
                labels.append(index_of[cat])
        xyxy = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        if inclusive_corners:
            xyxy[:, 2:] += 1.0
        sizes = np.tile(np.asarray(image_size, dtype=np.float64)[None], (len(kept), 1))
        stats = {"images": len(kept), "boxes_total": total, "other_class_skipped": other}
        self._finish_targets(len(kept), np.array(image_index, dtype=np.int64), xyxy,
                             np.array(labels, dtype=np.int64), sizes, stats)

    def __getitem__(self, index: int) -> dict:
        return self._load(index, {"attributes": self._attributes[index]})


# --------------------------------------------------------------------------------------------------
# Cityscapes-style segmentation (Cityscapes, ACDC, Dark Zurich, synthetic export)
# --------------------------------------------------------------------------------------------------

def label_ids_to_train_ids(label_ids: np.ndarray | torch.Tensor):
    """Map Cityscapes label ids (any shape, ints) to train ids (0..18, 255 = ignore).

    Values outside 0..255 (e.g. license plate, -1) map to 255. Returns the same type as the input
    (numpy int64 array or int64 tensor).

    Example:
        >>> label_ids_to_train_ids(np.array([7, 26, 0, 33])).tolist()
        [0, 13, 255, 18]
    """
    if isinstance(label_ids, torch.Tensor):
        lut = torch.from_numpy(LABEL_ID_LUT.copy()).to(label_ids.device)
        ids = label_ids.long()
        valid = (ids >= 0) & (ids < 256)
        return torch.where(valid, lut[ids.clamp(0, 255)], torch.full_like(ids, 255))
    ids = np.asarray(label_ids).astype(np.int64)
    valid = (ids >= 0) & (ids < 256)
    return np.where(valid, LABEL_ID_LUT[np.clip(ids, 0, 255)], 255)


def _instance_boxes(instance: np.ndarray, thing_classes: Sequence[int], encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of a Cityscapes-encoded instance map (``class_id * 1000 + k``; ids < 1000 give no box).

    ``encoding`` says what ``id // 1000`` is: ``"label"`` (Cityscapes label ids, real Cityscapes),
    ``"train"`` (train ids, the warpadapt synthetic export) or ``"auto"``: label ids when
    ``id // 1000 >= 24`` (label ids of things are 24..33, train ids of things 11..18, so they never collide).
    Returns float32 (N, 4) xyxy boxes and int64 (N,) train ids (see :func:`warpadapt.boxes_from_instance_map`).
    """
    if encoding not in ("auto", "label", "train"):
        raise ValueError(f"encoding must be 'auto', 'label' or 'train', got {encoding!r}")
    instance = np.asarray(instance)
    if instance.ndim != 2:
        raise ValueError(f"instance map must be (H, W), got shape {instance.shape}")

    def class_of(cls: torch.Tensor) -> torch.Tensor:
        if encoding == "train":
            return cls
        as_train = torch.as_tensor(label_ids_to_train_ids(cls.numpy()), dtype=torch.long)
        return as_train if encoding == "label" else torch.where(cls >= 24, as_train, cls)

    boxes, train = _core_instance_boxes(torch.from_numpy(instance.astype(np.int64, copy=False)), 1000,
                                        thing_classes, class_of)
    return boxes.numpy(), train.numpy()


def _semantic_boxes(semantic: np.ndarray, thing_classes: Sequence[int], connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the connected components of the thing classes (see :func:`warpadapt.boxes_from_semantic`)."""
    boxes, cls = _core_semantic_boxes(np.asarray(semantic), thing_classes, connectivity)
    return boxes.numpy(), cls.numpy()


_SEG_LAYOUTS = {
    "cityscapes": ("<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png with "
                   "<root>/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png "
                   "(or _gtFine_labelIds.png) and optional _gtFine_instanceIds.png"),
    "acdc": ("<root>/rgb_anon/<condition>/<split>/<seq>/<stem>_rgb_anon.png with "
             "<root>/gt/<condition>/<split>/<seq>/<stem>_gt_labelTrainIds.png (or _gt_labelIds.png)"),
    "darkzurich": ("<root>/rgb_anon/<split>/<condition>/<seq>/<stem>_rgb_anon.png with "
                   "<root>/gt/<split>/<condition>/<seq>/<stem>_gt_labelTrainIds.png "
                   "(or _gt_labelIds.png)"),
}


class CityscapesSegmentation(Dataset):
    """Cityscapes-style semantic segmentation: Cityscapes, ACDC, Dark Zurich, the synthetic export.

    Layouts (``layout=``):

    - ``"cityscapes"``: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``, labels
      ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png`` (if absent,
      ``_gtFine_labelIds.png`` converted with :data:`LABEL_ID_TO_TRAIN_ID`), optional instance map
      ``_gtFine_instanceIds.png``. The warpadapt synthetic export uses this layout (one "city" folder
      per ``<pair>_<domain>``).
    - ``"acdc"``: ``rgb_anon/<condition>/<split>/<seq>/<stem>_rgb_anon.png`` with
      ``gt/<condition>/<split>/<seq>/<stem>_gt_labelTrainIds.png``; conditions fog/night/rain/snow.
    - ``"darkzurich"``: ``rgb_anon/<split>/<condition>/<seq>/<stem>_rgb_anon.png`` with
      ``gt/<split>/<condition>/<seq>/<stem>_gt_labelTrainIds.png`` (val/night has labels; the train
      images have none: use ``require_labels=False``).

    Args:
        root: dataset root.
        split: ``"train"``, ``"val"``, ``"test"``, ... (a folder name).
        layout: ``"cityscapes"``, ``"acdc"`` or ``"darkzurich"``.
        conditions: ACDC / Dark Zurich condition folders to keep (string or list), or the Cityscapes
            city / synthetic ``<pair>_<domain>`` folders; ``None`` keeps every folder found.
        thing_classes: train ids whose instances give boxes (default 11..18, the Cityscapes things;
            :func:`~warpadapt.data.labels.guidance_train_ids` gives the default of each kind of data).
        instance_encoding: what ``id // 1000`` means in instance maps: ``"label"`` (real
            Cityscapes), ``"train"`` (warpadapt synthetic export), ``"auto"`` (default; see
            :func:`boxes_from_instance_map`).
        require_labels: if True (default) a missing label file is an error naming the expected
            path; if False images without labels are returned without ``semantic`` (empty boxes).
        detection_classes: optional list of detection class names (Cityscapes train-id names such
            as ``"car"``, ``"traffic light"``; aliases such as BDD100K's ``"pedestrian"``, ``"motor"``,
            ``"bike"`` are accepted, :func:`~warpadapt.data.labels.train_id_of`). When given, only these classes give boxes (``thing_classes`` is
            ignored), ``classes`` is this list and ``labels`` index it; e.g. the synthetic export is
            read with ``detection_classes=warpadapt.data.DETECTION_CLASSES`` to get the generator's
            own labels.
        transforms: optional callable ``sample -> sample``.

    Items: ``image`` (3, H, W) float32; ``semantic`` (H, W) int64 train ids (255 = ignore);
    ``instance`` (H, W) int64 when an instance map exists; ``boxes`` (N, 4) float32 xyxy and
    ``labels`` (N,) int64 from the instance map (else connected components of thing classes).
    By default ``classes`` is :data:`CITYSCAPES_CLASSES` and ``labels = train_id + 1`` so that
    ``classes[label - 1]`` names the class and ``classes[semantic]`` names pixels; with
    ``detection_classes`` the labels index that list instead. ``semantic_classes`` is always
    :data:`CITYSCAPES_CLASSES`.
    ``meta``: ``file_name`` (Cityscapes: ``<city>/<name>`` relative to ``leftImg8bit/<split>``, as
    in the exporter's COCO json; ACDC / Dark Zurich: relative to ``rgb_anon``), ``index``, ``path``,
    ``condition`` (the city / condition folder).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> d = tempfile.TemporaryDirectory()
        >>> img_dir = os.path.join(d.name, "leftImg8bit", "val", "ulm")
        >>> gt_dir = os.path.join(d.name, "gtFine", "val", "ulm")
        >>> os.makedirs(img_dir); os.makedirs(gt_dir)
        >>> Image.new("RGB", (8, 6)).save(os.path.join(img_dir, "ulm_0_1_leftImg8bit.png"))
        >>> sem = np.zeros((6, 8), dtype=np.uint8); sem[2:4, 1:5] = 13
        >>> Image.fromarray(sem).save(os.path.join(gt_dir, "ulm_0_1_gtFine_labelTrainIds.png"))
        >>> ds = CityscapesSegmentation(d.name, "val")
        >>> s = ds[0]
        >>> s["semantic"].shape, s["boxes"].tolist(), [ds.classes[l - 1] for l in s["labels"]]
        (torch.Size([6, 8]), [[1.0, 2.0, 5.0, 4.0]], ['car'])
        >>> d.cleanup()
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", layout: str = "cityscapes",
                 conditions: str | Iterable[str] | None = None,
                 thing_classes: Sequence[int] = CITYSCAPES_THING_TRAIN_IDS,
                 instance_encoding: str = "auto", require_labels: bool = True,
                 detection_classes: Sequence[str] | None = None,
                 transforms: Callable | None = None):
        if layout not in _SEG_LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(_SEG_LAYOUTS)}, got {layout!r}")
        if instance_encoding not in ("auto", "label", "train"):
            raise ValueError(f"instance_encoding must be 'auto', 'label' or 'train', "
                             f"got {instance_encoding!r}")
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.semantic_classes = list(CITYSCAPES_CLASSES)
        # train id -> detection label (1..K); unmapped train ids give no box
        self._label_lut = np.zeros(256, dtype=np.int64)
        if detection_classes is None:
            self.classes = list(CITYSCAPES_CLASSES)
            self.thing_classes = tuple(int(c) for c in thing_classes)
            bad = [c for c in self.thing_classes if not 0 <= c < len(CITYSCAPES_CLASSES)]
            if bad:
                raise ValueError(f"thing_classes must be train ids 0..18, got {bad}")
            self._label_lut[list(self.thing_classes)] = np.asarray(self.thing_classes) + 1
        else:
            self.classes = [canonical_class(c) for c in detection_classes]
            tids = []
            for name in self.classes:
                try:
                    tids.append(train_id_of(name))
                except ValueError as err:
                    raise ValueError(f"detection_classes: {err}") from None
            if len(set(tids)) != len(tids):
                raise ValueError(f"detection_classes {self.classes} name a class twice")
            self.thing_classes = tuple(tids)
            self._label_lut[tids] = np.arange(1, len(tids) + 1)
        self.instance_encoding = instance_encoding
        self.require_labels = require_labels
        self.transforms = transforms
        conds = _as_list(conditions)
        expected = _SEG_LAYOUTS[layout]
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}; expected {expected}")

        # (image path, gt path prefix, condition, file_name) per image
        self._items: list[tuple[Path, Path, str, str]] = []
        if layout == "cityscapes":
            split_dir = self.root / "leftImg8bit" / split
            if not split_dir.is_dir():
                raise FileNotFoundError(f"image folder not found: {split_dir}; expected {expected}")
            for city_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                if conds is not None and city_dir.name not in conds:
                    continue
                for img in sorted(city_dir.glob("*_leftImg8bit.png")):
                    stem = img.name[: -len("_leftImg8bit.png")]
                    gt = self.root / "gtFine" / split / city_dir.name / f"{stem}_gtFine"
                    self._items.append((img, gt, city_dir.name, f"{city_dir.name}/{img.name}"))
        else:
            img_root = self.root / "rgb_anon"
            if not img_root.is_dir():
                raise FileNotFoundError(f"image folder not found: {img_root}; expected {expected}")
            if layout == "acdc":
                cond_dirs = sorted(p for p in img_root.iterdir() if p.is_dir())
                pairs = [(c.name, c / split) for c in cond_dirs]
            else:
                split_dir = img_root / split
                if not split_dir.is_dir():
                    raise FileNotFoundError(f"image folder not found: {split_dir}; "
                                            f"expected {expected}")
                pairs = [(c.name, c) for c in sorted(p for p in split_dir.iterdir() if p.is_dir())]
            for cond, cdir in pairs:
                if conds is not None and cond not in conds:
                    continue
                if not cdir.is_dir():
                    continue
                for img in sorted(cdir.glob("*/*_rgb_anon.png")):
                    stem = img.name[: -len("_rgb_anon.png")]
                    rel = img.relative_to(img_root)
                    gt = self.root / "gt" / rel.parent / f"{stem}_gt"
                    self._items.append((img, gt, cond, rel.as_posix()))
        if not self._items:
            what = f"conditions={conds}" if conds is not None else "no filter"
            raise ValueError(f"empty dataset: no image found under {self.root} for split "
                             f"{split!r} with {what}; expected {expected}")

    def __len__(self) -> int:
        return len(self._items)

    def _gt_path(self, prefix: Path, kind: str) -> Path:
        return prefix.with_name(f"{prefix.name}_{kind}.png")

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        img_path, gt_prefix, cond, file_name = self._items[index]
        image = _read_image(img_path)
        h, w = image.shape[-2:]
        meta = {"file_name": file_name, "index": index, "path": str(img_path), "condition": cond}
        sample = {"image": image, "meta": meta}

        train_path = self._gt_path(gt_prefix, "labelTrainIds")
        label_path = self._gt_path(gt_prefix, "labelIds")
        inst_path = self._gt_path(gt_prefix, "instanceIds")
        semantic = None
        if train_path.is_file():
            semantic = _read_label_png(train_path)
        elif label_path.is_file():
            semantic = label_ids_to_train_ids(_read_label_png(label_path))
        elif self.require_labels:
            raise FileNotFoundError(
                f"no label file for image {img_path}: expected {train_path} (or {label_path.name}); "
                f"layout {_SEG_LAYOUTS[self.layout]}; pass require_labels=False for unlabelled data")
        instance = _read_label_png(inst_path) if inst_path.is_file() else None
        for name, arr in (("semantic", semantic), ("instance", instance)):
            if arr is not None and arr.shape != (h, w):
                raise ValueError(f"{name} map of {img_path} has shape {arr.shape}, image is {(h, w)}")

        if instance is not None:
            boxes, train = _instance_boxes(instance, self.thing_classes, self.instance_encoding)
            sample["instance"] = torch.from_numpy(instance)
        elif semantic is not None:
            boxes, train = _semantic_boxes(semantic, self.thing_classes)
        else:
            boxes, train = np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64)
        if semantic is not None:
            sample["semantic"] = torch.from_numpy(np.ascontiguousarray(semantic, dtype=np.int64))
        sample["boxes"] = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        sample["labels"] = torch.from_numpy(self._label_lut[np.asarray(train, dtype=np.int64)])
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
