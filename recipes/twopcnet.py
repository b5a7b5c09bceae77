"""2PCNet + Instance-Warp: domain-adaptive detection over any timm backbone, one command per pair.

    python recipes/twopcnet.py                                    # synthetic day -> night (default)
    python recipes/twopcnet.py --config synthetic_clear2fog warp.guidance=none
    python recipes/twopcnet.py --config bdd100k_day2night data.root=/data/bdd100k model.backbone=convnext_tiny
    torchrun --nproc_per_node=4 recipes/twopcnet.py --config bdd100k_clear2rainy data.root=/data/bdd100k

Method (2PCNet, CVPR 2023, + Instance-Warp): a Faster R-CNN student trains on labelled source
images and a NightAug copy of each (the only forward that is warped: saliency from the ground-truth
boxes, features unwarped before the heads). After ``train.burn_in`` iterations the teacher becomes a
copy of the student and then follows it by EMA. Phase one: the teacher's confident detections on a
target image are pseudo-labels for the student's RPN objectness and join the student's proposals.
Phase two: the teacher re-scores the student's sampled proposals (on its own features of the same
target image); the student's class distribution follows it through a confidence-weighted KL.
Outputs in ``out_dir``: config.yaml, metrics.jsonl, curves.png, last.pt, final.json.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from warpadapt import GUIDANCES, fit_static_prior, load_prior, save_prior
from warpadapt.data import BDD100KDetection, CocoDetection, SyntheticDrivingDataset, get_pair, list_pairs
from warpadapt.models import Detector
from warpadapt.uda.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from warpadapt.uda.config import check_choice, check_range, load_config, save_config
from warpadapt.uda.dist import barrier, cleanup_distributed, setup_distributed, wrap_ddp
from warpadapt.uda.data import infinite_loader
from warpadapt.uda.ema import EMATeacher
from warpadapt.uda.evaluate import evaluate_detection
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.nightaug import night_aug
from warpadapt.uda.pseudo import filter_detections

PAIR_KINDS = ("inline", "bdd100k", "coco")


def build_datasets(cfg):
    """(source train, target train, source val, target val, class names) for ``cfg.data``."""
    d = cfg.data
    if d.pair in list_pairs() or d.pair == "inline":
        pair = get_pair(d.inline if d.pair == "inline" else d.pair)
        size = tuple(d.image_size)
        make = lambda dom, split, n: SyntheticDrivingDataset(pair, dom, split, size=size, length=n)  # noqa: E731
        sets = [make("source", "train", d.train_images), make("target", "train", d.train_images),
                make("source", "val", d.val_images), make("target", cfg.eval.target_split, d.val_images)]
        return (*sets, list(sets[0].classes))
    if d.root is None:
        raise ValueError(f"config: data.root: data.pair={d.pair!r} reads a dataset folder; pass data.root=/path")
    root = Path(d.root)
    if d.pair == "bdd100k":  # one BDD100K folder, the domains picked by attribute filters
        filters = lambda f: {k: v for k, v in f.items() if v is not None}  # noqa: E731
        sets = [BDD100KDetection(root, split, **filters(dom))
                for split in ("train", "val") for dom in (d.source, d.target)]
    else:  # coco: an (image folder, json) per domain and split, relative to data.root
        first = CocoDetection(root / d.source.train_images, root / d.source.train_json)
        coco = lambda dom, split: CocoDetection(  # noqa: E731
            root / dom[f"{split}_images"], root / dom[f"{split}_json"], classes=first.classes)
        sets = [first, coco(d.target, "train"), coco(d.source, "val"), coco(d.target, "val")]
    return (*sets, list(sets[0].classes))


def build_detector(cfg, num_classes, warp_options=None):
    """The student of ``cfg.model`` (``num_classes`` with background); ``warp_options`` None: no warp."""
    m = cfg.model
    return Detector(
        m.backbone, num_classes, out_indices=m.out_indices, pretrained_file=m.pretrained_file,
        guidance=cfg.warp.guidance if warp_options is not None else "none", warp_options=warp_options or {},
        fpn_channels=m.fpn_channels, anchor_scale=m.anchor_scale, min_size=cfg.data.image_size[0],
        max_size=cfg.data.image_size[1], representation_size=m.representation_size,
        rpn_batch_size_per_image=m.rpn_batch_size, box_batch_size_per_image=m.roi_batch_size,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_train, rpn_post_nms_top_n_train=m.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_test, rpn_post_nms_top_n_test=m.rpn_post_nms_test,
        box_score_thresh=m.score_thresh, box_detections_per_img=m.detections_per_img)


def collate(items):
    """A batch as lists (images may differ in size on real data)."""
    return [it["image"] for it in items], [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]


def main(argv=None):
    # ------------------------------------------------------------------ config
    cfg = load_config("twopcnet", sys.argv[1:] if argv is None else argv, default="synthetic_day2night")
    check_choice(cfg, "warp.guidance", GUIDANCES)
    check_choice(cfg, "warp.stage", ("burn_in", "always"))
    check_choice(cfg, "train.optimizer", ("sgd", "adamw"))
    check_choice(cfg, "data.pair", tuple(list_pairs()) + PAIR_KINDS)
    check_choice(cfg, "eval.target_split", ("val", "test"))
    check_choice(cfg, "eval.model", ("auto", "student", "teacher"))
    if cfg.eval.model == "teacher" and not cfg.uda.enabled:
        raise ValueError("config: eval.model: teacher needs uda.enabled=true (source-only training has no teacher)")
    if cfg.data.pair in ("bdd100k", "coco") and cfg.eval.target_split != "val":
        raise ValueError("config: eval.target_split: dataset folders are evaluated on their val split; use val")
    for key, lo, hi, integer in (("train.iters", 1, None, True), ("train.burn_in", 0, None, True),
                                 ("train.batch_size", 1, None, True), ("train.lr", 0, None, False),
                                 ("train.warmup", 0, None, True), ("eval.every", 0, None, True),
                                 ("uda.threshold", 0, 1, False), ("uda.ema_keep_rate", 0, 1, False),
                                 ("uda.consistency_weight", 0, None, False), ("warp.fwhm", 1e-6, None, False)):
        check_range(cfg, key, lo, hi, integer=integer)
    if len(cfg.data.image_size) != 2 or min(cfg.data.image_size) < 16:
        raise ValueError(f"config: data.image_size: expected [H, W] with H, W >= 16, got {list(cfg.data.image_size)}")
    out_dir = Path(cfg.out_dir)
    tc, uc = cfg.train, cfg.uda

    # ------------------------------------------------------------------ set-up
    info = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(tc.seed + info.rank)
    if info.is_main:
        save_config(cfg, out_dir)

    # ------------------------------------------------------------------ data
    src_train, tgt_train, src_val, tgt_val, classes = build_datasets(cfg)

    # ------------------------------------------------------------------ models
    warp_options = dict(fwhm=cfg.warp.fwhm, bandwidth_scale=cfg.warp.bandwidth_scale,
                        amplitude_scale=cfg.warp.amplitude_scale, grid_size=tuple(cfg.warp.grid_size))
    if cfg.warp.guidance == "static":  # FOVEA's static prior: mean instance saliency of the source boxes
        prior_path = out_dir / "static_prior.npz"
        if info.is_main and not prior_path.exists():
            n = min(len(src_train), cfg.warp.prior_images)
            items = [src_train[i] for i in range(n)]
            prior = fit_static_prior([it["boxes"] for it in items], [tuple(it["image"].shape[-2:]) for it in items],
                                     tuple(cfg.warp.grid_size), cfg.warp.bandwidth_scale, cfg.warp.amplitude_scale)
            save_prior(prior_path, prior, images=n)
        barrier()
        warp_options["prior"] = load_prior(prior_path)
    student = build_detector(cfg, len(classes) + 1, warp_options).to(info.device)
    teacher = EMATeacher(student)
    model = wrap_ddp(student, info)
    params = [p for p in student.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    # LR: linear warm-up, then x0.1 at the FIXED iterations train.lr_steps. The schedule does not depend
    # on train.iters, so a run stopped at iteration k and resumed with a larger train.iters follows
    # exactly the same curve as one straight run (a cosine over train.iters would not).
    lr_at = lambda it: min(1.0, (it + 1) / max(1, tc.warmup)) * 0.1 ** sum(it >= s for s in tc.lr_steps)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    nightaug_gen = torch.Generator().manual_seed(tc.seed * 1000 + info.rank)

    # ------------------------------------------------------------------ resume
    start = 0
    ckpt_path = out_dir / "last.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if len(ckpt["rng"]) != info.world_size:
            raise ValueError(f"resume: {ckpt_path} was written by {len(ckpt['rng'])} processes, this run has "
                             f"{info.world_size}; resume with the same number (or start a new out_dir)")
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"][info.rank])
        nightaug_gen.set_state(ckpt["nightaug"][info.rank])
        start = ckpt["iteration"]
    logger = MetricsLogger(out_dir, enabled=info.is_main, resume_step=start if start else None)
    src_iter = infinite_loader(src_train, tc.batch_size, seed=tc.seed, info=info, start_step=start,
                               collate_fn=collate, num_workers=cfg.data.workers)
    tgt_iter = infinite_loader(tgt_train, tc.batch_size, seed=tc.seed + 1, info=info,
                               start_step=max(0, start - tc.burn_in), collate_fn=collate,
                               num_workers=cfg.data.workers) if uc.enabled else None

    def evaluated(step):
        """eval.model=auto: the teacher once it exists (2PCNet evaluates the teacher), the student before."""
        use_teacher = cfg.eval.model == "teacher" or (cfg.eval.model == "auto" and uc.enabled)
        return teacher.module if use_teacher and step > tc.burn_in else student

    def evaluate(step):
        net = evaluated(step)
        kw = dict(device=info.device, batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, info=info)
        src, tgt = evaluate_detection(net, src_val, classes, **kw), evaluate_detection(net, tgt_val, classes, **kw)
        return {"source_map50": src["mAP50"], "target_map50": tgt["mAP50"], "_src": src, "_tgt": tgt}

    def save(step):
        rngs = [None] * info.world_size
        state = (rng_state(), nightaug_gen.get_state())
        if info.enabled:
            torch.distributed.all_gather_object(rngs, state)
        else:
            rngs = [state]
        if info.is_main:
            save_checkpoint(ckpt_path, {"student": student.state_dict(), "teacher": teacher.state_dict(),
                                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                        "rng": [r[0] for r in rngs], "nightaug": [r[1] for r in rngs],
                                        "iteration": step, "config": OmegaConf.to_container(cfg)})
        barrier()

    # ------------------------------------------------------------------ training loop
    model.train()
    bar = tqdm(range(start, tc.iters), initial=start, total=tc.iters, disable=not info.is_main, desc="2pcnet")
    train_time, cpu_time, n_timed = 0.0, 0.0, 0
    for it in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        adapting = uc.enabled and it >= tc.burn_in
        warp = cfg.warp.guidance != "none" and (cfg.warp.stage == "always" or it < tc.burn_in)

        # (a) source + NightAug copy, supervised; the ONLY warped forward (boxes = ground truth)
        images, targets = next(src_iter)
        images = [x.to(info.device) for x in images]
        targets = [{k: v.to(info.device) for k, v in t.items()} for t in targets]
        if uc.nightaug:
            same = len({x.shape for x in images}) == 1
            dark = list(night_aug(torch.stack(images), nightaug_gen)) if same else \
                [night_aug(x[None], nightaug_gen)[0] for x in images]
            images, targets = images + dark, targets + targets
        out = model(images, targets, warp=warp)
        losses = dict(out.losses)
        loss = sum(losses.values())

        if adapting:
            if it == tc.burn_in:  # end of burn-in: the teacher starts as a copy of the student
                teacher.reset(student)
            # (b) teacher pseudo-labels on the target image (eval mode: never warped)
            t_images, _ = next(tgt_iter)
            t_images = [x.to(info.device) for x in t_images]
            with torch.no_grad():
                detections, _, t_feats = teacher.module.detect(t_images, return_features=True)
                pseudo = filter_detections(detections, uc.threshold)
            # (c) student on the same target image, not warped. Phase one: pseudo-labels train the RPN
            # objectness (box regression weight 0) and are appended to the proposals (RoI sampling).
            t_out = model(t_images, pseudo, warp=False, roi_loss=False)
            losses["loss_rpn_pseudo"] = uc.rpn_weight * t_out.losses["loss_objectness"]
            # Phase two: the teacher re-scores the student's sampled proposals on its own features;
            # KL(p_teacher || p_student) weighted by the teacher's max class probability.
            with torch.no_grad():
                # same transform, so the teacher's features of t_images align with the student's ImageList
                p_t = F.softmax(teacher.module.rescore(t_out.images, t_out.proposals, t_feats), dim=1)
            log_p_s = F.log_softmax(t_out.class_logits, dim=1)
            kl = (p_t * (p_t.clamp_min(1e-8).log() - log_p_s)).sum(1)
            losses["loss_consistency"] = uc.consistency_weight * (p_t.max(1).values * kl).mean()
            losses["pseudo_per_image"] = torch.tensor(sum(len(p["boxes"]) for p in pseudo) / len(pseudo))
            loss = loss + losses["loss_rpn_pseudo"] + losses["loss_consistency"]

        # (d) backward and step
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at iteration {it}: lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        scheduler.step()
        loss = loss.detach()

        # (e) EMA teacher
        if adapting:
            teacher.update(student, uc.ema_keep_rate)

        # (f) log, evaluate, checkpoint
        step = it + 1
        train_time += time.perf_counter() - t0
        cpu_time += time.process_time() - c0
        n_timed += 1
        lr = optimizer.param_groups[0]["lr"]
        if info.is_main and (step % tc.log_every == 0 or step == tc.iters):
            scalars = {k: float(v.detach()) for k, v in losses.items()}
            logger.log(step, "train", loss=float(loss), lr=lr, seconds_per_iter=train_time / n_timed, **scalars)
            shown = {k[5:]: f"{v:.3f}" for k, v in scalars.items() if k.startswith("loss_")}
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.2g}", **shown)
        if cfg.eval.every and step % cfg.eval.every == 0 and step < tc.iters:
            res = evaluate(step)
            logger.log(step, "eval", source_map50=res["source_map50"], target_map50=res["target_map50"])
            save(step)
    bar.close()

    # ------------------------------------------------------------------ final evaluation and outputs
    if start < tc.iters:
        save(tc.iters)
    t_eval = time.perf_counter()
    res = evaluate(tc.iters)
    t_eval = time.perf_counter() - t_eval
    if start < tc.iters:  # a finished run resumed again: its final eval is already logged
        logger.log(tc.iters, "eval", source_map50=res["source_map50"], target_map50=res["target_map50"])
    tgt, src = res["_tgt"], res["_src"]
    final = {"source_map50": src["mAP50"], "target_map50": tgt["mAP50"], "target_ap": tgt["AP"],
             "target_ap_small": tgt["AP_small"], "target_ap_medium": tgt["AP_medium"],
             "target_ap_large": tgt["AP_large"], "target_ap50_per_class": tgt["AP50_per_class"],
             "source_ap50_per_class": src["AP50_per_class"],
             "seconds_per_iter": train_time / n_timed if n_timed else math.nan, "iters": tc.iters,
             "cpu_seconds_per_iter": cpu_time / n_timed if n_timed else math.nan,  # all threads
             "evaluated": "teacher" if evaluated(tc.iters) is teacher.module else "student",
             "guidance": cfg.warp.guidance, "warp_stage": cfg.warp.stage, "uda": bool(uc.enabled),
             "world_size": info.world_size, "eval_images": cfg.eval.max_images,
             "eval_seconds": t_eval, "target_split": cfg.eval.target_split}
    logger.write_json("final.json", final)
    logger.plot()
    if info.is_main:
        print(f"source mAP50 {100 * final['source_map50']:.1f}  target mAP50 {100 * final['target_map50']:.1f}"
              f"  ({final['seconds_per_iter']:.2f} s/iter)  -> {out_dir / 'final.json'}")
    cleanup_distributed()
    return final


if __name__ == "__main__":
    main()
