"""NightAug (2PCNet): turn labelled day images into plausible night images, batched.

Per image, in this order (2PCNet's defaults; images are float in [0, 1]):

1. Gaussian blur, p 0.5, sigma ~ U(0.1, 2) (``kornia.filters.gaussian_blur2d``);
2. gamma, p 0.5, gamma = 1 / U(0.2, 1) (>= 1: darker; ``kornia.enhance.adjust_gamma``);
3. brightness, p 0.5 and always when gamma was skipped, ``x * U(0.2, 1)``;
4. contrast, p 0.5, factor U(0.2, 1) (blend with the grey mean,
   ``kornia.enhance.adjust_contrast_with_mean_subtraction``);
   after each of 2-4 ("uneven darkening"): the pre-op pixels are pasted back inside random
   rectangles, one more rectangle while ``rand > 0.4`` (at most ``max_rects``);
5. glare: blend toward white, ``x + (1 - x) * g`` with a Gaussian blob ``g`` (peak ~ U(0.2, 0.8),
   sigma ~ U(1, 150) px for a 600-px-high image, i.e. scaled by H / 600, uniform random centre);
   blob ``j`` (0, 1, ...) is added while ``rand > 0.5 + 0.1 j``;
6. positive Gaussian noise, p 0.5: ``x + max(0, N(0, s^2))`` with s ~ U(0.01, 0.1) per image.

All randomness comes from the ``generator`` passed in (the same generator state gives the same
output); every draw is made for the whole batch whether or not an op fires, so the number of
draws per call is fixed. Steps 5 and 6 (glare, noise) are this library's reading of the paper's
description; the probabilities and ranges are 2PCNet's.
"""
from __future__ import annotations

import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_gamma
from kornia.filters import gaussian_blur2d
from torch import Tensor

__all__ = ["night_aug", "NightAug"]


def _u(g: torch.Generator, n: int, lo: float, hi: float, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _rect_masks(g: torch.Generator, b: int, h: int, w: int, max_rects: int, keep_p: float, device) -> Tensor:
    """(B, 1, H, W) bool: union of random rectangles, rectangle j active while rand > keep_p."""
    go = torch.rand(b, max_rects, generator=g, device=device) > keep_p
    active = torch.cumprod(go.to(torch.int64), dim=1).bool()  # stop at the first failure
    xs = torch.rand(b, max_rects, 2, generator=g, device=device).sort(-1).values * w
    ys = torch.rand(b, max_rects, 2, generator=g, device=device).sort(-1).values * h
    px = torch.arange(w, device=device) + 0.5
    py = torch.arange(h, device=device) + 0.5
    inx = (px >= xs[..., :1]) & (px < xs[..., 1:])  # (B, R, W)
    iny = (py >= ys[..., :1]) & (py < ys[..., 1:])  # (B, R, H)
    inside = iny[..., :, None] & inx[..., None, :] & active[..., None, None]  # (B, R, H, W)
    return inside.any(dim=1, keepdim=True)


def night_aug(images: Tensor, generator: torch.Generator, max_rects: int = 8, max_blobs: int = 5) -> Tensor:
    """NightAug a batch (see the module docstring for the exact steps).

    Args:
        images: (B, 3, H, W) float in [0, 1].
        generator: a ``torch.Generator`` on the images' device: the only source of randomness.
        max_rects: cap on the pasted-back rectangles per darkening op (0.6 ** 8 < 2 % is cut).
        max_blobs: cap on glare blobs (the stopping probability reaches 1 at the 6th blob anyway).

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
    b, _, h, w = images.shape
    dev, g = images.device, generator
    x = images.float().clamp(0, 1)

    def coin(p: float) -> Tensor:
        return (torch.rand(b, generator=g, device=dev) < p).view(b, 1, 1, 1)

    # 1. Gaussian blur (computed for the images that draw it only)
    fire, sigma = coin(0.5), _u(g, b, 0.1, 2.0, dev)
    x = _apply(x, fire, lambda t, i: gaussian_blur2d(t, (13, 13), sigma[i, None].expand(len(i), 2).contiguous()))

    # 2-4. darkening ops, each followed by pasting the pre-op pixels back in random rectangles
    fire_gamma, gamma = coin(0.5), 1.0 / _u(g, b, 0.2, 1.0, dev)
    fire_bright, bright = coin(0.5) | ~fire_gamma, _u(g, b, 0.2, 1.0, dev)
    fire_contrast, contrast = coin(0.5), _u(g, b, 0.2, 1.0, dev)
    ops = (
        (fire_gamma, lambda t, i: adjust_gamma(t, gamma[i])),
        (fire_bright, lambda t, i: t * bright[i].view(-1, 1, 1, 1)),
        (fire_contrast, lambda t, i: adjust_contrast_with_mean_subtraction(t, contrast[i])),
    )
    for fire, op in ops:
        keep = _rect_masks(g, b, h, w, max_rects, 0.4, dev)
        x = _apply(x, fire, lambda t, i, op=op, keep=keep: torch.where(keep[i], t, op(t, i)))

    # 5. glare: Gaussian blobs blended toward white, blob j kept while rand > 0.5 + 0.1 j
    go = torch.rand(b, max_blobs, generator=g, device=dev) > (0.5 + 0.1 * torch.arange(max_blobs, device=dev))
    active = torch.cumprod(go.to(torch.int64), dim=1).to(x.dtype)  # (B, J)
    cx = torch.rand(b, max_blobs, generator=g, device=dev) * w
    cy = torch.rand(b, max_blobs, generator=g, device=dev) * h
    sig = (1.0 + 149.0 * torch.rand(b, max_blobs, generator=g, device=dev)) * (h / 600.0)
    peak = 0.2 + 0.6 * torch.rand(b, max_blobs, generator=g, device=dev)
    px = torch.arange(w, device=dev, dtype=x.dtype) + 0.5
    py = torch.arange(h, device=dev, dtype=x.dtype) + 0.5
    gx = torch.exp(-((px - cx[..., None]) ** 2) / (2 * sig[..., None] ** 2)) * (active * peak)[..., None]  # (B, J, W)
    gy = torch.exp(-((py - cy[..., None]) ** 2) / (2 * sig[..., None] ** 2))  # (B, J, H)

    def glare(t: Tensor, i: Tensor) -> Tensor:
        left = torch.prod(1 - gy[i, :, :, None] * gx[i, :, None, :], dim=1, keepdim=True)  # (n, 1, H, W)
        return 1 - (1 - t) * left  # x + (1 - x) * g, blob after blob

    x = _apply(x, (active[:, 0] > 0).view(b, 1, 1, 1), glare)

    # 6. positive Gaussian noise
    fire, s = coin(0.5), _u(g, b, 0.01, 0.1, dev).view(b, 1, 1, 1)
    noise = (torch.randn(x.shape, generator=g, device=dev) * s).clamp_min(0)
    x = torch.where(fire, x + noise, x)
    return x.clamp(0, 1).to(images.dtype)


def _apply(x: Tensor, fire: Tensor, op) -> Tensor:
    """``x`` with ``op(x[i], i)`` written into the images ``i`` where ``fire`` (B, 1, 1, 1) is set."""
    idx = fire.view(-1).nonzero().view(-1)
    if idx.numel() == 0:
        return x
    x = x.clone()
    x[idx] = op(x[idx], idx).clamp(0, 1)
    return x


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
