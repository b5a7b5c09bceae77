"""Small argument parsers shared by the whole package (no torch, numpy or matplotlib import).

One meaning everywhere: a size is ``(H, W)``; a single int ``n`` means the square ``(n, n)``.
"""
from __future__ import annotations

import numbers
from typing import Any

__all__ = ["as_size", "check_probability"]


def as_size(size: Any, name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """Parse an image size: ``(H, W)`` from a pair of ints, or ``(n, n)`` from one int ``n``.

    Args:
        size: an int, or a pair (tuple, list, ``torch.Size``, array) of ints.
        name: the argument name used in error messages.
        minimum: the smallest accepted height and width.

    Returns:
        ``(H, W)`` as Python ints.

    Raises:
        TypeError: ``size`` is neither an int nor a sequence.
        ValueError: not two values, not integers, or smaller than ``minimum``.

    Example:
        >>> as_size(64), as_size((32, 48)), as_size([32, 48])
        ((64, 64), (32, 48), (32, 48))
        >>> as_size((8, 8), minimum=16)
        Traceback (most recent call last):
        ...
        ValueError: size must be an int n (meaning (n, n)) or a pair (H, W) of ints >= 16, got (8, 8)
    """
    expected = f"{name} must be an int n (meaning (n, n)) or a pair (H, W) of ints >= {minimum}, got {size!r}"
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or not hasattr(size, "__getitem__"):
        raise TypeError(expected)
    if len(size) != 2:
        raise ValueError(expected)
    values = []
    for v in size:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v).is_integer():
            raise ValueError(expected)
        values.append(int(v))
    if min(values) < minimum:
        raise ValueError(expected)
    return values[0], values[1]


def check_probability(p: Any, name: str = "p") -> float:
    """``p`` as a float in [0, 1]; ValueError naming ``name`` otherwise.

    Example:
        >>> check_probability(1), check_probability(0.25)
        (1.0, 0.25)
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)
