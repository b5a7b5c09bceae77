"""Thin ``nn.Module`` wrappers: :class:`SaliencyWarp` (labels -> warped image) and :class:`FeatureUnwarp`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .saliency import GRID_SIZE, geometric_prior, load_prior, pad_boxes, saliency_from_padded, uniform_saliency
from .maps import FWHM_RANGE, METHODS, check_fwhm, resample
from .warp import Warp

__all__ = ["GUIDANCES", "OPTION_RANGES", "SaliencyWarp", "FeatureUnwarp", "as_saliency_warp"]

#: Saliency guidance types: boxes ("instance"), a fixed dataset map ("static"), a vanishing-point
#: prior ("geometric"), or no warp at all ("none").
GUIDANCES = ("instance", "static", "geometric", "none")

#: Valid (closed) ranges of :class:`SaliencyWarp`'s numeric options. Outside them the float arithmetic
#: underflows or overflows (NaN or infinite saliency) long before any useful effect; inside them every
#: map is finite and monotone and spans the image (tested with hypothesis).
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "fwhm": FWHM_RANGE,  # grid cells
    "bandwidth_scale": (1e-6, 1e6),  # squared pixels per pixel of box side
    "amplitude_scale": (1e-6, 1e3),  # each box's mass relative to its floor term
    "geometric_sigma": (1e-3, 1e3),  # fractions of the image width / height
}


def _check_range(name: str, val) -> float:
    lo, hi = OPTION_RANGES[name]
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not (lo <= val <= hi):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {val!r}")
    return float(val)


def _check_amplitude(val) -> float:
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 <= val <= 1.0:
        raise ValueError(f"amplitude must be a number in [0, 1] (1: the full warp, 0: the identity), got {val!r}")
    return float(val)


def _check_pair(name: str, val, check=None) -> tuple[float, float]:
    if isinstance(val, Tensor):
        val = val.tolist()
    if isinstance(val, (str, bytes)) or not isinstance(val, Sequence) or len(val) != 2:
        raise ValueError(f"{name} must be a pair of 2 numbers, got {val!r}")
    out = []
    for v in val:
        if check is not None:
            out.append(check(name, v))
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a pair of 2 finite numbers, got {val!r}")
        else:
            out.append(float(v))
    return out[0], out[1]


class SaliencyWarp(nn.Module):
    """Warp images so the pixels around objects are oversampled (Instance-Warp), kornia style.

    Args:
        guidance: "instance" (saliency from each image's boxes), "static" (one fixed map, see
            :func:`~warpadapt.saliency.fit_static_prior`; pass it as ``prior``), "geometric" (a
            vanishing-point prior, :func:`~warpadapt.saliency.geometric_prior`), or "none" (identity).
        grid_size: (gh, gw) saliency grid nodes, default (31, 51).
        fwhm: attraction kernel FWHM in grid cells, default 13, valid in [0.1, 1000]. Larger pulls from
            farther: a stronger zoom (about 0.6x-1.5x at 4, 0.4x-3.5x at 13 on the 31 x 51 grid; it
            saturates past ~13 and weakens past the map padding ``min(grid_size) - 1``, with a warning).
        bandwidth_scale: b for instance saliency (variance b * box side), default 64, valid in [1e-6, 1e6].
        amplitude_scale: A, each box's mass relative to the floor, default 1, valid in [1e-6, 1e3].
        amplitude: the share of the warp's displacement applied, in [0, 1], default 1 (the full warp; 0 the
            identity): every map is blended with the identity (:meth:`Warp.blend`). A plain attribute, so a
            training loop can schedule it (``sw.amplitude = 0.5``); checked when the warp is built.
        amplitude_range: None (default) or (lo, hi) with 0 <= lo <= hi <= 1: each image's amplitude is then
            drawn uniformly in [lo, hi] per forward (times ``amplitude``), from the global torch generator
            of the images' device (a recipe's saved RNG state makes that exact on resume).
        prior: for "static": a (gh, gw) tensor (gh, gw >= 2) or the path of a file written by ``save_prior``.
        vanishing_point: for "geometric": (u0, v0) as fractions of width and height (two finite numbers;
            outside [0, 1] puts the point outside the image).
        geometric_sigma: for "geometric": widths (su, sv) as fractions of width and height, each in [1e-3, 1e3].
        method: resampling method, "grid_sample", "separable" or "matmul" (deterministic on CUDA; see
            :func:`~warpadapt.maps.resample`).
        dtype: dtype of the warp's maps, torch.float32 (default) or torch.float64. The warped image keeps
            its own dtype either way; float64 maps make point / box round trips exact to < 1e-6 px where
            float32 gives up to ``6e-8 * size * zoom`` px (see :class:`~warpadapt.warp.Warp`).
            Inside ``torch.autocast`` (CUDA float16 / bfloat16, CPU bfloat16) the saliency, the maps and the
            sampling grid are still computed in this dtype (autocast would give positions off by tens of
            pixels at 2048 px); only the images and features keep their own (autocast) dtype.

    Every range is checked here (ValueError naming the option); :data:`OPTION_RANGES` holds them. NaN or
    infinite image pixels propagate to the warped pixels that read them; the warp itself is always finite.

    Shape:
        - images: (B, C, H, W), float32 / float16 / bfloat16.
        - boxes: list of B tensors (N_i, 4), xyxy pixels of ``images`` (ignored by static, geometric
          and none guidance; may then be None). Boxes partly outside are clipped; an empty list gives the
          identity warp for that image.
        - output: ``(warped, warp)``, warped (B, C, H, W) of the input dtype and a :class:`Warp`.

    Example:
        >>> sw = SaliencyWarp()
        >>> img = torch.rand(2, 3, 64, 128)
        >>> warped, warp = sw(img, [torch.tensor([[60., 30., 70., 40.]]), torch.zeros(0, 4)])
        >>> warped.shape, warp.map_x.shape
        (torch.Size([2, 3, 64, 128]), torch.Size([2, 51]))
        >>> torch.allclose(warped[1], img[1], atol=1e-4)  # no boxes: identity
        True
    """

    def __init__(
        self,
        guidance: str = "instance",
        grid_size: Sequence[int] = GRID_SIZE,
        fwhm: float = 13.0,
        bandwidth_scale: float = 64.0,
        amplitude_scale: float = 1.0,
        amplitude: float = 1.0,
        amplitude_range: Sequence[float] | None = None,
        prior: Tensor | str | Path | None = None,
        vanishing_point: Sequence[float] = (0.5, 0.45),
        geometric_sigma: Sequence[float] = (0.22, 0.12),
        method: str = "grid_sample",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {GUIDANCES}, got {guidance!r}")
        if not (
            isinstance(grid_size, (tuple, list))
            and len(grid_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in grid_size)
            and min(grid_size) >= 2
        ):
            raise ValueError(f"grid_size must be a pair (gh, gw) of ints >= 2, got {grid_size!r}")
        fwhm = check_fwhm(fwhm)
        bandwidth_scale = _check_range("bandwidth_scale", bandwidth_scale)
        amplitude_scale = _check_range("amplitude_scale", amplitude_scale)
        amplitude = _check_amplitude(amplitude)
        if amplitude_range is not None:
            amplitude_range = _check_pair("amplitude_range", amplitude_range)
            if not 0.0 <= amplitude_range[0] <= amplitude_range[1] <= 1.0:
                raise ValueError(f"amplitude_range must be (lo, hi) with 0 <= lo <= hi <= 1, got {amplitude_range!r}")
        vanishing_point = _check_pair("vanishing_point", vanishing_point)
        geometric_sigma = _check_pair("geometric_sigma", geometric_sigma, _check_range)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if fwhm > min(grid_size) - 1:
            warnings.warn(
                f"fwhm={fwhm} exceeds the map padding P = min(grid_size) - 1 = {min(grid_size) - 1}: the attraction "
                "kernel is then wider than the padded grid and the zoom weakens (measured: below the unwarped "
                "object share at fwhm=48 on 31 x 51); the authors used 13",
                stacklevel=2,
            )
        self.guidance = guidance
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.fwhm = float(fwhm)
        self.bandwidth_scale = float(bandwidth_scale)
        self.amplitude_scale = float(amplitude_scale)
        self.amplitude = amplitude
        self.amplitude_range = amplitude_range
        self.vanishing_point = tuple(float(v) for v in vanishing_point)
        self.geometric_sigma = tuple(float(v) for v in geometric_sigma)
        self.method = method
        self.dtype = dtype
        self.prior: Tensor | None = None  # a plain attribute, not a buffer: wrap() adds no state
        if guidance == "static":
            if prior is None:
                raise ValueError("guidance='static' needs prior= (a (gh, gw) tensor or a file from save_prior)")
            p = load_prior(prior) if isinstance(prior, (str, Path)) else torch.as_tensor(prior, dtype=torch.float32)
            if p.dim() != 2 or min(p.shape) < 2:
                raise ValueError(f"prior must be a (gh, gw) map with gh, gw >= 2 (the map needs 2 nodes per axis), got shape {tuple(p.shape)}")
            if (p < 0).any() or not torch.isfinite(p).all() or p.sum() <= 0:
                raise ValueError("prior must be non-negative and finite with a positive sum")
            self.prior = p / p.sum()
            self.grid_size = tuple(p.shape)

    def extra_repr(self) -> str:
        return (
            f"guidance={self.guidance!r}, grid_size={self.grid_size}, fwhm={self.fwhm}, "
            f"bandwidth_scale={self.bandwidth_scale}, amplitude_scale={self.amplitude_scale}"
            + (f", amplitude={self.amplitude}" if self.amplitude != 1.0 else "")
            + (f", amplitude_range={self.amplitude_range}" if self.amplitude_range is not None else "")
        )

    def saliency(self, image_size: Sequence[int], boxes=None, batch_size: int | None = None, device=None) -> Tensor:
        """The (B, gh, gw) saliency this module would warp with (for plotting and debugging)."""
        if self.guidance == "instance":
            if boxes is None:
                raise ValueError("guidance='instance' needs boxes: a list of B tensors (N_i, 4)")
            padded, mask = pad_boxes(boxes, image_size, batch_size, device)
            return saliency_from_padded(padded, mask, image_size, self.grid_size, self.bandwidth_scale, self.amplitude_scale)
        if boxes is not None:
            if not isinstance(boxes, (list, tuple, Tensor)):
                raise TypeError(f"boxes must be a list of B tensors (N_i, 4), got {type(boxes).__name__}")
            if batch_size is not None and len(boxes) != batch_size:
                raise ValueError(f"boxes has {len(boxes)} entries but the batch has {batch_size} images")
        if batch_size is None:
            if boxes is None:
                raise ValueError(f"guidance={self.guidance!r} needs batch_size when boxes is None")
            batch_size = len(boxes)
        if self.guidance == "static":
            return self.prior.to(device).expand(batch_size, *self.grid_size).clone()
        if self.guidance == "geometric":
            return geometric_prior(self.grid_size, self.vanishing_point, self.geometric_sigma, batch_size=batch_size).to(device)
        return uniform_saliency(batch_size, self.grid_size, device=device)

    def make_warp(self, image_size: Sequence[int], boxes=None, batch_size: int | None = None, device=None) -> Warp:
        """Build the :class:`Warp` for a batch without touching any image (``amplitude`` and
        ``amplitude_range`` applied: a range draws each image's amplitude here)."""
        sal = self.saliency(image_size, boxes, batch_size, device)
        warp = Warp.from_saliency(sal.to(self.dtype), self.fwhm, image_size=tuple(int(v) for v in image_size))
        amplitude = _check_amplitude(self.amplitude)
        if self.amplitude_range is not None:
            lo, hi = self.amplitude_range
            u = torch.rand(warp.batch_size, device=warp.device, dtype=warp.dtype)
            return warp.blend(amplitude * (lo + (hi - lo) * u))
        return warp.blend(amplitude)

    def forward(self, images: Tensor, boxes=None) -> tuple[Tensor, Warp]:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating point tensor, got {images.dtype}")
        b, _, h, w = images.shape
        warp = self.make_warp((h, w), boxes, batch_size=b, device=images.device)
        fy, fx = warp.axes((h, w), inverse=False)
        return resample(images, fy, fx, "bilinear", self.method), warp


def as_saliency_warp(warp: SaliencyWarp | str | Mapping | None = None, **options) -> SaliencyWarp:
    """The one reader of warp settings: every part of the library that takes a warp calls it.

    :func:`~warpadapt.wrap`, the models (``Segmenter(..., warp=...)``, ``Detector(..., warp=...)``),
    the transforms and the pictures all accept the same thing and hand it here.

    Args:
        warp: a :class:`SaliencyWarp` (returned as it is; then give no options), a guidance name
            ("instance", "static", "geometric", "none"), a mapping of :class:`SaliencyWarp`'s keyword
            arguments (``{"guidance": "static", "prior": p, "fwhm": 8.0}``; e.g. a recipe's ``cfg.warp``
            with its non-warp keys removed), or None (``SaliencyWarp(**options)``).
        **options: :class:`SaliencyWarp`'s keyword arguments (``fwhm``, ``grid_size``, ``prior`` ...),
            merged over a mapping's.

    Raises:
        TypeError: ``warp`` is of another type, or an unknown option.
        ValueError: a module together with options, the guidance given twice, or a bad option (named
            by :class:`SaliencyWarp`, which holds every range check).

    Example:
        >>> as_saliency_warp("geometric", fwhm=9.0).extra_repr()
        "guidance='geometric', grid_size=(31, 51), fwhm=9.0, bandwidth_scale=64.0, amplitude_scale=1.0"
        >>> as_saliency_warp({"guidance": "none", "grid_size": [21, 41]}).grid_size
        (21, 41)
        >>> sw = SaliencyWarp(); as_saliency_warp(sw) is sw
        True
    """
    if isinstance(warp, SaliencyWarp):
        if options:
            raise ValueError(f"warp: give a SaliencyWarp or its options, not both (got options {sorted(options)})")
        return warp
    if isinstance(warp, Mapping):
        twice = sorted(set(warp) & set(options))
        if twice:
            raise ValueError(f"warp: options given twice, in the mapping and as keywords: {twice}")
        options = {**warp, **options}
        if isinstance(options.get("grid_size"), (list, Sequence)) and not isinstance(options["grid_size"], str):
            options["grid_size"] = tuple(options["grid_size"])
        return SaliencyWarp(**options)
    if isinstance(warp, str):
        if "guidance" in options:
            raise ValueError(f"warp: the guidance is given twice ({warp!r} and guidance={options['guidance']!r})")
        return SaliencyWarp(guidance=warp, **options)
    if warp is None:
        return SaliencyWarp(**options)
    raise TypeError(f"warp must be a SaliencyWarp, a guidance name, a mapping of its options or None, "
                    f"got {type(warp).__name__}")


class FeatureUnwarp(nn.Module):
    """Resample features computed on a warped image back to the original image geometry.

    Each tensor is unwarped at its own resolution with the warp's exact inverse (fractional
    coordinates, so every stride works). Accepts a tensor, a list/tuple or a dict of tensors and
    returns the same structure (of tensors only).

    Every tensor must be a 4-D floating point feature map (TypeError / ValueError naming it otherwise).
    When the warp knows its image size (``warp.image_size``, set by :class:`SaliencyWarp`), each feature
    map's spatial size must be a plausible stride of it: ``H / h`` and ``W / w`` must agree up to the
    rounding of the feature sizes (+-2 feature pixels), which catches NHWC features given as NCHW (and the
    reverse) and features of another image. NaN or infinite feature values propagate.

    Args:
        layout: "NCHW" (default) or "NHWC" (e.g. timm Swin features).
        method: "grid_sample", "separable" or "matmul" (see :func:`~warpadapt.maps.resample`).

    Example:
        >>> sw, unwarp = SaliencyWarp(), FeatureUnwarp()
        >>> img = torch.rand(1, 3, 64, 64)
        >>> warped, warp = sw(img, [torch.tensor([[20., 20., 30., 30.]])])
        >>> feats = unwarp([warped, warped[:, :, ::4, ::4]], warp)
        >>> [tuple(f.shape) for f in feats]
        [(1, 3, 64, 64), (1, 3, 16, 16)]
    """

    def __init__(self, layout: str = "NCHW", method: str = "grid_sample") -> None:
        super().__init__()
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.layout = layout
        self.method = method

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, method={self.method!r}"

    def _one(self, x: Tensor, warp: Warp, name: str = "features", inverse: bool = True) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
        if x.dim() != 4:
            dims = "(B, H, W, C)" if self.layout == "NHWC" else "(B, C, H, W)"
            raise ValueError(f"{name} must be a 4-D {self.layout} feature map {dims}, got shape {tuple(x.shape)}")
        if x.shape[0] != warp.batch_size:
            raise ValueError(f"{name} have batch size {x.shape[0]} but the warp has {warp.batch_size}")
        hw = tuple(x.shape[1:3]) if self.layout == "NHWC" else tuple(x.shape[2:])
        if warp.image_size is not None and not _stride_compatible(hw, warp.image_size):
            raise ValueError(
                f"{name} have spatial size {hw} (layout {self.layout!r}), which is not a stride of the warped "
                f"image's size {tuple(warp.image_size)}: wrong layout (NCHW vs NHWC) or features of another image?"
            )
        if self.layout == "NHWC":
            y = x.permute(0, 3, 1, 2)
            fy, fx = warp.axes(y.shape[-2:], inverse=inverse)
            return resample(y, fy, fx, "bilinear", self.method).permute(0, 2, 3, 1)
        fy, fx = warp.axes(x.shape[-2:], inverse=inverse)
        return resample(x, fy, fx, "bilinear", self.method)

    def forward(self, features, warp: Warp, inverse: bool = True):
        """Unwarp ``features`` (``inverse=False``: warp them instead, from the original geometry into the
        warped one, as the image was; used by :class:`~warpadapt.wrap.WarpedBackbone`'s ``resample_only``)."""
        if not isinstance(warp, Warp):
            raise TypeError(f"warp must be a warpadapt.Warp, got {type(warp).__name__}")
        return self._walk(features, warp, "features", bool(inverse))

    def _walk(self, features, warp: Warp, name: str, inverse: bool = True):
        if isinstance(features, Tensor):
            return self._one(features, warp, name, inverse)
        if isinstance(features, Mapping):
            return type(features)((k, self._walk(v, warp, f"{name}[{k!r}]", inverse)) for k, v in features.items())
        if isinstance(features, (list, tuple)):
            out = [self._walk(v, warp, f"{name}[{i}]", inverse) for i, v in enumerate(features)]
            if isinstance(features, list):
                return out
            return type(features)(*out) if hasattr(features, "_fields") else type(features)(out)
        raise TypeError(f"{name} must be a tensor or a list/tuple/dict of tensors, got {type(features).__name__}")


def _stride_compatible(feat_size, image_size, slack: int = 2) -> bool:
    """Whether an (h, w) feature map can be a stride of an (H, W) image: the stride intervals
    ``[H / (h + slack), H / (h - slack)]`` and the same for W overlap (feature sizes round differently
    per model: floor, ceil, padding; a size up to ``slack`` can come from any larger stride)."""
    lo = max(n / (f + slack) for f, n in zip(feat_size, image_size))
    hi = min(n / (f - slack) if f > slack else math.inf for f, n in zip(feat_size, image_size))
    return lo <= hi
