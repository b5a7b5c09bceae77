"""Domain gap of the synthetic pairs: a small segmenter trained on SOURCE only, tested on both.

For each distinct source (pairs whose source config is identical, as for the shipped pairs, which all
use the clear "day" source, share ONE trained model: same data, same seed, same training), render
``--n-train`` source-train scenes, train a random-init timm backbone (``--backbone``, features at
strides 4/8/16 by default, ``--out-indices``) + a 1x1 conv head on the upsampled concatenated features
for ``--minutes`` on CPU (AdamW, warm-up + poly decay over the time budget, horizontal flip and
random-scale crop augmentation on the source, no colour augmentation), then report the mIoU
(``warpadapt.eval.ConfusionMatrix``: mean IoU over the classes present in the ground truth or the
prediction, 19 Cityscapes train ids, 255 ignored) on ``--n-val`` source-val and target-val scenes.

    python benchmarks/domain_gap.py                       # defaults: 128x256, resnet18, ~12 min
    python benchmarks/domain_gap.py --minutes 3 --pairs synthetic_clear2fog --size 96 192

``--save-model`` / ``--load-model`` store / reuse the trained weights (with ``--load-model`` nothing
is trained: handy to re-measure the targets after changing a target style or effect).

Aim: source mIoU >= 60 and target mIoU clearly below it (0.3-0.65 x source): a real but partial shift.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from warpadapt.data import CITYSCAPES_CLASSES, SyntheticDrivingDataset, collate, get_pair, list_pairs
from warpadapt.eval import ConfusionMatrix

NUM_CLASSES = 19


class Segmenter(nn.Module):
    """timm features (``out_indices``) upsampled to the finest one, concatenated, 1x1 conv head.

    Input (B, 3, H, W) normalised RGB; output logits (B, 19, H, W).
    """

    def __init__(self, backbone="resnet18", out_indices=(1, 2, 3)):
        super().__init__()
        self.enc = timm.create_model(backbone, features_only=True, pretrained=False,
                                     out_indices=tuple(out_indices))
        ch = sum(self.enc.feature_info.channels())
        self.head = nn.Sequential(nn.Conv2d(ch, 128, 1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                  nn.Conv2d(128, NUM_CLASSES, 1))

    def forward(self, x):
        feats = self.enc(x)
        s = feats[0].shape[-2:]
        f = torch.cat([feats[0]] + [F.interpolate(t, size=s, mode="bilinear", align_corners=False)
                                    for t in feats[1:]], 1)
        return F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def normalize(x):
    mean = x.new_tensor([0.485, 0.456, 0.406])[:, None, None]
    std = x.new_tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


@torch.no_grad()
def evaluate(model, data, bs=8) -> dict:
    """``ConfusionMatrix.compute()`` of ``model`` on rendered ``data`` (images (N,3,H,W), semantic)."""
    model.eval()
    cm = ConfusionMatrix(NUM_CLASSES, ignore_index=255)
    for i in range(0, len(data["images"]), bs):
        cm.update(model(normalize(data["images"][i:i + bs])).argmax(1), data["semantic"][i:i + bs])
    return cm.compute()


def render(pair, domain, split, n, size):
    ds = SyntheticDrivingDataset(pair, domain, split, size=size, length=n)
    b = collate([ds[i] for i in range(n)])
    return {"images": b["images"], "semantic": b["semantic"]}


def augment(x, y, g, scale=(0.8, 1.4)):
    """Per-sample horizontal flip and random scale (zoom in: random crop; zoom out: pad, label 255)."""
    B, _, H, W = x.shape
    xo, yo = torch.zeros_like(x), torch.full_like(y, 255)
    for b in range(B):
        xi, yi = x[b:b + 1], y[b:b + 1, None].float()
        if torch.rand(1, generator=g) < 0.5:
            xi, yi = xi.flip(-1), yi.flip(-1)
        s = scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=g))
        h, w = max(8, round(H * s)), max(8, round(W * s))
        xi = F.interpolate(xi, size=(h, w), mode="bilinear", align_corners=False)
        yi = F.interpolate(yi, size=(h, w), mode="nearest")
        # place the (h, w) picture into the (H, W) output at a random offset (crop or pad)
        oy = int(torch.randint(min(0, H - h), max(0, H - h) + 1, (1,), generator=g))
        ox = int(torch.randint(min(0, W - w), max(0, W - w) + 1, (1,), generator=g))
        sy0, sx0 = max(0, -oy), max(0, -ox)
        dy0, dx0 = max(0, oy), max(0, ox)
        hh, ww = min(h - sy0, H - dy0), min(w - sx0, W - dx0)
        xo[b, :, dy0:dy0 + hh, dx0:dx0 + ww] = xi[0, :, sy0:sy0 + hh, sx0:sx0 + ww]
        yo[b, dy0:dy0 + hh, dx0:dx0 + ww] = yi[0, 0, sy0:sy0 + hh, sx0:sx0 + ww].long()
    return xo, yo


def class_weights(sem, power):
    """Cross-entropy weights ``freq ** -power`` (normalised to mean 1 over present classes)."""
    cnt = torch.bincount(sem[sem != 255].flatten(), minlength=NUM_CLASSES).double()
    w = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    m = cnt > 0
    w[m] = (cnt[m] / cnt[m].sum()) ** -power
    w[m] /= w[m].mean()
    return w.float()


def train(pair, a, log_prefix):
    torch.manual_seed(a.seed)
    t0 = time.time()
    data = render(pair, "source", "train", a.n_train, tuple(a.size))
    t_render = time.time() - t0
    model = Segmenter(a.backbone, a.out_indices)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    weight = class_weights(data["semantic"], a.class_weight_power) if a.class_weight_power > 0 else None
    g = torch.Generator().manual_seed(a.seed)
    budget, t1, it = a.minutes * 60, time.time(), 0
    while time.time() - t1 < budget:
        model.train()
        idx = torch.randint(0, a.n_train, (a.batch,), generator=g)
        x, y = data["images"][idx], data["semantic"][idx]
        x, y = augment(x, y, g, tuple(a.scale))
        frac = min(1.0, (time.time() - t1) / budget)
        lr = a.lr * min(1.0, frac / 0.03 + 0.05) * (1 - frac) ** 0.9
        for gr in opt.param_groups:
            gr["lr"] = lr
        loss = F.cross_entropy(model(normalize(x)), y, weight=weight, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        if it % 100 == 0:
            print(f"  {log_prefix} it {it} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t1:.0f}s",
                  flush=True)
    return model, it, t_render, time.time() - t0


def source_key(pair, size):
    """Everything that defines the source training data of ``pair`` (equal keys: same model)."""
    cfg = get_pair(pair)
    return json.dumps(dict(source=OmegaConf.to_container(cfg.source, resolve=True),
                           scene=OmegaConf.to_container(cfg.scene, resolve=True),
                           seed=int(cfg.seed), size=list(size)), sort_keys=True)


def fmt(v):
    return "-" if v is None or math.isnan(v) else f"{100 * v:.0f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", nargs="*", default=list_pairs(), choices=list_pairs())
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training minutes per distinct source (the shipped pairs share one)")
    ap.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    ap.add_argument("--backbone", default="resnet18", help="timm model name (features_only, random init)")
    ap.add_argument("--out-indices", type=int, nargs="+", default=(1, 2, 3))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-val", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.4), metavar=("LO", "HI"),
                    help="random-scale augmentation range on the source (1 1: off)")
    ap.add_argument("--class-weight-power", type=float, default=0.25,
                    help="cross-entropy class weights freq ** -power (0: unweighted)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-model", default=None, help="save the (first) trained model's state_dict")
    ap.add_argument("--load-model", default=None, help="evaluate this state_dict instead of training")
    a = ap.parse_args(argv)
    if a.minutes <= 0:
        ap.error("--minutes: expected > 0")
    torch.set_num_threads(a.threads)
    size = tuple(a.size)
    t0 = time.time()
    models: dict = {}  # source key -> (model, iters, render_s, train wall s, first pair)
    rows = []
    for p in a.pairs:
        k = source_key(p, size)
        if k not in models:
            if a.load_model:
                m = Segmenter(a.backbone, a.out_indices)
                m.load_state_dict(torch.load(a.load_model, map_location="cpu"))
                models[k] = (m, 0, 0.0, 0.0, p)
            else:
                models[k] = (*train(p, a, p), p)
                if a.save_model and len(models) == 1:
                    torch.save(models[k][0].state_dict(), a.save_model)
        else:
            print(f"{p}: same source as {models[k][4]}, reusing its model", flush=True)
        model, iters, t_render, t_train, first = models[k]
        t1 = time.time()
        rs = evaluate(model, render(p, "source", "val", a.n_val, size))
        rt = evaluate(model, render(p, "target", "val", a.n_val, size))
        rows.append(dict(pair=p, source=rs, target=rt, iters=iters, model_of=first,
                         train_s=t_train if first == p else 0.0, eval_s=time.time() - t1))
        print(f"{p}: source {100 * rs['miou']:.1f} target {100 * rt['miou']:.1f} "
              f"(model of {first}, {iters} iters)", flush=True)

    print("\n| pair | source-val mIoU | target-val mIoU | target / source | iters | train (s) | eval (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s, t = 100 * r["source"]["miou"], 100 * r["target"]["miou"]
        it = f"{r['iters']}" if r["model_of"] == r["pair"] else f"(shared with {r['model_of']})"
        print(f"| {r['pair']} | {s:.1f} | {t:.1f} | {t / max(s, 1e-9):.2f} | {it} | {r['train_s']:.0f} "
              f"| {r['eval_s']:.0f} |")
    present = [c for c in range(NUM_CLASSES)
               if any(not math.isnan(float(r[d]["iou"][c])) for r in rows for d in ("source", "target"))]
    print("\nper-class IoU, source / target:\n")
    print("| class | " + " | ".join(r["pair"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for c in present:
        print(f"| {CITYSCAPES_CLASSES[c]} | " + " | ".join(
            f"{fmt(float(r['source']['iou'][c]))} / {fmt(float(r['target']['iou'][c]))}" for r in rows) + " |")
    print(f"\ntotal wall time {time.time() - t0:.0f} s (size {size[0]}x{size[1]}, backbone {a.backbone} "
          f"{tuple(a.out_indices)}, batch {a.batch}, {a.minutes} min per distinct source, "
          f"{a.n_train} train / {a.n_val} val scenes, scale {tuple(a.scale)}, "
          f"class-weight power {a.class_weight_power})")


if __name__ == "__main__":
    main()
