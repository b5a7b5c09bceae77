"""DACS + MIC semantic-segmentation adaptation with Instance-Warp over any timm backbone, in one loop.

    python recipes/mic.py                                          # synthetic clear -> fog (default)
    python recipes/mic.py --config synthetic_day2night model.backbone=resnet18 train.iters=2000
    python recipes/mic.py --config cityscapes2acdc_fog data.root=/data    # /data/cityscapes, /data/acdc
    torchrun --standalone --nproc_per_node=2 recipes/mic.py out_dir=runs/mic/ddp
    python recipes/mic.py train.iters=2000 resume=true             # continue the run in out_dir

Every iteration (ALGORITHM.md sections 5 and 7):
  (a) source cross-entropy on the WARPED source forward, boxes from the source label maps;
  (b) the EMA teacher labels the plain target image (never warped): argmax pseudo-labels and ONE
      weight q = share of pixels whose max probability >= uda.threshold;
  (c) ClassMix: half of the classes of each source image pasted onto a target image, labels and
      weights mixed alike, colour jitter + blur, weighted cross-entropy (the mixed image is not warped);
  (d) MIC: the colour-augmented target masked in square patches, trained against the same
      pseudo-labels and q (not warped);
  (e) optimiser step, then teacher <- EMA of the student, alpha_t = min(1 - 1/(t+1), uda.ema_keep_rate);
  (f) log, evaluate (student, no warp), checkpoint.
With train.bn_stats=source, (c) and (d) normalise with their batch statistics but leave BatchNorm's
running statistics (what evaluation and the teacher use) to the source forward (warpadapt.uda.bn).
Outputs in out_dir: config.yaml, metrics.jsonl, curves.png, last.pt (checkpoint), final.json,
predictions.png (target images | labels | predictions), static_prior.npz (warp.guidance=static).

The learning-rate schedule runs over train.schedule_iters, not train.iters: train.iters only says
where this invocation stops, so stopping at 3 and resuming to 6 trains exactly like running to 6.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from warpadapt import boxes_from_instance_map, boxes_from_semantic, fit_static_prior, load_prior, save_prior
from warpadapt.data import CityscapesSegmentation, SyntheticDrivingDataset, get_pair, label_ids_to_train_ids, list_pairs
from warpadapt.data.labels import CITYSCAPES_CLASSES, GUIDANCE_TRAIN_IDS, IGNORE_INDEX, guidance_train_ids
from warpadapt.models import Segmenter
from warpadapt.uda.bn import frozen_bn_stats
from warpadapt.uda.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from warpadapt.uda.config import check_choice, check_range, load_config, save_config
from warpadapt.uda.data import infinite_loader
from warpadapt.uda.dist import all_gather_objects, barrier, cleanup_distributed, setup_distributed, unwrap, wrap_ddp
from warpadapt.uda.ema import EMATeacher, dacs_keep_rate
from warpadapt.uda.evaluate import evaluate_segmentation
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.mix import classmix_masks, mix, patch_mask, strong_augment

NUM_CLASSES = len(CITYSCAPES_CLASSES)  # the 19 Cityscapes train ids
DEFAULT_CONFIG = "synthetic_clear2fog"  # recipes/configs/mic/<name>.yaml when --config is not given


def check(cfg) -> None:
    """Reject bad values early, naming the key (unknown keys and wrong types: load_config)."""
    check_choice(cfg, "data.pair", list_pairs() + ["inline", "folders"])
    if cfg.data.pair == "folders" and cfg.data.root is None:
        raise ValueError("config: data.root: data.pair=folders reads dataset folders; pass data.root=<folder holding "
                         f"{cfg.data.source.dir!r} and {cfg.data.target.dir!r}>")
    check_choice(cfg, "eval.target_split", ("val", "test"))
    if cfg.data.pair == "folders" and cfg.eval.target_split != "val":
        raise ValueError("config: eval.target_split: dataset folders are evaluated on data.target.val_split; use val")
    check_choice(cfg, "eval.model", ("auto", "student", "teacher"))
    if cfg.eval.model == "teacher" and not cfg.uda.enabled:
        raise ValueError("config: eval.model: teacher needs uda.enabled=true (source-only training has no teacher)")
    check_choice(cfg, "train.bn_stats", ("all", "source"))
    check_choice(cfg, "warp.guidance", ("instance", "static", "geometric", "none"))
    check_choice(cfg, "warp.classes", tuple(GUIDANCE_TRAIN_IDS))
    size = cfg.data.image_size
    if len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
        raise ValueError(f"config: data.image_size: expected [H, W] with ints >= 32, got {list(size)}")
    for key in ("train.iters", "train.schedule_iters", "train.batch_size", "train.log_every", "eval.max_images",
                "eval.batch_size", "uda.mask_patch", "data.train_images", "data.val_images", "warp.prior_images"):
        check_range(cfg, key, 1, integer=True)
    for key in ("train.warmup", "eval.every", "eval.pictures", "threads", "data.workers"):
        check_range(cfg, key, 0, integer=True)
    for key in ("train.lr", "train.head_lr_mult"):
        check_range(cfg, key, 1e-12)
    for key in ("uda.ema_keep_rate", "uda.threshold", "uda.mask_ratio", "uda.color_jitter_p", "uda.blur_p"):
        check_range(cfg, key, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- data
class Prepared(torch.utils.data.Dataset):
    """``dataset[i]`` resized to ``size`` with the guidance boxes from its label maps, memoised if ``cache``.

    Boxes: the instance map's instances where the data has one, else the connected components of the
    thing classes of the semantic map (ALGORITHM.md section 2). Images are quantised to uint8 (what a
    PNG on disk holds), so a cached and a fresh item are the same.
    """

    def __init__(self, dataset, size, thing_ids, cache: bool):
        self.dataset, self.size, self.thing_ids = dataset, tuple(size), tuple(thing_ids)
        self.cache = {} if cache else None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.cache.get(i) if self.cache is not None else None
        if item is None:
            item = self.prepare(self.dataset[i])
            if self.cache is not None:
                self.cache[i] = item
        return {**item, "image": item["image"].float() / 255, "semantic": item["semantic"].long()}

    def prepare(self, s):
        image, h, w = s["image"], *self.size
        sem = s.get("semantic", torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.long))
        labels = {"semantic": sem, "instance": s.get("instance")}
        if image.shape[-2:] != (h, w):
            image = F.interpolate(image[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
            labels = {k: None if v is None else F.interpolate(v[None, None].float(), (h, w), mode="nearest")[0, 0].long()
                      for k, v in labels.items()}
        if labels["instance"] is not None:  # ids >= 24 are Cityscapes label ids, smaller ones train ids
            boxes, _ = boxes_from_instance_map(labels["instance"], 1000, self.thing_ids,
                                               class_of=lambda c: torch.where(c >= 24, label_ids_to_train_ids(c), c))
        else:
            boxes, _ = boxes_from_semantic(labels["semantic"], self.thing_ids)
        return {"image": (image.clamp(0, 1) * 255).round().to(torch.uint8),  # uint8 in memory, like PNG files
                "semantic": labels["semantic"].to(torch.uint8), "boxes": boxes}  # train ids and 255 fit in uint8


def collate(items):
    return {"images": torch.stack([it["image"] for it in items]),
            "semantic": torch.stack([it["semantic"] for it in items]), "boxes": [it["boxes"] for it in items]}


def build_datasets(cfg):
    """(source train, target train, source val, target val), prepared at data.image_size."""
    d, size = cfg.data, tuple(cfg.data.image_size)
    if d.pair != "folders":
        pair = get_pair(OmegaConf.to_container(d.inline) if d.pair == "inline" else d.pair)
        raw = [SyntheticDrivingDataset(pair, dom, split, size=size, length=n)
               for dom, split, n in (("source", "train", d.train_images), ("target", "train", d.train_images),
                                     ("source", "val", d.val_images), ("target", cfg.eval.target_split, d.val_images))]
    else:
        def read(dom, split_key, labels=True):
            c = d[dom]
            return CityscapesSegmentation(Path(d.root) / c.dir, c[split_key], c.layout, c.conditions, require_labels=labels)
        raw = [read("source", "split"), read("target", "split", labels=False),
               read("source", "val_split"), read("target", "val_split")]
    thing_ids = guidance_train_ids(cfg.warp.classes)
    return [Prepared(r, size, thing_ids, d.cache) for r in raw]


def static_prior(cfg, source_train, out: Path, info):
    """The static (FOVEA) prior: mean instance saliency over source training boxes, cached in out_dir."""
    path = out / "static_prior.npz"
    if path.is_file():
        return load_prior(path)
    n = min(cfg.warp.prior_images, len(source_train))
    prior = fit_static_prior((source_train[i]["boxes"] for i in range(n)), tuple(cfg.data.image_size),
                             tuple(cfg.warp.grid_size), cfg.warp.bandwidth_scale, cfg.warp.amplitude_scale)
    if info.is_main:
        save_prior(path, prior, images=n)
    return prior


# ------------------------------------------------------------------------------------- losses, schedule
def weighted_ce(logits, labels, weight):
    """DACS's pixel-weighted cross-entropy: mean over all pixels of weight x CE (ignored pixels add 0)."""
    return (F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none") * weight).mean()


def lr_factor(step: int, t) -> float:
    """Linear warm-up over train.warmup iterations, then poly decay to 0 at train.schedule_iters."""
    warm = min(1.0, (step + 1) / t.warmup) if t.warmup > 0 else 1.0
    return warm * (1.0 - min(step, t.schedule_iters) / t.schedule_iters) ** t.poly_power


def evaluate(model, val_sets, cfg, info) -> dict:
    """Source and target mIoU, thing-class mIoU and per-class IoU of ``model`` in eval mode (nothing warped)."""
    out, things = {}, list(guidance_train_ids(cfg.warp.classes))
    for name, ds in zip(("source", "target"), val_sets):
        r = evaluate_segmentation(unwrap(model), ds, NUM_CLASSES, device=info.device, batch_size=cfg.eval.batch_size,
                                  max_images=cfg.eval.max_images, info=info)
        out[f"{name}_miou"] = r["miou"]
        out[f"{name}_thing_miou"] = float(r["iou"][things].nanmean())  # the objects the warp zooms on
        out[f"{name}_iou"] = dict(zip(CITYSCAPES_CLASSES, r["iou"].tolist()))
    return out


@torch.no_grad()
def save_predictions(model, ds, n: int, path: Path, device) -> None:
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
    cfg = load_config("mic", sys.argv[1:] if argv is None else argv, default=DEFAULT_CONFIG)
    check(cfg)
    t, u = cfg.train, cfg.uda

    # 2. set-up: torchrun's environment, threads, seeds, output folder
    info = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    if info.is_main:
        save_config(cfg, out)
    dev = info.device

    # 3. data: source / target training streams (per-rank shards), evaluation sets
    src_train, tgt_train, src_val, tgt_val = build_datasets(cfg)

    # 4. models: student over a wrapped backbone, EMA teacher (never warps: it gets no boxes), AdamW
    prior = static_prior(cfg, src_train, out, info) if cfg.warp.guidance == "static" else None
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    w = cfg.warp
    warp_options = dict(fwhm=w.fwhm, bandwidth_scale=w.bandwidth_scale, amplitude_scale=w.amplitude_scale,
                        grid_size=tuple(w.grid_size), **({"prior": prior} if prior is not None else {}))
    model = Segmenter(cfg.model.backbone, NUM_CLASSES, cfg.model.out_indices, cfg.model.pretrained_file,
                      cfg.model.embed_dim, cfg.model.dropout, w.guidance, **warp_options).to(dev).train()
    teacher = EMATeacher(model)
    student = wrap_ddp(model, info)
    evaluated = teacher.module if cfg.eval.model == "teacher" else student  # auto: MIC evaluates the student
    opt = torch.optim.AdamW(model.param_groups(t.lr, t.head_lr_mult, t.weight_decay))
    base_lrs = [g["lr"] for g in opt.param_groups]
    torch.manual_seed(t.seed + 1000 * info.rank)  # dropout differs per rank
    gen = torch.Generator().manual_seed(t.seed + 1000 * info.rank)  # ClassMix, MIC masks, colour jitter

    # 5. resume: the last checkpoint in out_dir, if asked (and present)
    ckpt, start = out / "last.pt", 0
    if cfg.resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        opt.load_state_dict(state["optimizer"])
        rank_state = state["rng"][info.rank if len(state["rng"]) == info.world_size else 0]
        set_rng_state(rank_state["global"])
        gen.set_state(rank_state["generator"])
        start = state["step"]
    elif cfg.resume and info.is_main:
        print(f"resume=true but no checkpoint at {ckpt}: starting from step 0")

    def checkpoint(step):
        rngs = all_gather_objects({"global": rng_state(), "generator": gen.get_state()})  # every rank's
        if info.is_main:
            save_checkpoint(ckpt, {"student": model.state_dict(), "teacher": teacher.state_dict(),
                                   "optimizer": opt.state_dict(), "step": step, "rng": rngs,
                                   "config": OmegaConf.to_container(cfg)})
        barrier()

    logger = MetricsLogger(out, enabled=info.is_main, resume_step=start if start else None)
    src_it = infinite_loader(src_train, t.batch_size, seed=t.seed, info=info, start_step=start,
                             collate_fn=collate, num_workers=cfg.data.workers)
    tgt_it = infinite_loader(tgt_train, t.batch_size, seed=t.seed + 1, info=info, start_step=start,
                             collate_fn=collate, num_workers=cfg.data.workers)
    aug = dict(jitter=u.color_jitter, jitter_p=u.color_jitter_p, blur_p=u.blur_p)

    # 6. the loop
    train_seconds, cpu_seconds = 0.0, 0.0
    bar = tqdm(range(start, t.iters), initial=start, total=t.iters, desc="mic", disable=not info.is_main,
               dynamic_ncols=True)
    for step in bar:
        tic, cpu_tic = time.perf_counter(), time.process_time()
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_factor(step, t)
        opt.zero_grad(set_to_none=True)
        src = next(src_it)
        x_s, y_s = src["images"].to(dev), src["semantic"].to(dev)
        # Each phase runs backward at once (DAFormer does too): one graph in memory at a time.

        # (a) source: the only warped forward; boxes from the source labels, features unwarped
        loss_src = F.cross_entropy(student(x_s, boxes=[b.to(dev) for b in src["boxes"]]), y_s, ignore_index=IGNORE_INDEX)
        loss_src.backward()
        logs = {"loss_src": loss_src.item()}

        # train.bn_stats=source: the self-training forwards (ClassMix collages, masked images) normalise
        # with their batch statistics but leave BatchNorm's running ones (evaluation's, the teacher's) alone
        with frozen_bn_stats(model) if t.bn_stats == "source" else nullcontext():
            if u.enabled:
                x_t = next(tgt_it)["images"].to(dev)  # target labels are never used
                # (b) teacher pseudo-labels on the plain target image (no boxes: no warp), scalar weight q
                with torch.no_grad():
                    confidence, pseudo = teacher(x_t).softmax(1).max(1)
                q = (confidence >= u.threshold).float().mean()
                w_t = q.expand_as(confidence)

                # (c) ClassMix: source pixels of half of its classes onto the target; colour jitter + blur
                if u.classmix:
                    m = classmix_masks(y_s, gen, NUM_CLASSES, IGNORE_INDEX)
                    x_mix, y_mix, w_mix = mix(m, x_s, x_t), mix(m, y_s, pseudo), mix(m, torch.ones_like(w_t), w_t)
                else:  # plain self-training on the augmented target image
                    x_mix, y_mix, w_mix = x_t, pseudo, w_t
                loss_mix = weighted_ce(student(strong_augment(x_mix, gen, **aug)), y_mix, w_mix)
                loss_mix.backward()
                logs.update(loss_mix=loss_mix.item(), q=q.item())

                # (d) MIC: the colour-augmented target masked in square patches, same pseudo-labels and q
                if u.mic:
                    keep = patch_mask(x_t.shape[0], x_t.shape[-2:], u.mask_patch, u.mask_ratio, gen, dev)
                    loss_mic = u.mic_weight * weighted_ce(student(strong_augment(x_t, gen, **aug) * keep), pseudo, w_t)
                    loss_mic.backward()
                    logs["loss_mic"] = loss_mic.item()

        # (e) step, then the EMA teacher with the DACS schedule
        opt.step()
        if u.enabled:
            teacher.update(model, dacs_keep_rate(step, u.ema_keep_rate))
        train_seconds += time.perf_counter() - tic
        cpu_seconds += time.process_time() - cpu_tic  # all threads of this process

        # (f) log / evaluate / checkpoint
        done = step + 1
        if done % t.log_every == 0 or done == t.iters:
            logger.log(done, "train", lr=opt.param_groups[0]["lr"], **logs)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        if cfg.eval.every and done % cfg.eval.every == 0 and done < t.iters:
            checkpoint(done)
            metrics = evaluate(evaluated, (src_val, tgt_val), cfg, info)
            logger.log(done, "eval", **{k: v for k, v in metrics.items() if k.endswith("miou")})
            if info.is_main:
                bar.write(f"step {done}: source mIoU {100 * metrics['source_miou']:.1f}, "
                          f"target mIoU {100 * metrics['target_miou']:.1f}")

    # 7. final checkpoint, evaluation and outputs
    if start < t.iters:
        checkpoint(t.iters)
    tic = time.perf_counter()
    metrics = evaluate(evaluated, (src_val, tgt_val), cfg, info)
    final = {"iters": t.iters, "evaluated": "teacher" if evaluated is teacher.module else "student", **metrics,
             "seconds_per_iter": train_seconds / max(1, t.iters - start),
             "cpu_seconds_per_iter": cpu_seconds / max(1, t.iters - start), "world_size": info.world_size,
             "eval_seconds": time.perf_counter() - tic, "target_split": cfg.eval.target_split}
    if info.is_main:
        if start < t.iters:  # a finished run resumed again: its final eval is already logged
            logger.log(t.iters, "eval", **{k: v for k, v in metrics.items() if k.endswith("miou")})
        logger.write_json("final.json", final)
        logger.plot()
        if cfg.eval.pictures:
            save_predictions(student, tgt_val, cfg.eval.pictures, out / "predictions.png", dev)
        print(f"source mIoU {100 * final['source_miou']:.1f}  target mIoU {100 * final['target_miou']:.1f}  "
              f"{final['seconds_per_iter']:.3f} s/iter  -> {out}")
    cleanup_distributed()
    return final


if __name__ == "__main__":
    main()
