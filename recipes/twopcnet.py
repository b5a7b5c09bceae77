"""2PCNet + Instance-Warp: domain-adaptive detection over any timm backbone, one command per pair.

    python recipes/twopcnet.py                                    # synthetic day -> night (default)
    python recipes/twopcnet.py --config synthetic_clear2fog warp.guidance=none
    python recipes/twopcnet.py model.backbone=pvt_v2_b0 train.seed=1             # any timm backbone
    python recipes/twopcnet.py --config bdd100k_day2night data.root=/data/bdd100k model.backbone=convnext_tiny
    torchrun --nproc_per_node=4 recipes/twopcnet.py --config bdd100k_clear2rainy data.root=/data/bdd100k
    python recipes/twopcnet.py --help                             # every key, its default and what it does

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
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from warpadapt.uda.build import detection_datasets, detector_from_config, warp_from_config
from warpadapt.uda.cli import run
from warpadapt.uda.config import check_choice, check_range, load_config
from warpadapt.uda.data import infinite_loader
from warpadapt.uda.dist import cleanup_distributed, wrap_ddp
from warpadapt.uda.ema import EMATeacher
from warpadapt.uda.evaluate import evaluate_detection
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.nightaug import night_aug
from warpadapt.uda.pseudo import filter_detections
from warpadapt.uda.run import RunState, check_common, start_run, static_prior


def check(cfg) -> None:
    """This recipe's keys (the shared ones: check_common; warp options: SaliencyWarp; data: the builders)."""
    check_common(cfg)
    check_choice(cfg, "warp.stage", ("burn_in", "always"))
    check_choice(cfg, "train.optimizer", ("sgd", "adamw"))
    check_range(cfg, "train.burn_in", 0, integer=True)
    for key, hi in (("uda.threshold", 1), ("uda.ema_keep_rate", 1), ("uda.consistency_weight", None),
                    ("uda.rpn_weight", None)):
        check_range(cfg, key, 0, hi)


def collate(items):
    """A batch as lists (images may differ in size on real data)."""
    return [it["image"] for it in items], [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]


def consistency_loss(student_logits, teacher_logits):
    """Phase two: KL(p_teacher || p_student) per box, weighted by the teacher's max class probability."""
    p_t = F.softmax(teacher_logits, dim=1)
    kl = (p_t * (p_t.clamp_min(1e-8).log() - F.log_softmax(student_logits, dim=1))).sum(1)
    return (p_t.max(1).values * kl).mean()


def main(argv=None):
    # ------------------------------------------------------------------ config
    cfg = load_config(__file__, argv, default="synthetic_day2night")
    check(cfg)
    tc, uc = cfg.train, cfg.uda

    # ------------------------------------------------------------------ set-up
    info, out_dir, resuming = start_run(cfg)
    torch.manual_seed(tc.seed + info.rank)

    # ------------------------------------------------------------------ data
    src_train, tgt_train, src_val, tgt_val, classes = detection_datasets(cfg)

    # ------------------------------------------------------------------ models
    warp = warp_from_config(cfg, static_prior(cfg, src_train, out_dir, info))  # built once, from cfg.warp
    student = detector_from_config(cfg, len(classes) + 1, warp).to(info.device)
    teacher = EMATeacher(student)
    model = wrap_ddp(student, info)
    params = [p for p in student.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    # LR: linear warm-up, then x0.1 at the FIXED iterations train.lr_steps (independent of train.iters,
    # so a run stopped at k and resumed with a larger train.iters follows the same curve as a straight one)
    lr_at = lambda it: min(1.0, (it + 1) / max(1, tc.warmup)) * 0.1 ** sum(it >= s for s in tc.lr_steps)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    nightaug_gen = torch.Generator().manual_seed(tc.seed * 1000 + info.rank)

    # ------------------------------------------------------------------ resume
    state = RunState(out_dir / "last.pt", info, cfg, generators={"nightaug": nightaug_gen}, student=student,
                     teacher=teacher, optimizer=optimizer, scheduler=scheduler)
    start = state.load() if resuming else 0
    logger = MetricsLogger(out_dir, enabled=info.is_main, resume_step=start if start else None)
    src_iter = infinite_loader(src_train, tc.batch_size, seed=tc.seed, info=info, start_step=start,
                               collate_fn=collate, num_workers=cfg.data.workers)
    tgt_iter = infinite_loader(tgt_train, tc.batch_size, seed=tc.seed + 1, info=info,
                               start_step=max(0, start - tc.burn_in), collate_fn=collate,
                               num_workers=cfg.data.workers) if uc.enabled else None
    # eval.model=auto: the teacher once it exists (2PCNet evaluates the teacher), the student before
    use_teacher = cfg.eval.model == "teacher" or (cfg.eval.model == "auto" and uc.enabled)
    evaluated = lambda step: teacher.module if use_teacher and step > tc.burn_in else student  # noqa: E731

    def evaluate(step):
        kw = dict(device=info.device, batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, info=info)
        return [evaluate_detection(evaluated(step), ds, classes, **kw) for ds in (src_val, tgt_val)]

    # ------------------------------------------------------------------ training loop
    model.train()
    bar = tqdm(range(start, tc.iters), initial=start, total=tc.iters, disable=not info.is_main, desc="2pcnet")
    train_time, cpu_time, n_timed = 0.0, 0.0, 0
    for it in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        adapting = uc.enabled and it >= tc.burn_in

        # (a) source + NightAug copy, supervised; the ONLY warped forward (boxes = ground truth)
        images, targets = next(src_iter)
        images = [x.to(info.device) for x in images]
        targets = [{k: v.to(info.device) for k, v in t.items()} for t in targets]
        if uc.nightaug:
            same = len({x.shape for x in images}) == 1
            dark = list(night_aug(torch.stack(images), nightaug_gen)) if same else \
                [night_aug(x[None], nightaug_gen)[0] for x in images]
            images, targets = images + dark, targets + targets
        out = model(images, targets, warp=cfg.warp.stage == "always" or it < tc.burn_in)
        losses = dict(out.losses)
        loss = sum(losses.values())

        if adapting:
            if it == tc.burn_in:  # end of burn-in: the teacher starts as a copy of the student
                teacher.reset(student)
            # (b) teacher pseudo-labels on the target image (eval mode: never warped)
            t_images = [x.to(info.device) for x in next(tgt_iter)[0]]
            with torch.no_grad():
                detections, _, t_feats = teacher.module.detect(t_images, return_features=True)
                pseudo = filter_detections(detections, uc.threshold)
            # (c) student on the same target image, not warped. Phase one: pseudo-labels train the RPN
            # objectness (box regression weight 0) and are appended to the proposals (RoI sampling).
            t_out = model(t_images, pseudo, warp=False, roi_loss=False)
            losses["loss_rpn_pseudo"] = uc.rpn_weight * t_out.losses["loss_objectness"]
            # Phase two: the teacher re-scores the student's sampled proposals on its own features (same
            # transform, so its features of t_images align with the student's ImageList)
            with torch.no_grad():
                t_logits = teacher.module.rescore(t_out.images, t_out.proposals, t_feats)
            losses["loss_consistency"] = uc.consistency_weight * consistency_loss(t_out.class_logits, t_logits)
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
            src, tgt = evaluate(step)
            logger.log(step, "eval", source_map50=src["mAP50"], target_map50=tgt["mAP50"])
            state.save(step)
    bar.close()

    # ------------------------------------------------------------------ final evaluation and outputs
    if start < tc.iters:
        state.save(tc.iters)
    t_eval = time.perf_counter()
    src, tgt = evaluate(tc.iters)
    t_eval = time.perf_counter() - t_eval
    if start < tc.iters:  # a finished run resumed again: its final eval is already logged
        logger.log(tc.iters, "eval", source_map50=src["mAP50"], target_map50=tgt["mAP50"])
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
    run(main)
