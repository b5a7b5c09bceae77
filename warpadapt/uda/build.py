"""From a recipe config to the objects it trains and evaluates: the warp, the datasets, the models.

Shared by the recipes and by every tool that reopens a finished run (``benchmarks/uda_diagnose.py``,
``benchmarks/recipe_speed.py``), so a run is rebuilt exactly as it was trained. Each function reads
only its part of the config (``cfg.warp``, ``cfg.data``, ``cfg.model``) and fails naming the key.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..data import (BDD100KDetection, CityscapesSegmentation, CocoDetection, Prepared, SyntheticDrivingDataset,
                    get_pair, list_pairs)
from ..data.labels import CITYSCAPES_CLASSES, guidance_train_ids
from ..models import Detector, Segmenter
from ..modules import SaliencyWarp
from .config import check_choice
from .dist import DistInfo, unwrap
from .evaluate import evaluate_segmentation

__all__ = ["WARP_KEYS", "warp_from_config", "detection_datasets", "detector_from_config",
           "segmentation_datasets", "segmenter_from_config", "evaluate_segmenter"]

#: The keys of ``cfg.warp`` that are :class:`~warpadapt.SaliencyWarp` options (the others say where and
#: how a recipe uses the warp: ``stage``, ``prior_images``, ``classes``).
WARP_KEYS = ("guidance", "grid_size", "fwhm", "bandwidth_scale", "amplitude_scale")


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


def detector_from_config(cfg: DictConfig, num_classes: int, warp=None) -> Detector:
    """The twopcnet student of ``cfg.model`` (``num_classes`` with background). ``warp``: as
    :func:`warpadapt.wrap` takes it; None builds no warp (``"none"``: a model to evaluate or reload)."""
    m = cfg.model
    return Detector(
        m.backbone, num_classes, out_indices=m.out_indices, pretrained_file=m.pretrained_file,
        pretrained_strict=m.pretrained_strict, warp="none" if warp is None else warp,
        image_size=tuple(cfg.data.image_size), timm_kwargs=OmegaConf.to_container(m.kwargs),
        fpn_channels=m.fpn_channels, anchor_scale=m.anchor_scale, min_size=cfg.data.image_size[0],
        max_size=cfg.data.image_size[1], representation_size=m.representation_size,
        rpn_batch_size_per_image=m.rpn_batch_size, box_batch_size_per_image=m.roi_batch_size,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_train, rpn_post_nms_top_n_train=m.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_test, rpn_post_nms_top_n_test=m.rpn_post_nms_test,
        box_score_thresh=m.score_thresh, box_detections_per_img=m.detections_per_img)


def segmentation_datasets(cfg: DictConfig) -> list[Prepared]:
    """(source train, target train, source val, target val) for ``cfg.data`` of mic, prepared at
    ``data.image_size`` with the guidance boxes of ``warp.classes`` (:class:`~warpadapt.data.Prepared`)."""
    d, size = cfg.data, tuple(cfg.data.image_size)
    check_choice(cfg, "data.pair", tuple(list_pairs()) + ("inline", "folders"))
    check_choice(cfg, "warp.classes", ("synthetic", "cityscapes", "gta"))
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
    return [Prepared(r, size, thing_ids, d.cache) for r in raw]


def segmenter_from_config(cfg: DictConfig, warp=None) -> Segmenter:
    """The mic student of ``cfg.model`` over the 19 Cityscapes classes. ``warp``: as :func:`warpadapt.wrap`
    takes it; None builds no warp (``"none"``: a model to evaluate or reload)."""
    m = cfg.model
    return Segmenter(m.backbone, len(CITYSCAPES_CLASSES), m.out_indices, m.pretrained_file, m.embed_dim, m.dropout,
                     "none" if warp is None else warp, pretrained_strict=m.pretrained_strict,
                     image_size=tuple(cfg.data.image_size), timm_kwargs=OmegaConf.to_container(m.kwargs))


def evaluate_segmenter(model, val_sets, cfg: DictConfig, info: DistInfo | None = None) -> dict:
    """Source and target mIoU, thing-class mIoU (the objects the warp zooms on) and per-class IoU of
    ``model`` (eval mode, nothing warped) on ``val_sets = (source val, target val)``."""
    info = info or DistInfo()
    out, things = {}, list(guidance_train_ids(cfg.warp.classes))
    for name, ds in zip(("source", "target"), val_sets):
        r = evaluate_segmentation(unwrap(model), ds, len(CITYSCAPES_CLASSES), device=info.device,
                                  batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, info=info)
        out[f"{name}_miou"] = r["miou"]
        out[f"{name}_thing_miou"] = float(r["iou"][things].nanmean())
        out[f"{name}_iou"] = dict(zip(CITYSCAPES_CLASSES, r["iou"].tolist()))
    return out
