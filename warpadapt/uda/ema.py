"""Mean teacher: an exponential moving average of the student's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn

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


class EMATeacher(nn.Module):
    """A frozen copy of the student updated as ``teacher = k * teacher + (1 - k) * student``.

    Args:
        student: the model to follow (a ``DistributedDataParallel`` wrapper is looked through).
        buffers: ``"ema"`` averages floating-point buffers too (BatchNorm running statistics, as in
            2PCNet's whole-state EMA); ``"copy"`` copies them from the student. Integer buffers
            (``num_batches_tracked``) are always copied.

    The teacher stays in eval mode (``.train()`` does not change that) and needs no gradients; call it
    as ``teacher(x)`` or reach the model as ``teacher.module``.

    >>> student = nn.Linear(1, 1, bias=False); _ = student.weight.data.fill_(1.0)
    >>> teacher = EMATeacher(student)
    >>> _ = student.weight.data.fill_(3.0)
    >>> teacher.update(student, keep_rate=0.75)
    >>> teacher.module.weight.item()
    1.5
    """

    def __init__(self, student: nn.Module, buffers: str = "ema") -> None:
        super().__init__()
        if buffers not in ("ema", "copy"):
            raise ValueError(f"buffers: expected 'ema' or 'copy', got {buffers!r}")
        self.buffers_mode = buffers
        self.module = copy.deepcopy(unwrap(student))
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "EMATeacher":  # the teacher never leaves eval mode
        return self

    def forward(self, *args, **kwargs):
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
        """One EMA step with keep rate ``keep_rate`` in [0, 1] (1 = frozen teacher, 0 = copy)."""
        if not 0.0 <= float(keep_rate) <= 1.0:
            raise ValueError(f"keep_rate: expected a number in [0, 1], got {keep_rate}")
        student = unwrap(student)
        t_params = dict(self.module.named_parameters())
        for name, p in student.named_parameters():
            t_params[name].lerp_(p.detach().to(t_params[name].dtype), 1.0 - float(keep_rate))
        t_bufs = dict(self.module.named_buffers())
        for name, b in student.named_buffers():
            tb = t_bufs[name]
            if self.buffers_mode == "ema" and tb.is_floating_point():
                tb.lerp_(b.to(tb.dtype), 1.0 - float(keep_rate))
            else:
                tb.copy_(b)
