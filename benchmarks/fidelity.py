"""Fidelity benchmark: how much information the warp loses as it gets stronger.

One run sweeps the warp intensity one axis at a time around the defaults (FWHM 13, bandwidth scale
b 64, amplitude A 1), plus the identity warp (no boxes), and reports for each setting:

* local zoom (``warp.zoom()``), min and max over the batch, per axis;
* object pixel share: fraction of image pixels inside the union of the boxes, before warping and
  after (boxes mapped with ``warp.forward_boxes``);
* round-trip PSNR of the IMAGE: ``unapply(apply(x))`` at stride 1 vs ``x`` (peak 1, images in
  [0, 1]), on all pixels and on object pixels only;
* end-to-end round trip of FEATURES at strides 4/8/16/32: a fixed random-init ResNet-18 (timm,
  ``pretrained=False``, seeded, eval mode) gives bare features ``F(x)`` and unwarped features
  ``U(F(W(x)))``; PSNR with the peak = max - min of the bare feature at that stride (over the
  batch), and the relative error ``||U(F(W(x))) - F(x)|| / ||F(x)||``. This mixes resampling loss
  with the backbone's non-equivariance to warping, so also
* the pure resampling round trip of the bare features: ``U(W_s(F(x)))`` vs ``F(x)``, where ``W_s``
  warps each feature map at its own resolution (``warp.apply``).

It also checks once that ``resample(method="grid_sample")`` and ``method="separable"`` agree.

Outputs: a markdown table on stdout and in ``<out-dir>/fidelity.md``, a plot ``<out-dir>/fidelity.png``.

Usage::

    python benchmarks/fidelity.py                        # 4 scenes at 512 x 1024, writes docs/
    python benchmarks/fidelity.py --size 256 512 --batch 2 --fwhm 4 13 --out-dir /tmp/fid
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import warpadapt
from warpadapt import FeatureUnwarp, SaliencyWarp
from warpadapt.maps import resample

DEFAULTS = {"fwhm": 13.0, "bandwidth_scale": 64.0, "amplitude_scale": 1.0}
STRIDES = (4, 8, 16, 32)
AXES = (("fwhm", "FWHM"), ("bandwidth_scale", "b"), ("amplitude_scale", "A"))


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _procedural_scenes(batch: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Fallback input: smooth sky/road image with a few small coloured boxes near the horizon."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xs = torch.linspace(0, 1, w)[None, :].expand(h, w)
    images, boxes = [], []
    for _ in range(batch):
        horizon = 0.42 + 0.06 * float(torch.rand(1, generator=gen))
        sky = torch.stack((0.5 + 0.3 * ys, 0.6 + 0.3 * ys, 0.9 - 0.1 * ys))
        road = torch.stack((0.35 + 0.1 * ys, 0.35 + 0.1 * ys, 0.38 + 0.1 * ys))
        img = torch.where(ys[None] < horizon, sky, road)
        # smooth low-frequency texture
        noise = torch.randn(1, 3, max(h // 32, 2), max(w // 32, 2), generator=gen)
        noise = torch.nn.functional.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = img + 0.05 * noise + 0.05 * torch.sin(12 * xs)[None]
        n = 5 + int(torch.randint(0, 4, (1,), generator=gen))
        bx = []
        for _ in range(n):
            side = (0.02 + 0.05 * float(torch.rand(1, generator=gen))) * h
            cx = (0.2 + 0.6 * float(torch.rand(1, generator=gen))) * w
            cy = (horizon + 0.03 * float(torch.randn(1, generator=gen))) * h
            x1, y1, x2, y2 = cx - side, cy - side, cx + side, cy + 0.5 * side
            colour = torch.rand(3, 1, 1, generator=gen)
            r0, r1 = max(int(round(y1)), 0), min(int(round(y2)), h)
            c0, c1 = max(int(round(x1)), 0), min(int(round(x2)), w)
            img[:, r0:r1, c0:c1] = colour
            bx.append([c0, r0, c1, r1])
        images.append(img.clamp(0, 1))
        boxes.append(torch.tensor(bx, dtype=torch.float32).reshape(-1, 4))
    return torch.stack(images), boxes


def load_scenes(batch: int, size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], str]:
    """Driving-like images (B, 3, H, W) in [0, 1], their boxes, and a description of the source."""
    try:
        from warpadapt.data import SyntheticDrivingDataset, collate

        ds = SyntheticDrivingDataset("synthetic_day2night", "source", "val", size=size, length=batch)
        b = collate([ds[i] for i in range(batch)])
        return b["images"].float(), [x.float() for x in b["boxes"]], (
            f"warpadapt.data synthetic scenes (synthetic_day2night, source/val, items 0-{batch - 1})"
        )
    except Exception as exc:  # the data package is optional for this benchmark
        images, boxes = _procedural_scenes(batch, size, seed)
        return images, boxes, f"procedural smooth sky/road images with small boxes near the horizon (warpadapt.data unavailable: {exc!r})"


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def box_mask(boxes: list[torch.Tensor], size: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
    """(B, H, W) bool union of boxes (xyxy pixels / scale); pixel c is inside if x1 <= c + 0.5 < x2."""
    h, w = size
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, bx in enumerate(boxes):
        for x1, y1, x2, y2 in (bx.double() / scale).tolist():
            c0, c1 = max(math.ceil(x1 - 0.5), 0), min(math.ceil(x2 - 0.5), w)
            r0, r1 = max(math.ceil(y1 - 0.5), 0), min(math.ceil(y2 - 0.5), h)
            if c1 > c0 and r1 > r0:
                out[i, r0:r1, c0:c1] = True
    return out


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB (inf if exact); ``mask`` (B, H, W) restricts to those pixels (nan if empty)."""
    d2 = (x.double() - ref.double()) ** 2
    if mask is not None:
        m = mask[:, None].expand_as(d2)
        if not m.any():
            return float("nan")
        mse = float(d2[m].mean())
    else:
        mse = float(d2.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm().clamp(min=1e-300))


def make_backbone(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    return model.eval()


def feature_columns(row: dict, boxes, h: int, bare_feats, e2e, roundtrip) -> dict:
    """Per-stride columns: end-to-end (``e2e`` vs bare) and pure resampling (``roundtrip(f)`` vs f)."""
    for s, f, g in zip(STRIDES, bare_feats, e2e):
        peak = float(f.max() - f.min())
        fmask = box_mask(boxes, tuple(f.shape[-2:]), scale=h / f.shape[-2])
        row[f"psnr_e2e_s{s}"] = psnr(g, f, peak)
        row[f"psnr_e2e_obj_s{s}"] = psnr(g, f, peak, fmask)
        row[f"rel_e2e_s{s}"] = rel_err(g, f)
        rs = roundtrip(f)
        row[f"psnr_rs_s{s}"] = psnr(rs, f, peak)
        row[f"rel_rs_s{s}"] = rel_err(rs, f)
    return row


def measure(images, boxes, warper: SaliencyWarp, box_arg, backbone, bare_feats, unwarp: FeatureUnwarp) -> dict:
    """All metrics for one warp setting. ``box_arg`` is what the warp sees (empty lists = identity)."""
    b, _, h, w = images.shape
    warped, warp = warper(images, box_arg)
    zy, zx = warp.zoom()
    mask0 = box_mask(boxes, (h, w))
    mask1 = box_mask(warp.forward_boxes(boxes, (h, w)), (h, w))
    back = warp.unapply(warped)
    row = {
        "zoom_x_min": float(zx.min()), "zoom_x_max": float(zx.max()),
        "zoom_y_min": float(zy.min()), "zoom_y_max": float(zy.max()),
        "share_before": float(mask0.float().mean()), "share_after": float(mask1.float().mean()),
        "psnr_image": psnr(back, images, 1.0), "psnr_image_obj": psnr(back, images, 1.0, mask0),
    }
    with torch.no_grad():
        e2e = unwarp(backbone(warped), warp)
    return feature_columns(row, boxes, h, bare_feats, e2e, lambda f: warp.unapply(warp.apply(f)))


def _shift_axes(b: int, size, d) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of ``size`` shifted by ``d = (dy, dx)`` (fractions), as (B, H), (B, W) positions."""
    h, w = size
    fy = ((torch.arange(h, dtype=torch.float64) + 0.5) / h + d[0]).clamp(0, 1)
    fx = ((torch.arange(w, dtype=torch.float64) + 0.5) / w + d[1]).clamp(0, 1)
    return fy.expand(b, h), fx.expand(b, w)


def measure_shift(images, boxes, backbone, bare_feats) -> dict:
    """Reference row: a uniform half-pixel shift (zoom 1 everywhere), i.e. the bilinear blur floor.

    image / resample columns: shift by +1/2 pixel OF THAT RESOLUTION and back; e2e columns: shift the
    image by +1/2 image pixel, run the backbone, shift each feature map back by the same fraction.
    """
    b, _, h, w = images.shape
    mask0 = box_mask(boxes, (h, w))

    def there_and_back(x, d):
        size = x.shape[-2:]
        y = resample(x, *_shift_axes(b, size, d))
        return y, (lambda z: resample(z, *_shift_axes(b, z.shape[-2:], (-d[0], -d[1]))))

    dimg = (0.5 / h, 0.5 / w)
    shifted, back_fn = there_and_back(images, dimg)
    back = back_fn(shifted)
    row = {
        "zoom_x_min": 1.0, "zoom_x_max": 1.0, "zoom_y_min": 1.0, "zoom_y_max": 1.0,
        "share_before": float(mask0.float().mean()), "share_after": float(mask0.float().mean()),
        "psnr_image": psnr(back, images, 1.0), "psnr_image_obj": psnr(back, images, 1.0, mask0),
    }
    with torch.no_grad():
        e2e = [back_fn(g) for g in backbone(shifted)]

    def roundtrip(f):
        fs, fback = there_and_back(f, (0.5 / f.shape[-2], 0.5 / f.shape[-1]))
        return fback(fs)

    feature_columns(row, boxes, h, bare_feats, e2e, roundtrip)
    return row


def method_agreement(images, boxes, bare_feats) -> dict:
    """Max abs difference between resample(method="grid_sample") and "separable" (default warp)."""
    warp = SaliencyWarp().make_warp(images.shape[-2:], boxes, batch_size=images.shape[0])
    out = {}
    fy, fx = warp.axes(images.shape[-2:])
    out["image warp"] = float((resample(images, fy, fx, method="grid_sample") - resample(images, fy, fx, method="separable")).abs().max())
    f = bare_feats[0]
    fy, fx = warp.axes(f.shape[-2:], inverse=True)
    a = resample(f, fy, fx, method="grid_sample")
    out["stride-4 feature unwarp"] = float((a - resample(f, fy, fx, method="separable")).abs().max())
    out["stride-4 feature unwarp (relative to max |f|)"] = out["stride-4 feature unwarp"] / float(f.abs().max())
    return out


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
def settings(fwhms, bandwidths, amplitudes) -> list[tuple[str, str, float, dict]]:
    """(label, axis, value, kwargs) for identity, then one axis at a time around the defaults."""
    out = [("identity (no boxes)", "identity", float("nan"), dict(DEFAULTS))]
    for (key, short), values in zip(AXES, (fwhms, bandwidths, amplitudes)):
        for v in values:
            kw = dict(DEFAULTS, **{key: float(v)})
            label = f"{short} = {v:g}" + (" (default)" if kw == DEFAULTS else "")
            out.append((label, key, float(v), kw))
    return out


def run(size=(512, 1024), batch=4, fwhms=(4, 8, 13, 20), bandwidths=(16, 64, 256), amplitudes=(0.5, 1, 2, 4),
        seed=0, log=None, reference=True) -> tuple[list[dict], dict]:
    """Run the sweep; returns (rows, info). Each row: label, axis, value and the metrics of ``measure``."""
    t0 = time.time()
    images, boxes, source = load_scenes(batch, tuple(size), seed)
    backbone = make_backbone(seed)
    unwarp = FeatureUnwarp()
    with torch.no_grad():
        bare = backbone(images)
    rows, cache = [], {}
    for label, axis, value, kw in settings(fwhms, bandwidths, amplitudes):
        key = (axis == "identity", tuple(sorted(kw.items())))
        if key in cache:  # the default setting appears once per axis: measure it once
            row = dict(cache[key])
        else:
            t = time.time()
            box_arg = [torch.zeros(0, 4)] * batch if axis == "identity" else boxes
            row = measure(images, boxes, SaliencyWarp(**kw), box_arg, backbone, bare, unwarp)
            cache[key] = row
            if log is not None:
                log(f"  {label:<22s} {time.time() - t:5.1f} s")
        row.update(label=label, axis=axis, value=value)
        rows.append(row)
    if reference:
        t = time.time()
        row = measure_shift(images, boxes, backbone, bare)
        row.update(label="ref: 1/2-px shift, zoom 1", axis="reference", value=float("nan"))
        rows.insert(1, row)
        if log is not None:
            log(f"  {row['label']:<22s} {time.time() - t:5.1f} s")
    info = {
        "source": source,
        "size": tuple(int(v) for v in images.shape[-2:]),
        "batch": int(images.shape[0]),
        "boxes_per_image": [int(b.shape[0]) for b in boxes],
        "agreement": method_agreement(images, boxes, bare),
        "seconds": time.time() - t0,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return rows, info


# --------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------
def _db(v: float) -> str:
    if math.isnan(v):
        return "-"
    return "inf" if math.isinf(v) else f"{v:.1f}"


def markdown(rows: list[dict], info: dict) -> str:
    hdr = ["setting", "zoom x min-max", "zoom y min-max", "obj share before -> after", "image PSNR all / obj"]
    hdr += [f"e2e s{s}" for s in STRIDES] + ["e2e obj s8"] + [f"resample s{s}" for s in STRIDES]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        cells = [
            r["label"],
            f"{r['zoom_x_min']:.2f}-{r['zoom_x_max']:.2f}",
            f"{r['zoom_y_min']:.2f}-{r['zoom_y_max']:.2f}",
            f"{100 * r['share_before']:.1f}% -> {100 * r['share_after']:.1f}%",
            f"{_db(r['psnr_image'])} / {_db(r['psnr_image_obj'])}",
        ]
        cells += [_db(r[f"psnr_e2e_s{s}"]) for s in STRIDES] + [_db(r["psnr_e2e_obj_s8"])]
        cells += [_db(r[f"psnr_rs_s{s}"]) for s in STRIDES]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    rhdr = ["setting"] + [f"e2e s{s}" for s in STRIDES] + [f"resample s{s}" for s in STRIDES]
    rl = ["| " + " | ".join(rhdr) + " |", "|" + "---|" * len(rhdr)]
    for r in rows:
        rl.append("| " + " | ".join([r["label"]] + [f"{r[f'rel_e2e_s{s}']:.3f}" for s in STRIDES]
                                      + [f"{r[f'rel_rs_s{s}']:.3f}" for s in STRIDES]) + " |")
    agree = "\n".join(f"- {k}: {v:.3g}" for k, v in info["agreement"].items())
    h, w = info["size"]
    return f"""# Warp fidelity: information lost as the warp gets stronger

Generated by `python benchmarks/fidelity.py` ({info['batch']} scenes at {h} x {w}, {info['seconds']:.0f} s on
{info['threads']} CPU threads, torch {info['torch']}).

Inputs: {info['source']}; boxes per image: {info['boxes_per_image']}.
Sweep: one axis at a time around the defaults FWHM 13, b 64, A 1 (instance guidance, 31 x 51 grid),
plus the identity warp (no boxes). "Stronger" (more zoom) = LARGER FWHM, larger A, smaller b (see the
zoom columns). The row "ref: 1/2-px shift" is not a warp but the bilinear floor: a uniform half-pixel
shift there and back (zoom 1 everywhere; image and resample columns shift by 1/2 pixel of their own
resolution; e2e columns shift the image by 1/2 image pixel and the features back by the same fraction).

Columns:
- zoom: `warp.zoom()` local magnification per axis, min-max over the batch (> 1 = oversampled).
- obj share: fraction of pixels inside the union of the boxes, original image -> warped image
  (boxes mapped with `warp.forward_boxes`).
- image PSNR: `warp.unapply(warp.apply(x))` vs `x` at stride 1, peak 1 (images in [0, 1]); "obj" =
  pixels inside the boxes only.
- e2e sS: PSNR in dB of `FeatureUnwarp()(F(W(x)), warp)` vs the bare features `F(x)` at stride S, for a
  fixed random-init (seed 0, eval mode) timm `resnet18` (`features_only`, out_indices 1-4). Peak = max - min of
  the bare feature at that stride over the batch. This mixes resampling loss with the backbone's
  non-equivariance to warping (a CNN is not equivariant to a non-uniform rescaling). "e2e obj s8" = the
  same restricted to stride-8 cells inside the boxes.
- resample sS: pure resampling round trip of the bare features, `warp.unapply(warp.apply(F(x)))` vs
  `F(x)`, each feature map warped at its own resolution: the information the warp itself throws away
  at that resolution.

{table}

Relative error `||U(.) - F(x)|| / ||F(x)||` (same rows):

{rl[0]}
{chr(10).join(rl[1:])}

`resample(method="grid_sample")` vs `method="separable"`, max abs difference (default warp):
{agree}

![fidelity](fidelity.png)
"""


def plot(rows: list[dict], info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ident = next(r for r in rows if r["axis"] == "identity")
    ref = next((r for r in rows if r["axis"] == "reference"), None)
    colours = dict(zip(STRIDES, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    fig, axs = plt.subplots(2, 3, figsize=(16, 9), sharey="row", gridspec_kw={"height_ratios": [2, 1]})
    cap = 80.0

    def c(v):
        return min(v, cap) if not math.isnan(v) else v

    titles = {"fwhm": "FWHM (grid cells)  - larger is stronger", "bandwidth_scale": "bandwidth scale b  - smaller is stronger",
              "amplitude_scale": "amplitude A  - larger is stronger"}
    for j, (key, _short) in enumerate(AXES):
        rs = sorted((r for r in rows if r["axis"] == key), key=lambda r: r["value"])
        if not rs:
            axs[0, j].set_visible(False)
            axs[1, j].set_visible(False)
            continue
        x = [r["value"] for r in rs]
        ax = axs[0, j]
        ax.plot(x, [c(r["psnr_image"]) for r in rs], "k-o", lw=2, label="image (stride 1)")
        for s in STRIDES:
            ax.plot(x, [c(r[f"psnr_e2e_s{s}"]) for r in rs], "-o", color=colours[s], label=f"e2e U(F(W x)) s{s}")
            ax.plot(x, [c(r[f"psnr_rs_s{s}"]) for r in rs], "--s", color=colours[s], ms=4, alpha=0.8,
                    label=f"resample U(W_s F(x)) s{s}")
        ax.set_xscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_title(titles[key])
        ax.grid(alpha=0.3)
        if key == "bandwidth_scale":
            ax.invert_xaxis()  # stronger warp to the right on every panel
        ax.axvline(DEFAULTS[key], color="grey", ls=":", lw=1)
        if ref is not None:
            ax.axhline(c(ref["psnr_image"]), color="k", ls=":", lw=1.5, label="image, 1/2-px shift reference")
        ax2 = axs[1, j]
        ax2.plot(x, [max(r["zoom_x_max"], r["zoom_y_max"]) for r in rs], "m-o", label="max zoom (x or y)")
        ax2.plot(x, [1.0 / min(r["zoom_x_min"], r["zoom_y_min"]) for r in rs], "c-o", label="1 / min zoom (x or y)")
        ax2.plot(x, [r["share_after"] / max(r["share_before"], 1e-12) for r in rs], "g-o", label="object pixel share, after / before")
        ax2.set_xscale("log")
        ax2.set_xticks(x)
        ax2.set_xticklabels([f"{v:g}" for v in x])
        ax2.minorticks_off()
        if key == "bandwidth_scale":
            ax2.invert_xaxis()
        ax2.axvline(DEFAULTS[key], color="grey", ls=":", lw=1)
        ax2.grid(alpha=0.3)
    axs[0, 0].set_ylabel(f"round-trip PSNR (dB, capped at {cap:g})\nidentity: image {_db(ident['psnr_image'])}, "
                         f"e2e s4 {_db(ident['psnr_e2e_s4'])}")
    axs[1, 0].set_ylabel("factor")
    axs[1, 0].legend(fontsize=9, loc="upper left")
    h, l = axs[0, 0].get_legend_handles_labels()
    order = [l.index("image (stride 1)")] + [i for i, t in enumerate(l) if "shift" in t]
    for s in STRIDES:  # legend fills column by column: e2e on the top row, resampling below
        order += [l.index(f"e2e U(F(W x)) s{s}"), l.index(f"resample U(W_s F(x)) s{s}")]
    fig.legend([h[i] for i in order], [l[i] for i in order], loc="lower center", ncol=5, fontsize=9, frameon=False)
    h_, w_ = info["size"]
    fig.suptitle(f"Warp fidelity: round trip vs warp strength ({info['batch']} scenes, {h_} x {w_}; "
                 "solid = backbone end-to-end, dashed = pure feature resampling; dotted line = default)", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--fwhm", type=float, nargs="+", default=[4, 8, 13, 20])
    p.add_argument("--bandwidth", type=float, nargs="+", default=[16, 64, 256])
    p.add_argument("--amplitude", type=float, nargs="+", default=[0.5, 1, 2, 4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "docs",
                   help="where fidelity.md and fidelity.png go")
    p.add_argument("--no-files", action="store_true", help="only print the table")
    a = p.parse_args(argv)
    rows, info = run(tuple(a.size), a.batch, a.fwhm, a.bandwidth, a.amplitude, a.seed,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    md = markdown(rows, info)
    print(md)
    if not a.no_files:
        a.out_dir.mkdir(parents=True, exist_ok=True)
        (a.out_dir / "fidelity.md").write_text(md)
        plot(rows, info, a.out_dir / "fidelity.png")
    return rows


if __name__ == "__main__":
    main()
