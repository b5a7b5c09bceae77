"""Why a row of the adaptation table scores what it does: student vs teacher, pseudo-label quality.

    python benchmarks/uda_diagnose.py                       # every finished run in results/runs
    python benchmarks/uda_diagnose.py --runs detection__uda__s0 detection__source_only__s0
    python benchmarks/uda_diagnose.py --warps               # + what each guidance does to the source objects
    python benchmarks/uda_diagnose.py --bn                  # + each student with BatchNorm statistics re-estimated
    python benchmarks/uda_diagnose.py --round-trip --fwhm 4 # each detector plain and under the training warp's round trip
    python benchmarks/uda_diagnose.py --round-trip --resample-only  # ... and under the interpolation control's (features only)
    python benchmarks/uda_diagnose.py --round-trip-parts    # where that round trip's feature change comes from
    python benchmarks/uda_diagnose.py --scales 1 1.3        # each detector at x s its input size

For each finished run of ``benchmarks/uda_table.py`` (``results/runs/<run>/last.pt`` and its
``config.yaml``), loads the final student and, when the run adapted, the final EMA teacher, and
measures on the synthetic target:

- detection: target ``test`` mAP50 and AP small of each model (2PCNet reports the teacher; the student
  is the model that trained on the pseudo-labels), and the pseudo-labels each would give: its
  detections on the first ``--images`` target ``train`` images above the run's ``uda.threshold``,
  matched to the ground truth the method never sees (``warpadapt.uda.pseudo.pseudo_label_quality``:
  precision, recall, boxes per image at IoU 0.5);
- segmentation: target ``test`` mIoU of each model, and on up to 100 target ``train`` images the share
  of pixels whose max probability passes ``uda.threshold`` (DACS's confidence), their accuracy, how
  much of the image is predicted as road against the truth (self-training on fog tends to grow or lose
  whole stuff classes), and road recall in four bands of image rows from the horizon (far, where the
  instance and static warps magnify) to the bottom (near).

With ``--bn``, each run's final student (segmentation and detection) is also evaluated with its
BatchNorm running statistics re-estimated from plain source / target train images
(``results/diagnose/bn/`` for segmentation, ``results/diagnose/bn_detection/`` for detection, the same
record layout with mAP50 for mIoU; a detector's backbone runs on the images as its transform prepares them).

One JSON per run under ``results/diagnose/`` (runs already there are skipped); ``uda_table.py`` puts
them in docs/RESULTS.md. Evaluation only: nothing trains.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _finished_run(run_dir: Path, recipe: str, threads: int):
    """(the run's config, its final checkpoint) of a finished ``recipe`` run; an unfinished run is an error."""
    import torch

    from warpadapt.uda.checkpoint import load_checkpoint
    from warpadapt.uda.config import load_config

    torch.set_num_threads(threads)
    cfg = load_config(ROOT / "recipes" / f"{recipe}.py", ["--config", str(run_dir / "config.yaml")], default="")
    ckpt = load_checkpoint(run_dir / "last.pt")
    if ckpt["step"] != cfg.train.iters:
        raise ValueError(f"{run_dir}: checkpoint at step {ckpt['step']}, run planned {cfg.train.iters}: unfinished")
    return cfg, ckpt


def diagnose(run_dir: Path, images: int = 200, threads: int = 1) -> dict:
    import torch

    from warpadapt.uda.build import detection_datasets, detector_from_config
    from warpadapt.uda.evaluate import evaluate_detection
    from warpadapt.uda.pseudo import filter_detections, pseudo_label_quality

    cfg, ckpt = _finished_run(run_dir, "twopcnet", threads)
    _, tgt_train, _, tgt_test, classes = detection_datasets(cfg)
    models = {"student": ckpt["student"]}
    if cfg.uda.enabled and cfg.train.iters > cfg.train.burn_in:  # EMATeacher's state: module.<name>
        models["teacher"] = {k.removeprefix("module."): v for k, v in ckpt["teacher"].items()}
    n = min(images, len(tgt_train))
    items = [tgt_train[i] for i in range(n)]
    out = {"run": run_dir.name, "iters": ckpt["step"], "threshold": cfg.uda.threshold, "images": n,
           "target_split": cfg.eval.target_split}
    for name, state in models.items():
        net = detector_from_config(cfg, len(classes) + 1)
        net.load_state_dict(state)
        net.eval()
        res = evaluate_detection(net, tgt_test, classes, batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images)
        dets = []
        with torch.no_grad():
            for i in range(0, n, cfg.eval.batch_size):
                dets += net.detect([it["image"] for it in items[i:i + cfg.eval.batch_size]])
        gt = [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]
        out[name] = {"target_map50": res["mAP50"], "target_ap_small": res["AP_small"],
                     "pseudo": pseudo_label_quality(filter_detections(dets, cfg.uda.threshold), gt),
                     "pseudo_at_0.5": pseudo_label_quality(filter_detections(dets, 0.5), gt)}
        q = out[name]["pseudo"]
        print(f"{run_dir.name} {name}: target mAP50 {100 * res['mAP50']:.1f}; pseudo-labels > {cfg.uda.threshold}: "
              f"{q['pseudo_per_image']:.2f} / image (ground truth {q['gt_per_image']:.2f}), precision "
              f"{100 * q['precision']:.1f}, recall {100 * q['recall']:.1f}", flush=True)
    return out


ROAD_BANDS = ((0.40, 0.55), (0.55, 0.70), (0.70, 0.85), (0.85, 1.0))  # image rows as fractions of H: far -> near


def diagnose_segmentation(run_dir: Path, images: int = 100, threads: int = 1) -> dict:
    """mic runs: the final student and teacher on target test, and the teacher-style pseudo-labels each
    gives on target train (argmax, confident where max probability > uda.threshold)."""
    import torch

    from warpadapt.data.labels import CITYSCAPES_CLASSES, IGNORE_INDEX
    from warpadapt.uda.build import evaluate_segmenter, segmentation_datasets, segmenter_from_config

    cfg, ckpt = _finished_run(run_dir, "mic", threads)
    _, tgt_train, src_val, tgt_test = segmentation_datasets(cfg)
    models = {"student": ckpt["student"]}
    if cfg.uda.enabled:
        models["teacher"] = {k.removeprefix("module."): v for k, v in ckpt["teacher"].items()}
    n = min(images, len(tgt_train))
    out = {"run": run_dir.name, "iters": ckpt["step"], "threshold": cfg.uda.threshold, "images": n,
           "target_split": cfg.eval.target_split}
    road = CITYSCAPES_CLASSES.index("road")
    for name, state in models.items():
        net = segmenter_from_config(cfg)
        net.load_state_dict(state)
        net.eval()
        res = evaluate_segmenter(net, (src_val, tgt_test), cfg)
        confident = correct = valid = road_pred = road_gt = road_tp = 0
        band_gt, band_tp = torch.zeros(len(ROAD_BANDS)), torch.zeros(len(ROAD_BANDS))
        with torch.no_grad():
            for i in range(0, n, cfg.eval.batch_size):
                items = [tgt_train[j] for j in range(i, min(n, i + cfg.eval.batch_size))]
                prob, pred = net(torch.stack([it["image"] for it in items])).softmax(1).max(1)
                gt = torch.stack([it["semantic"] for it in items])
                ok = gt != IGNORE_INDEX
                conf = (prob > cfg.uda.threshold) & ok
                valid += int(ok.sum())
                confident += int(conf.sum())
                correct += int(((pred == gt) & conf).sum())
                road_pred, road_gt = road_pred + int(((pred == road) & ok).sum()), road_gt + int((gt == road).sum())
                road_tp += int(((pred == road) & (gt == road)).sum())
                h = gt.shape[-2]
                for k, (lo, hi) in enumerate(ROAD_BANDS):  # road recall by image row: far (horizon) to near
                    rows = slice(int(lo * h), int(hi * h))
                    band_gt[k] += int((gt[:, rows] == road).sum())
                    band_tp[k] += int(((pred[:, rows] == road) & (gt[:, rows] == road)).sum())
        out[name] = {"target_miou": res["target_miou"], "target_thing_miou": res["target_thing_miou"],
                     "source_miou": res["source_miou"], "target_iou": res["target_iou"],
                     "confident_share": confident / max(1, valid), "confident_accuracy": correct / max(1, confident),
                     "road_pred_share": road_pred / max(1, valid), "road_gt_share": road_gt / max(1, valid),
                     "road_iou_train": road_tp / max(1, road_pred + road_gt - road_tp),
                     "road_recall_by_band": (band_tp / band_gt.clamp_min(1)).tolist(),
                     "road_share_by_band": (band_gt / band_gt.sum().clamp_min(1)).tolist()}
        o = out[name]
        print(f"{run_dir.name} {name}: target mIoU {100 * o['target_miou']:.1f}; confident pixels "
              f"{100 * o['confident_share']:.1f}% at accuracy {100 * o['confident_accuracy']:.1f}%; road predicted on "
              f"{100 * o['road_pred_share']:.1f}% of the pixels (truth {100 * o['road_gt_share']:.1f}%), "
              f"road IoU {100 * o['road_iou_train']:.1f}, road recall far -> near "
              f"{' '.join(f'{100 * r:.0f}' for r in o['road_recall_by_band'])}", flush=True)
    return out


def bn_recalibration(run_dir: Path, images: int = 64, threads: int = 1) -> dict:
    """mic runs: the final student on source val / target test as trained, then with its BatchNorm
    running statistics re-estimated (``warpadapt.uda.bn.recompute_bn_stats``) from ``images`` plain
    source train images, and from ``images`` target train images (AdaBN: unlabelled, as UDA allows).
    If evaluation-time statistics are what holds a row back, the re-estimated rows say how much."""
    import torch

    from warpadapt.uda.bn import recompute_bn_stats
    from warpadapt.uda.build import evaluate_segmenter, segmentation_datasets, segmenter_from_config

    cfg, ckpt = _finished_run(run_dir, "mic", threads)
    src_train, tgt_train, src_val, tgt_test = segmentation_datasets(cfg)
    bs = cfg.eval.batch_size
    net = segmenter_from_config(cfg)
    out = {"run": run_dir.name, "images": images, "bn_stats": cfg.train.get("bn_stats", "all")}
    for name, ds in (("as_trained", None), ("source", src_train), ("target", tgt_train)):
        net.load_state_dict(ckpt["student"])
        if ds is not None:
            n = min(images, len(ds))
            recompute_bn_stats(net, (torch.stack([ds[j]["image"] for j in range(i, min(n, i + bs))])
                                     for i in range(0, n, bs)))
        net.eval()
        res = evaluate_segmenter(net, (src_val, tgt_test), cfg)
        out[name] = {k: res[k] for k in ("target_miou", "target_thing_miou", "source_miou", "target_iou")}
    print(f"{run_dir.name}: target mIoU as trained {100 * out['as_trained']['target_miou']:.1f}, BatchNorm statistics "
          f"from source train {100 * out['source']['target_miou']:.1f}, from target train "
          f"{100 * out['target']['target_miou']:.1f}", flush=True)
    return out


def bn_recalibration_detection(run_dir: Path, images: int = 64, threads: int = 1) -> dict:
    """twopcnet runs: the final student's source val / target test mAP50 as trained, then with its
    BatchNorm running statistics re-estimated (``warpadapt.uda.bn.recompute_bn_stats``) from ``images``
    plain source train images, and from ``images`` target train images (no NightAug, no flip, no warp):
    ``Detector.backbone`` on the images as ``Detector.transform`` resizes, normalises and pads them. The
    student is rebuilt with plain BatchNorm whatever its ``model.norm`` (frozen statistics load into it)."""
    from warpadapt.uda.bn import recompute_bn_stats
    from warpadapt.uda.build import detection_datasets, detector_from_config
    from warpadapt.uda.evaluate import evaluate_detection

    cfg, ckpt = _finished_run(run_dir, "twopcnet", threads)
    src_train, tgt_train, src_val, tgt_test, classes = detection_datasets(cfg)
    bs = cfg.eval.batch_size
    net = detector_from_config(cfg, len(classes) + 1)
    out = {"run": run_dir.name, "images": images, "norm": cfg.model.get("norm", "bn")}
    for name, ds in (("as_trained", None), ("source", src_train), ("target", tgt_train)):
        net.load_state_dict(ckpt["student"])
        if ds is not None:
            n = min(images, len(ds))
            recompute_bn_stats(net, ([ds[j]["image"] for j in range(i, min(n, i + bs))] for i in range(0, n, bs)),
                               forward=lambda m, batch: m.backbone(m.transform(batch)[0].tensors))
        net.eval()
        src, tgt = (evaluate_detection(net, d, classes, batch_size=bs, max_images=cfg.eval.max_images)
                    for d in (src_val, tgt_test))
        out[name] = {"source_map50": src["mAP50"], "target_map50": tgt["mAP50"], "target_ap_small": tgt["AP_small"]}
    print(f"{run_dir.name}: target mAP50 as trained {100 * out['as_trained']['target_map50']:.1f}, BatchNorm statistics "
          f"from source train {100 * out['source']['target_map50']:.1f}, from target train "
          f"{100 * out['target']['target_map50']:.1f}", flush=True)
    return out


def _reported_detector(run_dir: Path, threads: int, instance_fwhm: float | None = None):
    """The model a finished twopcnet run reports (the EMA teacher when it adapted, else the student), in
    eval mode, with Instance-Warp at ``instance_fwhm`` in its backbone when given (it only warps in
    ``_warping_in_eval``); returns (config, model, the record's header, (source val, target test, classes))."""
    from omegaconf import OmegaConf

    from warpadapt.uda.build import detection_datasets, detector_from_config, warp_from_config

    cfg, ckpt = _finished_run(run_dir, "twopcnet", threads)
    _, _, src_val, tgt_test, classes = detection_datasets(cfg)
    adapted = cfg.uda.enabled and cfg.train.iters > cfg.train.burn_in
    state = {k.removeprefix("module."): v for k, v in ckpt["teacher"].items()} if adapted else ckpt["student"]
    warp = None
    if instance_fwhm is not None:
        wcfg = OmegaConf.merge(cfg, {"warp": {"guidance": "instance", "fwhm": float(instance_fwhm), "amplitude_range": None}})
        warp = warp_from_config(wcfg)
    net = detector_from_config(cfg, len(classes) + 1, warp)
    net.load_state_dict(state)
    net.eval()
    out = {"run": run_dir.name, "model": "teacher" if adapted else "student", "guidance": cfg.warp.guidance,
           "warp_stage": cfg.warp.stage, "iters": ckpt["step"]}
    return cfg, net, out, (src_val, tgt_test, classes)


def scale_sweep(run_dir: Path, scales=(1.0, 1.3, 1.6), threads: int = 1) -> dict:
    """twopcnet runs (table runs and burn-in checkpoints): the model the run reports (the EMA teacher
    when it adapted, else the student) on source val and target test with every image resized to
    ``s`` x the recipe's input size for each ``s`` in ``scales`` (``Detector.input_scale``; the
    boxes are scored in the original pixels). A detector whose training warp magnified its objects
    and that learned them at that size scores best at some ``s`` > 1 where an unwarped one does not."""
    from warpadapt.uda.evaluate import evaluate_detection

    cfg, net, out, (src_val, tgt_test, classes) = _reported_detector(run_dir, threads)
    out.update(scales=[float(s) for s in scales], image_size=list(cfg.data.image_size))
    for split, ds in (("target", tgt_test), ("source", src_val)):
        res = []
        for s in scales:
            with net.input_scale(float(s)):
                res.append(evaluate_detection(net, ds, classes, batch_size=cfg.eval.batch_size,
                                              max_images=cfg.eval.max_images))
        out[split] = {"map50": [r["mAP50"] for r in res], "ap_small": [r["AP_small"] for r in res],
                      "ap_medium": [r["AP_medium"] for r in res]}
        print(f"{run_dir.name} {out['model']} {split}: mAP50 at x" + ", x".join(
            f"{s:g} {100 * m:.1f}" for s, m in zip(scales, out[split]["map50"])), flush=True)
    return out


@contextlib.contextmanager
def _warping_in_eval(body):
    """Within the block the wrapped backbone ``body`` warps when given boxes although the model is in
    eval mode (only ``body``'s own flag is set: its BatchNorm layers keep their running statistics).
    A diagnostic of what the heads see in training; evaluation proper never warps."""
    saved = body.training
    body.training = True
    try:
        yield body
    finally:
        body.training = saved


def _detector_batches(net, ds, n: int, batch_size: int):
    """The first ``n`` items of ``ds`` in batches as the detector's transform prepares them: yields
    (items, the transform's ImageList, the original sizes, the ground-truth boxes in the resized pixels)."""
    import torch

    for i in range(0, n, batch_size):
        items = [ds[j] for j in range(i, min(n, i + batch_size))]
        sizes = [tuple(it["image"].shape[-2:]) for it in items]
        il, _ = net.transform([it["image"] for it in items])
        boxes = [it["boxes"].float() * torch.tensor([s[1] / o[1], s[0] / o[0]] * 2)
                 for it, s, o in zip(items, il.image_sizes, sizes)]
        yield items, il, sizes, boxes


def _relative_change(a, b, ref=None) -> list[float]:
    """||a - b|| / ||ref|| (default ref = b) of each image of the batch."""
    ref = b if ref is None else ref
    return ((a - b).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-12)).tolist()


def round_trip_parts(run_dir: Path, fwhm: float = 4.0, images: int = 64, threads: int = 1) -> dict:
    """Where the round trip's change of the backbone features comes from, per level, on the first
    ``images`` source val images of a twopcnet run's reported model (BatchNorm in eval mode). With f the
    backbone, W / U the Instance-Warp (``fwhm``, from the ground-truth boxes) and its unwarp, each part is
    a relative change against f(x), mean over the images:

    - ``total``: U f(W x) - f(x), what the recipe's heads see while it warps (``round_trip``'s number);
    - ``feature_resampling``: U W f(x) - f(x), the loss of resampling a feature map twice at its stride:
      what even a backbone that commuted with the warp would show;
    - ``equivariance``: U f(W x) - U W f(x), how far the backbone is from commuting with the warp
      (total <= the two above, the triangle inequality);
    - ``image_resampling``: f(U W x) - f(x), the backbone on the image warped and unwarped (its
      bilinear blur only, no change of geometry left)."""
    import torch

    cfg, net, out, (src_val, _, _) = _reported_detector(run_dir, threads, instance_fwhm=fwhm)
    body = net.backbone.body
    out.update(fwhm=float(fwhm), images=min(int(images), len(src_val)))
    parts = {k: {} for k in ("total", "feature_resampling", "equivariance", "image_resampling")}  # name -> level -> values
    im, fm = body.warper.method, body.unwarp.method  # the resampling the recipe's warp and unwarp use
    with torch.no_grad():
        for _, il, _, boxes in _detector_batches(net, src_val, out["images"], cfg.eval.batch_size):
            x = il.tensors
            plain = body(x)
            with _warping_in_eval(body):
                rt, w = body(x, boxes, return_warp=True)
            blurred = body(w.unapply(w.apply(x, method=im), method=im))
            for k, f in enumerate(plain):
                resampled = w.unapply(w.apply(f, method=fm), method=fm)
                for name, (a, b) in (("total", (rt[k], f)), ("feature_resampling", (resampled, f)),
                                     ("equivariance", (rt[k], resampled)), ("image_resampling", (blurred[k], f))):
                    parts[name].setdefault(k, []).extend(_relative_change(a, b, ref=f))
    out["strides"] = [int(round(x.shape[-1] / f.shape[-1])) for f in plain]
    out["parts"] = {name: [sum(v) / len(v) for _, v in sorted(levels.items())] for name, levels in parts.items()}
    print(f"{run_dir.name} {out['model']}: backbone levels (stride " + " / ".join(map(str, out["strides"])) + "), "
          + "; ".join(f"{name} " + " / ".join(f"{100 * c:.0f}%" for c in v) for name, v in out["parts"].items()),
          flush=True)
    return out


def round_trip(run_dir: Path, fwhm: float = 4.0, threads: int = 1, resample_only: bool = False) -> dict:
    """twopcnet runs (table runs and burn-in checkpoints): the model the run reports on source val and
    target test as at test time (plain), and with the training warp's round trip in its backbone (each
    image warped by Instance-Warp at ``fwhm`` from its ground-truth boxes, the backbone run on it, every
    level unwarped: what the FPN and heads see while the recipe warps). Also the relative change
    ||unwarp(f(warp(x))) - f(x)|| / ||f(x)|| of every backbone level, mean over the images. A model
    whose score falls under the round trip learned on features its test time never gives it.

    ``resample_only``: the round trip of the interpolation control instead, U W f(x) (the backbone on the
    true image, every level resampled by the warp and back), whatever the run trained with; False: the full
    round trip U f(W x), also for a run that trained as the control."""
    import torch

    from warpadapt.eval import detection_map

    cfg, net, out, (src_val, tgt_test, classes) = _reported_detector(run_dir, threads, instance_fwhm=fwhm)
    body = net.backbone.body
    body.resample_only = bool(resample_only)
    out.update(fwhm=float(fwhm), resample_only=bool(resample_only))
    bs, n_max = cfg.eval.batch_size, cfg.eval.max_images
    for split, ds in (("target", tgt_test), ("source", src_val)):
        n = len(ds) if n_max is None else min(int(n_max), len(ds))
        preds = {"plain": [], "round_trip": []}
        targets, change = [], None
        with torch.no_grad():
            for items, il, sizes, boxes in _detector_batches(net, ds, n, bs):
                plain = body(il.tensors)
                with _warping_in_eval(body):
                    rt = body(il.tensors, boxes)
                change = change or [[] for _ in plain]
                for level, (a, b) in enumerate(zip(rt, plain)):
                    change[level] += _relative_change(a, b)
                for name, levels in (("plain", plain), ("round_trip", rt)):
                    feats = net.backbone.pyramid(levels)
                    props, _ = net.rpn(il, feats)
                    dets, _ = net.roi_heads(feats, props, il.image_sizes)
                    preds[name] += [{k: d[k] for k in ("boxes", "scores", "labels")}
                                    for d in net.transform.postprocess(dets, il.image_sizes, sizes)]
                targets += [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]
        out[split] = {m: detection_map(p, targets, classes)["mAP50"] for m, p in preds.items()}
        out[split]["feature_change"] = [sum(c) / len(c) for c in change]
        print(f"{run_dir.name} {out['model']} {split}: mAP50 plain {100 * out[split]['plain']:.1f}, under the warp's "
              f"{'feature resampling' if resample_only else 'round trip'} (FWHM {fwhm:g}) "
              f"{100 * out[split]['round_trip']:.1f}; backbone levels change by "
              + " / ".join(f"{100 * c:.0f}%" for c in out[split]["feature_change"]), flush=True)
    return out


def warp_stats(pair: str = "synthetic_day2night", images: int = 200, size=(128, 256),
               guidances=("instance", "static", "geometric"), fwhm: float | None = None) -> dict:
    """What each guidance does to the ground-truth objects of ``images`` source training scenes (the
    recipes' default warp options; ``fwhm``: the instance guidance's, None = its default): the objects' share of the pixels before / after the warp, and
    the per-box area zoom (warped area / original area; < 1: the box is shrunk)."""
    import torch

    from warpadapt import SaliencyWarp, fit_static_prior
    from warpadapt.data import SyntheticDrivingDataset, get_pair
    from warpadapt.measure import pixel_share

    ds = SyntheticDrivingDataset(get_pair(pair), "source", "train", size=tuple(size), length=images)
    boxes = [ds[i]["boxes"].float() for i in range(images)]
    prior = fit_static_prior(boxes, tuple(size))  # the recipes fit it on their source training boxes too
    blank = torch.zeros(1, 3, *size)
    out = {"pair": pair, "images": images, "size": list(size),
           "instance_fwhm": float(fwhm if fwhm is not None else SaliencyWarp("instance").fwhm),
           "boxes": sum(len(b) for b in boxes), "share_before": sum(pixel_share(b, size) for b in boxes) / images}
    for g in guidances:
        module = SaliencyWarp(g, prior=prior if g == "static" else None,
                              **({"fwhm": fwhm} if g == "instance" and fwhm is not None else {}))
        shares, zooms, small, bands = [], [], [], []
        h, w = size
        strips = torch.tensor([[0.0, lo * h, float(w), hi * h] for lo, hi in ROAD_BANDS])
        for b in boxes:
            _, warp = module(blank, [b])
            shares.append(pixel_share(b, size, warp))
            ws = warp.forward_boxes([strips], tuple(size))[0]  # full-width row bands: their vertical zoom
            bands.append(((ws[:, 3] - ws[:, 1]) / (strips[:, 3] - strips[:, 1])).tolist())
            if len(b):
                wb = warp.forward_boxes([b], tuple(size))[0]
                area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                zooms += ((wb[:, 2] - wb[:, 0]) * (wb[:, 3] - wb[:, 1]) / area.clamp_min(1e-6)).tolist()
                small += (area < 32 ** 2).tolist()
        z = torch.tensor(zooms)
        zs = z[torch.tensor(small)]
        out[g] = {"share_after": sum(shares) / images, "zoom_median": float(z.median()),
                  "zoom_p10": float(z.quantile(0.1)), "shrunk": float((z < 1).float().mean()),
                  "small_zoom_median": float(zs.median()) if len(zs) else float("nan"),
                  "small_shrunk": float((zs < 1).float().mean()) if len(zs) else float("nan"),
                  "row_band_zoom": torch.tensor(bands).mean(0).tolist()}
        print(f"{g}: object share {100 * out['share_before']:.1f}% -> {100 * out[g]['share_after']:.1f}%, box area zoom "
              f"median {out[g]['zoom_median']:.2f} (10th percentile {out[g]['zoom_p10']:.2f}), shrunk "
              f"{100 * out[g]['shrunk']:.0f}% of boxes; small boxes: zoom median {out[g]['small_zoom_median']:.2f}; "
              f"height of the row bands far -> near x {' '.join(f'{z:.2f}' for z in out[g]['row_band_zoom'])}",
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="the table's results folder (runs/ inside)")
    ap.add_argument("--runs", nargs="+", default=None, help="run names (default: every finished run in runs/)")
    ap.add_argument("--images", type=int, default=200, help="target train images for the pseudo-label check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warps", action="store_true", help="also what each guidance does to the source objects")
    ap.add_argument("--bn", action="store_true", help="also each student with BatchNorm statistics re-estimated "
                    "from source / target train images (results/diagnose/bn/, bn_detection/)")
    ap.add_argument("--fwhm", type=float, default=None, help="with --warps: the instance guidance's FWHM "
                    "(default: SaliencyWarp's; the table's Instance-Warp rows use the FWHM chosen on val)")
    ap.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                    help="only the test-time scale sweep: each detection run's reported model on source val and "
                         "target test at S x its input size (results/diagnose/scales/), e.g. --scales 1 1.3 1.6")
    ap.add_argument("--round-trip", action="store_true",
                    help="only the warp round trip: each detection run's reported model on source val and target "
                         "test plain and with its backbone under Instance-Warp at --fwhm (default 4) from the "
                         "ground-truth boxes (results/diagnose/round_trip/)")
    ap.add_argument("--resample-only", action="store_true",
                    help="with --round-trip: the interpolation control's round trip instead, the backbone on the "
                         "true image and its levels resampled by the warp and back (results/diagnose/round_trip_resample/)")
    ap.add_argument("--round-trip-parts", action="store_true",
                    help="only where the round trip's feature change comes from (resampling the features vs the "
                         "backbone not commuting with the warp), per level, on up to 64 source val images of each "
                         "detection run's reported model (results/diagnose/round_trip_parts/, or round_trip_parts_fwhm<F>/ "
                         "at another --fwhm)")
    a = ap.parse_args(argv)
    if a.images < 1:
        ap.error(f"--images must be >= 1, got {a.images}")
    if a.scales is not None and not all(0.0 < s <= 8.0 for s in a.scales):
        ap.error(f"--scales: expected numbers in (0, 8], got {a.scales}")
    if a.warps and not (a.results / "diagnose" / "warps.json").exists():
        import torch
        torch.set_num_threads(a.threads)
        rec = warp_stats(images=a.images, fwhm=a.fwhm)
        (a.results / "diagnose").mkdir(parents=True, exist_ok=True)
        (a.results / "diagnose" / "warps.json").write_text(json.dumps(rec, indent=2) + "\n")
    names = a.runs or sorted(p.name for p in (a.results / "runs").glob("*__*__s*") if (p / "final.json").is_file())
    fwhm = 4.0 if a.fwhm is None else a.fwhm
    if a.scales is not None:
        return _each_detection_run(a.results, names, "scales", lambda r: scale_sweep(r, a.scales, a.threads))
    if a.resample_only and not a.round_trip:
        ap.error("--resample-only: only with --round-trip")
    if a.round_trip:
        return _each_detection_run(a.results, names, "round_trip_resample" if a.resample_only else "round_trip",
                                   lambda r: round_trip(r, fwhm, a.threads, a.resample_only))
    if a.round_trip_parts:
        return _each_detection_run(a.results, names, "round_trip_parts" + ("" if fwhm == 4.0 else f"_fwhm{fwhm:g}"),
                                   lambda r: round_trip_parts(r, fwhm, min(a.images, 64), a.threads))
    for name in names:
        dest = a.results / "diagnose" / f"{name}.json"
        if dest.exists():
            continue
        run_dir = a.results / "runs" / name
        if not (run_dir / "last.pt").is_file():
            print(f"{name}: no {run_dir / 'last.pt'}; skipped", file=sys.stderr)
            continue
        seg = json.loads((run_dir / "final.json").read_text()).get("target_miou") is not None
        rec = diagnose_segmentation(run_dir, min(a.images, 100), a.threads) if seg else diagnose(run_dir, a.images, a.threads)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, dest)
    for name in names if a.bn else ():
        run_dir = a.results / "runs" / name
        if not (run_dir / "last.pt").is_file():
            continue
        seg = json.loads((run_dir / "final.json").read_text()).get("target_miou") is not None
        dest = a.results / "diagnose" / ("bn" if seg else "bn_detection") / f"{name}.json"
        if dest.exists():
            continue
        rec = (bn_recalibration if seg else bn_recalibration_detection)(run_dir, threads=a.threads)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, dest)
    return 0


def _each_detection_run(results: Path, names: list[str], subdir: str, measure) -> int:
    """``measure(run_dir)`` of every detection run in ``names`` that has a final checkpoint and no record
    in ``results/diagnose/<subdir>/`` yet; each record written atomically as it is measured."""
    for name in names:
        run_dir = results / "runs" / name
        dest = results / "diagnose" / subdir / f"{name}.json"
        if dest.exists() or not name.startswith(("detection__", "twopcnet__")):
            continue
        if not (run_dir / "last.pt").is_file():
            print(f"{name}: no {run_dir / 'last.pt'}; skipped", file=sys.stderr)
            continue
        rec = measure(run_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
