"""Mean teacher: an exponential moving average of the student's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from .dist import unwrap

__all__ = ["EMATeacher", "dacs_keep_rate"]


def dacs_keep_rate(step: int, alpha: float = 0.999) -> float:
    """DACS / DAFormer keep rate ``min(1 - 1 / (step + 1), alpha)``: a fast start, then ``alpha``.

    >>> dacs_keep_rate(0), dacs_keep_rate(1), dacs_keep_rate(10**6)
    (0.0, 0.5, 0.999)
    """
    if step < 0:
        raise ValueError(f"step: expected >= 0, got {step}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
    return min(1.0 - 1.0 / (step + 1), alpha)


def _stochastic_layers(module: nn.Module) -> list[nn.Module]:
    """The dropout and drop-path (timm ``DropPath``) layers of ``module``."""
    try:
        from timm.layers import DropPath
    except ImportError:  # timm absent: no drop-path layers to find
        DropPath = ()
    return [m for m in module.modules() if isinstance(m, (_DropoutNd, DropPath))]


class EMATeacher(nn.Module):
    """A frozen copy of the student updated as ``teacher = k * teacher + (1 - k) * student``.

    Args:
        student: the model to follow (a ``DistributedDataParallel`` wrapper is looked through).
        buffers: what :meth:`update` does with floating-point buffers (BatchNorm running statistics):
            ``"ema"`` averages them too (2PCNet's whole-state EMA), ``"copy"`` copies them from the
            student, ``"none"`` leaves them alone (DAFormer / MIC: the EMA covers parameters only).
            Integer buffers (``num_batches_tracked``) are copied unless ``"none"``.
        mode: ``"eval"``: the teacher runs in eval mode (BatchNorm normalises with its running
            statistics). ``"train"``: the teacher runs in train mode with only dropout and drop-path
            switched off, as DAFormer / MIC's teacher (``mmseg/models/uda/dacs.py``): BatchNorm
            normalises with the statistics of the batch it labels and folds them into the teacher's
            own running statistics (pair it with ``buffers="none"``, or the EMA overwrites them).

    The mode is fixed at construction (``.train()`` / ``.eval()`` on the wrapper change nothing, and
    every call re-applies it, so an evaluation that flipped ``teacher.module`` to eval and back does
    not turn dropout on); no parameter needs gradients. Call it as ``teacher(x)`` or reach the model
    as ``teacher.module``; ``teacher.module`` evaluated directly (``model.eval()``) normalises with
    the teacher's own running statistics.

    >>> student = nn.Linear(1, 1, bias=False); _ = student.weight.data.fill_(1.0)
    >>> teacher = EMATeacher(student)
    >>> _ = student.weight.data.fill_(3.0)
    >>> teacher.update(student, keep_rate=0.75)
    >>> teacher.module.weight.item()
    1.5
    >>> bn = nn.BatchNorm1d(1); t = EMATeacher(bn, buffers="none", mode="train")
    >>> x = torch.tensor([[1.0], [3.0]])
    >>> [round(v, 4) for v in t(x).flatten().tolist()]  # the batch's own statistics: mean 2, variance 1
    [-1.0, 1.0]
    >>> [round(v, 4) for v in EMATeacher(bn)(x).flatten().tolist()]  # eval mode: running mean 0, variance 1
    [1.0, 3.0]
    """

    def __init__(self, student: nn.Module, buffers: str = "ema", mode: str = "eval") -> None:
        super().__init__()
        if buffers not in ("ema", "copy", "none"):
            raise ValueError(f"buffers: expected 'ema', 'copy' or 'none', got {buffers!r}")
        if mode not in ("eval", "train"):
            raise ValueError(f"mode: expected 'eval' or 'train', got {mode!r}")
        if any(getattr(m, "_compiled_call_impl", None) is not None for m in unwrap(student).modules()):
            raise ValueError("student: make the teacher before compiling the student (a copy of a compiled "
                             "module runs the student's compiled forward); compile the teacher's module after")
        self.buffers_mode, self.mode = buffers, mode
        self.module = copy.deepcopy(unwrap(student))
        self._stochastic = _stochastic_layers(self.module)
        self._apply_mode()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _apply_mode(self) -> None:
        self.module.train(self.mode == "train")
        for m in self._stochastic:
            m.train(False)

    def train(self, mode: bool = True) -> "EMATeacher":  # the teacher's mode is fixed at construction
        return self

    def forward(self, *args, **kwargs):
        self._apply_mode()
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def reset(self, student: nn.Module) -> None:
        """Make the teacher an exact copy of the student (2PCNet: at the end of burn-in).

        >>> s = nn.Linear(1, 1); t = EMATeacher(s); _ = s.weight.data.fill_(5.0); t.reset(s)
        >>> t.module.weight.item()
        5.0
        """
        self.module.load_state_dict(unwrap(student).state_dict())

    @torch.no_grad()
    def update(self, student: nn.Module, keep_rate: float) -> None:
        """One EMA step with keep rate ``keep_rate`` in [0, 1] (1 = frozen teacher, 0 = copy).

        >>> s = nn.BatchNorm1d(1); t = EMATeacher(s, buffers="none", mode="train")
        >>> _ = s.train()(torch.tensor([[4.0], [6.0]])); t.update(s, 0.5)
        >>> s.running_mean.item(), t.module.running_mean.item()  # the teacher's buffers stay its own
        (0.5, 0.0)
        """
        if not 0.0 <= float(keep_rate) <= 1.0:
            raise ValueError(f"keep_rate: expected a number in [0, 1], got {keep_rate}")
        student, w = unwrap(student), 1.0 - float(keep_rate)
        t_params = dict(self.module.named_parameters())
        pairs = [(t_params[name], p.detach().to(t_params[name].dtype)) for name, p in student.named_parameters()]
        if pairs:  # one fused multi-tensor lerp (torch._foreach_*): the same numbers as a lerp_ per tensor
            torch._foreach_lerp_([t for t, _ in pairs], [s for _, s in pairs], w)
        if self.buffers_mode == "none":
            return
        t_bufs = dict(self.module.named_buffers())
        ema, copied = [], []
        for name, b in student.named_buffers():
            tb = t_bufs[name]
            (ema if self.buffers_mode == "ema" and tb.is_floating_point() else copied).append((tb, b.to(tb.dtype)))
        if ema:
            torch._foreach_lerp_([t for t, _ in ema], [s for _, s in ema], w)
        if copied:
            torch._foreach_copy_([t for t, _ in copied], [s for _, s in copied])
