"""Segmentation reader: Cityscapes-style folders (Cityscapes, ACDC, Dark Zurich, the synthetic export),
:class:`CityscapesSegmentation`, with boxes derived from instance or semantic maps. Items follow the
sample contract of :mod:`warpadapt.data`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .boxes import boxes_from_instance_map as _core_instance_boxes
from .boxes import boxes_from_semantic as _core_semantic_boxes
from .labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_TRAIN_IDS, LABEL_ID_LUT, canonical_class, train_id_of
from .reader_utils import as_list, read_image, read_label_png

__all__ = ["CityscapesSegmentation", "label_ids_to_train_ids"]


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
        conds = as_list(conditions)
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
        image = read_image(img_path)
        h, w = image.shape[-2:]
        meta = {"file_name": file_name, "index": index, "path": str(img_path), "condition": cond}
        sample = {"image": image, "meta": meta}

        train_path = self._gt_path(gt_prefix, "labelTrainIds")
        label_path = self._gt_path(gt_prefix, "labelIds")
        inst_path = self._gt_path(gt_prefix, "instanceIds")
        semantic = None
        if train_path.is_file():
            semantic = read_label_png(train_path)
        elif label_path.is_file():
            semantic = label_ids_to_train_ids(read_label_png(label_path))
        elif self.require_labels:
            raise FileNotFoundError(
                f"no label file for image {img_path}: expected {train_path} (or {label_path.name}); "
                f"layout {_SEG_LAYOUTS[self.layout]}; pass require_labels=False for unlabelled data")
        instance = read_label_png(inst_path) if inst_path.is_file() else None
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
