"""ClassMix (DACS), MIC patch masking and the strong colour augmentation, batched and seeded.

Every random draw goes through an explicit ``torch.Generator`` (drawn on the generator's device,
then moved to the data's), so a recipe that checkpoints the generator's state resumes exactly.

- :func:`classmix_masks`: per source label map, a mask of the pixels of half of a pool of classes.
- :func:`mix`: paste source onto target through a mask (images, labels or weights alike).
- :func:`patch_mask`: MIC's random block mask (1 = keep, 0 = masked); :func:`mask_images` applies it
  so that a masked pixel is the normalisation mean (MIC masks the normalised image).
- :func:`mic_batch`: which images, labels and weights MIC masks, per mask mode.
- :func:`strong_augment`: DACS's colour jitter + Gaussian blur (kornia).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MASK_MODES", "classmix_masks", "mask_images", "mic_batch", "mix", "patch_mask", "strong_augment"]


def _rand(generator: torch.Generator, *shape: int, device=None) -> Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.rand(*shape, generator=generator, device=generator.device).to(device)


def classmix_masks(labels: Tensor, generator: torch.Generator, num_classes: int = 19, ignore_index: int = 255, *,
                   pool: str = "batch", include_ignore: bool = True) -> Tensor:
    """ClassMix masks: for each label map, the pixels of a random half of a pool of classes.

    DACS's ``get_class_masks`` (lhoyer/DAFormer, lhoyer/MIC ``mmseg/models/utils/dacs_transforms.py``)
    takes ``torch.unique`` over the whole batch of source label maps, so the pool is every class of
    the batch, the ignore label included, and each image draws ``ceil(n / 2)`` of those ``n`` classes
    without replacement, independently of the other images: a drawn class may be absent from the
    image (fewer pixels pasted), and a drawn ignore label pastes source pixels whose label stays
    ignored. That is ``pool="batch", include_ignore=True``. ``pool="image"`` draws from the classes
    present in each image; ``include_ignore=False`` leaves ``ignore_index`` out of the pool (its pixels
    stay target). No loop over images: random scores per (image, class), classes outside the pool
    scored -1, the top ``ceil(n / 2)`` ranks kept.

    Args:
        labels: (B, H, W) int64 source label maps (class ids 0..num_classes-1, ``ignore_index`` allowed).
        generator: the random source.
        num_classes: K.
        ignore_index: the ignore label.
        pool: ``"batch"`` (DACS's code) or ``"image"``.
        include_ignore: whether the ignore label is a class that can be drawn (DACS's code: True).

    Returns:
        (B, H, W) bool mask, True = take the source pixel.

    Example:
        >>> lab = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255]]])  # 5 labels in the pool (255 too) -> 3 drawn
        >>> m = classmix_masks(lab, torch.Generator().manual_seed(0), num_classes=4)
        >>> m.shape, len(torch.unique(lab[m]))
        (torch.Size([1, 2, 4]), 3)
        >>> m = classmix_masks(lab, torch.Generator().manual_seed(0), num_classes=4, pool="image", include_ignore=False)
        >>> len(torch.unique(lab[m])), bool(m[0, 1, 3])  # 4 classes -> 2 drawn, never the ignore label
        (2, False)
    """
    if not isinstance(labels, Tensor) or labels.dim() != 3 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer (B, H, W) tensor, got {getattr(labels, 'shape', type(labels))}")
    if pool not in ("batch", "image"):
        raise ValueError(f"pool must be 'batch' or 'image', got {pool!r}")
    b = labels.shape[0]
    valid = (labels >= 0) & (labels < num_classes)
    if bool(((labels != ignore_index) & ~valid).any()):
        raise ValueError(f"labels hold values outside 0..{num_classes - 1} other than ignore_index={ignore_index}")
    flat = torch.where(valid, labels, torch.full_like(labels, num_classes)).reshape(b, -1)  # slot K = ignore
    present = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, flat, True)
    if pool == "batch":
        present = present.any(0, keepdim=True).expand(b, -1)
    if not include_ignore:
        present = torch.cat([present[:, :num_classes], present.new_zeros(b, 1)], dim=1)
    scores = torch.where(present, _rand(generator, b, num_classes + 1, device=labels.device),
                         torch.full(present.shape, -1.0, device=labels.device))
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest score
    n_take = (present.sum(1, keepdim=True) + 1) // 2  # DACS: int((n + n % 2) / 2) = ceil(n / 2)
    chosen = (rank < n_take) & present  # (B, K + 1)
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
    """MIC's random block mask: a grid of square ``patch_size`` blocks, each masked with probability ``ratio``.

    As MIC's ``BlockMaskGenerator`` (lhoyer/MIC ``mmseg/models/utils/masking_transforms.py``): a
    ``round(H / p) x round(W / p)`` grid of uniform draws, kept where the draw is > ``ratio``, then
    nearest-upsampled to (H, W): exact p-pixel squares when H and W are multiples of p.

    Args:
        batch_size: B.
        image_size: (H, W).
        patch_size: block side p in pixels (MIC: 64 px on 1024-px crops, 32 px on 512-px crops).
        ratio: probability that a block is masked (MIC: 0.7).
        generator: the random source.
        device: device of the result.

    Returns:
        (B, 1, H, W) float32, 1 = keep the pixel, 0 = masked (apply it with :func:`mask_images`).

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
    gh, gw = max(1, round(h / patch_size)), max(1, round(w / patch_size))
    keep = (_rand(generator, batch_size, 1, gh, gw, device=device) > float(ratio)).float()
    return F.interpolate(keep, size=(h, w), mode="nearest")


def mask_images(images: Tensor, keep: Tensor, fill: Tensor | float) -> Tensor:
    """Masked pixels take ``fill``: MIC multiplies the NORMALISED image by the mask, so on an image in
    [0, 1] a masked pixel is the normalisation mean (``fill = Segmenter.mean``), 0 after normalising.

    Args:
        images: (B, 3, H, W) in [0, 1].
        keep: (B, 1, H, W) from :func:`patch_mask`, 1 = keep.
        fill: the value of a masked pixel, a number or a tensor broadcastable to ``images`` ((1, 3, 1, 1)).

    Returns:
        (B, 3, H, W): ``images`` where kept, exactly ``fill`` where masked.

    Example:
        >>> mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        >>> out = mask_images(torch.rand(1, 3, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]), mean)
        >>> ((out - mean)[0, :, 0, 1] == 0).all().item(), torch.equal(out[0, :, 1, 0], mean.view(3))
        (True, True)
    """
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(keep.bool(), images, fill)


MASK_MODES = ("separate", "separateaug", "separatesrc", "separatesrcaug", "separatetrg", "separatetrgaug")


def mic_batch(mode: str, source: Tensor, labels: Tensor, target: Tensor, pseudo: Tensor, weight: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
    """The images, labels and pixel weights MIC masks, per mask mode (MIC's ``MaskingConsistencyModule``).

    - ``separate`` / ``separateaug``: source images with their labels (weight 1) next to target images
      with their pseudo-labels and weights. MIC asserts a batch of 2 and takes image 0 of each; for a
      batch of B this takes the first ``ceil(B / 2)`` of each (B = 2: exactly MIC's pair).
    - ``separatesrc`` / ``separatesrcaug``: the source batch, its labels, weight 1.
    - ``separatetrg`` / ``separatetrgaug``: the target batch, its pseudo-labels and weights.

    The ``...aug`` modes colour-augment the batch (:func:`strong_augment`) before masking; the caller
    does that (``mode.endswith("aug")``). Nothing here is warped: pass the plain images.

    Args:
        mode: one of :data:`MASK_MODES`.
        source: (B, 3, H, W) source images; labels: (B, H, W) their label maps.
        target: (B, 3, H, W) target images; pseudo: (B, H, W) their pseudo-labels; weight: (B, H, W).

    Returns:
        (images, labels, weights) of the masked forward.

    Example:
        >>> s, t = torch.zeros(2, 3, 1, 1), torch.ones(2, 3, 1, 1)
        >>> y, p, w = torch.tensor([[[1]], [[2]]]), torch.tensor([[[3]], [[4]]]), torch.full((2, 1, 1), 0.5)
        >>> x, lab, wt = mic_batch("separate", s, y, t, p, w)
        >>> x[:, 0, 0, 0].tolist(), lab.flatten().tolist(), wt.flatten().tolist()
        ([0.0, 1.0], [1, 3], [1.0, 0.5])
    """
    if mode in ("separate", "separateaug"):
        n = (source.shape[0] + 1) // 2
        return (torch.cat([source[:n], target[:n]]), torch.cat([labels[:n], pseudo[:n]]),
                torch.cat([torch.ones_like(weight[:n]), weight[:n]]))
    if mode in ("separatesrc", "separatesrcaug"):
        return source, labels, torch.ones(labels.shape, dtype=weight.dtype, device=weight.device)
    if mode in ("separatetrg", "separatetrgaug"):
        return target, pseudo, weight
    raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")


def _dacs_kernel(n: int) -> int:
    """DACS's blur kernel side for an image side ``n``: c = ceil(0.1 n), made odd by subtracting 1."""
    c = math.ceil(0.1 * n)
    return max(1, c if c % 2 else c - 1)


def strong_augment(
    images: Tensor,
    generator: torch.Generator,
    jitter: float = 0.2,
    jitter_p: float = 0.8,
    blur_p: float = 0.5,
    blur_sigma: Sequence[float] = (0.15, 1.15),
    per_image: bool = False,
) -> Tensor:
    """DACS's strong augmentation: colour jitter then Gaussian blur (kornia ops).

    As DACS's ``strong_transform`` (lhoyer/MIC ``mmseg/models/utils/dacs_transforms.py``) with
    kornia 0.5.8's ``ColorJitter``, the version MIC pins: with probability ``jitter_p`` the batch is
    jittered, each image with its own factors, brightness ``+U(-j, j)`` (additive), contrast
    ``x U(1-j, 1+j)``, saturation ``x U(1-j, 1+j)``, hue ``+U(-j, j)`` of the colour circle, applied in
    a random order per image, clipped to [0, 1]. With probability ``blur_p`` the batch is blurred,
    sigma ``U(*blur_sigma)`` per image, kernel ``(k(H), k(W))`` with DACS's rule k(n) = ceil(0.1 n),
    minus 1 if even. DACS draws the two on / off switches once per batch (``per_image=False``);
    ``per_image=True`` draws them per image.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        generator: the random source.
        jitter: strength j of every jitter (DACS: 0.2).
        jitter_p, blur_p: probabilities of jitter and blur.
        blur_sigma: (lo, hi) sigma range in pixels.
        per_image: draw the jitter and blur switches per image instead of once for the batch.

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
    u = _rand(generator, b, 11, device=dev)  # jitter on?, 4 factors, blur on?, sigma, 4 order scores
    switch = u[:, [0, 5]] if per_image else u[:1, [0, 5]].expand(b, 2)
    flags = torch.cat([switch < torch.tensor([jitter_p, blur_p], device=dev), u[:, 7:11].argsort(dim=1)], dim=1)
    flags = flags.tolist()  # the only host read: which images are jittered (in which order) and blurred
    f = (2 * u[:, 1:5] - 1) * jitter  # U(-j, j)
    ops = (lambda x, k: kornia.enhance.adjust_brightness(x, f[k, 0]),
           lambda x, k: kornia.enhance.adjust_contrast(x, 1 + f[k, 1]),
           lambda x, k: kornia.enhance.adjust_saturation(x, 1 + f[k, 2]),
           lambda x, k: kornia.enhance.adjust_hue(x, f[k, 3] * 2 * math.pi))
    orders: dict[tuple, list[int]] = {}  # images that share an order of the four ops
    for i, row in enumerate(flags):
        if row[0]:
            orders.setdefault(tuple(int(v) for v in row[2:]), []).append(i)
    out = images
    for order, idx in orders.items():
        k = torch.tensor(idx, device=dev)
        x = images[k]
        for op in order:
            x = ops[op](x, k)
        out = out.index_copy(0, k, x.clamp(0, 1))
    blurred = [i for i, row in enumerate(flags) if row[1]]
    if blurred:
        lo, hi = (float(s) for s in blur_sigma)
        k = torch.tensor(blurred, device=dev)
        sigma = (lo + (hi - lo) * u[k, 6]).to(images.dtype)
        kernel = (_dacs_kernel(images.shape[-2]), _dacs_kernel(images.shape[-1]))
        out = out.index_copy(0, k, kornia.filters.gaussian_blur2d(out[k], kernel, torch.stack([sigma, sigma], dim=1)))
    return out
