"""ClassMix (DACS), MIC patch masking and the strong colour augmentation, batched and seeded.

Every random draw goes through an explicit ``torch.Generator`` (drawn on the generator's device,
then moved to the data's), so a recipe that checkpoints the generator's state resumes exactly.

- :func:`classmix_masks`: per source label map, a mask of the pixels of half of its classes.
- :func:`mix`: paste source onto target through a mask (images, labels or weights alike).
- :func:`patch_mask`: MIC's random square-patch mask (1 = keep, 0 = masked).
- :func:`strong_augment`: colour jitter + Gaussian blur (kornia), per-image parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
from torch import Tensor

__all__ = ["classmix_masks", "mix", "patch_mask", "strong_augment"]


def _rand(generator: torch.Generator, *shape: int, device=None) -> Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.rand(*shape, generator=generator, device=generator.device).to(device)


def classmix_masks(labels: Tensor, generator: torch.Generator, num_classes: int = 19, ignore_index: int = 255) -> Tensor:
    """ClassMix masks: for each label map, the pixels of a random half of the classes present in it.

    Of the ``n`` classes present in image ``b`` (``ignore_index`` excluded), ``ceil(n / 2)`` are drawn
    without replacement (DACS); the mask is True where the label is one of them. No loop over images:
    random scores per (image, class), absent classes scored -1, the top ``ceil(n / 2)`` ranks kept.

    Args:
        labels: (B, H, W) int64 source label maps (class ids 0..num_classes-1, ``ignore_index`` allowed).
        generator: the random source.
        num_classes: K.
        ignore_index: label value that is never selected (its pixels stay target).

    Returns:
        (B, H, W) bool mask, True = take the source pixel.

    Example:
        >>> lab = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255]]])  # 4 classes present -> 2 drawn
        >>> m = classmix_masks(lab, torch.Generator().manual_seed(0), num_classes=4)
        >>> m.shape, len(torch.unique(lab[m])), bool(m[0, 1, 3])
        (torch.Size([1, 2, 4]), 2, False)
    """
    if not isinstance(labels, Tensor) or labels.dim() != 3 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer (B, H, W) tensor, got {getattr(labels, 'shape', type(labels))}")
    b = labels.shape[0]
    valid = (labels >= 0) & (labels < num_classes)
    if bool(((labels != ignore_index) & ~valid).any()):
        raise ValueError(f"labels hold values outside 0..{num_classes - 1} other than ignore_index={ignore_index}")
    flat = torch.where(valid, labels, torch.full_like(labels, num_classes)).reshape(b, -1)
    present = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, flat, True)
    present = present[:, :num_classes]
    scores = torch.where(present, _rand(generator, b, num_classes, device=labels.device), torch.full_like(present, -1.0, dtype=torch.float32))
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest score
    n_take = (present.sum(1, keepdim=True) + 1) // 2  # ceil(n / 2)
    chosen = (rank < n_take) & present  # (B, K)
    chosen = torch.cat([chosen, chosen.new_zeros(b, 1)], dim=1)  # the ignore slot is never chosen
    return chosen.gather(1, flat).reshape(labels.shape)


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """Paste ``source`` onto ``target`` where ``mask`` is True (same for images, labels, weights).

    Args:
        mask: (B, H, W) bool.
        source, target: (B, H, W) or (B, C, H, W) tensors of the same shape and dtype.

    Returns:
        tensor shaped like ``target``.

    Example:
        >>> m = torch.tensor([[[True, False]]])
        >>> mix(m, torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2))[0, :, 0].tolist()
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
        >>> mix(m, torch.tensor([[[5, 5]]]), torch.tensor([[[7, 7]]])).tolist()
        [[[5, 7]]]
    """
    if source.shape != target.shape:
        raise ValueError(f"source and target must have the same shape, got {tuple(source.shape)} and {tuple(target.shape)}")
    if mask.dim() != 3 or mask.shape[0] != target.shape[0] or mask.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"mask must be (B, H, W) matching {tuple(target.shape)}, got {tuple(mask.shape)}")
    m = mask.bool()
    if target.dim() == 4:
        m = m[:, None]
    return torch.where(m, source, target)


def patch_mask(
    batch_size: int,
    image_size: Sequence[int],
    patch_size: int,
    ratio: float,
    generator: torch.Generator,
    device=None,
) -> Tensor:
    """MIC's random patch mask: square ``patch_size`` patches, each masked with probability ``ratio``.

    Patches tile the image from the top-left corner (the last row / column is cropped when the size
    is not a multiple of ``patch_size``).

    Args:
        batch_size: B.
        image_size: (H, W).
        patch_size: patch side in pixels (MIC: 64 px on 1024-px crops, about crop / 16).
        ratio: probability that a patch is masked (MIC: 0.7).
        generator: the random source.
        device: device of the result.

    Returns:
        (B, 1, H, W) float32, 1 = keep the pixel, 0 = masked; multiply the image by it.

    Example:
        >>> m = patch_mask(2, (8, 12), 4, 0.7, torch.Generator().manual_seed(0))
        >>> m.shape, sorted(torch.unique(m).tolist()), bool((m[:, :, :4, :4] == m[:, :, :1, :1]).all())
        (torch.Size([2, 1, 8, 12]), [0.0, 1.0], True)
    """
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    h, w = (int(v) for v in image_size)
    gh, gw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    keep = (_rand(generator, batch_size, 1, gh, gw, device=device) >= float(ratio)).float()
    keep = keep.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return keep[:, :, :h, :w]


def strong_augment(
    images: Tensor,
    generator: torch.Generator,
    jitter: float = 0.2,
    jitter_p: float = 0.8,
    blur_p: float = 0.5,
    blur_sigma: Sequence[float] = (0.15, 1.15),
) -> Tensor:
    """DACS's strong augmentation: colour jitter then Gaussian blur, drawn per image (kornia ops).

    Colour jitter (with probability ``jitter_p`` per image), kornia semantics: brightness
    ``+U(-j, j)`` (additive), contrast ``x U(1-j, 1+j)``, saturation ``x U(1-j, 1+j)``, hue
    ``+U(-j, j)`` of the colour circle, in that order, output clipped to [0, 1]. Gaussian blur (with
    probability ``blur_p``): sigma ``U(*blur_sigma)`` on both axes, kernel side the odd number near
    10 % of the image height (DACS).

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        generator: the random source.
        jitter: strength j of every jitter (DACS: 0.2).
        jitter_p, blur_p: per-image probabilities.
        blur_sigma: (lo, hi) sigma range in pixels.

    Returns:
        (B, 3, H, W) augmented images.

    Example:
        >>> x = torch.rand(4, 3, 16, 16)
        >>> y = strong_augment(x, torch.Generator().manual_seed(0))
        >>> y.shape, bool(y.min() >= 0) and bool(y.max() <= 1)
        (torch.Size([4, 3, 16, 16]), True)
        >>> torch.equal(strong_augment(x, torch.Generator(), jitter_p=0, blur_p=0), x)
        True
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    b, dev = images.shape[0], images.device
    u = _rand(generator, b, 7, device=dev)  # jitter on?, 4 jitter factors, blur on?, sigma
    on = (u[:, 0] < jitter_p).to(images.dtype)
    f = (2 * u[:, 1:5] - 1) * jitter * on[:, None]  # U(-j, j), 0 where jitter is off
    out = images
    if bool(on.any()):
        out = kornia.enhance.adjust_brightness(out, f[:, 0])
        out = kornia.enhance.adjust_contrast(out, 1 + f[:, 1])
        out = kornia.enhance.adjust_saturation(out, 1 + f[:, 2])
        out = kornia.enhance.adjust_hue(out, f[:, 3] * 2 * math.pi).clamp(0, 1)
        out = torch.where(on[:, None, None, None].bool(), out, images)
    blur = u[:, 5] < blur_p
    if bool(blur.any()):
        lo, hi = (float(s) for s in blur_sigma)
        sigma = (lo + (hi - lo) * u[:, 6]).to(images.dtype)
        k = int(math.ceil(0.1 * images.shape[-2]))
        k = max(3, k - k % 2 + 1)
        blurred = kornia.filters.gaussian_blur2d(out, (k, k), torch.stack([sigma, sigma], dim=1))
        out = torch.where(blur[:, None, None, None], blurred, out)
    return out
