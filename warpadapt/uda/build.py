"""From a recipe config to the objects it trains and evaluates: the warp, the datasets, the models.

Shared by the recipes and by every tool that reopens a finished run (``benchmarks/uda_diagnose.py``,
``benchmarks/recipe_speed.py``), so a run is rebuilt exactly as it was trained. Each function reads
only its part of the config (``cfg.warp``, ``cfg.data``, ``cfg.model``) and fails naming the key.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import (BDD100KDetection, CityscapesSegmentation, CocoDetection, Prepared, SyntheticDrivingDataset,
                    collate_segmentation, get_pair, list_pairs)
from ..data.labels import CITYSCAPES_CLASSES, guidance_train_ids
from ..data.pipeline import DrawKeys, TrainView, as_size
from ..models import Detector, Segmenter
from ..modules import SaliencyWarp
from .config import check_choice
from .data import InfiniteSampler
from .dist import DistInfo, unwrap
from .evaluate import EVAL_MODES, evaluate_segmentation

__all__ = ["WARP_KEYS", "warp_from_config", "detection_datasets", "detector_from_config",
           "segmentation_pipeline", "segmentation_datasets", "segmentation_loader", "segmenter_from_config",
           "evaluate_segmenter"]

#: The keys of ``cfg.warp`` that are :class:`~warpadapt.SaliencyWarp` options (the others say where and
#: how a recipe uses the warp: ``stage``, ``prior_images``, ``classes``).
WARP_KEYS = ("guidance", "grid_size", "fwhm", "bandwidth_scale", "amplitude_scale", "amplitude_range", "method")


def warp_from_config(cfg: DictConfig, prior=None) -> SaliencyWarp:
    """The run's :class:`~warpadapt.SaliencyWarp` from ``cfg.warp`` (built once; the models take it as it is).

    Its options are checked by :class:`~warpadapt.SaliencyWarp` itself; an error names the key.

    >>> warp_from_config(OmegaConf.create({"warp": {"guidance": "instance", "fwhm": 8.0, "stage": "always"}})).fwhm
    8.0
    >>> warp_from_config(OmegaConf.create({"warp": {"guidance": "instance", "fwhm": -1.0}}))
    Traceback (most recent call last):
    ...
    ValueError: config: warp.fwhm: fwhm must be a number of grid cells in [0.1, 1000.0], got -1.0
    """
    w = OmegaConf.to_container(cfg.warp, resolve=True)
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in w.items() if k in WARP_KEYS}
    if prior is not None:
        options["prior"] = prior
    try:
        return SaliencyWarp(**options)
    except (ValueError, TypeError) as e:
        msg = str(e)
        key = next((k for k in WARP_KEYS if msg.startswith(k)), None)
        raise type(e)(f"config: warp.{key}: {msg}" if key else f"config: warp: {msg}") from e


def detection_datasets(cfg: DictConfig):
    """(source train, target train, source val, target val, class names) for ``cfg.data`` of twopcnet."""
    d = cfg.data
    check_choice(cfg, "data.pair", tuple(list_pairs()) + ("inline", "bdd100k", "coco"))
    if d.pair in list_pairs() or d.pair == "inline":
        pair = get_pair(OmegaConf.to_container(d.inline) if d.pair == "inline" else d.pair)
        size = tuple(d.image_size)
        sets = [SyntheticDrivingDataset(pair, dom, split, size=size, length=n)
                for dom, split, n in (("source", "train", d.train_images), ("target", "train", d.train_images),
                                      ("source", "val", d.val_images), ("target", cfg.eval.target_split, d.val_images))]
        return (*sets, list(sets[0].classes))
    if d.root is None:
        raise ValueError(f"config: data.root: data.pair={d.pair!r} reads a dataset folder; pass data.root=/path")
    if cfg.eval.target_split != "val":
        raise ValueError("config: eval.target_split: dataset folders are evaluated on their val split; use val")
    root = Path(d.root)
    if d.pair == "bdd100k":  # one BDD100K folder, the domains picked by attribute filters
        filters = lambda f: {k: v for k, v in f.items() if v is not None}  # noqa: E731
        sets = [BDD100KDetection(root, split, **filters(dom)) for split in ("train", "val") for dom in (d.source, d.target)]
    else:  # coco: an (image folder, json) per domain and split, relative to data.root
        first = CocoDetection(root / d.source.train_images, root / d.source.train_json)
        coco = lambda dom, split: CocoDetection(  # noqa: E731
            root / dom[f"{split}_images"], root / dom[f"{split}_json"], classes=first.classes)
        sets = [first, coco(d.target, "train"), coco(d.source, "val"), coco(d.target, "val")]
    return (*sets, list(sets[0].classes))


def _pretrained_format(cfg: DictConfig) -> str:
    fmt = OmegaConf.select(cfg, "model.pretrained_format", default="auto")
    formats = ("auto", "timm", "torchvision", "segformer", "hf_segformer")
    if fmt not in formats:
        raise ValueError(f"config: model.pretrained_format: expected one of {formats}, got {fmt!r}")
    return fmt


def detector_from_config(cfg: DictConfig, num_classes: int, warp=None) -> Detector:
    """The twopcnet student of ``cfg.model`` (``num_classes`` with background). ``warp``: as
    :func:`warpadapt.wrap` takes it; None builds no warp (``"none"``: a model to evaluate or reload)."""
    m = cfg.model
    net = Detector(
        m.backbone, num_classes, out_indices=m.out_indices, pretrained_file=m.pretrained_file,
        pretrained_strict=m.pretrained_strict, pretrained_format=_pretrained_format(cfg),
        warp="none" if warp is None else warp,
        image_size=tuple(cfg.data.image_size), timm_kwargs=OmegaConf.to_container(m.kwargs),
        fpn_channels=m.fpn_channels, anchor_scale=m.anchor_scale, min_size=cfg.data.image_size[0],
        max_size=cfg.data.image_size[1], representation_size=m.representation_size,
        rpn_batch_size_per_image=m.rpn_batch_size, box_batch_size_per_image=m.roi_batch_size,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_train, rpn_post_nms_top_n_train=m.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_test, rpn_post_nms_top_n_test=m.rpn_post_nms_test,
        box_score_thresh=m.score_thresh, box_detections_per_img=m.detections_per_img)
    net.backbone.body.resample_only = _resample_only(cfg)
    return net


def _resample_only(cfg: DictConfig) -> bool:
    """``warp.resample_only`` (absent: False): the ablation control of
    :class:`~warpadapt.wrap.WarpedBackbone` (the features resampled by the warp and back, no geometry)."""
    return bool(OmegaConf.select(cfg, "warp.resample_only", default=False))


def _size(cfg: DictConfig, key: str, order: str, minimum: int):
    value = OmegaConf.select(cfg, key, default=None)
    return as_size(value, f"config: {key}", minimum=minimum, order=order)


def segmentation_pipeline(cfg: DictConfig) -> dict:
    """The data-pipeline options of mic's ``cfg`` (DAFormer / MIC's resize, crop, flip, evaluation), checked.

    Every key may be absent (its default reproduces the pipeline before these keys existed, bit for bit):

    - ``data.source.scale`` / ``data.target.scale``: ``[W, H]``, mmseg's ``Resize(img_scale=(W, H),
      keep_ratio=True)`` of that domain's images (Cityscapes ``[1024, 512]``, ACDC / Dark Zurich
      ``[960, 540]``); evaluation then scores at the label's own resolution. null (default): every image
      resized to ``data.image_size`` (aspect ratio ignored; a no-op on synthetic scenes, rendered at that
      size), labels too.
    - ``data.crop_size``: ``[H, W]`` random training crop (DAFormer: ``[512, 512]``); null (default):
      the whole image.
    - ``data.flip``: horizontal flip with p 0.5 of the training view (DAFormer: true); default false.
    - ``data.cat_max_ratio``: mmseg's crop retry on the SOURCE crops (default 0.75, DAFormer's; the
      target's crops have no ratio test, their labels are never read).
    - ``eval.mode``: ``whole`` (default; one forward, DAFormer) | ``slide`` (windows, HRDA / MIC-HRDA).
    - ``eval.crop_size``: ``[H, W]`` slide window; null (default): ``data.crop_size``, or the whole image.
    - ``eval.stride``: ``[H, W]`` between windows; null (default): half the window (HRDA: 1024 / 512).

    Returns ``{"scale": {"source": (W, H) | None, "target": ...}, "crop_size": (H, W) | None, "flip":
    bool, "cat_max_ratio": float, "eval": {"mode": str, "crop_size": (H, W) | None, "stride": (H, W) |
    None}}``; a bad value raises a ValueError naming its key.

    >>> segmentation_pipeline(OmegaConf.create({"data": {"image_size": [128, 256]}}))["crop_size"] is None
    True
    >>> p = segmentation_pipeline(OmegaConf.create({
    ...     "data": {"source": {"scale": [1024, 512]}, "target": {"scale": [960, 540]}, "crop_size": [512, 512],
    ...              "flip": True}, "eval": {"mode": "slide"}}))
    >>> p["scale"], p["eval"]
    ({'source': (1024, 512), 'target': (960, 540)}, {'mode': 'slide', 'crop_size': (512, 512), 'stride': (256, 256)})
    >>> segmentation_pipeline(OmegaConf.create({"data": {"crop_size": [512]}}))
    Traceback (most recent call last):
    ...
    ValueError: config: data.crop_size: expected [H, W], two ints >= 32, got [512]
    """
    scale = {dom: _size(cfg, f"data.{dom}.scale", "[W, H] (mmseg img_scale: fit the image into W x H, keep its "
                        "aspect ratio)", 1) for dom in ("source", "target")}
    crop = _size(cfg, "data.crop_size", "[H, W]", 32)
    flip = OmegaConf.select(cfg, "data.flip", default=False)
    if not isinstance(flip, bool):
        raise ValueError(f"config: data.flip: expected true or false, got {flip!r}")
    ratio = OmegaConf.select(cfg, "data.cat_max_ratio", default=0.75)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"config: data.cat_max_ratio: expected a number in (0, 1] (1: no retry), got {ratio!r}")
    mode = OmegaConf.select(cfg, "eval.mode", default="whole")
    if mode not in EVAL_MODES:
        raise ValueError(f"config: eval.mode: expected one of {EVAL_MODES}, got {mode!r}")
    window = _size(cfg, "eval.crop_size", "[H, W]", 32) or crop
    stride = _size(cfg, "eval.stride", "[H, W]", 1)
    if window is not None and stride is None:
        stride = (max(1, window[0] // 2), max(1, window[1] // 2))
    if window is not None and (stride[0] > window[0] or stride[1] > window[1]):
        raise ValueError(f"config: eval.stride: expected at most the window {list(window)} (windows must cover the "
                         f"image), got {list(stride)}")
    return {"scale": scale, "crop_size": crop, "flip": flip, "cat_max_ratio": float(ratio),
            "eval": {"mode": mode, "crop_size": window, "stride": stride}}


def segmentation_datasets(cfg: DictConfig) -> list[Prepared]:
    """(source train, target train, source val, target val) for ``cfg.data`` of mic: :class:`~warpadapt.data.Prepared`
    with the guidance boxes of ``warp.classes`` and the pipeline of :func:`segmentation_pipeline`.

    Per domain: resized to ``data.<domain>.scale`` keeping the aspect ratio (the validation sets keep
    their labels at the original resolution), or, without a scale, to ``data.image_size``. The training
    sets get a :class:`~warpadapt.data.pipeline.TrainView` (crop ``data.crop_size``, ``data.flip``; the
    source's crops with ``data.cat_max_ratio``; seeded with ``(train.seed, 0 | 1)``) when a crop or the
    flip is asked for, applied per draw after the cache; read them with :func:`segmentation_loader`.
    With none of these keys the sets are those of the fixed-size pipeline, item for item.
    """
    d, size = cfg.data, tuple(cfg.data.image_size)
    check_choice(cfg, "data.pair", tuple(list_pairs()) + ("inline", "folders"))
    check_choice(cfg, "warp.classes", ("synthetic", "cityscapes", "gta"))
    pipe = segmentation_pipeline(cfg)
    if d.pair != "folders":
        pair = get_pair(OmegaConf.to_container(d.inline) if d.pair == "inline" else d.pair)
        raw = [SyntheticDrivingDataset(pair, dom, split, size=size, length=n)
               for dom, split, n in (("source", "train", d.train_images), ("target", "train", d.train_images),
                                     ("source", "val", d.val_images), ("target", cfg.eval.target_split, d.val_images))]
    else:
        if d.root is None:
            raise ValueError("config: data.root: data.pair=folders reads dataset folders; pass data.root=<folder holding "
                             f"{d.source.dir!r} and {d.target.dir!r}>")
        if cfg.eval.target_split != "val":
            raise ValueError("config: eval.target_split: dataset folders are evaluated on data.target.val_split; use val")

        def read(dom, split_key, labels=True):
            c = d[dom]
            return CityscapesSegmentation(Path(d.root) / c.dir, c[split_key], c.layout, c.conditions, require_labels=labels)
        raw = [read("source", "split"), read("target", "split", labels=False),
               read("source", "val_split"), read("target", "val_split")]
    thing_ids = guidance_train_ids(cfg.warp.classes)
    seed = OmegaConf.select(cfg, "train.seed", default=0)
    out = []
    for k, (r, dom, train) in enumerate(zip(raw, ("source", "target") * 2, (True, True, False, False))):
        view = None
        if train and (pipe["crop_size"] is not None or pipe["flip"]):
            view = TrainView(pipe["crop_size"], pipe["flip"], pipe["cat_max_ratio"] if dom == "source" else 1.0,
                             seed=(seed, k))
        scale = pipe["scale"][dom]
        if scale is None:  # the fixed size (the pipeline before scales existed)
            out.append(Prepared(r, size, thing_ids, d.cache, view=view))
        else:
            out.append(Prepared(r, None, thing_ids, d.cache, scale=scale, keep_labels=not train, view=view))
    return out


def segmentation_loader(dataset, batch_size: int, *, seed: int = 0, info: DistInfo | None = None,
                        start_step: int = 0, num_workers: int = 0, batch_sampler=None):
    """Endless :func:`~warpadapt.data.collate_segmentation` batches of ``dataset`` for this rank from ``start_step``.

    :func:`warpadapt.uda.data.infinite_loader`'s index stream (the same batches, rank shards and
    resume), with each index sent as an ``(index, draw)`` key (:class:`~warpadapt.data.pipeline.DrawKeys`)
    when the dataset has a training view (``dataset.view``), so every draw gets its own crop / flip,
    fixed by (seed, stream position, index): a resumed run crops exactly as the uninterrupted one, and
    worker processes change nothing. A dataset without a view gets plain indices (batches identical to
    ``infinite_loader``'s). ``batch_sampler``: another index stream instead of the InfiniteSampler, built
    for this rank and ``start_step`` (e.g. :class:`warpadapt.uda.rcs.RareClassSampler`; its draws are
    keyed by (step, rank, position in the batch)).

    >>> from warpadapt.data import SyntheticDrivingDataset, get_pair, guidance_train_ids
    >>> from warpadapt.data.pipeline import TrainView
    >>> raw = SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(64, 128), length=3)
    >>> ds = Prepared(raw, None, guidance_train_ids("synthetic"), True, view=TrainView((32, 32), seed=(0, 0)))
    >>> it = segmentation_loader(ds, 2, seed=0)
    >>> first = [next(it) for _ in range(3)]
    >>> again = segmentation_loader(ds, 2, seed=0, start_step=2)  # resumed at step 2: the same crops
    >>> first[0]["images"].shape, torch.equal(first[2]["images"], next(again)["images"])
    (torch.Size([2, 3, 32, 32]), True)
    """
    info = info or DistInfo()
    if batch_sampler is None:
        sampler = InfiniteSampler(len(dataset), batch_size, seed, info.rank, info.world_size, start_step)
    else:
        sampler = batch_sampler
        if (sampler.batch_size, sampler.rank, sampler.start_step) != (batch_size, info.rank, start_step):
            raise ValueError(f"batch_sampler: built for batch_size={sampler.batch_size}, rank={sampler.rank}, "
                             f"start_step={sampler.start_step}; the loader has {batch_size}, {info.rank}, {start_step}")
    keyed = getattr(dataset, "view", None) is not None
    batches = DrawKeys(sampler, info.world_size) if keyed else sampler
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_segmentation,
                                         num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(int(seed) + info.rank),
                                         persistent_workers=num_workers > 0,
                                         pin_memory=info.device.type == "cuda")  # pinned: .to(device, non_blocking=True)
    return iter(loader)


def segmenter_from_config(cfg: DictConfig, warp=None) -> Segmenter:
    """The mic student of ``cfg.model`` over the 19 Cityscapes classes. ``warp``: as :func:`warpadapt.wrap`
    takes it; None builds no warp (``"none"``: a model to evaluate or reload). Fixed-size timm families
    are built for the training view: ``data.crop_size`` if set, else ``data.image_size``."""
    m = cfg.model
    train_size = segmentation_pipeline(cfg)["crop_size"] or tuple(cfg.data.image_size)
    net = Segmenter(m.backbone, len(CITYSCAPES_CLASSES), m.out_indices, m.pretrained_file, m.embed_dim, m.dropout,
                    "none" if warp is None else warp, pretrained_strict=m.pretrained_strict,
                    pretrained_format=_pretrained_format(cfg),
                    image_size=tuple(train_size), timm_kwargs=OmegaConf.to_container(m.kwargs))
    net.backbone.resample_only = _resample_only(cfg)
    return net


def evaluate_segmenter(model, val_sets, cfg: DictConfig, info: DistInfo | None = None) -> dict:
    """Source and target mIoU, thing-class mIoU (the objects the warp zooms on) and per-class IoU of
    ``model`` (eval mode, nothing warped) on ``val_sets = (source val, target val)``, at the labels'
    resolution, ``eval.mode`` whole or slide (:func:`segmentation_pipeline`)."""
    info = info or DistInfo()
    out, things = {}, list(guidance_train_ids(cfg.warp.classes))
    ev = segmentation_pipeline(cfg)["eval"]
    for name, ds in zip(("source", "target"), val_sets):
        r = evaluate_segmentation(unwrap(model), ds, len(CITYSCAPES_CLASSES), device=info.device,
                                  batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, info=info,
                                  mode=ev["mode"], crop_size=ev["crop_size"], stride=ev["stride"],
                                  num_workers=cfg.data.workers)
        out[f"{name}_miou"] = r["miou"]
        out[f"{name}_thing_miou"] = float(r["iou"][things].nanmean())
        out[f"{name}_iou"] = dict(zip(CITYSCAPES_CLASSES, r["iou"].tolist()))
    return out
