"""Saliency -> separable monotone sampling maps, the :class:`Warp` object and its exact inverse.

Coordinates. A map is a batch of 1-D monotone functions ``g: [0, 1] -> [0, 1]`` given by their values
at ``n`` evenly spaced nodes ``u_i = i / (n - 1)`` and linear in between. ``u`` is a position in the
WARPED image and ``g(u)`` the position in the ORIGINAL image it reads, both as fractions of the
image's extent (0 = left/top edge, 1 = right/bottom edge). Pixel ``c`` of an image of size ``n_px``
has its centre at ``(c + 0.5) / n_px``; in the ``align_corners=False`` normalised coordinates of
:func:`torch.nn.functional.grid_sample` a fraction ``u`` is ``2u - 1``. Because the maps are
functions on fractions, one warp serves every resolution: the image and each feature stride. A
feature map is taken to cover the image edge to edge (its pixel c centred at ``(c + 0.5) / n``); for
image sizes that are not a multiple of the stride this is off by less than half a feature pixel.

The inverse ``h = g^-1`` is exact up to float rounding: ``g`` is piecewise linear and increasing, so
``h`` is piecewise linear too and is evaluated with ``searchsorted`` at the pixel centres of whatever
resolution is asked for; no 2-D inversion is ever needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import as_size  # sizes: (H, W), an int n means (n, n)
from .saliency import GRID_SIZE

__all__ = [
    "attraction_kernel",
    "marginal_to_map",
    "saliency_to_maps",
    "interp_map",
    "invert_map",
    "pixel_centers",
    "resample",
    "Warp",
]


#: Valid range of the attraction kernel's FWHM, in grid cells. Below 0.1 the kernel is a single node
#: (the identity map); above 1000 it is flat over any padded grid (no zoom), and the float arithmetic of
#: the kernel would underflow or overflow far outside.
FWHM_RANGE: tuple[float, float] = (0.1, 1000.0)


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
    if not torch.isfinite(saliency).all() or (saliency < 0).any():
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


def resample(x: Tensor, fy: Tensor, fx: Tensor, mode: str = "bilinear", method: str = "grid_sample") -> Tensor:
    """Resample images or features at a separable grid of positions (border padding).

    Output pixel (i, j) of image b reads ``x[b]`` at the fractional position ``(fy[b, i], fx[b, j])``.
    Computation is in float32 (float64 if ``x`` is float64) and the result has ``x``'s dtype. NaN or
    infinite values in ``x`` propagate to the output pixels that read them (as in any torch op); finite
    input gives finite output. Integer and bool ``x`` raise TypeError (cast label maps to float first).

    Args:
        x: (B, C, H, W) tensor.
        fy: (B, H_out) row positions as fractions in [0, 1].
        fx: (B, W_out) column positions as fractions in [0, 1].
        mode: "bilinear" or "nearest" ("nearest" for label maps; ``method`` is then grid_sample).
        method: "grid_sample" (one 2-D ``F.grid_sample``; the fastest measured on CPU) or
            "separable" (two 1-D gathers, bilinear only; equal to grid_sample up to rounding).

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
    if method not in ("grid_sample", "separable"):
        raise ValueError(f"method must be 'grid_sample' or 'separable', got {method!r}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor, got {x.dtype}")
    orig_dtype = x.dtype
    work = torch.float64 if orig_dtype == torch.float64 else torch.float32
    xw = x if x.dtype == work else x.to(work)
    if method == "separable" and mode == "bilinear":
        out = _separable_bilinear(xw, fy.to(work), fx.to(work))
    else:
        b, ho, wo = x.shape[0], fy.shape[1], fx.shape[1]
        gx = (2.0 * fx.to(work) - 1.0)[:, None, :].expand(b, ho, wo)
        gy = (2.0 * fy.to(work) - 1.0)[:, :, None].expand(b, ho, wo)
        grid = torch.stack((gx, gy), dim=-1)
        out = F.grid_sample(xw, grid, mode=mode, padding_mode="border", align_corners=False)
    return out if out.dtype == orig_dtype else out.to(orig_dtype)


@dataclass
class Warp:
    """A batch of separable warps: two monotone 1-D maps per image.

    ``warped(u, v) = original(g_x(u), g_y(v))`` in fractional coordinates. Produces sampling grids and
    their exact inverse at any resolution, maps points and boxes both ways, and moves with ``.to()``.

    Building a ``Warp`` from tensors validates them (see :meth:`validate`: floating point, finite, in
    [0, 1], non-decreasing, 0 and 1 at the ends; one host sync on CUDA); the warps the library makes
    itself (:meth:`identity`, :meth:`from_saliency`, ``to``, indexing) skip the check. float16 and
    bfloat16 maps are stored as float32.

    Precision. Maps are float32 unless built from float64 saliency (``SaliencyWarp(dtype=torch.float64)``)
    or moved with ``.to(torch.float64)``. Mapping original -> warped -> original (``g(h(v))``: an image
    warped then unwarped, a box mapped with :meth:`forward_boxes` then :meth:`inverse_boxes`) is exact up
    to float rounding: within 2e-3 px at 2048 px in float32 over the documented option ranges (about
    1e-3 px typical worst). The other order, warped -> original -> warped (``h(g(u))``), multiplies the
    float32 rounding of the map values (6e-8 of the image size) by the local zoom: about
    ``6e-8 * size * zoom`` px, e.g. 1e-2 px at 2048 px where a thin box is zoomed 150x. float64 maps bring
    both below 1e-6 px; use them when boxes or points make that round trip.

    Attributes:
        map_y: (B, gh) row map node values in [0, 1], non-decreasing, 0 and 1 at the ends.
        map_x: (B, gw) column map node values.
        image_size: (H, W) of the image it was built for (default size for points and boxes; lets
            :class:`~warpadapt.FeatureUnwarp` check feature sizes), or None.

    Example:
        >>> w = Warp.identity(2, (31, 51), image_size=(64, 128))
        >>> fy, fx = w.axes((64, 128))
        >>> torch.allclose(fx[0], pixel_centers(128))
        True
        >>> Warp(torch.tensor([[0., 0.7, 0.6, 1.]]), torch.tensor([[0., 1.]]))
        Traceback (most recent call last):
        ...
        ValueError: map_y must be non-decreasing along each row (a monotone map), got a decreasing step
    """

    map_y: Tensor
    map_x: Tensor
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("map_y", "map_x"):
            m = getattr(self, name)
            if not isinstance(m, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
            if not m.is_floating_point():
                raise TypeError(f"{name} must be a floating point tensor, got {m.dtype}")
            if m.dtype not in (torch.float32, torch.float64):
                setattr(self, name, m.float())
        self.validate()

    @classmethod
    def _trusted(cls, map_y: Tensor, map_x: Tensor, image_size=None) -> "Warp":
        """A warp from maps known to be valid (made by this module): no checks, no host sync."""
        w = cls.__new__(cls)
        w.map_y, w.map_x, w.image_size = map_y, map_x, image_size
        return w

    def validate(self) -> "Warp":
        """Check the maps and ``image_size``; return self. Raises TypeError / ValueError naming the field.

        Example:
            >>> Warp.identity(1, (3, 5)).validate().batch_size
            1
            >>> Warp(torch.tensor([[0., float("nan"), 1.]]), torch.tensor([[0., 1.]]))
            Traceback (most recent call last):
            ...
            ValueError: map_y must be finite, got NaN or inf values
        """
        my, mx = self.map_y, self.map_x
        if my.dim() != 2 or mx.dim() != 2 or my.shape[0] != mx.shape[0]:
            raise ValueError(
                f"map_y and map_x must have shapes (B, gh) and (B, gw), got {tuple(my.shape)} and {tuple(mx.shape)}"
            )
        if my.shape[1] < 2 or mx.shape[1] < 2:
            raise ValueError(f"map_y and map_x need at least 2 nodes each, got {my.shape[1]} and {mx.shape[1]}")
        if my.dtype != mx.dtype or my.device != mx.device:
            raise TypeError(f"map_y and map_x must share dtype and device, got {my.dtype}/{my.device} and {mx.dtype}/{mx.device}")
        tol = 1e-6
        flags = []
        for m in (my.detach(), mx.detach()):
            finite = torch.isfinite(m).all()
            mz = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            flags += [
                ~finite,
                ((mz < -tol) | (mz > 1 + tol)).any(),
                (mz.diff(dim=1) < 0).any(),
                ((mz[:, 0].abs() > tol) | ((mz[:, -1] - 1).abs() > tol)).any(),
            ]
        bad = torch.stack(flags).tolist()  # one host sync for every check
        problems = (
            "must be finite, got NaN or inf values",
            "values must lie in [0, 1] (fractions of the image)",
            "must be non-decreasing along each row (a monotone map), got a decreasing step",
            "must start at 0 and end at 1 (the map spans the whole image)",
        )
        for i, name in enumerate(("map_y", "map_x")):
            for j, msg in enumerate(problems):
                if bad[4 * i + j]:
                    raise ValueError(f"{name} {msg}")
        if self.image_size is not None:
            self.image_size = as_size(self.image_size, "image_size")
        return self

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def identity(cls, batch_size: int, grid_size: Sequence[int] = GRID_SIZE, image_size=None, device=None, dtype=torch.float32) -> "Warp":
        """The identity warp (what an image without boxes gets).

        Example:
            >>> w = Warp.identity(2, (3, 5), image_size=(8, 8))
            >>> w.map_x.tolist()[0]
            [0.0, 0.25, 0.5, 0.75, 1.0]
        """
        gh, gw = as_size(grid_size, "grid_size")
        if gh < 2 or gw < 2:
            raise ValueError(f"grid_size must be at least (2, 2), got {(gh, gw)}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        my = torch.linspace(0, 1, gh, device=device, dtype=dtype).expand(batch_size, gh).clone()
        mx = torch.linspace(0, 1, gw, device=device, dtype=dtype).expand(batch_size, gw).clone()
        return cls._trusted(my, mx, None if image_size is None else as_size(image_size, "image_size"))

    @classmethod
    def from_saliency(cls, saliency: Tensor, fwhm: float = 13.0, image_size=None, padding: int | None = None) -> "Warp":
        """Build the warp of a (B, gh, gw) saliency map (see :func:`saliency_to_maps`).

        The maps are float64 for float64 saliency, float32 otherwise.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0, image_size=(40, 72))
            >>> bool(w.zoom()[1].max() > 1.0)  # oversampled around the peak
            True
        """
        my, mx = saliency_to_maps(saliency, fwhm, padding)
        return cls._trusted(my, mx, None if image_size is None else as_size(image_size, "image_size"))

    # -- basic properties ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Number of images (B).

        Example:
            >>> Warp.identity(3).batch_size
            3
        """
        return self.map_x.shape[0]

    @property
    def device(self) -> torch.device:
        return self.map_x.device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the maps (float32 or float64)."""
        return self.map_x.dtype

    def to(self, *args, **kwargs) -> "Warp":
        """Move the maps (like ``Tensor.to``); float dtypes below float32 are kept at float32.

        Example:
            >>> Warp.identity(1).to(torch.float64).dtype
            torch.float64
            >>> Warp.identity(1).to(torch.float16).dtype
            torch.float32
        """
        my, mx = self.map_y.to(*args, **kwargs), self.map_x.to(*args, **kwargs)
        if my.dtype not in (torch.float32, torch.float64):
            if not my.is_floating_point():
                raise TypeError(f"a warp's maps must stay floating point, got {my.dtype}")
            my, mx = my.float(), mx.float()
        return Warp._trusted(my, mx, self.image_size)

    def detach(self) -> "Warp":
        """The same warp with maps detached from the autograd graph.

        Example:
            >>> s = torch.ones(1, 5, 9, requires_grad=True)
            >>> Warp.from_saliency(s, fwhm=3.0).detach().map_x.requires_grad
            False
        """
        return Warp._trusted(self.map_y.detach(), self.map_x.detach(), self.image_size)

    def __getitem__(self, idx) -> "Warp":
        """Select images of the batch (int, slice or index tensor); keeps the batch dimension.

        Example:
            >>> Warp.identity(4)[1:3].batch_size, Warp.identity(4)[-1].batch_size
            (2, 1)
        """
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Warp._trusted(self.map_y[idx], self.map_x[idx], self.image_size)

    def repeat(self, n: int) -> "Warp":
        """Each image's warp repeated n times in a row (e.g. for a source batch plus its augmented copy).

        Example:
            >>> Warp.identity(2).repeat(3).batch_size
            6
        """
        return Warp._trusted(self.map_y.repeat_interleave(n, 0), self.map_x.repeat_interleave(n, 0), self.image_size)

    # -- 1-D axes ----------------------------------------------------------------------------
    def axes(self, size, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """Sampling positions (fractions in [0, 1]) at a resolution, one axis at a time.

        Args:
            size: (H, W) integers, the size of the OUTPUT of the resampling (warped image or feature map).
            inverse: False: positions in the original that each warped pixel reads (``g``);
                True: positions in the warped image that each original pixel reads (``g^-1``).

        Returns:
            ``(fy, fx)`` of shapes (B, H) and (B, W), in the maps' dtype.

        Example:
            >>> fy, fx = Warp.identity(1, (3, 5)).axes((2, 4))
            >>> fx.tolist()
            [[0.125, 0.375, 0.625, 0.875]]
        """
        h, w = as_size(size)
        cy = pixel_centers(h, self.device, self.map_y.dtype)
        cx = pixel_centers(w, self.device, self.map_x.dtype)
        if inverse:
            return invert_map(self.map_y, cy), invert_map(self.map_x, cx)
        return interp_map(self.map_y, cy), interp_map(self.map_x, cx)

    def grid(self, size, inverse: bool = False) -> Tensor:
        """The (B, H, W, 2) ``grid_sample`` grid (``align_corners=False``, xy order) at a resolution.

        ``F.grid_sample(image, warp.grid(image.shape[-2:]), align_corners=False)`` warps an image;
        ``warp.grid(size, inverse=True)`` unwarps anything of that size. ``size`` must be integers.

        Example:
            >>> g = Warp.identity(2).grid((4, 6))
            >>> g.shape, g[0, 0, 0].tolist()  # top-left pixel centre
            (torch.Size([2, 4, 6, 2]), [-0.8333333134651184, -0.75])
        """
        fy, fx = self.axes(size, inverse)
        b, h, w = fy.shape[0], fy.shape[1], fx.shape[1]
        return torch.stack(((2 * fx - 1)[:, None, :].expand(b, h, w), (2 * fy - 1)[:, :, None].expand(b, h, w)), -1)

    # -- tensors ------------------------------------------------------------------------------
    def _check_batch(self, x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[0] != self.batch_size:
            raise ValueError(f"{name} has batch size {x.shape[0]} but the warp has {self.batch_size}")

    def apply(self, x: Tensor, mode: str = "bilinear", method: str = "grid_sample") -> Tensor:
        """Warp a (B, C, H, W) float image, label map (``mode="nearest"``) or feature map.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0)
            >>> x = torch.rand(1, 3, 20, 36)
            >>> w.apply(x).shape, torch.allclose(Warp.identity(1, (5, 9)).apply(x), x, atol=1e-5)
            (torch.Size([1, 3, 20, 36]), True)
        """
        self._check_batch(x, "x")
        fy, fx = self.axes(x.shape[-2:], inverse=False)
        return resample(x, fy, fx, mode, method)

    def unapply(self, x: Tensor, mode: str = "bilinear", method: str = "grid_sample") -> Tensor:
        """Unwarp a (B, C, H, W) tensor computed on the warped image back to the original geometry.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0)
            >>> x = torch.linspace(0, 1, 36).expand(1, 1, 20, 36)  # a smooth ramp comes back closely
            >>> float((w.unapply(w.apply(x)) - x).abs().max()) < 0.02
            True
        """
        self._check_batch(x, "x")
        fy, fx = self.axes(x.shape[-2:], inverse=True)
        return resample(x, fy, fx, mode, method)

    # -- points and boxes ---------------------------------------------------------------------
    def _coords(self, data, size, inverse: bool, name: str, k: int):
        """Map (B, N, k) tensors or lists of B (N_i, k) tensors of (x, y) pairs (k = 2 points, 4 xyxy boxes)."""
        if size is None:
            size = self.image_size
        if size is None:
            raise ValueError("size (H, W) is required: this warp was built without an image_size")
        h, w = as_size(size)
        what = "(x, y) pixels" if k == 2 else "xyxy pixels"
        if isinstance(data, (list, tuple)):
            if len(data) != self.batch_size:
                raise ValueError(f"{name} has {len(data)} entries but the warp has batch size {self.batch_size}")
            items = []
            for i, t in enumerate(data):
                _check_coord_tensor(t, f"{name}[{i}]")
                if t.dim() == 1 and t.numel() == 0:
                    t = t.reshape(0, k)
                if t.dim() != 2 or t.shape[1] != k:
                    raise ValueError(f"{name}[{i}] must have shape (N, {k}) of {what}, got {tuple(t.shape)}")
                items.append(t)
            ct = _coord_dtype(self.dtype, *[t.dtype for t in items])
            lens = [t.shape[0] for t in items]
            if max(lens, default=0) == 0:
                return [t.to(_out_dtype(t.dtype)) for t in items]
            _check_coord_finite(items, name)
            padded = torch.nn.utils.rnn.pad_sequence([t.to(device=self.device, dtype=ct).reshape(-1, 2) for t in items], batch_first=True)
            out = self._map_xy(padded, h, w, inverse, ct)
            return [out[i, : n * k // 2].reshape(n, k).to(_out_dtype(t.dtype)) for i, (n, t) in enumerate(zip(lens, items))]
        if not isinstance(data, Tensor):
            raise TypeError(f"{name} must be a (B, N, {k}) tensor or a list of B (N_i, {k}) tensors, got {type(data).__name__}")
        _check_coord_tensor(data, name)
        if data.dim() != 3 or data.shape[-1] != k:
            raise ValueError(f"{name} must be a (B, N, {k}) tensor of {what} or a list of B (N_i, {k}) tensors, got shape {tuple(data.shape)}")
        if data.shape[0] != self.batch_size:
            raise ValueError(f"{name} has batch size {data.shape[0]} but the warp has {self.batch_size}")
        _check_coord_finite([data], name)
        ct = _coord_dtype(self.dtype, data.dtype)
        b, n = data.shape[:2]
        out = self._map_xy(data.to(device=self.device, dtype=ct).reshape(b, n * k // 2, 2), h, w, inverse, ct)
        return out.reshape(b, n, k).to(_out_dtype(data.dtype))

    def _map_xy(self, pts: Tensor, h: int, w: int, inverse: bool, ct: torch.dtype) -> Tensor:
        # original -> warped uses g^-1 (where does original content land); warped -> original uses g
        f = interp_map if inverse else invert_map
        x = f(self.map_x.to(ct), pts[..., 0] / w) * w
        y = f(self.map_y.to(ct), pts[..., 1] / h) * h
        return torch.stack((x, y), -1)

    def forward_points(self, points, size=None):
        """Map (x, y) pixel points of the ORIGINAL image to where they appear in the warped image.

        Arithmetic is in float32 (float64 if the points or the maps are float64). Returns the input's
        dtype for float32 / float64 points and float32 for float16, bfloat16 and integer points. Points
        outside the image are clamped to its edge.

        Args:
            points: (B, N, 2) tensor or list of B tensors (N_i, 2) (or empty (0,)), continuous pixel
                coordinates; real dtype (not bool or complex), finite.
            size: (H, W) of the image; default ``image_size``.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0, image_size=(40, 72))
            >>> p = torch.tensor([[[36., 20.], [10., 5.]]])  # the centre stays, others move outward
            >>> w.forward_points(p).round(decimals=3).tolist()[0][0]
            [36.0, 20.0]
            >>> torch.allclose(w.inverse_points(w.forward_points(p)), p, atol=1e-3)
            True
        """
        return self._coords(points, size, False, "points", 2)

    def inverse_points(self, points, size=None):
        """Map (x, y) pixel points of the WARPED image back to the original image (see :meth:`forward_points`).

        Example:
            >>> w = Warp.identity(1, image_size=(10, 20))
            >>> [p.round(decimals=4) for p in w.inverse_points([torch.tensor([[5., 2.]])])]
            [tensor([[5., 2.]])]
        """
        return self._coords(points, size, True, "points", 2)

    def forward_boxes(self, boxes, size=None):
        """Map xyxy boxes of the original image into the warped image (a separable monotone warp
        keeps axis-aligned boxes axis-aligned, so this is exact).

        Args:
            boxes: (B, N, 4) tensor or list of B tensors (N_i, 4) (or empty (0,)), xyxy pixels; real
                dtype (not bool or complex), finite. Dtypes as :meth:`forward_points`: float32 comes back
                for float16, bfloat16 and integer boxes.
            size: (H, W) of the image; default ``image_size``.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0, image_size=(40, 72))
            >>> b = torch.tensor([[32., 16., 40., 24.]])
            >>> fb = w.forward_boxes([b])[0]
            >>> bool((fb[0, 2] - fb[0, 0]) > (b[0, 2] - b[0, 0]))  # the box at the peak grows
            True
            >>> torch.allclose(w.inverse_boxes([fb])[0], b, atol=1e-3)
            True
        """
        return self._coords(boxes, size, False, "boxes", 4)

    def inverse_boxes(self, boxes, size=None):
        """Map xyxy boxes of the warped image back to the original image (see :meth:`forward_boxes`).

        Example:
            >>> w = Warp.identity(1, image_size=(10, 20))
            >>> w.inverse_boxes(torch.tensor([[[1., 2., 3., 4.]]])).round(decimals=4).tolist()
            [[[1.0, 2.0, 3.0, 4.0]]]
        """
        return self._coords(boxes, size, True, "boxes", 4)

    def zoom(self) -> tuple[Tensor, Tensor]:
        """Local magnification per axis at the grid nodes' segments: (B, gh - 1), (B, gw - 1).

        Values above one mean the original is oversampled (zoomed in) there.

        Example:
            >>> zy, zx = Warp.identity(1, (3, 5)).zoom()
            >>> zx.tolist()
            [[1.0, 1.0, 1.0, 1.0]]
        """
        dy = self.map_y.diff(dim=1) * (self.map_y.shape[1] - 1)
        dx = self.map_x.diff(dim=1) * (self.map_x.shape[1] - 1)
        return 1.0 / dy.clamp(min=1e-12), 1.0 / dx.clamp(min=1e-12)


def _check_coord_tensor(t, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real (floating point or integer) tensor, got {t.dtype}")


def _check_coord_finite(items, name: str) -> None:
    flags = [~torch.isfinite(t).all() for t in items if t.is_floating_point() and t.numel()]
    if flags and bool(torch.stack([f.cpu() for f in flags]).any()):
        raise ValueError(f"{name} contain NaN or infinite values")


def _coord_dtype(map_dtype: torch.dtype, *dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in (map_dtype, *dtypes) else torch.float32


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32
