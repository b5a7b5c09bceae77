"""Saliency -> separable monotone 1-D sampling maps, their exact inverse and resampling (pure functions).

The :class:`~warpadapt.warp.Warp` object (``warp.py``) is built on these; import them from here.
Coordinates are those described in ``warp.py``: a map is a batch of 1-D monotone functions
``g: [0, 1] -> [0, 1]`` given at ``n`` evenly spaced nodes ``u_i = i / (n - 1)``, linear in between;
``u`` is a position in the WARPED image, ``g(u)`` the position in the ORIGINAL image it reads, both as
fractions of the image's extent.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor


__all__ = [
    "FWHM_RANGE",
    "autocast_off",
    "check_fwhm",
    "attraction_kernel",
    "marginal_to_map",
    "saliency_to_maps",
    "interp_map",
    "invert_map",
    "pixel_centers",
    "METHODS",
    "interpolation_matrix",
    "resample",
]


#: Valid range of the attraction kernel's FWHM, in grid cells. Below 0.1 the kernel is a single node
#: (the identity map); above 1000 it is flat over any padded grid (no zoom), and the float arithmetic of
#: the kernel would underflow or overflow far outside.
FWHM_RANGE: tuple[float, float] = (0.1, 1000.0)


@contextmanager
def autocast_off(device):
    """Run the warp's geometry in full precision inside any ``torch.autocast`` region.

    Autocast would run ``conv1d`` / ``bmm`` / ``grid_sample`` in bfloat16 or float16: a bf16 map of a
    2048-pixel axis has about 500 distinct values, i.e. positions off by tens of pixels. The saliency,
    the maps, their inverse and the sampling grids are therefore computed with autocast switched off
    for ``device``'s type (float32, or float64 when asked); outside autocast this does nothing.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     with autocast_off(torch.device("cpu")):
        ...         torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype
        torch.float32
    """
    kind = torch.device(device).type if device is not None else "cpu"
    try:
        active = torch.is_autocast_enabled(kind)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        active = False
    if not active:
        yield
        return
    with torch.autocast(kind, enabled=False):
        yield


def _map_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_fwhm(fwhm, name: str = "fwhm") -> float:
    """Validate an attraction-kernel FWHM (a real number in :data:`FWHM_RANGE`); returns it as a float.

    Example:
        >>> check_fwhm(13)
        13.0
        >>> check_fwhm(1e-30)
        Traceback (most recent call last):
        ...
        ValueError: fwhm must be a number of grid cells in [0.1, 1000.0], got 1e-30
    """
    lo, hi = FWHM_RANGE
    if isinstance(fwhm, bool) or not isinstance(fwhm, (int, float)) or not (lo <= fwhm <= hi):
        raise ValueError(f"{name} must be a number of grid cells in [{lo}, {hi}], got {fwhm!r}")
    return float(fwhm)


def attraction_kernel(fwhm: float, padding: int, device=None, dtype=torch.float32) -> Tensor:
    """Gaussian attraction kernel ``k(d) = exp(-4 ln2 d^2 / fwhm^2)``, d = -P..P grid cells.

    ``fwhm`` must lie in :data:`FWHM_RANGE` (ValueError otherwise).

    Example:
        >>> k = attraction_kernel(2.0, 2)
        >>> k.tolist()  # half maximum at d = +-1 (FWHM 2)
        [0.0625, 0.5, 1.0, 0.5, 0.0625]
    """
    fwhm = check_fwhm(fwhm)
    d = torch.arange(-padding, padding + 1, device=device, dtype=dtype)
    return torch.exp(-4.0 * math.log(2.0) * d**2 / float(fwhm) ** 2)


def marginal_to_map(marginal: Tensor, fwhm: float = 13.0, padding: int | None = None) -> Tensor:
    """One axis of the Recasens attraction map (Recasens et al. 2018, as used by Instance-Warp, arXiv 2403.12712).

    The marginal is reflect-padded by P nodes on each side; padded node t sits at
    ``p(t) = (t - P) / (n - 1)``; ``g_i = sum(m p k) / sum(m k)`` over the 2P + 1 nodes around node i,
    clamped to [0, 1]. A uniform marginal gives the identity ``g_i = i / (n - 1)``; the result is
    non-decreasing (a weighted mean of positions with a positive kernel).

    Args:
        marginal: (B, n) non-negative weights (row or column sums of a saliency map), n >= 2.
        fwhm: full width at half maximum of the attraction kernel, in grid cells (default 13).
        padding: P, default ``n - 1`` capped at 30 (the grid's ``min(gh, gw) - 1`` for 31 x 51).

    Returns:
        (B, n) map values in [0, 1] with ``g_0 = 0`` and ``g_{n-1} = 1``.

    Example:
        >>> g = marginal_to_map(torch.ones(1, 5), fwhm=2.0)
        >>> torch.allclose(g, torch.linspace(0, 1, 5)[None])
        True
    """
    if marginal.dim() != 2:
        raise ValueError(f"marginal must have shape (B, n), got {tuple(marginal.shape)}")
    n = marginal.shape[1]
    if n < 2:
        raise ValueError(f"marginal needs at least 2 nodes, got {n}")
    p = min(n - 1, 30) if padding is None else int(padding)
    if not 0 <= p <= n - 1:
        raise ValueError(f"padding must be in [0, n - 1] = [0, {n - 1}] for reflect padding, got {p}")
    dt = _map_dtype(marginal)
    m = marginal.to(dt)
    m_pad = F.pad(m[:, None, :], (p, p), mode="reflect") if p > 0 else m[:, None, :]
    pos = (torch.arange(n + 2 * p, device=m.device, dtype=dt) - p) / (n - 1)
    k = attraction_kernel(fwhm, p, device=m.device, dtype=dt)[None, None, :]
    with autocast_off(m.device):  # float32 / float64 under any autocast
        num = F.conv1d(m_pad * pos, k)[:, 0]
        den = F.conv1d(m_pad, k)[:, 0]
    g = (num / den.clamp(min=torch.finfo(dt).tiny)).clamp(0.0, 1.0)
    # Reflect padding makes g_0 = 0 and g_{n-1} = 1 exactly in exact arithmetic: pin them so the map
    # always spans the whole image. Monotone by construction; cummax only removes float-rounding wiggles.
    ends = g.new_zeros(g.shape[0], 1)
    g = torch.cat((ends, g[:, 1:-1], ends + 1.0), dim=1)
    return torch.cummax(g, dim=1).values


def saliency_to_maps(saliency: Tensor, fwhm: float = 13.0, padding: int | None = None) -> tuple[Tensor, Tensor]:
    """Separable sampling maps from a saliency map: column sums give x, row sums give y.

    Args:
        saliency: (B, gh, gw) non-negative saliency (need not be normalised).
        fwhm: attraction kernel FWHM in grid cells (default 13, the authors' runs).
        padding: P for both axes; default ``min(gh, gw) - 1`` (30 on the 31 x 51 grid).

    Returns:
        ``(map_y, map_x)``: (B, gh) and (B, gw) monotone maps in [0, 1].

    Example:
        >>> my, mx = saliency_to_maps(torch.ones(2, 31, 51))
        >>> float((mx - torch.linspace(0, 1, 51)).abs().max()) < 1e-6
        True
    """
    if saliency.dim() != 3:
        raise ValueError(f"saliency must have shape (B, gh, gw), got {tuple(saliency.shape)}")
    if not bool((torch.isfinite(saliency) & (saliency >= 0)).all()):  # one host read for both checks
        raise ValueError("saliency must be finite and non-negative")
    gh, gw = saliency.shape[1:]
    p = min(gh, gw) - 1 if padding is None else padding
    s = saliency.to(_map_dtype(saliency))
    map_x = marginal_to_map(s.sum(1), fwhm, p)
    map_y = marginal_to_map(s.sum(2), fwhm, p)
    return map_y, map_x


def interp_map(m: Tensor, u: Tensor) -> Tensor:
    """Evaluate piecewise-linear maps at positions ``u`` (fractions in [0, 1]).

    Args:
        m: (B, n) map node values.
        u: (B, M) or (M,) positions; values outside [0, 1] are clamped.

    Returns:
        (B, M) values ``g(u)``.

    Example:
        >>> interp_map(torch.tensor([[0., 0.2, 1.]]), torch.tensor([0.25, 0.75])).tolist()
        [[0.10000000149011612, 0.6000000238418579]]
    """
    b, n = m.shape
    u = u.to(m.dtype)
    if u.dim() == 1:
        u = u.expand(b, -1)
    t = u.clamp(0.0, 1.0) * (n - 1)
    i0 = t.detach().floor().long().clamp(0, n - 2)
    frac = t - i0.to(t.dtype)
    lo = torch.gather(m, 1, i0)
    hi = torch.gather(m, 1, i0 + 1)
    return lo + (hi - lo) * frac


def invert_map(m: Tensor, v: Tensor) -> Tensor:
    """Evaluate the exact inverse ``h = g^-1`` of piecewise-linear increasing maps at ``v``.

    Uses ``searchsorted`` on the node values; flat pieces (zero slope) resolve to their left end.

    Args:
        m: (B, n) non-decreasing map node values with ``m[:, 0] <= v <= m[:, -1]``.
        v: (B, M) or (M,) positions in [0, 1].

    Returns:
        (B, M) positions ``u`` with ``g(u) = v``.

    Example:
        >>> m = torch.tensor([[0., 0.2, 1.]])
        >>> u = invert_map(m, torch.tensor([0.1, 0.6]))
        >>> torch.allclose(interp_map(m, u), torch.tensor([[0.1, 0.6]]))
        True
    """
    b, n = m.shape
    v = v.to(m.dtype)
    if v.dim() == 1:
        v = v.expand(b, -1)
    v = v.clamp(min=0.0, max=1.0)
    idx = torch.searchsorted(m.detach().contiguous(), v.detach().contiguous(), right=True).clamp(1, n - 1)
    lo = torch.gather(m, 1, idx - 1)
    hi = torch.gather(m, 1, idx)
    slope = hi - lo
    frac = torch.where(slope > 0, (v - lo) / torch.where(slope > 0, slope, torch.ones_like(slope)), torch.zeros_like(v))
    return ((idx - 1).to(m.dtype) + frac.clamp(0.0, 1.0)) / (n - 1)


def pixel_centers(n: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel centres of an axis of ``n`` pixels as fractions: ``(c + 0.5) / n``.

    Example:
        >>> pixel_centers(4).tolist()
        [0.125, 0.375, 0.625, 0.875]
    """
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n


def _separable_bilinear(x: Tensor, fy: Tensor, fx: Tensor) -> Tensor:
    """Bilinear resampling at a separable grid with border padding, by two 1-D gathers."""
    b, c, h, w = x.shape
    iy = (fy * h - 0.5).clamp(0, h - 1)
    ix = (fx * w - 0.5).clamp(0, w - 1)
    y0 = iy.detach().floor().long().clamp(max=max(h - 2, 0))
    x0 = ix.detach().floor().long().clamp(max=max(w - 2, 0))
    wy = (iy - y0.to(iy.dtype)).to(x.dtype)
    wx = (ix - x0.to(ix.dtype)).to(x.dtype)
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    ho, wo = fy.shape[1], fx.shape[1]
    gx0 = x0[:, None, None, :].expand(b, c, h, wo)
    gx1 = x1[:, None, None, :].expand(b, c, h, wo)
    t = torch.lerp(torch.gather(x, 3, gx0), torch.gather(x, 3, gx1), wx[:, None, None, :])
    gy0 = y0[:, None, :, None].expand(b, c, ho, wo)
    gy1 = y1[:, None, :, None].expand(b, c, ho, wo)
    return torch.lerp(torch.gather(t, 2, gy0), torch.gather(t, 2, gy1), wy[:, None, :, None])


#: Resampling methods of :func:`resample` (the same numbers up to float rounding).
METHODS = ("grid_sample", "separable", "matmul")


def interpolation_matrix(f: Tensor, n: int) -> Tensor:
    """The 2-tap linear interpolation of an axis of ``n`` pixels at positions ``f`` as a matrix.

    Row ``i`` of the result holds the two weights with which output ``i`` reads the input pixels around
    ``f[:, i] * n - 0.5`` (border padding: positions past the outer pixel centres read the edge pixel),
    so ``out = R @ x`` along that axis. Dense, but small for feature maps (``n`` up to a few hundred).

    Args:
        f: (B, M) positions as fractions in [0, 1]. n: input pixels on the axis.

    Returns:
        (B, M, n) matrix in ``f``'s dtype, each row summing to one.

    Example:
        >>> interpolation_matrix(torch.tensor([[0.5, 0.625]]), 4).tolist()
        [[[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]]]
    """
    t = (f * n - 0.5).clamp(0, n - 1)
    i0 = t.detach().floor().long().clamp(max=max(n - 2, 0))
    w1 = (t - i0.to(t.dtype))[..., None]
    i1 = (i0 + 1).clamp(max=n - 1)
    eye0 = F.one_hot(i0, n).to(f.dtype)
    eye1 = F.one_hot(i1, n).to(f.dtype)
    return eye0 * (1 - w1) + eye1 * w1


def resample(x: Tensor, fy: Tensor, fx: Tensor, mode: str = "bilinear", method: str = "grid_sample") -> Tensor:
    """Resample images or features at a separable grid of positions (border padding).

    Output pixel (i, j) of image b reads ``x[b]`` at the fractional position ``(fy[b, i], fx[b, j])``.
    Computation is in float32 (float64 if ``x`` is float64), also inside ``torch.autocast``, and the
    result has ``x``'s dtype (bfloat16 features come back bfloat16). NaN or
    infinite values in ``x`` propagate to the output pixels that read them (as in any torch op); finite
    input gives finite output. Integer and bool ``x`` raise TypeError (cast label maps to float first).

    Args:
        x: (B, C, H, W) tensor.
        fy: (B, H_out) row positions as fractions in [0, 1].
        fx: (B, W_out) column positions as fractions in [0, 1].
        mode: "bilinear" or "nearest" ("nearest" for label maps; ``method`` is then grid_sample).
        method: "grid_sample" (one 2-D ``F.grid_sample``; the fastest measured on CPU),
            "separable" (two 1-D gathers, bilinear only; equal to grid_sample up to rounding) or
            "matmul" (bilinear only: ``R_y @ x @ R_x^T`` with the two :func:`interpolation_matrix`
            factors; forward and backward are plain matrix products, so deterministic on CUDA, where
            grid_sample's backward is not, and tensor-core friendly).

    Returns:
        (B, C, H_out, W_out) tensor.

    Example:
        >>> x = torch.arange(8.).reshape(1, 1, 2, 4)
        >>> resample(x, pixel_centers(2)[None], pixel_centers(4)[None]).equal(x)
        True
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if fy.dim() != 2 or fx.dim() != 2 or fy.shape[0] != x.shape[0] or fx.shape[0] != x.shape[0]:
        raise ValueError(
            f"fy and fx must have shapes (B, H_out) and (B, W_out) with B = {x.shape[0]}, "
            f"got {tuple(fy.shape)} and {tuple(fx.shape)}"
        )
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor, got {x.dtype}")
    orig_dtype = x.dtype
    work = torch.float64 if orig_dtype == torch.float64 else torch.float32
    xw = x if x.dtype == work else x.to(work)
    with autocast_off(x.device):
        if method == "separable" and mode == "bilinear":
            out = _separable_bilinear(xw, fy.to(work), fx.to(work))
        elif method == "matmul" and mode == "bilinear":
            ry = interpolation_matrix(fy.to(work), x.shape[2])  # (B, H_out, H)
            rx = interpolation_matrix(fx.to(work), x.shape[3])  # (B, W_out, W)
            out = ry[:, None] @ xw @ rx[:, None].transpose(-1, -2)
        else:
            b, ho, wo = x.shape[0], fy.shape[1], fx.shape[1]
            gx = (2.0 * fx.to(work) - 1.0)[:, None, :].expand(b, ho, wo)
            gy = (2.0 * fy.to(work) - 1.0)[:, :, None].expand(b, ho, wo)
            grid = torch.stack((gx, gy), dim=-1)
            out = F.grid_sample(xw, grid, mode=mode, padding_mode="border", align_corners=False)
    return out if out.dtype == orig_dtype else out.to(orig_dtype)
