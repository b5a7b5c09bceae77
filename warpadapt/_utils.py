"""Small argument parsers shared by the whole package (no torch, numpy or matplotlib import).

One meaning everywhere: a size is ``(H, W)``; a single int ``n`` means the square ``(n, n)``.
"""
from __future__ import annotations

import numbers
import operator
from typing import Any

__all__ = ["as_size", "check_probability"]


def _as_int(value: Any) -> int:
    """``value`` as an int if it is an integer scalar (Python, numpy, 0-d integer tensor), else TypeError."""
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        raise TypeError("a bool is not a size")
    return operator.index(value)


def as_size(size: Any, name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """Parse an image size: ``(H, W)`` from a pair of ints, or ``(n, n)`` from one int ``n``.

    Args:
        size: an int, or a pair (tuple, list, ``torch.Size``, array) of ints (numpy and 0-d integer
            tensors count as ints; floats do not, even 64.0).
        name: the argument name used in error messages.
        minimum: the smallest accepted height and width.

    Returns:
        ``(H, W)`` as Python ints.

    Raises:
        TypeError: ``size`` is not an int or a sequence of ints.
        ValueError: not two values, or smaller than ``minimum``.

    Example:
        >>> as_size(64), as_size((32, 48)), as_size([32, 48])
        ((64, 64), (32, 48), (32, 48))
        >>> as_size((8, 8), minimum=16)
        Traceback (most recent call last):
        ...
        ValueError: size must be an int n (meaning (n, n)) or a pair (H, W) of ints >= 16, got (8, 8)
    """
    expected = f"{name} must be an int n (meaning (n, n)) or a pair (H, W) of ints >= {minimum}, got {size!r}"
    try:
        size = (_as_int(size),) * 2
    except TypeError:
        pass
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or not hasattr(size, "__getitem__"):
        raise TypeError(expected)
    if len(size) != 2:
        raise ValueError(expected)
    try:
        h, w = _as_int(size[0]), _as_int(size[1])
    except TypeError:
        raise TypeError(expected) from None
    if min(h, w) < minimum:
        raise ValueError(expected)
    return h, w


def check_probability(p: Any, name: str = "p") -> float:
    """``p`` as a float in [0, 1]; ValueError naming ``name`` otherwise.

    Example:
        >>> check_probability(1), check_probability(0.25)
        (1.0, 0.25)
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)
