"""Domain gap of the synthetic pairs: a small segmenter trained on SOURCE only, tested on both.

For each pair: render source-train scenes (on the fly, fresh scenes every step), train a random-init
timm ResNet-10t feature extractor (``--backbone``) (strides 4/8/16) + 1x1 conv head on upsampled concatenated features
for ``--minutes`` on CPU, then report mIoU (confusion matrix over the 19 Cityscapes train ids, classes
absent from both ground truth and prediction are skipped) on source-val and target-val.

    python benchmarks/domain_gap.py --minutes 3 --pairs synthetic_day2night synthetic_clear2fog synthetic_clear2rain

Aim: source mIoU >= 60 and target mIoU <= 0.7 x source (the target is genuinely hard).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from warpadapt.data import SyntheticDrivingDataset, collate, list_pairs

NUM_CLASSES = 19


class Segmenter(nn.Module):
    def __init__(self, backbone="resnet18"):
        super().__init__()
        self.enc = timm.create_model(backbone, features_only=True, pretrained=False, out_indices=(1, 2, 3))
        ch = sum(self.enc.feature_info.channels())
        self.head = nn.Sequential(nn.Conv2d(ch, 128, 1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                  nn.Conv2d(128, NUM_CLASSES, 1))

    def forward(self, x):
        feats = self.enc(x)
        s = feats[0].shape[-2:]
        f = torch.cat([feats[0]] + [F.interpolate(t, size=s, mode="bilinear", align_corners=False)
                                    for t in feats[1:]], 1)
        return F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def confusion(pred, gt, n=NUM_CLASSES):
    m = gt != 255
    return torch.bincount(gt[m] * n + pred[m], minlength=n * n).reshape(n, n)


def miou(cm):
    cm = cm.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    valid = cm.sum(1) > 0  # classes present in the ground truth
    return float((inter[valid] / union[valid].clamp(min=1)).mean() * 100), (inter / union.clamp(min=1))


def normalize(x):
    mean = x.new_tensor([0.485, 0.456, 0.406])[:, None, None]
    std = x.new_tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


@torch.no_grad()
def evaluate(model, data, bs=8):
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for i in range(0, len(data["images"]), bs):
        pred = model(normalize(data["images"][i:i + bs])).argmax(1)
        cm += confusion(pred.flatten(), data["semantic"][i:i + bs].flatten())
    return miou(cm)


def render(pair, domain, split, n, size):
    ds = SyntheticDrivingDataset(pair, domain, split, size=size, length=n)
    return collate([ds[i] for i in range(n)])


def run_pair(pair, minutes, size, bs, n_train, n_val, lr, seed, backbone="resnet10t"):
    torch.manual_seed(seed)
    t0 = time.time()
    train = render(pair, "source", "train", n_train, size)
    val_s = render(pair, "source", "val", n_val, size)
    val_t = render(pair, "target", "val", n_val, size)
    t_render = time.time() - t0
    model = Segmenter(backbone)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t1, it = time.time(), 0
    budget = minutes * 60
    g = torch.Generator().manual_seed(seed)
    while time.time() - t1 < budget:
        model.train()
        idx = torch.randint(0, n_train, (bs,), generator=g)
        x, y = train["images"][idx], train["semantic"][idx]
        flip = torch.rand(bs, generator=g) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        frac = min(1.0, (time.time() - t1) / budget)
        for gr in opt.param_groups:
            gr["lr"] = lr * (1 - frac) ** 0.9
        loss = F.cross_entropy(model(normalize(x)), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        if it % 25 == 0:
            print(f"  {pair} it {it} loss {loss.item():.3f} {time.time() - t1:.0f}s", flush=True)
    ms, per_s = evaluate(model, val_s)
    mt, per_t = evaluate(model, val_t)
    return dict(pair=pair, source=ms, target=mt, iters=it, render_s=t_render,
                wall_s=time.time() - t0, per_source=per_s, per_target=per_t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", nargs="*", default=list_pairs(), choices=list_pairs())
    ap.add_argument("--minutes", type=float, default=3.0, help="training minutes per pair")
    ap.add_argument("--size", type=int, nargs=2, default=(96, 192), metavar=("H", "W"))
    ap.add_argument("--backbone", default="resnet10t", help="timm model name (features_only, random init)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-val", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if a.minutes <= 0:
        ap.error("--minutes: expected > 0")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    rows = []
    for p in a.pairs:
        r = run_pair(p, a.minutes, tuple(a.size), a.batch, a.n_train, a.n_val, a.lr, a.seed, a.backbone)
        rows.append(r)
        print(f"{p}: source {r['source']:.1f} target {r['target']:.1f} ({r['iters']} iters)", flush=True)
    print(f"\n| pair | source-val mIoU | target-val mIoU | target / source | iters | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pair']} | {r['source']:.1f} | {r['target']:.1f} | {r['target'] / max(r['source'], 1e-9):.2f} "
              f"| {r['iters']} | {r['wall_s']:.0f} |")
    from warpadapt.data import TRAIN_ID_NAMES
    print("\nper-class IoU (source / target):")
    for r in rows:
        print(r["pair"] + ": " + ", ".join(
            f"{n} {100 * float(a_):.0f}/{100 * float(b_):.0f}"
            for n, a_, b_ in zip(TRAIN_ID_NAMES, r["per_source"], r["per_target"]) if a_ > 0 or b_ > 0))
    print(f"total wall time {time.time() - t0:.0f} s (size {a.size[0]}x{a.size[1]}, batch {a.batch}, "
          f"{a.minutes} min/pair, backbone {a.backbone})")


if __name__ == "__main__":
    main()
