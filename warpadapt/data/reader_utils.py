"""File reading and box bookkeeping shared by the dataset readers (detection and segmentation)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["as_list", "read_json", "read_image", "read_label_png", "image_size", "clip_boxes", "group_by_image", "to_sample"]


def as_list(value) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


_JSON_CACHE: dict = {}


def read_json(path: Path):
    """A label json, parsed once per process: the train and val readers of both domains of a pair (BDD100K
    day and night come from the same file) share one parse while the file is unchanged (path, size and
    modification time). The object returned is shared: read it, do not modify it. Invalid json raises
    ``ValueError`` naming the file.

    >>> import tempfile, os
    >>> p = Path(tempfile.mkdtemp()) / "a.json"; _ = p.write_text('{"images": []}')
    >>> read_json(p) is read_json(p), read_json(p)
    (True, {'images': []})
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _JSON_CACHE:
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"label file {path} is not valid json: {err}") from err
        if len(_JSON_CACHE) >= 4:  # a few files at a time (train + val of a pair)
            _JSON_CACHE.pop(next(iter(_JSON_CACHE)))
        _JSON_CACHE[key] = data
    return _JSON_CACHE[key]


def read_image(path: Path) -> torch.Tensor:
    """Read an RGB image as float32 (3, H, W) in [0, 1]; a corrupt file raises naming the file."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"cannot decode image file {path}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def read_label_png(path: Path) -> np.ndarray:
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


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err


def clip_boxes(boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip xyxy boxes (M, 4) to per-box image sizes (M, 2) = (W, H).

    Returns (clipped boxes, was_clipped (M,) bool, keep (M,) bool = positive width and height).
    """
    lo = np.zeros_like(boxes)
    hi = np.concatenate([sizes, sizes], axis=1).astype(boxes.dtype)
    clipped = np.clip(boxes, lo, hi)
    was_clipped = np.any(clipped != boxes, axis=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, was_clipped, keep


def group_by_image(n_images: int, image_index: np.ndarray, boxes: np.ndarray,
                    labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split flat per-box arrays into one (boxes (N_i, 4), labels (N_i,)) pair per image."""
    order = np.argsort(image_index, kind="stable")
    image_index, boxes, labels = image_index[order], boxes[order], labels[order]
    bounds = np.searchsorted(image_index, np.arange(n_images + 1))
    return [(boxes[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def to_sample(image: torch.Tensor, boxes: np.ndarray, labels: np.ndarray, meta: dict) -> dict:
    return {
        "image": image,
        "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
        "meta": meta,
    }
