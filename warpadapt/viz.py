"""Matplotlib pictures of boxes, saliency maps, sampling maps, warped images and unwarped features.

Every function draws on a matplotlib axes (``ax=...``, or a new figure when omitted), returns the
axes (single panel) or the figure (multi-panel), and never calls ``plt.show()``: it works the same
under the Agg backend (scripts, tests, CI) and inline in a notebook.

Images may be torch tensors ``(3, H, W)`` (or ``(1, 3, H, W)``) float in [0, 1], or numpy arrays
``(H, W, 3)`` (float in [0, 1] or uint8) or ``(H, W)`` grey. Boxes are ``(N, 4)`` xyxy pixels as a
tensor, an array or a list of 4-lists. A :class:`~warpadapt.Warp` with a batch larger than one is
drawn for image ``index`` (default 0). Measurements (:func:`~warpadapt.measure.pixel_share`,
:func:`~warpadapt.measure.box_union_area`) live in :mod:`warpadapt.measure` (no matplotlib).

Example:
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import torch, warpadapt, warpadapt.viz as viz
    >>> img, boxes = torch.rand(3, 64, 128), torch.tensor([[40., 20., 60., 40.]])
    >>> fig = viz.warp_overview(img, boxes, warpadapt.SaliencyWarp(fwhm=6.0))
    >>> len(fig.axes) >= 4
    True
    >>> viz.plt.close("all")
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from ._utils import as_size
from .measure import _as_boxes, _one_warp
from .measure import pixel_share as _pixel_share
from .modules import GUIDANCES, SaliencyWarp, as_saliency_warp
from .warp import Warp

__all__ = [
    "as_image",
    "show_boxes",
    "show_saliency",
    "show_grid",
    "show_warped",
    "show_features",
    "compare_guidance",
    "warp_overview",
]

_BOX_COLORS = plt.get_cmap("tab10").colors


# -- input conversion -------------------------------------------------------------------------------
def as_image(image, name: str = "image") -> np.ndarray:
    """Convert an image to a float (H, W, 3) numpy array in [0, 1] for ``imshow``.

    Args:
        image: tensor (3, H, W), (1, 3, H, W), (1, H, W) or (H, W); or numpy (H, W, 3), (H, W, 4),
            (H, W) (uint8 is divided by 255).
        name: the argument name used in error messages.

    Example:
        >>> as_image(torch.zeros(3, 4, 5)).shape
        (4, 5, 3)
        >>> float(as_image(np.full((4, 5, 3), 255, np.uint8)).max())
        1.0
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu")
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"{name}: expected a tensor (3, H, W) or (1, H, W), got shape {tuple(image.shape)}")
        arr = t.float().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"{name}: expected a numpy array (H, W, 3) or (H, W), got shape {image.shape}")
        arr = arr[..., :3]
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    else:
        raise ValueError(f"{name}: expected a torch tensor (3, H, W) or a numpy array (H, W, 3), got {type(image).__name__}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: empty image of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.clip(arr, 0.0, 1.0)


def _as_saliency(saliency, name: str = "saliency") -> np.ndarray:
    s = saliency.detach().to("cpu").float().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency, np.float32)
    if s.ndim == 3 and s.shape[0] == 1:
        s = s[0]
    if s.ndim != 2 or min(s.shape) < 2:
        raise ValueError(f"{name}: expected a (gh, gw) map (or (1, gh, gw)), got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"{name}: must be finite and non-negative")
    return s


def _new_ax(ax, figsize=(6.4, 3.6)):
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _to_tensor_image(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


# -- single panels ------------------------------------------------------------------------------------
def show_boxes(image, boxes, labels=None, class_names=None, ax=None, title: str | None = None,
               linewidth: float = 1.2, fontsize: float = 6.0):
    """Draw an image with its xyxy boxes (coloured by label, with class names if given).

    Args:
        image: (3, H, W) tensor or (H, W, 3) array, see :func:`as_image`.
        boxes: (N, 4) xyxy pixels.
        labels: optional (N,) integer labels (colour per label; 1..K with ``class_names[label - 1]``).
        class_names: optional sequence of names, label ``i`` is ``class_names[i - 1]``.
        ax: axes to draw on (a new figure otherwise).
        title: optional axes title.

    Returns:
        the axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> ax = show_boxes(torch.rand(3, 32, 64), torch.tensor([[4., 4., 20., 30.]]), [1], ["car"])
        >>> len(ax.patches), ax.texts[0].get_text()
        (1, 'car')
        >>> plt.close("all")
    """
    img = as_image(image)
    b = _as_boxes(boxes)
    lab = None
    if labels is not None:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1).astype(int)
        if len(lab) != len(b):
            raise ValueError(f"labels: expected {len(b)} labels (one per box), got {len(lab)}")
    ax = _new_ax(ax)
    ax.imshow(img, interpolation="bilinear")
    for i, (x1, y1, x2, y2) in enumerate(b):
        c = _BOX_COLORS[(int(lab[i]) - 1) % 10] if lab is not None else "#00e5ff"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=linewidth))
        if lab is not None and class_names is not None and 1 <= lab[i] <= len(class_names):
            ax.text(x1, y1 - 1, str(class_names[lab[i] - 1]), color="white", fontsize=fontsize, va="bottom",
                    bbox=dict(facecolor=c, edgecolor="none", pad=0.5, alpha=0.8), clip_on=True)
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_saliency(image, saliency, boxes=None, ax=None, title: str | None = None, alpha: float = 0.6,
                  cmap: str = "inferno", colorbar: bool = True):
    """Overlay a saliency map (upsampled bilinearly to the image) on an image.

    The map is shown relative to a uniform one (``saliency * gh * gw``; 1 = uniform, more than 1 =
    oversampled by the warp), so maps of different grids and guidances share one scale.

    Args:
        image: (3, H, W) tensor or (H, W, 3) array.
        saliency: (gh, gw) or (1, gh, gw) non-negative map whose nodes span the image edge to edge.
        boxes: optional (N, 4) xyxy boxes drawn as outlines.
        ax: axes to draw on (a new figure otherwise).
        colorbar: add a colorbar next to the axes.

    Returns:
        the axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from warpadapt import instance_saliency
        >>> b = torch.tensor([[40., 20., 60., 40.]])
        >>> ax = show_saliency(torch.rand(3, 64, 128), instance_saliency([b], (64, 128))[0], b)
        >>> ax.images[-1].get_array().shape
        (64, 128)
        >>> plt.close("all")
    """
    img = as_image(image)
    s = _as_saliency(saliency)
    h, w = img.shape[:2]
    rel = s / max(float(s.sum()), 1e-30) * s.size
    up = F.interpolate(torch.from_numpy(rel)[None, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0].numpy()
    ax = _new_ax(ax)
    ax.imshow(img * 0.75, interpolation="bilinear")
    im = ax.imshow(up, cmap=cmap, alpha=alpha, vmin=0.0, vmax=max(float(up.max()), 1.0), interpolation="bilinear")
    for x1, y1, x2, y2 in _as_boxes(boxes):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#00e5ff", linewidth=0.8))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label("saliency (1 = uniform)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_grid(warp: Warp, image_size, step: float | None = None, ax=None, image=None, index: int = 0,
              title: str | None = None, color: str = "#ffd400", linewidth: float = 0.7, samples: int = 64):
    """Draw the sampling map as a deformed grid: where the warped image's grid lines come from.

    A regular grid with spacing ``step`` pixels is laid on the WARPED image; each of its lines is
    mapped back to the ORIGINAL image (:meth:`Warp.inverse_points`) and drawn there, so lines crowd
    where the warp zooms in (oversampled regions) and spread where it zooms out. Each line is a
    polyline of ``samples`` points: vertical lines first (left to right), then horizontal ones.

    Args:
        warp: a :class:`~warpadapt.Warp` (image ``index`` of its batch is drawn).
        image_size: (H, W) of the image.
        step: grid spacing in warped-image pixels (default: 24 cells across the longer side).
        ax: axes to draw on (a new figure otherwise).
        image: optional original image drawn (dimmed) underneath.

    Returns:
        the axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> ax = show_grid(Warp.identity(1, image_size=(64, 128)), (64, 128), step=16)
        >>> len(ax.lines)  # 7 inner vertical + 3 inner horizontal lines, plus the 4 borders
        14
        >>> plt.close("all")
    """
    h, w = as_size(image_size, "image_size")
    wp = _one_warp(warp, index)
    if step is None:
        step = max(h, w) / 24.0
    if not (isinstance(step, (int, float)) and np.isfinite(step) and step > 0):
        raise ValueError(f"step: expected a positive number of pixels, got {step!r}")
    if samples < 2:
        raise ValueError(f"samples: expected at least 2, got {samples}")
    xs = np.arange(0.0, w + 1e-6, step)
    ys = np.arange(0.0, h + 1e-6, step)
    xs = np.unique(np.append(xs, float(w)))
    ys = np.unique(np.append(ys, float(h)))
    t_y = np.linspace(0.0, h, samples)
    t_x = np.linspace(0.0, w, samples)
    lines = [np.stack((np.full(samples, x), t_y), 1) for x in xs] + [np.stack((t_x, np.full(samples, y)), 1) for y in ys]
    pts = torch.from_numpy(np.concatenate(lines).astype(np.float64))[None]
    back = wp.to(torch.float64).inverse_points(pts, (h, w))[0].numpy().reshape(len(lines), samples, 2)
    ax = _new_ax(ax)
    if image is not None:
        img = as_image(image)
        if img.shape[:2] != (h, w):
            raise ValueError(f"image: expected size {(h, w)} (image_size), got {img.shape[:2]}")
        ax.imshow(img * 0.6, interpolation="bilinear")
    else:
        ax.set_facecolor("#202020")
    for ln in back:
        ax.plot(ln[:, 0], ln[:, 1], color=color, linewidth=linewidth)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_warped(image, warp: Warp, boxes=None, labels=None, class_names=None, ax=None, index: int = 0,
                title: str | None = None):
    """Warp an image with ``warp`` and draw it, with its boxes mapped into the warped image.

    Args:
        image: (3, H, W) tensor or (H, W, 3) array (the ORIGINAL image).
        warp: a :class:`~warpadapt.Warp`; image ``index`` of its batch is used.
        boxes: optional (N, 4) xyxy boxes of the original image (drawn at their warped place).
        labels, class_names: as in :func:`show_boxes`.

    Returns:
        the axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> ax = show_warped(torch.rand(3, 32, 64), Warp.identity(1), torch.tensor([[4., 4., 20., 30.]]))
        >>> [round(v) for v in ax.patches[0].get_bbox().bounds]
        [4, 4, 16, 26]
        >>> plt.close("all")
    """
    img = as_image(image)
    h, w = img.shape[:2]
    wp = _one_warp(warp, index)
    warped = wp.apply(_to_tensor_image(img))[0]
    b = _as_boxes(boxes)
    if len(b):
        b = wp.forward_boxes([torch.from_numpy(b)], (h, w))[0].numpy()
    return show_boxes(warped, b, labels, class_names, ax=ax, title=title)


def _feature_rgb(maps: list[np.ndarray], method: str) -> list[np.ndarray]:
    """Joint colouring of (C, h, w) maps: one PCA / one scale for all, so colours are comparable."""
    if method == "mean":
        means = [m.mean(0) for m in maps]
        allv = np.concatenate([m.ravel() for m in means])
        lo, hi = np.percentile(allv, [1, 99])
        return [np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1) for m in means]
    flat = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps])  # (sum hw, C)
    mu = flat.mean(0, keepdims=True)
    x = flat - mu
    k = min(3, x.shape[1])
    _, _, vt = np.linalg.svd(x[:: max(1, len(x) // 4096)], full_matrices=False)
    out = []
    proj_all = x @ vt[:k].T
    lo, hi = np.percentile(proj_all, [1, 99], axis=0)
    for m in maps:
        p = (m.reshape(m.shape[0], -1).T - mu) @ vt[:k].T
        p = np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
        if k < 3:
            p = np.concatenate([p, np.zeros((p.shape[0], 3 - k))], 1)
        out.append(p.reshape(m.shape[1], m.shape[2], 3))
    return out


def _as_feature(x, name: str) -> np.ndarray:
    t = x.detach().to("cpu").float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, np.float32))
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"{name}: expected a feature map (C, h, w) or (1, C, h, w), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t.numpy()


def show_features(before, after, ax=None, method: str = "pca", titles: Sequence[str] = ("before unwarp", "after unwarp"),
                  reference=None):
    """Show a feature map before and after unwarping (and optionally the bare model's map).

    Channels are reduced to colours jointly over all maps (``"pca"``: the top three principal
    components mapped to RGB; ``"mean"``: the channel mean in a colormap), so the same colour means
    the same feature in every panel.

    Args:
        before: (C, h, w) or (1, C, h, w) feature map computed on the warped image.
        after: the same map after :class:`~warpadapt.FeatureUnwarp` (same C; any h, w).
        ax: optional sequence of axes, one per panel (2, or 3 with ``reference``).
        method: "pca" or "mean".
        titles: one title per panel.
        reference: optional third map, e.g. the bare backbone's features on the original image.

    Returns:
        the figure.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> fig = show_features(torch.rand(1, 8, 8, 16), torch.rand(1, 8, 8, 16))
        >>> len(fig.axes)
        2
        >>> plt.close("all")
    """
    if method not in ("pca", "mean"):
        raise ValueError(f"method: expected 'pca' or 'mean', got {method!r}")
    maps = [_as_feature(before, "before"), _as_feature(after, "after")]
    if reference is not None:
        maps.append(_as_feature(reference, "reference"))
    if len({m.shape[0] for m in maps}) != 1:
        raise ValueError(f"after: channel counts differ: {[m.shape[0] for m in maps]}")
    n = len(maps)
    if len(titles) < n:
        titles = list(titles) + ["bare features"] * (n - len(titles))
    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 1.9), layout="constrained")
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != n:
            raise ValueError(f"ax: expected {n} axes, got {len(axes)}")
        fig = axes[0].figure
    rgbs = _feature_rgb(maps, method)
    for a, rgb, t in zip(np.ravel(axes), rgbs, titles):
        if method == "mean":
            a.imshow(rgb, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        else:
            a.imshow(rgb, interpolation="nearest")
        a.set_title(t, fontsize=9)
        a.set_axis_off()
    return fig


# -- figures ------------------------------------------------------------------------------------------
def _guidance_module(g, prior, **warp_options) -> SaliencyWarp:
    if isinstance(g, SaliencyWarp):
        return g
    if g not in GUIDANCES:
        raise ValueError(f"guidances: expected names in {GUIDANCES} or SaliencyWarp modules, got {g!r}")
    if g == "static" and prior is None:
        raise ValueError("prior: guidance 'static' needs a (gh, gw) prior (see warpadapt.fit_static_prior)")
    return as_saliency_warp(g, **({"prior": prior} if g == "static" else {}), **warp_options)


def _module_warp(module: SaliencyWarp, h: int, w: int, boxes: np.ndarray):
    bl = [torch.from_numpy(boxes)]
    with torch.no_grad():
        sal = module.saliency((h, w), bl, batch_size=1)
        warp = module.make_warp((h, w), bl, batch_size=1)
    return sal[0], warp


def compare_guidance(image, boxes, guidances=("instance", "static", "geometric"), prior=None, labels=None,
                     class_names=None, fig=None, **warp_options):
    """Side-by-side saliency (top row) and warped image with warped boxes (bottom row) per guidance.

    Args:
        image: (3, H, W) tensor or (H, W, 3) array.
        boxes: (N, 4) xyxy boxes of the image.
        guidances: names ("instance", "static", "geometric", "none") or ready
            :class:`~warpadapt.SaliencyWarp` modules.
        prior: the (gh, gw) static prior (required when "static" is among ``guidances``).
        labels, class_names: as in :func:`show_boxes`.
        fig: an empty figure to draw in (a new one otherwise).
        **warp_options: passed to :class:`~warpadapt.SaliencyWarp` (fwhm, bandwidth_scale, ...).

    Returns:
        the figure (2 x len(guidances) image panels plus colorbars); each column title gives the
        object pixel share after that warp.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> fig = compare_guidance(torch.rand(3, 64, 128), torch.tensor([[40., 20., 60., 40.]]), ("instance", "geometric"))
        >>> fig.axes[0].get_title().startswith("instance")
        True
        >>> plt.close("all")
    """
    img = as_image(image)
    b = _as_boxes(boxes)
    if isinstance(guidances, (str, SaliencyWarp)):
        guidances = (guidances,)
    if len(guidances) == 0:
        raise ValueError("guidances: expected at least one guidance")
    mods = [_guidance_module(g, prior, **warp_options) for g in guidances]
    h, w = img.shape[:2]
    n = len(mods)
    if fig is None:
        fig = plt.figure(figsize=(3.6 * n + 0.6, 4.4), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    share0 = _pixel_share(b, (h, w))
    for j, m in enumerate(mods):
        sal, warp = _module_warp(m, h, w, b)
        share = _pixel_share(b, (h, w), warp)
        show_saliency(img, sal, b, ax=axes[0, j], title=f"{m.guidance} saliency")
        show_warped(img, warp, b, labels, class_names, ax=axes[1, j],
                    title=f"warped: objects {100 * share0:.1f}% -> {100 * share:.1f}% of pixels")
    return fig


def warp_overview(image, boxes, warp_module: SaliencyWarp | None = None, labels=None, class_names=None,
                  fig=None, step: float | None = None, suptitle: str | None = None):
    """The one-figure summary: image + boxes, saliency, sampling grid, warped image + warped boxes.

    Args:
        image: (3, H, W) tensor or (H, W, 3) array.
        boxes: (N, 4) xyxy boxes.
        warp_module: a :class:`~warpadapt.SaliencyWarp` (default: instance guidance, default options).
        labels, class_names: as in :func:`show_boxes`.
        fig: an empty figure to draw in (a new one otherwise).
        step: grid spacing for :func:`show_grid`.
        suptitle: figure title (default: guidance, FWHM and the object pixel share before/after).

    Returns:
        the figure (4 image panels and a colorbar).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> fig = warp_overview(torch.rand(3, 64, 128), torch.tensor([[40., 20., 60., 40.]]))
        >>> "->" in fig._suptitle.get_text()
        True
        >>> plt.close("all")
    """
    img = as_image(image)
    b = _as_boxes(boxes)
    if warp_module is None:
        warp_module = SaliencyWarp()
    if not isinstance(warp_module, SaliencyWarp):
        raise ValueError(f"warp_module: expected a warpadapt.SaliencyWarp, got {type(warp_module).__name__}")
    h, w = img.shape[:2]
    sal, warp = _module_warp(warp_module, h, w, b)
    s0, s1 = _pixel_share(b, (h, w)), _pixel_share(b, (h, w), warp)
    zy, zx = warp.zoom()
    if fig is None:
        fig = plt.figure(figsize=(10, 10 * h / w * 1.0 + 0.8), layout="constrained")
    axes = fig.subplots(2, 2)
    show_boxes(img, b, labels, class_names, ax=axes[0, 0], title=f"input: {len(b)} boxes")
    show_saliency(img, sal, b, ax=axes[0, 1], title=f"{warp_module.guidance} saliency")
    show_grid(warp, (h, w), step=step, ax=axes[1, 0], image=img,
              title="sampling map: warped-image grid lines, drawn in the input")
    show_warped(img, warp, b, labels, class_names, ax=axes[1, 1],
                title=f"warped (zoom x {float(zx.min()):.2f}-{float(zx.max()):.2f} across, "
                      f"{float(zy.min()):.2f}-{float(zy.max()):.2f} down)")
    if suptitle is None:
        suptitle = (f"{warp_module.guidance} warp, FWHM {warp_module.fwhm:g}: objects cover "
                    f"{100 * s0:.1f}% -> {100 * s1:.1f}% of the pixels")
    fig.suptitle(suptitle, fontsize=11)
    return fig
