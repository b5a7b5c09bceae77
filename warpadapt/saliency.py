"""Saliency maps on a coarse grid: from boxes, and the static / geometric priors.

All maps live on a ``(gh, gw)`` grid of nodes that spans the image from edge to edge: node ``(i, j)``
sits at pixel ``(x, y) = (j * W / (gw - 1), i * H / (gh - 1))``. A saliency map is non-negative and
sums to one over the grid. Nothing here knows about models, training or datasets; every function is
pure. Boxes from label maps (semantic or instance-id maps) are in :mod:`warpadapt.data.boxes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._utils import as_size  # sizes: (H, W), an int n means (n, n)
from .maps import autocast_off

__all__ = [
    "GRID_SIZE",
    "pad_boxes",
    "instance_saliency",
    "saliency_from_padded",
    "instance_marginals",
    "fit_static_prior",
    "save_prior",
    "load_prior",
    "geometric_prior",
    "uniform_saliency",
]

#: Default saliency grid (gh, gw) = (31, 51) nodes, rows x columns (the authors' value); every default uses it.
GRID_SIZE: tuple[int, int] = (31, 51)


def _check_grid_size(grid_size: Sequence[int]) -> tuple[int, int]:
    return as_size(grid_size, "grid_size", minimum=2)


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    return as_size(image_size, "image_size")


def pad_boxes(
    boxes: Sequence[Tensor] | Tensor,
    image_size: Sequence[int],
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Validate, clip and pad a batch of box lists into one tensor and a validity mask.

    Args:
        boxes: list (or tuple) of B tensors of shape (N_i, 4) (or (0,) for an image without boxes),
            xyxy in pixels of the image, any real dtype (float16 / bfloat16 / integer boxes are read
            in float32); or one tensor (B, N, 4) with every row valid.
        image_size: (H, W) of the image the boxes belong to. Boxes partly outside are clipped to it;
            boxes with zero area after clipping (e.g. entirely outside) are masked out.
        batch_size: expected B; a mismatch raises ValueError.
        device: device of the result (default: that of the boxes).

    Returns:
        ``(padded, mask)``: (B, N_max, 4) clipped boxes (float32, or float64 for float64 input) and
        bool (B, N_max).

    Raises:
        TypeError: ``boxes`` is not a list/tuple of tensors or a tensor, or has a bool / complex dtype.
        ValueError: wrong shapes (including empty ones such as (0, 5) or (3, 0)), batch length,
            NaN/inf values, or x2 < x1 / y2 < y1.

    Example:
        >>> p, m = pad_boxes([torch.tensor([[10., 20., 30., 40.]]), torch.zeros(0, 4)], (64, 64))
        >>> p.shape, m.tolist()
        (torch.Size([2, 1, 4]), [[True], [False]])
    """
    h, w = _check_image_size(image_size)
    if isinstance(boxes, Tensor):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes as one tensor must have shape (B, N, 4), got {tuple(boxes.shape)}")
        if boxes.dtype == torch.bool or boxes.is_complex():
            raise TypeError(f"boxes must be a real (floating point or integer) tensor, got {boxes.dtype}")
        seq = list(boxes.unbind(0))
    elif isinstance(boxes, (list, tuple)):
        seq = list(boxes)
        for i, b in enumerate(seq):
            if not isinstance(b, Tensor):
                raise TypeError(f"boxes[{i}] must be a torch.Tensor of shape (N, 4), got {type(b).__name__}")
            if b.dtype == torch.bool or b.is_complex():
                raise TypeError(f"boxes[{i}] must be a real (floating point or integer) tensor, got {b.dtype}")
            if (b.dim() != 2 or b.shape[-1] != 4) and tuple(b.shape) != (0,):
                raise ValueError(f"boxes[{i}] must have shape (N, 4) (or (0,) for no boxes), got {tuple(b.shape)}")
    else:
        raise TypeError(f"boxes must be a list of B tensors (N_i, 4) or a tensor (B, N, 4), got {type(boxes).__name__}")
    if batch_size is not None and len(seq) != batch_size:
        raise ValueError(f"boxes has {len(seq)} entries but the batch has {batch_size} images")
    if device is None:
        device = next((b.device for b in seq), torch.device("cpu"))
    dtype = torch.float64 if any(b.dtype == torch.float64 for b in seq) else torch.float32
    seq = [b.reshape(-1, 4).to(device=device, dtype=dtype) for b in seq]
    n_max = max((b.shape[0] for b in seq), default=0)
    bsz = len(seq)
    if n_max == 0:
        return torch.zeros(bsz, 0, 4, device=device, dtype=dtype), torch.zeros(bsz, 0, dtype=torch.bool, device=device)
    padded = torch.nn.utils.rnn.pad_sequence(seq, batch_first=True)  # (B, N, 4) zero padded
    counts = torch.tensor([b.shape[0] for b in seq], device=device)
    mask = torch.arange(n_max, device=device)[None, :] < counts[:, None]
    # one host read for both checks (no boolean indexing: on a GPU that is a sync of its own)
    finite = torch.isfinite(padded).all(-1)
    ordered = (padded[..., 2] >= padded[..., 0]) & (padded[..., 3] >= padded[..., 1])
    if bool((mask & ~(finite & ordered)).any()):
        if bool((mask & ~finite).any()):
            raise ValueError("boxes contain NaN or infinite values")
        raise ValueError("boxes must be xyxy with x2 >= x1 and y2 >= y1")
    scale = padded.new_tensor([w, h, w, h])
    clipped = torch.minimum(padded.clamp(min=0.0), scale)
    area_ok = (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    return clipped, mask & area_ok


def instance_marginals(
    boxes: Tensor,
    mask: Tensor,
    image_size: Sequence[int],
    grid_size: Sequence[int] = GRID_SIZE,
    bandwidth_scale: float = 64.0,
    amplitude_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Separable factors of the instance saliency (see :func:`instance_saliency`), without the 2-D map.

    Each box's kernel is separable, so the saliency is ``S = sum_k c_k * outer(gy_k, gx_k) + floor``.
    This returns the pieces from which :func:`instance_saliency` and the map marginals are built.

    Args:
        boxes: (B, N, 4) float xyxy pixels (already clipped, see :func:`pad_boxes`).
        mask: (B, N) bool, which boxes are real.
        image_size: (H, W) of the image.
        grid_size: (gh, gw) nodes of the saliency grid.
        bandwidth_scale: b in ``sigma_x^2 = max(b * w, 1)`` (a variance, in squared pixels).
        amplitude_scale: A, the mass of each box's kernel.

    Returns:
        ``(gy, gx, weight)``: (B, N, gh) and (B, N, gw) unnormalised 1-D kernels, and (B, N) per-box
        weights ``A / (1e-5 + sum(G_k))`` (zero for masked boxes). The floor term is
        ``mask.sum(1) / (2P + 1)^2`` per node with ``P = min(gh, gw) - 1``.

    Example:
        >>> gy, gx, wt = instance_marginals(torch.tensor([[[0., 0., 8., 8.]]]), torch.ones(1, 1, dtype=torch.bool), (16, 16), (5, 5))
        >>> gy.shape, gx.shape, wt.shape
        (torch.Size([1, 1, 5]), torch.Size([1, 1, 5]), torch.Size([1, 1]))
    """
    gh, gw = _check_grid_size(grid_size)
    h, w = _check_image_size(image_size)
    dev = boxes.device
    xs = torch.linspace(0.0, float(w), gw, device=dev)
    ys = torch.linspace(0.0, float(h), gh, device=dev)
    bw = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    bh = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    var_x = (bandwidth_scale * bw).clamp(min=1.0)
    var_y = (bandwidth_scale * bh).clamp(min=1.0)
    gx = torch.exp(-0.5 * (xs - cx[..., None]) ** 2 / var_x[..., None])  # (B, N, gw)
    gy = torch.exp(-0.5 * (ys - cy[..., None]) ** 2 / var_y[..., None])  # (B, N, gh)
    total = gx.sum(-1) * gy.sum(-1)  # sum over the grid of the separable kernel
    weight = torch.where(mask, amplitude_scale / (1e-5 + total), torch.zeros_like(total))
    return gy, gx, weight


def uniform_saliency(batch_size: int, grid_size: Sequence[int] = GRID_SIZE, device=None) -> Tensor:
    """A uniform saliency map (B, gh, gw) summing to one: the identity warp.

    Example:
        >>> s = uniform_saliency(2, (3, 4))
        >>> s.shape, torch.allclose(s.sum(dim=(1, 2)), torch.ones(2))
        (torch.Size([2, 3, 4]), True)
    """
    gh, gw = _check_grid_size(grid_size)
    return torch.full((batch_size, gh, gw), 1.0 / (gh * gw), device=device)


def instance_saliency(
    boxes: Sequence[Tensor] | Tensor,
    image_size: Sequence[int],
    grid_size: Sequence[int] = GRID_SIZE,
    bandwidth_scale: float = 64.0,
    amplitude_scale: float = 1.0,
) -> Tensor:
    """Instance-level KDE saliency from ground-truth boxes (Instance-Warp, arXiv 2403.12712).

    For box k with width w, height h and centre (cx, cy), at node (x, y):
    ``G_k = exp(-((x - cx)^2 / sx^2 + (y - cy)^2 / sy^2) / 2)`` with ``sx^2 = max(b w, 1)``,
    ``sy^2 = max(b h, 1)``; ``S_k = A G_k / (1e-5 + sum G_k) + 1 / (2P + 1)^2`` with
    ``P = min(gh, gw) - 1``; ``S = sum_k S_k`` normalised to sum one. An image without boxes gets a
    uniform map (identity warp). Boxes partly outside the image are clipped first; boxes with no area
    inside the image are ignored.

    Args:
        boxes: list of B tensors (N_i, 4) xyxy in pixels (or a (B, N, 4) tensor).
        image_size: (H, W) of the image the boxes refer to (x and y are scaled separately).
        grid_size: (gh, gw) nodes, default (31, 51).
        bandwidth_scale: b, default 64 (sigma = 8 sqrt(w) pixels).
        amplitude_scale: A, default 1.

    Returns:
        (B, gh, gw) float32 saliency, each map summing to one.

    Example:
        >>> s = instance_saliency([torch.tensor([[100., 50., 140., 90.]])], (200, 400))
        >>> s.shape, round(float(s.sum()), 4)
        (torch.Size([1, 31, 51]), 1.0)
    """
    gh, gw = _check_grid_size(grid_size)
    padded, mask = pad_boxes(boxes, image_size)
    return saliency_from_padded(padded, mask, image_size, (gh, gw), bandwidth_scale, amplitude_scale)


def saliency_from_padded(
    padded: Tensor,
    mask: Tensor,
    image_size: Sequence[int],
    grid_size: Sequence[int] = GRID_SIZE,
    bandwidth_scale: float = 64.0,
    amplitude_scale: float = 1.0,
) -> Tensor:
    """:func:`instance_saliency` from boxes already validated and padded by :func:`pad_boxes`.

    Args:
        padded: (B, N, 4) clipped xyxy boxes; mask: (B, N) bool, which rows are real boxes.

    Example:
        >>> p, m = pad_boxes([torch.tensor([[10., 10., 20., 20.]])], (64, 64))
        >>> torch.allclose(saliency_from_padded(p, m, (64, 64)), instance_saliency([p[0]], (64, 64)))
        True
    """
    gh, gw = _check_grid_size(grid_size)
    bsz = padded.shape[0]
    if padded.shape[1] == 0:
        return uniform_saliency(bsz, (gh, gw), device=padded.device).to(padded.dtype)
    gy, gx, weight = instance_marginals(padded, mask, image_size, (gh, gw), bandwidth_scale, amplitude_scale)
    p = min(gh, gw) - 1
    count = mask.sum(1)
    floor = count.to(gy.dtype) / (2 * p + 1) ** 2  # added once per box
    with autocast_off(padded.device):  # float32 / float64 under any autocast
        s = torch.bmm((gy * weight[..., None]).transpose(1, 2), gx) + floor[:, None, None]  # (B, gh, gw)
    s = s / s.sum(dim=(1, 2), keepdim=True).clamp(min=1e-30)
    # images without boxes: uniform (their s is all zeros before normalisation)
    return torch.where((count == 0)[:, None, None], torch.full_like(s, 1.0 / (gh * gw)), s)


def fit_static_prior(
    boxes: Iterable[Tensor],
    image_sizes: Iterable[Sequence[int]] | Sequence[int],
    grid_size: Sequence[int] = GRID_SIZE,
    bandwidth_scale: float = 64.0,
    amplitude_scale: float = 1.0,
) -> Tensor:
    """The static prior (FOVEA): the average instance saliency over a dataset's training boxes.

    Each image with at least one box contributes its normalised instance saliency; images without
    boxes are skipped. The result sums to one.

    Args:
        boxes: iterable of (N_i, 4) xyxy tensors, one per image.
        image_sizes: one (H, W) for all images, or an iterable of (H, W) per image.
        grid_size, bandwidth_scale, amplitude_scale: as :func:`instance_saliency`.

    Returns:
        (gh, gw) float32 map summing to one (uniform if no image had boxes).

    Example:
        >>> prior = fit_static_prior([torch.tensor([[10., 10., 20., 20.]]), torch.zeros(0, 4)], (64, 128), (5, 9))
        >>> prior.shape, round(float(prior.sum()), 4)
        (torch.Size([5, 9]), 1.0)
    """
    gh, gw = _check_grid_size(grid_size)
    if isinstance(image_sizes, (tuple, list)) and len(image_sizes) == 2 and all(isinstance(v, int) for v in image_sizes):
        sizes_iter: Iterable = iter(lambda: tuple(image_sizes), None)  # the same size forever
    else:
        sizes_iter = iter(image_sizes)
    acc = torch.zeros(gh, gw, dtype=torch.float64)
    count = 0
    for b, size in zip(boxes, sizes_iter):
        if not isinstance(b, Tensor):
            b = torch.as_tensor(np.asarray(b, dtype=np.float32))
        if b.numel() == 0:
            continue
        s = instance_saliency([b.reshape(-1, 4)], tuple(size), (gh, gw), bandwidth_scale, amplitude_scale)[0]
        acc += s.double().cpu()
        count += 1
    if count == 0:
        return uniform_saliency(1, (gh, gw))[0]
    return (acc / acc.sum()).float()


def save_prior(path: str | Path, prior: Tensor, **metadata) -> None:
    """Save a (gh, gw) prior map to a small ``.npz`` file (written atomically), with metadata.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_prior(os.path.join(d, "p.npz"), uniform_saliency(1, (3, 4))[0], dataset="demo")
        ...     load_prior(os.path.join(d, "p.npz")).shape
        torch.Size([3, 4])
    """
    if not isinstance(prior, Tensor) or prior.dim() != 2:
        raise ValueError(f"prior must be a (gh, gw) tensor, got {getattr(prior, 'shape', type(prior))}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = {f"meta_{k}": np.asarray(v) for k, v in metadata.items()}
    np.savez(tmp, saliency=prior.detach().cpu().float().numpy(), **meta)
    tmp.replace(path)


def load_prior(path: str | Path) -> Tensor:
    """Load a prior map saved by :func:`save_prior`; returns (gh, gw) float32 summing to one.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_prior(os.path.join(d, "p.npz"), torch.ones(2, 2))
        ...     load_prior(os.path.join(d, "p.npz")).tolist()
        [[0.25, 0.25], [0.25, 0.25]]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file not found: {path} (expected an .npz written by save_prior)")
    with np.load(path) as data:
        if "saliency" not in data:
            raise ValueError(f"{path} has no 'saliency' array (expected an .npz written by save_prior)")
        s = torch.from_numpy(np.array(data["saliency"], dtype=np.float32))
    if s.dim() != 2 or (s < 0).any() or s.sum() <= 0:
        raise ValueError(f"{path}: saliency must be a non-negative (gh, gw) map with positive sum")
    return s / s.sum()


def geometric_prior(
    grid_size: Sequence[int] = GRID_SIZE,
    vanishing_point: Sequence[float] | Tensor = (0.5, 0.45),
    sigma: Sequence[float] = (0.22, 0.12),
    floor: float = 0.05,
    batch_size: int | None = None,
) -> Tensor:
    """A geometric prior peaked at the vanishing point (documented formula, one map per image).

    In normalised image coordinates (u, v) in [0, 1] (u across, v down), with the vanishing point
    (u0, v0) and widths (su, sv)::

        S(u, v) = exp(-((u - u0)^2 / (2 su^2) + (v - v0)^2 / (2 sv^2))) + floor,   normalised to sum 1.

    Objects on a road shrink toward the vanishing point, so this oversamples the far, small ones. By
    default u0 is the horizontal centre and v0 the horizon row as a fraction of the height.

    Args:
        grid_size: (gh, gw).
        vanishing_point: (u0, v0) in [0, 1] (any finite value; outside [0, 1] is outside the image),
            or a (B, 2) tensor of per-image points.
        sigma: (su, sv) widths as fractions of the image width and height, each in [1e-3, 1e3].
        floor: constant added before normalisation (keeps the background sampled), finite and >= 0.
            With ``floor=0`` the map is computed relative to its peak, so it never underflows to zero.
        batch_size: if given (and one point is given), repeat the map to (B, gh, gw).

    Returns:
        (gh, gw) map, or (B, gh, gw) for a batch of points or ``batch_size``.

    Example:
        >>> g = geometric_prior((5, 9), (0.5, 0.5))
        >>> g.shape, int(g.argmax()) == 2 * 9 + 4
        (torch.Size([5, 9]), True)
    """
    gh, gw = _check_grid_size(grid_size)
    try:
        vp = torch.as_tensor(vanishing_point, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"vanishing_point must be (u0, v0) or a (B, 2) tensor of numbers, got {vanishing_point!r}") from err
    if not (vp.shape == (2,) or (vp.dim() == 2 and vp.shape[1] == 2)):
        raise ValueError(f"vanishing_point must have shape (2,) or (B, 2), got {tuple(vp.shape)}")
    single = vp.dim() == 1
    vp = vp.reshape(-1, 2)
    if not torch.isfinite(vp).all():
        raise ValueError("vanishing_point must be finite")
    if isinstance(sigma, (str, bytes)) or not isinstance(sigma, (Sequence, Tensor)) or len(sigma) != 2:
        raise ValueError(f"sigma must be a pair (su, sv), got {sigma!r}")
    su, sv = (float(s) for s in sigma)
    if not (1e-3 <= su <= 1e3 and 1e-3 <= sv <= 1e3):
        raise ValueError(f"sigma must be a pair of numbers in [1e-3, 1e3], got {tuple(sigma)}")
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor >= 0):
        raise ValueError(f"floor must be a finite number >= 0, got {floor!r}")
    u = torch.linspace(0, 1, gw, dtype=torch.float64)
    v = torch.linspace(0, 1, gh, dtype=torch.float64)
    du = (u[None, :] - vp[:, 0:1]) ** 2 / (2 * su**2)  # (B, gw)
    dv = (v[None, :] - vp[:, 1:2]) ** 2 / (2 * sv**2)  # (B, gh)
    d = dv[:, :, None] + du[:, None, :]
    if floor == 0:  # relative to the peak: the normalised map is the same and cannot underflow to all zeros
        d = d - d.amin(dim=(1, 2), keepdim=True)
    s = torch.exp(-d) + floor
    s = (s / s.sum(dim=(1, 2), keepdim=True)).float()
    if single:
        s = s[0]
        if batch_size is not None:
            s = s.expand(batch_size, gh, gw).clone()
    return s

