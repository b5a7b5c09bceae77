"""Detection readers: COCO-format json (:class:`CocoDetection`) and BDD100K's own labels
(:class:`BDD100KDetection`). Items follow the sample contract of :mod:`warpadapt.data`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .labels import BDD_CLASSES, canonical_class
from .reader_utils import as_list, clip_boxes, group_by_image, image_size, read_image, read_json, to_sample

__all__ = ["CocoDetection", "BDD100KDetection"]

logger = logging.getLogger("warpadapt.data.readers")


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
        image = read_image(path)
        boxes, labels = self._targets[index]
        h, w = image.shape[-2:]
        if boxes.shape[0]:
            # Guard against an annotation file whose width/height disagrees with the actual image.
            boxes, _, keep = clip_boxes(boxes, np.tile([[w, h]], (boxes.shape[0], 1)))
            boxes, labels = boxes[keep], labels[keep]
        meta = {"file_name": self._names[index], "index": index, "path": str(path), **meta}
        sample = to_sample(image, boxes, labels, meta)
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
            clipped, was_clipped, keep = clip_boxes(boxes_xyxy, sizes[image_index])
            keep &= finite
        else:
            clipped = boxes_xyxy
            was_clipped = keep = np.zeros(0, dtype=bool)
        stats["boxes_clipped"] = int((was_clipped & keep).sum())
        stats["boxes_dropped_degenerate"] = int((~keep).sum())
        stats["boxes_kept"] = int(keep.sum())
        self._targets = group_by_image(n_images, image_index[keep],
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
        data = read_json(self.ann_file)  # parsed once per process (train and val readers share it)
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
            sizes[i] = image_size(self._files[i])

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
        frames = read_json(label_file)  # parsed once per process: day and night readers share the file
        if isinstance(frames, dict) and "frames" in frames:  # Scalabel dataset wrapper
            frames = frames["frames"]
        if not isinstance(frames, list):
            raise ValueError(f"BDD100K label file {label_file} should hold a list of frames "
                             f"{{'name', 'attributes', 'labels'}}")

        filters = {"timeofday": as_list(timeofday), "weather": as_list(weather),
                   "scene": as_list(scene)}
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
