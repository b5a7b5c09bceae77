"""Metrics for a run: one JSON line per log call in ``metrics.jsonl``, curves in ``curves.png``, and the
same scalars (plus pictures) as TensorBoard events in ``tensorboard/`` when the package is installed."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "write_json", "read_jsonl"]


def _clean(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; null reads as "not defined"
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become null); return the path.

    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "final.json", {"map": float("nan"), "n": 2})
    >>> json.loads(p.read_text())
    {'map': None, 'n': 2}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file ([] if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Append ``{"step", "kind", ...scalars}`` records to ``out_dir/metrics.jsonl``.

    Args:
        out_dir: the run folder.
        enabled: False on non-main ranks (every call is then a no-op).
        resume_step: when resuming from a checkpoint at this step, records logged after it by the
            interrupted run are dropped, so the file reads as one uninterrupted run.

    >>> import tempfile
    >>> log = MetricsLogger(tempfile.mkdtemp())
    >>> log.log(1, "train", loss=0.5); log.log(2, "eval", mAP50=0.25)
    >>> [r["kind"] for r in log.records()]
    ['train', 'eval']
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()
        else:
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # torch's writer needs the tensorboard package
                print("train.tensorboard: the tensorboard package is not installed (pip install tensorboard): "
                      "metrics.jsonl only")
            else:  # a resumed run drops the events the interrupted one logged after its checkpoint
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"),
                                            purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, kind: str, **scalars: Any) -> None:
        """Append one record (tensors are turned into numbers, NaN into null); TensorBoard: ``kind/name``."""
        if not self.enabled:
            return
        record = {"step": int(step), "kind": str(kind), **_clean(scalars)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"{kind}/{k}", v, int(step))

    def image(self, step: int, tag: str, png: str | os.PathLike) -> None:
        """A picture the run drew (``predictions.png``) as a TensorBoard image (nothing without TensorBoard)."""
        if self.writer is None:
            return
        import matplotlib.image

        pixels = matplotlib.image.imread(str(png))[..., :3]
        self.writer.add_image(tag, pixels, int(step), dataformats="HWC")

    def close(self) -> None:
        """Flush and close the TensorBoard writer (metrics.jsonl is written line by line)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def records(self) -> list[dict]:
        return read_jsonl(self.path) if self.enabled else []

    def write_json(self, name: str, obj: Any) -> Path | None:
        """Write ``out_dir/name`` atomically (main rank only)."""
        return write_json(self.out_dir / name, obj) if self.enabled else None

    def plot(self, path: str | os.PathLike | None = None, train_keys=None, eval_keys=None) -> Path | None:
        """Draw training scalars (left) and evaluation metrics (right) against the step.

        Args:
            path: output PNG (default ``out_dir/curves.png``).
            train_keys / eval_keys: which keys to draw (default: every numeric key of that kind
                except ``lr`` and timings, which get no axis of their own).
        """
        if not self.enabled:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.out_dir / "curves.png"
        recs = self.records()
        skip = {"step", "kind", "lr", "seconds_per_iter", "seconds"}
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, kind, keys in ((axes[0], "train", train_keys), (axes[1], "eval", eval_keys)):
            rows = [r for r in recs if r.get("kind") == kind]
            names = keys or sorted({k for r in rows for k, v in r.items()
                                    if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)})
            for name in names:
                pts = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
                if pts:
                    ax.plot(*zip(*pts), marker="o" if kind == "eval" else None,
                            markersize=3, linewidth=1, label=name)
            ax.set_xlabel("iteration")
            ax.set_title("training losses" if kind == "train" else "evaluation")
            if kind == "train" and any(v > 0 for r in rows for k, v in r.items()
                                       if k in names and isinstance(v, (int, float))):
                ax.set_yscale("log")
            if ax.lines:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
