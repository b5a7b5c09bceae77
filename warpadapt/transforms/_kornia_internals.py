"""Every use of kornia's private members by :mod:`warpadapt.transforms`, in one place.

kornia has no public hook for a custom inverse that honours the per-sample ``p`` decision or for
replacing the data of a ``Boxes`` / ``Keypoints``; its own augmentations use the members below. They
exist in kornia 0.7-0.9 (tested on 0.9.0; ``pyproject.toml`` caps kornia below 0.10). If a kornia
release renames one, importing :mod:`warpadapt.transforms` fails here with the list of missing members
instead of a transform failing mid-training.
"""
from __future__ import annotations

from typing import Any

import kornia
from kornia.augmentation import GeometricAugmentationBase2D
from kornia.geometry.boxes import Boxes
from kornia.geometry.keypoints import Keypoints
from torch import Tensor

__all__ = ["applied_mask", "blend_applied", "resolve_params", "with_data"]

# methods looked up on the class; ``aug._params`` (the last forward's parameters) is an instance attribute
_NEEDED = ("_gate", "_blend_by_prob", "_process_kwargs_to_params_and_flags")
_missing = [m for m in _NEEDED if not hasattr(GeometricAugmentationBase2D, m)]
if _missing:
    raise ImportError(
        f"warpadapt.transforms needs kornia >= 0.7, < 0.10 (found {kornia.__version__}): "
        f"GeometricAugmentationBase2D lacks {_missing}"
    )


def resolve_params(aug: GeometricAugmentationBase2D, params: dict | None, flags: dict | None, **kwargs: Any):
    """``(params, flags)`` of an inverse call: the given params, else the ones of the last forward."""
    return aug._process_kwargs_to_params_and_flags(aug._params if params is None else params, flags, **kwargs)


def applied_mask(aug: GeometricAugmentationBase2D, params: dict) -> Tensor:
    """(B,) bool: which samples the augmentation was applied to (its per-sample ``p`` decision)."""
    return aug._gate(params)


def blend_applied(aug: GeometricAugmentationBase2D, out: Tensor, original: Tensor, applied: Tensor) -> Tensor:
    """``out`` where ``applied`` is True, ``original`` elsewhere (per sample)."""
    return aug._blend_by_prob(out, original, applied)


def with_data(container: Boxes | Keypoints, data: Tensor) -> Boxes | Keypoints:
    """A copy of a kornia ``Boxes`` / ``Keypoints`` holding ``data`` (same mode and flags)."""
    out = container.clone()
    out._data = data
    return out
