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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._utils import as_size  # sizes: (H, W), an int n means (n, n)
from .maps import interp_map as _interp_map
from .maps import invert_map as _invert_map
from .maps import pixel_centers as _pixel_centers
from .maps import resample as _resample
from .maps import saliency_to_maps as _saliency_to_maps
from .saliency import GRID_SIZE

__all__ = ["Warp"]


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
        >>> from warpadapt.maps import pixel_centers
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
        """Build the warp of a (B, gh, gw) saliency map (see :func:`~warpadapt.maps.saliency_to_maps`).

        The maps are float64 for float64 saliency, float32 otherwise.

        Example:
            >>> s = torch.ones(1, 5, 9); s[0, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0, image_size=(40, 72))
            >>> bool(w.zoom()[1].max() > 1.0)  # oversampled around the peak
            True
        """
        my, mx = _saliency_to_maps(saliency, fwhm, padding)
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

    def blend(self, amplitude) -> "Warp":
        """A weaker warp: each map moved towards the identity, ``identity + a (map - identity)``.

        ``amplitude`` is a number or a (B,) tensor (one per image), each in [0, 1]: 1 keeps the warp, 0 is
        the identity, and in between every displacement is scaled by ``a`` (maps stay increasing, so the
        blend is a warp with its exact inverse). Only a Python number is range-checked here (a tensor
        would need a host read); the caller keeps a tensor in [0, 1].

        Example:
            >>> s = torch.ones(2, 5, 9); s[:, 2, 4] = 20.0
            >>> w = Warp.from_saliency(s, fwhm=3.0)
            >>> ident = Warp.identity(2, (5, 9)).map_x
            >>> half = w.blend(torch.tensor([0.5, 0.0]))
            >>> torch.allclose(half.map_x[0] - ident[0], 0.5 * (w.map_x[0] - ident[0])), torch.equal(half.map_x[1], ident[1])
            (True, True)
        """
        if isinstance(amplitude, Tensor):
            if amplitude.dim() != 1 or amplitude.shape[0] != self.batch_size:
                raise ValueError(f"amplitude: expected a number or a ({self.batch_size},) tensor, got shape "
                                 f"{tuple(amplitude.shape)}")
            a = amplitude.to(self.map_x.device, self.map_x.dtype)[:, None]
        else:
            if not isinstance(amplitude, (int, float)) or not 0.0 <= float(amplitude) <= 1.0:
                raise ValueError(f"amplitude: expected a number in [0, 1], got {amplitude!r}")
            if float(amplitude) == 1.0:
                return self
            a = float(amplitude)
        gh, gw = self.map_y.shape[1], self.map_x.shape[1]
        iy = torch.linspace(0, 1, gh, device=self.map_y.device, dtype=self.map_y.dtype)
        ix = torch.linspace(0, 1, gw, device=self.map_x.device, dtype=self.map_x.dtype)
        return Warp._trusted(iy + a * (self.map_y - iy), ix + a * (self.map_x - ix), self.image_size)

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
        cy = _pixel_centers(h, self.device, self.map_y.dtype)
        cx = _pixel_centers(w, self.device, self.map_x.dtype)
        if inverse:
            return _invert_map(self.map_y, cy), _invert_map(self.map_x, cx)
        return _interp_map(self.map_y, cy), _interp_map(self.map_x, cx)

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
        return _resample(x, fy, fx, mode, method)

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
        return _resample(x, fy, fx, mode, method)

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
        f = _interp_map if inverse else _invert_map
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
