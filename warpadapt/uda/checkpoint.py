"""Atomic checkpoints and RNG state: a run killed at any moment resumes where it stopped.

:func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and then
``os.replace``-s it over the target, so the target is always either the previous complete checkpoint
or the new complete one, never a partial file.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Save ``state`` (anything ``torch.save`` takes) to ``path`` atomically; return the path.

    >>> import tempfile
    >>> p = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", {"step": 3})
    >>> load_checkpoint(p)["step"]
    3
    """
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (our own files: full unpickling).

    >>> load_checkpoint("/nonexistent/last.pt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint: no file at '/nonexistent/last.pt'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise RuntimeError(f"checkpoint: {str(path)!r} is not a readable checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise RuntimeError(f"checkpoint: {str(path)!r} holds a {type(state).__name__}, expected a dict")
    return state


def rng_state() -> dict:
    """The global RNG states of Python, NumPy, torch (and CUDA if present), for a checkpoint.

    >>> s = rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.rand(1) == a)
    True
    """
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
