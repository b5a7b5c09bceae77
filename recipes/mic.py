"""DACS + MIC semantic-segmentation adaptation with Instance-Warp over any timm backbone, in one loop.

    python recipes/mic.py                                          # synthetic clear -> fog (default)
    python recipes/mic.py --config synthetic_day2night model.backbone=resnet18 train.iters=2000
    python recipes/mic.py --config cityscapes2acdc_fog data.root=/data    # /data/cityscapes, /data/acdc
    torchrun --standalone --nproc_per_node=2 recipes/mic.py out_dir=runs/mic/ddp
    python recipes/mic.py train.iters=2000 resume=true             # continue the run in out_dir
    python recipes/mic.py --help                                   # every key, its default and what it does

Every iteration (docs/method.md sections 5 and 7; DAFormer / MIC's mmseg/models/uda/dacs.py):
  (a) source cross-entropy on the WARPED source forward, boxes from the source label maps (source
      images uniform, or by DAFormer's rare-class sampling with uda.rcs=true);
  (b) the EMA teacher labels the plain target image (never warped), in train mode with dropout off
      (uda.teacher_mode=train: BatchNorm on the target batch's statistics): argmax pseudo-labels and
      ONE weight q = share of pixels whose max probability >= uda.threshold;
  (c) ClassMix: half of the classes of the source batch (ignore label included) pasted onto the
      target images, labels and weights mixed alike, colour jitter + blur, weighted cross-entropy;
  (d) MIC: images masked in square blocks (a masked pixel is the normalisation mean, as MIC masks
      the normalised image), uda.mask_mode picks them: separate = one source image with its labels
      + one target image with its pseudo-labels and q; separatetrgaug = the colour-augmented targets;
  (e) optimiser step, then teacher <- EMA of the student's parameters, alpha_t = min(1 - 1/(t+1),
      uda.ema_keep_rate) at t = step + 1 (DAFormer updates at the start of the next iteration);
  (f) log, evaluate (student, no warp), checkpoint.
Only (a) is warped: the ClassMix and masked images (source pixels included) never are.
With train.bn_stats=source, (c) and (d) normalise with their batch statistics but leave BatchNorm's
running statistics (what evaluation uses; with uda.teacher_mode=eval, the teacher too) to the source
forward (warpadapt.uda.bn).
Outputs in out_dir: config.yaml, metrics.jsonl, curves.png, last.pt (checkpoint), final.json,
predictions.png (target images | labels | predictions), static_prior.npz (warp.guidance=static).

The learning-rate schedule runs over train.schedule_iters, not train.iters: train.iters only says
where this invocation stops, so stopping at 3 and resuming to 6 trains exactly like running to 6.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from warpadapt.data.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, guidance_train_ids
from warpadapt.models.detector import NORMS
from warpadapt.uda.bn import frozen_bn_stats
from warpadapt.uda.build import (evaluate_segmenter, segmentation_datasets, segmentation_loader,
                                 segmentation_pipeline, segmenter_from_config, warp_from_config)
from warpadapt.uda.cli import run
from warpadapt.uda.config import check_choice, check_range, load_config
from warpadapt.uda.dist import all_gather_objects, cleanup_distributed, grad_sync, rank0_buffers, unwrap, weights_digest, wrap_ddp
from warpadapt.uda.ema import EMATeacher, dacs_keep_rate
from warpadapt.uda.fdist import ImageNetFeatures, feature_distance
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.mix import MASK_MODES, classmix_masks, mask_images, mic_batch, mix, patch_mask, strong_augment
from warpadapt.uda.nightaug import random_vertical_rescale
from warpadapt.uda.rcs import RareClassSampler, class_pixel_counts
from warpadapt.uda.run import (MixedPrecision, RunState, check_common, compile_backbone, log_values, peak_memory_mb,
                               scaled_lr, set_norm, start_run, static_prior, throughput_switches, warp_amplitude)

NUM_CLASSES = len(CITYSCAPES_CLASSES)  # the 19 Cityscapes train ids


def check(cfg) -> None:
    """This recipe's keys (the shared ones: check_common; warp options: SaliencyWarp; data: the builders)."""
    check_common(cfg)
    segmentation_pipeline(cfg)  # data.crop_size, data.flip, data.<domain>.scale, eval.mode ...
    check_choice(cfg, "train.bn_stats", ("all", "source"))
    check_choice(cfg, "model.norm", NORMS)
    check_choice(cfg, "uda.teacher_mode", ("train", "eval"))
    check_choice(cfg, "uda.mask_mode", MASK_MODES)
    check_choice(cfg, "uda.classmix_pool", ("batch", "image"))
    check_range(cfg, "uda.rcs_temperature", 1e-12)
    check_range(cfg, "uda.rcs_min_share", 0.0, 1.0)
    for key in ("train.schedule_iters", "uda.mask_patch"):
        check_range(cfg, key, 1, integer=True)
    check_range(cfg, "eval.pictures", 0, integer=True)
    check_range(cfg, "train.head_lr_mult", 1e-12)
    check_range(cfg, "train.norm_decay_mult", 0.0)
    check_range(cfg, "uda.imnet_fdist", 0.0)
    check_range(cfg, "uda.fdist_min_ratio", 1e-6, 1.0)
    for key in ("uda.ema_keep_rate", "uda.threshold", "uda.mask_ratio", "uda.color_jitter_p", "uda.blur_p"):
        check_range(cfg, key, 0.0, 1.0)


# ------------------------------------------------------------------------------------- losses, schedule
def weighted_ce(logits, labels, weight):
    """DACS's pixel-weighted cross-entropy: mean over all pixels of weight x CE (ignored pixels add 0)."""
    return (F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none") * weight).mean()


def lr_factor(step: int, t) -> float:
    """DAFormer's poly10warm (mmcv): poly decay to 0 at train.schedule_iters, times a linear warm-up from
    1e-6 that reaches 1 at step train.warmup: 1 - (1 - step / warmup) * (1 - 1e-6)."""
    warm = 1.0 - (1.0 - step / t.warmup) * (1.0 - 1e-6) if step < t.warmup else 1.0
    return warm * (1.0 - min(step, t.schedule_iters) / t.schedule_iters) ** t.poly_power


def param_groups(model, t, lr: float) -> list[dict]:
    """AdamW groups as DAFormer's paramwise_cfg: the backbone at ``lr``, the head at lr x train.head_lr_mult;
    parameters whose name holds "norm" (MiT's LayerNorms) at weight decay x train.norm_decay_mult (DAFormer: 0)."""
    groups = []
    for part, lr in ((model.backbone, lr), (model.head, lr * t.head_lr_mult)):
        for norm in (False, True):
            params = [p for name, p in part.named_parameters() if ("norm" in name) == norm]
            if params:
                groups.append(dict(params=params, lr=lr, weight_decay=t.weight_decay * (t.norm_decay_mult if norm else 1)))
    return groups


@torch.no_grad()
def save_predictions(model, ds, n: int, path, device) -> None:
    """A picture of ``n`` target images next to their labels and the model's predictions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = unwrap(model)
    items = [ds[i] for i in range(min(n, len(ds)))]
    was_training = model.training
    pred = model.eval()(torch.stack([it["image"] for it in items]).to(device)).argmax(1).cpu()
    model.train(was_training)
    fig, axes = plt.subplots(len(items), 3, figsize=(9, 1.7 * len(items)), squeeze=False)
    for row, it, p in zip(axes, items, pred):
        lab = np.ma.masked_equal(it["semantic"].numpy(), IGNORE_INDEX)
        for ax, img, title in zip(row, (it["image"].permute(1, 2, 0), lab, p), ("target image", "label", "prediction")):
            ax.imshow(img, cmap="tab20", vmin=-0.5, vmax=19.5, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    # 1. config: yaml + key=value overrides (unknown keys and wrong types rejected), checked
    cfg = load_config(__file__, argv, default="synthetic_clear2fog")
    check(cfg)
    t, u = cfg.train, cfg.uda

    # 2. set-up: torchrun's environment, threads, the run folder (rank 0 decides: resume / refuse)
    info, out, resuming = start_run(cfg)
    dev = info.device

    # 3. data: source / target training streams (per-rank shards), evaluation sets
    src_train, tgt_train, src_val, tgt_val = segmentation_datasets(cfg)

    # 4. models: student over a wrapped backbone (model.norm; speed switches), EMA teacher (never warps: it gets
    # no boxes) made from the DDP-synchronised student, AdamW (lr: train.lr_base_size rule)
    warp = warp_from_config(cfg, static_prior(cfg, src_train, out, info))  # built once, from cfg.warp
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = throughput_switches(cfg, set_norm(segmenter_from_config(cfg, warp), cfg, info).to(dev).train())
    imnet = None  # uda.imnet_fdist: DAFormer's ImageNet feature distance, with ImageNet weights only
    if u.imnet_fdist and cfg.model.pretrained_file:
        imnet = ImageNetFeatures(model.backbone)
    elif u.imnet_fdist and info.is_main:
        print("uda.imnet_fdist: off, the backbone has no ImageNet weights (model.pretrained_file is null)")
    student = wrap_ddp(model, info)
    # train: DAFormer / MIC's teacher (train mode, dropout off, EMA of the parameters only); eval: eval mode, EMA of all
    teacher = EMATeacher(model, buffers="none" if u.teacher_mode == "train" else "ema", mode=u.teacher_mode)
    for m in (model, teacher.module) if t.compile else ():  # train.compile: after the teacher's copy
        compile_backbone(m)
    evaluated = teacher.module if cfg.eval.model == "teacher" else student  # auto: MIC evaluates the student
    opt = torch.optim.AdamW(param_groups(model, t, scaled_lr(cfg, info)))
    amp = MixedPrecision(t.amp, dev)  # train.amp: bf16 / fp16 autocast of the training forwards
    base_lrs = [g["lr"] for g in opt.param_groups]
    torch.manual_seed(t.seed + 1000 * info.rank)  # dropout differs per rank
    gen = torch.Generator(dev).manual_seed(t.seed + 1000 * info.rank)  # ClassMix, MIC masks, colour jitter
    gens = {"mix": gen}
    if u.vertical_rescale is not None:  # the row-scale control's own stream (the others draw as without it)
        gens["rescale"] = torch.Generator(dev).manual_seed(t.seed + 1000 * info.rank + 500)

    # 5. resume: the last checkpoint in out_dir, if asked (and present)
    state = RunState(out / "last.pt", info, cfg, generators=gens, student=model, teacher=teacher, optimizer=opt,
                     amp=amp)
    start = state.load() if resuming else 0
    logger = MetricsLogger(out, enabled=info.is_main, resume_step=start if start else None, tensorboard=t.tensorboard)
    # every draw gets its own crop / flip, keyed by (seed, stream position, index): resumable (data.crop_size)
    stream = dict(info=info, start_step=start, num_workers=cfg.data.workers)
    sampler = None
    if u.rcs:  # DAFormer's rare-class sampling: class frequencies over the uncropped source labels
        labels = [src_train.whole(i)["semantic"] for i in range(len(src_train))]
        sampler = RareClassSampler(class_pixel_counts(labels, NUM_CLASSES), t.batch_size, t.seed, info.rank, start,
                                   u.rcs_temperature, u.rcs_min_share * labels[0].numel())
    src_it = segmentation_loader(src_train, t.batch_size, seed=t.seed, batch_sampler=sampler, **stream)
    tgt_it = segmentation_loader(tgt_train, t.batch_size, seed=t.seed + 1, **stream)
    things = guidance_train_ids(cfg.warp.classes)  # the feature distance's classes (DAFormer: 6, 7, 11-18)
    aug = dict(jitter=u.color_jitter, jitter_p=u.color_jitter_p, blur_p=u.blur_p, per_image=u.augment_per_image)

    # 6. the loop
    train_seconds, cpu_seconds, data_seconds = 0.0, 0.0, 0.0
    bar = tqdm(range(start, t.iters), initial=start, total=t.iters, desc="mic", disable=not info.is_main,
               dynamic_ncols=True)
    for step in bar:
        tic, cpu_tic = time.perf_counter(), time.process_time()
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_factor(step, t)
        opt.zero_grad(set_to_none=True)
        data_tic = time.perf_counter()
        src, tgt = next(src_it), next(tgt_it) if u.enabled else None
        data_seconds += time.perf_counter() - data_tic
        x_s, y_s = src["images"].to(dev, non_blocking=True), src["semantic"].to(dev, non_blocking=True)
        boxes_s = [b.to(dev, non_blocking=True) for b in src["boxes"]]
        if u.vertical_rescale is not None:  # the row-scale control (no warp): image, labels and boxes stretched
            x_s, moved, y_s, _ = random_vertical_rescale(x_s, u.vertical_rescale, gens["rescale"],
                                                         [{"boxes": b} for b in boxes_s], y_s, IGNORE_INDEX)
            boxes_s = [m["boxes"] for m in moved]
        # Each phase runs backward at once (DAFormer does too): one graph in memory at a time. Under DDP the
        # gradients are all-reduced once, by the step's last backward (grad_sync; the others accumulate).
        last = "mic" if u.enabled and u.mic else "mix" if u.enabled else "src"

        # (a) source: the only warped forward; boxes from the source labels, features unwarped; DAFormer's
        # cross-entropy: the mean over ALL pixels (ignored ones add 0)
        warp.amplitude = warp_amplitude(cfg.warp.schedule, step, t.schedule_iters)  # warp.schedule, over the LR's horizon
        with grad_sync(student, last == "src"):  # forward under autocast, backward outside it (both in no_sync)
            with amp.autocast():
                logits, feats = student(x_s, boxes=boxes_s,
                                        return_features=True)
                loss_src = weighted_ce(logits, y_s, 1.0)
                if imnet is not None:  # the student's bottleneck (unwarped) vs ImageNet's on the plain image, things
                    loss_fd = u.imnet_fdist * feature_distance(feats[-1], imnet(model.normalize(x_s)), y_s, things,
                                                               u.fdist_min_ratio, NUM_CLASSES, IGNORE_INDEX)
            amp.backward(loss_src + loss_fd if imnet is not None else loss_src)
        logs = {"loss_src": loss_src.detach()}  # tensors: read on the host at logging steps only
        if imnet is not None:
            logs["loss_fdist"] = loss_fd.detach()

        # train.bn_stats=source: the self-training forwards (ClassMix collages, masked images) normalise
        # with their batch statistics but leave BatchNorm's running ones (evaluation's) alone
        with frozen_bn_stats(model) if t.bn_stats == "source" else nullcontext():
            if u.enabled:
                x_t = tgt["images"].to(dev, non_blocking=True)  # target labels are never used
                # (b) teacher pseudo-labels on the plain target image (no boxes: no warp), one weight q
                with torch.no_grad():
                    with amp.autocast():
                        logits_t = teacher(x_t)
                    confidence, pseudo = logits_t.float().softmax(1).max(1)
                q = (confidence >= u.threshold).float().mean()
                w_t = q.expand_as(confidence)

                # (c) ClassMix: source pixels of half of the batch's classes onto the target; colour jitter + blur
                if u.classmix:
                    m = classmix_masks(y_s, gen, NUM_CLASSES, IGNORE_INDEX, pool=u.classmix_pool,
                                       include_ignore=u.classmix_ignore)
                    x_mix, y_mix, w_mix = mix(m, x_s, x_t), mix(m, y_s, pseudo), mix(m, torch.ones_like(w_t), w_t)
                else:  # plain self-training on the augmented target image
                    x_mix, y_mix, w_mix = x_t, pseudo, w_t
                with grad_sync(student, last == "mix"):
                    with amp.autocast():
                        loss_mix = weighted_ce(student(strong_augment(x_mix, gen, **aug)), y_mix, w_mix)
                    amp.backward(loss_mix)
                logs.update(loss_mix=loss_mix.detach(), q=q)

                # (d) MIC: the mask mode's images (colour-augmented in the ...aug modes), masked pixels = the mean
                if u.mic:
                    x_m, y_m, w_m = mic_batch(u.mask_mode, x_s, y_s, x_t, pseudo, w_t)
                    x_m = strong_augment(x_m, gen, **aug) if u.mask_mode.endswith("aug") else x_m
                    keep = patch_mask(x_m.shape[0], x_m.shape[-2:], u.mask_patch, u.mask_ratio, gen, dev)
                    with grad_sync(student, last == "mic"):
                        with amp.autocast():
                            loss_mic = u.mic_weight * weighted_ce(student(mask_images(x_m, keep, model.mean)), y_m, w_m)
                        amp.backward(loss_mic)
                    logs["loss_mic"] = loss_mic.detach()

        # (e) step, then the EMA teacher with the DACS schedule (DAFormer: alpha of iteration step + 1)
        amp.step(opt)
        if u.enabled:
            teacher.update(model, dacs_keep_rate(step + 1, u.ema_keep_rate))
        train_seconds += time.perf_counter() - tic
        cpu_seconds += time.process_time() - cpu_tic  # all threads of this process

        # (f) log / evaluate / checkpoint
        done = step + 1
        if done % t.log_every == 0 or done == t.iters:
            logs = log_values(logs, info, done)  # one collective + one host read; a non-finite loss stops every rank
            n = done - start
            logger.log(done, "train", lr=opt.param_groups[0]["lr"], **logs, data_seconds=data_seconds / n,
                       images_per_s=(1 + u.enabled) * t.batch_size * info.world_size * n / train_seconds, peak_memory_mb=peak_memory_mb(info),
                       warp_amplitude=warp.amplitude if warp.guidance != "none" else 0.0)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        if cfg.eval.every and done % cfg.eval.every == 0 and done < t.iters:
            state.save(done)
            with rank0_buffers(model, teacher, info=info):  # every rank scores rank 0's model (its BatchNorm statistics)
                metrics = evaluate_segmenter(evaluated, (src_val, tgt_val), cfg, info)
            logger.log(done, "eval", **{k: v for k, v in metrics.items() if k.endswith("miou")})
            if info.is_main:
                bar.write(f"step {done}: source mIoU {100 * metrics['source_miou']:.1f}, "
                          f"target mIoU {100 * metrics['target_miou']:.1f}")
        if state.after_step(done, done % t.log_every == 0):  # train.checkpoint_every; SIGTERM / SIGUSR1: saved
            break
    if state.stopped:  # preempted: resume=true continues from the checkpoint just written
        logger.close()
        cleanup_distributed()
        return {"stopped": state.stopped}

    # 7. final checkpoint, evaluation and outputs
    if start < t.iters:
        state.save(t.iters)
    tic = time.perf_counter()
    with rank0_buffers(model, teacher, info=info):
        metrics = evaluate_segmenter(evaluated, (src_val, tgt_val), cfg, info)
    # the ranks of a DDP run must hold bit-identical weights: each rank's digest of student + teacher parameters
    digests = all_gather_objects(weights_digest(model) + weights_digest(teacher))
    final = {"iters": t.iters, "evaluated": "teacher" if evaluated is teacher.module else "student", **metrics,
             "seconds_per_iter": train_seconds / max(1, t.iters - start),
             "cpu_seconds_per_iter": cpu_seconds / max(1, t.iters - start), "world_size": info.world_size,
             "peak_memory_mb": peak_memory_mb(info), "ranks_in_sync": len(set(digests)) == 1, "weights_digests": digests,
             "eval_seconds": time.perf_counter() - tic, "target_split": cfg.eval.target_split}
    if info.is_main:
        if start < t.iters:  # a finished run resumed again: its final eval is already logged
            logger.log(t.iters, "eval", **{k: v for k, v in metrics.items() if k.endswith("miou")})
        logger.write_json("final.json", final)
        logger.plot()
        if cfg.eval.pictures:
            save_predictions(student, tgt_val, cfg.eval.pictures, out / "predictions.png", dev)
            logger.image(t.iters, "predictions", out / "predictions.png")
        print(f"source mIoU {100 * final['source_miou']:.1f}  target mIoU {100 * final['target_miou']:.1f}  "
              f"{final['seconds_per_iter']:.3f} s/iter  -> {out}")
    state.stop.close()  # SIGTERM / SIGUSR1 handlers back to what they were
    logger.close()
    cleanup_distributed()
    return final


if __name__ == "__main__":
    run(main)
