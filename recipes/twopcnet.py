"""2PCNet + Instance-Warp: domain-adaptive detection over any timm backbone, one command per pair.

    python recipes/twopcnet.py                                    # synthetic day -> night (default)
    python recipes/twopcnet.py --config synthetic_clear2fog warp.guidance=none
    python recipes/twopcnet.py model.backbone=pvt_v2_b0 train.seed=1             # any timm backbone
    python recipes/twopcnet.py --config bdd100k_day2night data.root=/data/bdd100k model.backbone=convnext_tiny
    torchrun --nproc_per_node=4 recipes/twopcnet.py --config bdd100k_clear2rainy data.root=/data/bdd100k
    python recipes/twopcnet.py --help                             # every key, its default and what it does

Method (2PCNet, CVPR 2023, + Instance-Warp; docs/method.md section 6): a Faster R-CNN student trains
on labelled source images (flipped with p 0.5) and a NightAug copy of each; during burn-in that is the
only forward and it is warped (saliency from the ground-truth boxes, features unwarped before the
heads). After ``train.burn_in`` iterations the teacher becomes a copy of the student and then follows
it by EMA. Phase one: the teacher's confident detections on a target image are pseudo-labels for the
student's RPN objectness and join the student's proposals. Phase two: the student's detections among
its sampled proposals pick the proposals the teacher re-scores (on its own features of the same target
image); the student's class distribution on them follows the teacher's through a confidence-weighted
KL. Optionally the student sees the target image smaller (2PCNet's student-scale curriculum).
Outputs in ``out_dir``: config.yaml, metrics.jsonl, curves.png, last.pt, final.json.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import resize_boxes
from tqdm.auto import tqdm

from warpadapt.models.detector import NORMS
from warpadapt.uda.build import detection_datasets, detector_from_config, warp_from_config
from warpadapt.uda.cli import run
from warpadapt.uda.config import check_choice, check_range, load_config
from warpadapt.uda.data import infinite_loader
from warpadapt.uda.dist import all_gather_objects, cleanup_distributed, rank0_buffers, weights_digest, wrap_ddp
from warpadapt.uda.ema import EMATeacher
from warpadapt.uda.evaluate import evaluate_detection
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.nightaug import night_aug, random_hflip, random_vertical_rescale
from warpadapt.uda.pseudo import filter_detections
from warpadapt.uda.run import (MixedPrecision, RunState, check_common, compile_backbone, log_values, peak_memory_mb,
                               scaled_lr, set_norm, start_run, static_prior, throughput_switches, warp_amplitude)


#: 2PCNet's student-scale curriculum (``uda.student_scale``): the values a mapping may leave out.
SCALE_DEFAULTS = {"steps": [], "sigma": 0.15, "floor": 0.4, "min_area": 16.0}


def check(cfg) -> None:
    """This recipe's keys (the shared ones: check_common; warp options: SaliencyWarp; data: the builders)."""
    check_common(cfg)
    for key, choices in (("warp.stage", ("burn_in", "always")), ("train.optimizer", ("sgd", "adamw")),
                         ("model.norm", NORMS), ("uda.kl_reduction", ("mean", "sum")),
                         ("uda.consistency_boxes", ("detections", "proposals"))):
        check_choice(cfg, key, choices)
    check_range(cfg, "train.burn_in", 0, integer=True)
    for key, hi in (("uda.threshold", 1), ("uda.ema_keep_rate", 1), ("uda.consistency_weight", None),
                    ("uda.rpn_weight", None), ("uda.consistency_score_thresh", 1)):
        check_range(cfg, key, 0, hi)
    spec = cfg.uda.student_scale
    if spec is None:
        return
    sp = {**SCALE_DEFAULTS, **spec} if hasattr(spec, "keys") else {}
    s0 = sp.get("s0")
    s0s = [s0] if isinstance(s0, (int, float)) and not isinstance(s0, bool) else list(s0 or [])
    if (set(sp) - set(SCALE_DEFAULTS) - {"s0"} or not s0s or not all(0 < float(v) <= 1 for v in s0s)
            or not isinstance(s0, (int, float)) and len(sp["steps"]) != len(s0s)
            or not 0 < sp["floor"] <= 1 or sp["sigma"] < 0 or sp["min_area"] < 0):
        raise ValueError("config: uda.student_scale: expected null or {s0: a number in (0, 1] or a list of them, "
                         "steps: iterations (one per s0 in a list), sigma >= 0, floor in (0, 1], min_area >= 0}, "
                         f"got {spec}")


def collate(items):
    """A batch as lists (images may differ in size on real data)."""
    return [it["image"] for it in items], [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]


def source_batch(images, targets, uc, gens):
    """The supervised batch: the source images, flipped with p 0.5 if ``uda.hflip`` (2PCNet's data mapper),
    and if ``uda.nightaug`` a NightAug copy of each made after the flip (same geometry, same boxes).

    >>> from types import SimpleNamespace
    >>> gens = {"flip": torch.Generator().manual_seed(0), "nightaug": torch.Generator().manual_seed(0)}
    >>> ims, ts = source_batch([torch.rand(3, 8, 8)] * 2, [{"boxes": torch.zeros(0, 4)}] * 2,
    ...                        SimpleNamespace(hflip=True, nightaug=True), gens)
    >>> len(ims), len(ts), bool((ims[2] <= 1).all())
    (4, 4, True)
    """
    if uc.hflip:
        images, targets = random_hflip(images, targets, gens["flip"])
    if getattr(uc, "vertical_rescale", None) is not None:  # the row-scale control (no warp): images and boxes stretched
        if len({x.shape for x in images}) == 1:
            stacked, targets, _, _ = random_vertical_rescale(torch.stack(images), uc.vertical_rescale, gens["rescale"], targets)
            images = list(stacked)
        else:
            pairs = [random_vertical_rescale(x[None], uc.vertical_rescale, gens["rescale"], [t]) for x, t in zip(images, targets)]
            images, targets = [p[0][0] for p in pairs], [p[1][0] for p in pairs]
    if not uc.nightaug:
        return images, targets
    if len({x.shape for x in images}) == 1:
        dark = list(night_aug(torch.stack(images), gens["nightaug"]))
    else:
        dark = [night_aug(x[None], gens["nightaug"])[0] for x in images]
    return images + dark, targets + targets


def student_scale(it: int, spec, generator: torch.Generator) -> tuple[float, float]:
    """2PCNet's student-scale curriculum at iteration ``it``: ``(scale, min pseudo-box area)``; (1, 0) when off.

    One draw per iteration for the whole target batch: s ~ N(s0, sigma) clipped to [floor, 1], with s0 the
    first ``s0[i]`` whose ``steps[i]`` is still ahead (1.0 after the last one), or ``s0`` itself when a number.
    The scaled student drops the pseudo-boxes of area <= min_area px^2 at its scale.

    >>> g = torch.Generator().manual_seed(0)
    >>> student_scale(5, {"s0": [0.5, 0.9], "steps": [10, 20], "sigma": 0.0, "floor": 0.75}, g)
    (0.75, 16.0)
    >>> student_scale(15, {"s0": [0.5, 0.9], "steps": [10, 20], "sigma": 0.0}, g), student_scale(5, None, g)
    ((0.9, 16.0), (1.0, 0.0))
    """
    if spec is None:
        return 1.0, 0.0
    sp = {**SCALE_DEFAULTS, **spec}
    s0 = sp["s0"] if isinstance(sp["s0"], (int, float)) else next(
        (v for v, step in zip(sp["s0"], sp["steps"]) if it < step), 1.0)
    s = float(s0) + float(sp["sigma"]) * float(torch.randn((), generator=generator))
    return min(1.0, max(float(sp["floor"]), s)), float(sp["min_area"])


def consistency_pairs(student, out, teacher_images, uc):
    """Phase two's pairs: the student's class logits and the boxes the teacher pools (in its image's pixels).

    ``uda.consistency_boxes=detections`` (2PCNet): the student's class-specific detections among its sampled
    proposals (``Detector.detections_among``: score > ``uda.consistency_score_thresh``, NMS and top-k of the
    model's RoI heads); each brings the logits of the proposal it came from (once per class it detects),
    and the teacher pools that proposal's box. ``proposals``: every sampled proposal, once.

    >>> from types import SimpleNamespace
    >>> from torchvision.models.detection.image_list import ImageList
    >>> from warpadapt.models import Detector, DetectorOutput
    >>> det = Detector("resnet18", 3, out_indices=(2, 3), fpn_channels=16, representation_size=16)
    >>> props = [torch.tensor([[0., 0., 8., 8.], [10., 10., 20., 20.]])]   # proposal 1: background
    >>> out = DetectorOutput({}, props, [], torch.tensor([[0., 3., 0.], [5., 0., 0.]]),
    ...                      ImageList(torch.zeros(1, 3, 16, 32), [(16, 32)]), torch.zeros(2, 12))
    >>> uc = SimpleNamespace(consistency_boxes="detections", consistency_score_thresh=0.05)
    >>> logits, boxes = consistency_pairs(det, out, ImageList(torch.zeros(1, 3, 32, 64), [(32, 64)]), uc)
    >>> logits.tolist(), boxes[0].tolist()   # the teacher's image is twice as large
    ([[0.0, 3.0, 0.0]], [[0.0, 0.0, 16.0, 16.0]])
    """
    logits, boxes = out.class_logits, out.proposals
    if uc.consistency_boxes == "detections":
        dets = student.detections_among(boxes, logits.detach(), out.box_regression.detach(), out.images.image_sizes,
                                        score_thresh=uc.consistency_score_thresh)
        logits = logits[torch.cat([d["row"] for d in dets])]
        boxes = [p[d["index"]] for p, d in zip(boxes, dets)]
    # a scaled student (uda.student_scale) saw a smaller image: its boxes back to the teacher's pixels
    return logits, [resize_boxes(b, s, t) for b, s, t in zip(boxes, out.images.image_sizes, teacher_images.image_sizes)]


def consistency_loss(student_logits, teacher_logits, reduction: str = "mean"):
    """Phase two (2PCNet's ``ConsistencyLosses``): per box KL(p_teacher || p_student) averaged over the K + 1
    classes (``"sum"``: summed, so the loss weight acts K + 1 times larger), times the teacher's largest class
    probability (background included), averaged over all boxes of the batch; 0 when there are none.

    >>> t = torch.tensor([[2.0, 0.0, 0.0]]); s = torch.zeros(1, 3)
    >>> round(float(consistency_loss(s, t)), 4), round(float(consistency_loss(s, t, "sum")), 4)
    (0.1136, 0.3408)
    >>> float(consistency_loss(torch.zeros(0, 3), torch.zeros(0, 3)))
    0.0
    """
    p_t = F.softmax(teacher_logits, dim=1)
    kl = torch.xlogy(p_t, p_t) - p_t * F.log_softmax(student_logits, dim=1)
    kl = kl.mean(1) if reduction == "mean" else kl.sum(1)
    return (p_t.max(1).values * kl).sum() / max(1, len(kl))


def optimizer_and_schedule(tc, params, lr: float | None = None):
    """SGD or AdamW; LR: a linear warm-up over ``train.warmup``, then constant (2PCNet: no decay) except
    x0.1 at each of the FIXED iterations ``train.lr_steps`` (independent of train.iters, so a run stopped
    at k and resumed with a larger train.iters follows the same curve as a straight one).

    >>> from types import SimpleNamespace
    >>> tc = SimpleNamespace(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, warmup=2, lr_steps=[])  # lr: tc.lr
    >>> opt, sched = optimizer_and_schedule(tc, [torch.nn.Parameter(torch.zeros(1))])
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    >>> lrs
    [0.05, 0.1, 0.1, 0.1, 0.1]
    """
    lr = tc.lr if lr is None else lr
    if tc.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    steps = list(tc.lr_steps)
    factor = lambda it: min(1.0, (it + 1) / max(1, tc.warmup)) * 0.1 ** sum(it >= s for s in steps)  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


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
    # model.norm: bn (batch statistics) | frozen (detectron2's FrozenBN) | sync (SyncBatchNorm under torchrun)
    student = throughput_switches(cfg, set_norm(detector_from_config(cfg, len(classes) + 1, warp), cfg, info).to(info.device))
    model = wrap_ddp(student, info)  # rank 0's weights on every rank; the teacher copies those
    teacher = EMATeacher(student)
    for m in (student, teacher.module) if tc.compile else ():  # train.compile: after the teacher's copy
        compile_backbone(m)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer, scheduler = optimizer_and_schedule(tc, params, scaled_lr(cfg, info))
    amp = MixedPrecision(tc.amp, info.device)
    # this rank's seeded generators, saved with the run: NightAug, flips (uda.hflip), student scale, vertical rescale
    # (NightAug and flips draw on the images' device, so their generators live there; the scale is a host number)
    names = ("nightaug", "flip", "scale") + (("rescale",) if uc.vertical_rescale is not None else ())
    gens = {name: torch.Generator("cpu" if name == "scale" else info.device).manual_seed(
        tc.seed * 1000 + info.rank + 100_000 * k) for k, name in enumerate(names)}

    # ------------------------------------------------------------------ resume
    state = RunState(out_dir / "last.pt", info, cfg, generators=gens, student=student, teacher=teacher, amp=amp,
                     optimizer=optimizer, scheduler=scheduler)
    start = state.load() if resuming else 0
    logger = MetricsLogger(out_dir, enabled=info.is_main, resume_step=start if start else None, tensorboard=tc.tensorboard)
    src_iter = infinite_loader(src_train, tc.batch_size, seed=tc.seed, info=info, start_step=start,
                               collate_fn=collate, num_workers=cfg.data.workers)
    tgt_iter = infinite_loader(tgt_train, tc.batch_size, seed=tc.seed + 1, info=info,
                               start_step=max(0, start - tc.burn_in), collate_fn=collate,
                               num_workers=cfg.data.workers) if uc.enabled else None
    # eval.model=auto: the teacher once it exists (2PCNet evaluates the teacher), the student before
    use_teacher = cfg.eval.model == "teacher" or (cfg.eval.model == "auto" and uc.enabled)
    evaluated = lambda step: teacher.module if use_teacher and step > tc.burn_in else student  # noqa: E731

    def evaluate(step):
        kw = dict(device=info.device, batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, info=info,
                  num_workers=cfg.data.workers)
        with rank0_buffers(student, teacher, info=info):  # every rank scores rank 0's model (its BatchNorm statistics)
            return [evaluate_detection(evaluated(step), ds, classes, **kw) for ds in (src_val, tgt_val)]

    # ------------------------------------------------------------------ training loop
    model.train()
    bar = tqdm(range(start, tc.iters), initial=start, total=tc.iters, disable=not info.is_main, desc="2pcnet")
    train_time, cpu_time, data_time, n_timed, n_images = 0.0, 0.0, 0.0, 0, 0
    for it in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        adapting = uc.enabled and it >= tc.burn_in

        with amp.autocast():  # train.amp: the training forwards in bf16 / fp16 (the warp's geometry stays float32)
            # (a) source (+ flip) + NightAug copy, supervised; the ONLY warped forward (boxes = ground truth),
            # during burn-in only unless warp.stage=always
            d0 = time.perf_counter()
            (images, targets), t_batch = next(src_iter), next(tgt_iter) if adapting else None
            data_time += time.perf_counter() - d0
            images = [x.to(info.device, non_blocking=True) for x in images]
            targets = [{k: v.to(info.device, non_blocking=True) for k, v in t.items()} for t in targets]
            images, targets = source_batch(images, targets, uc, gens)
            n_images += len(images) + (len(t_batch[0]) if adapting else 0)
            warping = cfg.warp.stage == "always" or it < tc.burn_in
            # warp.schedule: the amplitude over the iterations that warp (burn-in, or all with warp.stage=always)
            warp.amplitude = warp_amplitude(cfg.warp.schedule, it, tc.iters if cfg.warp.stage == "always" else tc.burn_in)
            out = model(images, targets, warp=warping)
            losses = dict(out.losses)
            loss = sum(losses.values())

            if adapting:
                if it == tc.burn_in:  # end of burn-in: the teacher starts as a copy of the student
                    teacher.reset(student)
                # (b) teacher pseudo-labels on the target image (eval mode: never warped)
                t_images = [x.to(info.device, non_blocking=True) for x in t_batch[0]]
                if uc.hflip:  # 2PCNet's mapper flips target images too (teacher and student see the same one)
                    t_images = random_hflip(t_images, None, gens["flip"])[0]
                with torch.no_grad():
                    detections, t_il, t_feats = teacher.module.detect(t_images, return_features=True)
                    pseudo = filter_detections(detections, uc.threshold)
                # (c) student on the same target image, not warped; with uda.student_scale smaller (pseudo-labels
                # scaled with it, the tiny ones dropped). Phase one: pseudo-labels train the RPN objectness (box
                # regression weight 0) and are appended to the proposals (RoI sampling).
                scale, min_area = student_scale(it, uc.student_scale, gens["scale"])
                t_out = model(t_images, pseudo, warp=False, roi_loss=False, scale=scale, min_box_area=min_area)
                losses["loss_rpn_pseudo"] = uc.rpn_weight * t_out.losses["loss_objectness"]
                # Phase two: the teacher re-scores, on its own features of the target image, the proposals behind
                # the student's detections (uda.consistency_boxes); weighted KL between the class distributions
                s_logits, boxes = consistency_pairs(student, t_out, t_il, uc)
                with torch.no_grad():
                    t_logits = teacher.module.rescore(t_il, boxes, t_feats)
                losses["loss_consistency"] = uc.consistency_weight * consistency_loss(s_logits, t_logits, uc.kl_reduction)
                losses["pseudo_per_image"] = torch.tensor(sum(len(p["boxes"]) for p in pseudo) / len(pseudo))
                losses["kl_boxes_per_image"] = torch.tensor(len(s_logits) / len(t_images))
                loss = loss + losses["loss_rpn_pseudo"] + losses["loss_consistency"]

        # (d) backward and step
        optimizer.zero_grad(set_to_none=True)
        amp.backward(loss)
        amp.step(optimizer, params, tc.grad_clip)  # fp16: unscaled before clipping
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
        if step % tc.log_every == 0 or step == tc.iters:  # the only host read of the losses (non-finite: stop)
            scalars = log_values({"loss": loss, **losses}, info, step)  # every rank; averaged over ranks
            logger.log(step, "train", lr=lr, seconds_per_iter=train_time / n_timed, data_seconds=data_time / n_timed,
                       images_per_s=n_images * info.world_size / train_time, peak_memory_mb=peak_memory_mb(info),
                       warp_amplitude=warp.amplitude if warping else 0.0, **scalars)
            shown = {k[5:]: f"{v:.3f}" for k, v in scalars.items() if k.startswith("loss_")}
            bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{lr:.2g}", **shown)
        if cfg.eval.every and step % cfg.eval.every == 0 and step < tc.iters:
            src, tgt = evaluate(step)
            logger.log(step, "eval", source_map50=src["mAP50"], target_map50=tgt["mAP50"])
            state.save(step)
        if state.after_step(step, step % tc.log_every == 0):  # train.checkpoint_every; SIGTERM / SIGUSR1: saved
            break
    bar.close()
    if state.stopped:  # preempted: resume=true continues from the checkpoint just written
        logger.close()
        cleanup_distributed()
        return {"stopped": state.stopped}

    # ------------------------------------------------------------------ final evaluation and outputs
    if start < tc.iters:
        state.save(tc.iters)
    t_eval = time.perf_counter()
    src, tgt = evaluate(tc.iters)
    t_eval = time.perf_counter() - t_eval
    # the ranks of a DDP run must hold bit-identical weights: each rank's digest of student + teacher parameters
    digests = all_gather_objects(weights_digest(student) + weights_digest(teacher))
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
             "world_size": info.world_size, "eval_images": cfg.eval.max_images, "peak_memory_mb": peak_memory_mb(info),
             "eval_seconds": t_eval, "target_split": cfg.eval.target_split,
             "ranks_in_sync": len(set(digests)) == 1, "weights_digests": digests}
    state.stop.close()  # SIGTERM / SIGUSR1 handlers back to what they were
    logger.write_json("final.json", final)
    logger.plot()
    logger.close()
    if info.is_main:
        print(f"source mAP50 {100 * final['source_map50']:.1f}  target mAP50 {100 * final['target_map50']:.1f}"
              f"  ({final['seconds_per_iter']:.2f} s/iter)  -> {out_dir / 'final.json'}")
    cleanup_distributed()
    return final


if __name__ == "__main__":
    run(main)
