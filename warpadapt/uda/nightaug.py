"""NightAug (2PCNet): turn labelled day images into plausible night images, batched.

Per image, in this order (2PCNet's ``twophase/data/transforms/night_aug.py``, images float in [0, 1]
where 2PCNet's are uint8 in [0, 255]; every "p 0.5" is its ``rand > 0.5``):

1. Gaussian blur, p 0.5, 11 x 11 kernel, sigma ~ U(0.1, 2) (``kornia.filters.gaussian_blur2d``);
   the result is the "pre-darkening" image;
2. gamma, p 0.5, gamma = 1 / U(0.2, 1) (>= 1: darker; ``kornia.enhance.adjust_gamma``);
3. brightness, p 0.5 and always when gamma was skipped, ``x * U(0.2, 1)``;
4. contrast, p 0.5, factor U(0.2, 1) (blend with the grey mean,
   ``kornia.enhance.adjust_contrast_with_mean_subtraction``);
   after each of 2-4 ("uneven darkening") the pre-op pixels are pasted back inside random
   rectangles, one more rectangle while ``rand > 0.4``;
5. a final paste-back of the pre-darkening image (1.) inside new random rectangles, the same way;
6. glare: blend toward white, ``x + (1 - x) * g`` with a Gaussian blob ``g`` of peak 1 at a random
   pixel, sigma a random integer in [1, 149] px for a 600-px-high image (2PCNet's size), scaled by
   H / 600 here; blob ``j`` (0, 1, ...) is added while ``rand > 0.5 + 0.1 j`` (so at most 5);
7. positive Gaussian noise, p 0.5: ``x + max(0, N(0, s^2))`` per pixel and channel, s a random
   integer in [0, 49] divided by 255.

A rectangle is 2PCNet's ``img[:, y1:y2, x1:x2]`` with its four corners drawn independently
(``randint(H)``, ``randint(W)``): it is empty unless ``y1 < y2`` and ``x1 < x2``. All randomness comes
from the ``generator`` passed in (the same generator state gives the same output); every draw is made
for the whole batch whether or not an op fires, so the number of draws per call is fixed.
:func:`random_hflip` is the horizontal flip 2PCNet's data mapper applies to every training image.
"""
from __future__ import annotations

import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_gamma
from kornia.filters import gaussian_blur2d
from torch import Tensor

__all__ = ["night_aug", "NightAug", "random_hflip"]


def _u(g: torch.Generator, n: int, lo: float, hi: float, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _coin(g: torch.Generator, b: int, p: float, device) -> Tensor:
    return (torch.rand(b, generator=g, device=device) < p).view(b, 1, 1, 1)


def _rect_masks(g: torch.Generator, b: int, h: int, w: int, max_rects: int, device, keep_p: float = 0.4) -> Tensor:
    """(B, 1, H, W) bool: union of 2PCNet's random rectangles, rectangle j drawn while rand > keep_p."""
    go = torch.rand(b, max_rects, generator=g, device=device) > keep_p
    active = torch.cumprod(go.to(torch.int64), dim=1).bool()  # stop at the first failure
    ys = torch.randint(h, (b, max_rects, 2), generator=g, device=device)  # rows y1, y2 (y1 >= y2: empty)
    xs = torch.randint(w, (b, max_rects, 2), generator=g, device=device)
    py, px = torch.arange(h, device=device), torch.arange(w, device=device)
    iny = (py >= ys[..., :1]) & (py < ys[..., 1:]) & active[..., None]  # (B, R, H)
    inx = (px >= xs[..., :1]) & (px < xs[..., 1:])  # (B, R, W)
    return (torch.bmm(iny.transpose(1, 2).float(), inx.float()) > 0)[:, None]


def _darken(x: Tensor, g: torch.Generator, max_rects: int) -> Tensor:
    """Steps 2-5: gamma, brightness, contrast (each pasted back in rectangles), final paste-back."""
    b, _, h, w = x.shape
    dev, before = x.device, x
    fire_gamma, gamma = _coin(g, b, 0.5, dev), 1.0 / _u(g, b, 0.2, 1.0, dev)
    fire_bright, bright = _coin(g, b, 0.5, dev) | ~fire_gamma, _u(g, b, 0.2, 1.0, dev)
    fire_contrast, contrast = _coin(g, b, 0.5, dev), _u(g, b, 0.2, 1.0, dev)
    ops = (
        (fire_gamma, lambda t: adjust_gamma(t, gamma)),
        (fire_bright, lambda t: (t * bright.view(-1, 1, 1, 1)).clamp(0, 1)),
        (fire_contrast, lambda t: adjust_contrast_with_mean_subtraction(t, contrast)),
    )
    for fire, op in ops:  # every op computed for the whole batch and kept where it fires: no host sync
        keep = _rect_masks(g, b, h, w, max_rects, dev)
        x = torch.where(fire & ~keep, op(x), x)
    return torch.where(_rect_masks(g, b, h, w, max_rects, dev), before, x)


def _glare(x: Tensor, g: torch.Generator, max_blobs: int) -> Tensor:
    """Step 6: Gaussian blobs of peak 1 blended toward white, blob j kept while rand > 0.5 + 0.1 j."""
    b, _, h, w = x.shape
    dev = x.device
    go = torch.rand(b, max_blobs, generator=g, device=dev) > (0.5 + 0.1 * torch.arange(max_blobs, device=dev))
    active = torch.cumprod(go.to(torch.int64), dim=1).to(x.dtype)  # (B, J)
    cy = torch.randint(h, (b, max_blobs), generator=g, device=dev).to(x.dtype)
    cx = torch.randint(w, (b, max_blobs), generator=g, device=dev).to(x.dtype)
    sig = torch.randint(1, 150, (b, max_blobs), generator=g, device=dev).to(x.dtype) * (h / 600.0)
    py = torch.arange(h, device=dev, dtype=x.dtype)
    px = torch.arange(w, device=dev, dtype=x.dtype)
    gy = torch.exp(-0.5 * (py - cy[..., None]) ** 2 / sig[..., None] ** 2)  # (B, J, H)
    gx = torch.exp(-0.5 * (px - cx[..., None]) ** 2 / sig[..., None] ** 2) * active[..., None]  # (B, J, W)
    left = torch.ones_like(x[:, :1])
    for j in range(max_blobs):  # x + (1 - x) * g, blob after blob
        left = left * (1 - gy[:, j, None, :, None] * gx[:, j, None, None, :])
    return 1 - (1 - x) * left


def _noise(x: Tensor, g: torch.Generator) -> Tensor:
    """Step 7: p 0.5, x + max(0, N(0, s^2)), s = randint(50) / 255 per image."""
    b, dev = x.shape[0], x.device
    fire = _coin(g, b, 0.5, dev)
    s = (torch.randint(50, (b,), generator=g, device=dev).to(x.dtype) / 255.0).view(b, 1, 1, 1)
    noise = (torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype) * s).clamp_min(0)
    return torch.where(fire, x + noise, x)


def night_aug(images: Tensor, generator: torch.Generator, max_rects: int = 16, max_blobs: int = 5) -> Tensor:
    """NightAug a batch (see the module docstring for the exact steps).

    Args:
        images: (B, 3, H, W) float in [0, 1].
        generator: a ``torch.Generator`` on the images' device: the only source of randomness.
        max_rects: cap on the pasted-back rectangles per paste (2PCNet has none; 0.6 ** 16 < 0.03 % is cut).
        max_blobs: cap on glare blobs (2PCNet's stopping probability reaches 1 at the 6th blob: 5 is exact).

    Returns:
        (B, 3, H, W) float in [0, 1], darker on average (not in place).

    Example:
        >>> x = torch.full((4, 3, 32, 48), 0.6)
        >>> y1 = night_aug(x, torch.Generator().manual_seed(0))
        >>> y2 = night_aug(x, torch.Generator().manual_seed(0))
        >>> y1.shape, bool(y1.equal(y2)), bool(y1.min() >= 0 and y1.max() <= 1)
        (torch.Size([4, 3, 32, 48]), True, True)
        >>> bool(y1.mean() < x.mean())
        True
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise TypeError(f"images: expected floats in [0, 1], got {images.dtype}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    b = images.shape[0]
    dev, g = images.device, generator
    x = images.float().clamp(0, 1)
    fire, sigma = _coin(g, b, 0.5, dev), _u(g, b, 0.1, 2.0, dev)  # 1. blur
    x = torch.where(fire, gaussian_blur2d(x, (11, 11), sigma[:, None].expand(b, 2).contiguous()).clamp(0, 1), x)
    x = _darken(x, g, max_rects)
    x = _glare(x, g, max_blobs)
    x = _noise(x, g)
    return x.clamp(0, 1).to(images.dtype)


def random_hflip(images, targets=None, generator: torch.Generator | None = None, p: float = 0.5):
    """Flip each image left-right with probability ``p``, its target boxes with it.

    2PCNet's data mapper (detectron2's ``RandomFlip``, p 0.5) flips every training image: a source image
    before its NightAug copy is made (so both copies share the flip), a target image before the teacher
    and the student see it. No host sync: both versions are computed, one kept per image.

    Args:
        images: B (3, H_i, W_i) tensors (a list, or a (B, 3, H, W) tensor).
        targets: None or B dicts with ``boxes`` (N_i, 4) xyxy in the image's pixels (other keys kept).
        generator: the source of the coin flips (on the images' device); None: torch's global one.
        p: flip probability.

    Returns:
        ``(images, targets)``: lists (targets None when None was given).

    Example:
        >>> x = torch.arange(4.).view(1, 1, 4).expand(3, 1, 4)
        >>> t = {"boxes": torch.tensor([[0., 0., 1., 1.]]), "labels": torch.tensor([1])}
        >>> ims, ts = random_hflip([x], [t], p=1.0)
        >>> ims[0][0, 0].tolist(), ts[0]["boxes"].tolist(), ts[0]["labels"].tolist()
        ([3.0, 2.0, 1.0, 0.0], [[3.0, 0.0, 4.0, 1.0]], [1])
    """
    images = list(images)
    flip = torch.rand(len(images), generator=generator, device=images[0].device) < p
    out = [torch.where(f, x.flip(-1), x) for f, x in zip(flip, images)]
    if targets is None:
        return out, None
    flipped = []
    for f, x, t in zip(flip, images, targets):
        bx, w = t["boxes"], x.shape[-1]
        mirrored = torch.stack([w - bx[:, 2], bx[:, 1], w - bx[:, 0], bx[:, 3]], dim=1)
        flipped.append({**t, "boxes": torch.where(f, mirrored, bx)})
    return out, flipped


def random_vertical_rescale(images: torch.Tensor, scale_range, generator: torch.Generator | None = None,
                            boxes=None, labels: torch.Tensor | None = None, ignore_index: int = 255):
    """Stretch each image vertically about its middle row by s ~ U(lo, hi): the row-scale control.

    Instance-Warp both zooms the objects and changes the scale of whole rows. This augmentation changes
    the row scale only (no object is singled out, the columns stay), so ``UDA + random vertical rescale``
    against ``UDA + Instance-Warp`` separates the two. Unlike the warp it changes the labels, which are
    moved with the image: output row ``y`` (pixel centre) shows input row ``c + (y - c) / s``, ``c = H / 2``;
    rows read from outside the image are 0 (labels: ``ignore_index``); box rows map to ``c + (y - c) s``,
    clipped to the image; a box left under 1 px high is dropped (with its label and any other per-box key).

    Args:
        images: (B, C, H, W) float.
        scale_range: (lo, hi), 0 < lo <= hi: s > 1 stretches (the middle rows fill the image), s < 1 squeezes.
        generator: the draws (on the images' device); None: torch's global one.
        boxes: None or B dicts with ``boxes`` (N_i, 4) xyxy pixels (other per-box keys, e.g. ``labels``, kept
            in step).
        labels: None or (B, H, W) integer label maps, resampled by nearest neighbour.

    Returns:
        ``(images, boxes, labels, scales)``: boxes / labels None when None was given; ``scales`` (B,).

    Example:
        >>> x = torch.arange(8.).view(1, 1, 8, 1)  # pixel value = row index
        >>> t = [{"boxes": torch.tensor([[0., 2., 1., 4.]]), "labels": torch.tensor([3])}]
        >>> y, bt, _, s = random_vertical_rescale(x, (2.0, 2.0), boxes=t)  # s = 2: rows 2-6 fill the image
        >>> y[0, 0, :, 0].tolist(), bt[0]["boxes"].tolist()  # box rows 2-4 -> 0-4 (4 + (y - 4) x 2)
        ([1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.25], [[0.0, 0.0, 1.0, 4.0]])
    """
    lo, hi = (float(v) for v in scale_range)
    if not 0.0 < lo <= hi:
        raise ValueError(f"scale_range: expected (lo, hi) with 0 < lo <= hi, got {tuple(scale_range)!r}")
    b, _, h, w = images.shape
    dev = images.device
    s = lo + (hi - lo) * torch.rand(b, generator=generator, device=dev)
    c = h / 2.0
    src_rows = c + ((torch.arange(h, device=dev, dtype=torch.float32) + 0.5) - c) / s[:, None]  # (B, H) input rows
    gy = (src_rows / h * 2.0 - 1.0)[:, :, None].expand(b, h, w)
    gx = ((torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * 2.0 - 1.0)[None, None, :].expand(b, h, w)
    grid = torch.stack([gx, gy], dim=-1)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False).to(images.dtype)
    lab = None
    if labels is not None:
        picked = torch.nn.functional.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                                                 align_corners=False)[:, 0].round().to(labels.dtype)
        outside = (src_rows < 0) | (src_rows >= h)
        lab = torch.where(outside[:, :, None].expand(b, h, w), torch.full_like(picked, ignore_index), picked)
    moved = None
    if boxes is not None:
        moved = []
        for k, t in enumerate(boxes):
            bx = t["boxes"]
            y = (c + (bx[:, [1, 3]] - c) * s[k].to(bx.dtype)).clamp(0, h)
            nb = torch.stack([bx[:, 0], y[:, 0], bx[:, 2], y[:, 1]], dim=1)
            keep = (nb[:, 3] - nb[:, 1]) >= 1.0  # boolean indexing: a host sync, paid by this control only
            n = bx.shape[0]
            moved.append({key: (nb[keep] if key == "boxes" else v[keep] if isinstance(v, torch.Tensor) and v.dim() >= 1
                                and v.shape[0] == n else v) for key, v in t.items()})
    return out, moved, lab, s


class NightAug(torch.nn.Module):
    """``nn.Module`` over :func:`night_aug` holding its own seeded generator (CPU or CUDA).

    Example:
        >>> aug = NightAug(seed=1)
        >>> aug(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
        >>> "generator" in aug.state_dict_extra()
        True
    """

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def forward(self, images: Tensor) -> Tensor:
        return night_aug(images, self.generator)

    def state_dict_extra(self) -> dict:
        """The generator state, for checkpoints (restore with :meth:`load_state_dict_extra`)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict_extra(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
