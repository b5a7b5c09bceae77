"""What the warp costs: train / eval step wrapped vs bare, warp construction, our inverse vs a naive one.

One run prints one markdown table of ratios measured in that run (bare and wrapped steps are
interleaved so machine load drifts hit both equally). Defaults follow issue #2: ResNet-50 and
pvt_v2_b0 (timm, random init), 512 x 1024, batch 2.

    python benchmarks/overhead.py                 # full table (about 10 minutes on 2 CPU cores)
    python benchmarks/overhead.py --quick         # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch
import torch.nn.functional as F

import warpadapt
from warpadapt.warp import Warp, pixel_centers, resample


def timeit(fn, repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each fn, alternating them every round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def driving_boxes(gen: torch.Generator, batch: int, n: int, h: int, w: int) -> list[torch.Tensor]:
    """n small boxes per image around a horizon band (sizes shrink toward it), like driving data."""
    out = []
    for _ in range(batch):
        y_bottom = h * (0.45 + 0.5 * torch.rand(n, generator=gen))
        scale = (y_bottom - 0.42 * h) / h  # perspective: smaller near the horizon
        bh = (4 + 200 * scale) * torch.empty(n).uniform_(0.6, 1.2, generator=gen)
        bw = bh * torch.empty(n).uniform_(0.5, 2.0, generator=gen)
        x1 = torch.rand(n, generator=gen) * (w - bw)
        out.append(torch.stack([x1, y_bottom - bh, x1 + bw, y_bottom], 1))
    return out


def train_step_ratio(arch: str, size, batch: int, repeat: int, out_indices=None, method="grid_sample"):
    torch.manual_seed(0)
    kw = {} if out_indices is None else {"out_indices": out_indices}
    model = timm.create_model(arch, pretrained=False, features_only=True, **kw)
    wrapped = warpadapt.wrap(model, method=method)
    x = torch.rand(batch, 3, *size)
    boxes = driving_boxes(torch.Generator().manual_seed(0), batch, 8, *size)

    def bare_step():
        model.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in model(x)).backward()

    def wrapped_step():
        wrapped.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in wrapped(x, boxes=boxes)).backward()

    wrapped.train()
    t = interleaved({"bare": bare_step, "wrapped": wrapped_step}, repeat)
    wrapped.eval()
    with torch.no_grad():
        e = interleaved({"bare": lambda: model(x), "wrapped": lambda: wrapped(x)}, repeat)
    levels = [tuple(f.shape[1:]) for f in model(x)]
    return t, e, levels


def unwarp_cost(arch: str, size, batch: int, repeat: int, out_indices=None):
    """Unwarp alone (forward + backward) of the model's feature levels, per method, vs a copy (the floor)."""
    torch.manual_seed(0)
    kw = {} if out_indices is None else {"out_indices": out_indices}
    model = timm.create_model(arch, pretrained=False, features_only=True, **kw).eval()
    with torch.no_grad():
        feats = [f.detach().clone().requires_grad_(True) for f in model(torch.rand(batch, 3, *size))]
    boxes = driving_boxes(torch.Generator().manual_seed(0), batch, 8, *size)
    warp = warpadapt.SaliencyWarp().make_warp(size, boxes, batch)
    grads = [torch.randn_like(f) for f in feats]

    def run(method):
        def f():
            outs = warpadapt.FeatureUnwarp(method=method)(feats, warp)
            torch.autograd.backward(outs, grads)

        return f

    def floor():
        torch.autograd.backward([f * 1.0 for f in feats], grads)

    return interleaved({"grid_sample": run("grid_sample"), "separable": run("separable"), "copy (floor)": floor}, repeat)


def naive_inverse(warp: Warp, size) -> torch.Tensor:
    """Baseline: per image (Python loop), upsample the coarse forward grid to full resolution and invert
    it by bilinear splatting of every cell's warped coordinates onto the original pixel lattice."""
    h, w = size
    b = warp.batch_size
    gh, gw = warp.map_y.shape[1], warp.map_x.shape[1]
    out = torch.empty(b, h, w, 2)
    for i in range(b):  # the loop over the batch that the authors' inverse has
        coarse = torch.stack(torch.broadcast_tensors(warp.map_x[i][None, :], warp.map_y[i][:, None]), 0)[None]
        full = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0]  # (2, H, W) original pos
        px = (full[0] * w - 0.5).reshape(-1)
        py = (full[1] * h - 0.5).reshape(-1)
        qy, qx = torch.meshgrid(pixel_centers(h), pixel_centers(w), indexing="ij")
        vals = torch.stack((qx.reshape(-1), qy.reshape(-1)), 1)
        acc = torch.zeros(h * w, 2)
        wsum = torch.zeros(h * w)
        x0, y0 = px.floor(), py.floor()
        for dx in (0, 1):
            for dy in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                wgt = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
                ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (wgt > 0)
                idx = (yi[ok] * w + xi[ok]).long()
                acc.index_add_(0, idx, vals[ok] * wgt[ok, None])
                wsum.index_add_(0, idx, wgt[ok])
        out[i] = (acc / wsum.clamp(min=1e-8)[:, None]).reshape(h, w, 2)
    return out


def warp_build_cost(batch: int, n_boxes: int, size, strides, repeat: int):
    boxes = driving_boxes(torch.Generator().manual_seed(1), batch, n_boxes, *size)
    sw = warpadapt.SaliencyWarp()
    level_sizes = [(-(-size[0] // s), -(-size[1] // s)) for s in strides]

    def ours_axes():
        warp = sw.make_warp(size, boxes, batch)
        for ls in level_sizes:
            warp.axes(ls, inverse=True)

    def ours_grids():
        warp = sw.make_warp(size, boxes, batch)
        for ls in level_sizes:
            warp.grid(ls, inverse=True)

    warp = sw.make_warp(size, boxes, batch)

    def naive():
        for ls in level_sizes:
            naive_inverse(warp, ls)

    t_axes = statistics.median(timeit(ours_axes, repeat * 5))
    t_grids = statistics.median(timeit(ours_grids, repeat * 5))
    t_naive = statistics.median(timeit(naive, repeat))
    # accuracy of the naive inverse against the exact one, at the stride-4 level
    exact = warp.grid(level_sizes[0], inverse=True)
    approx = naive_inverse(warp, level_sizes[0]) * 2 - 1
    err_px = float(((approx - exact).abs() * torch.tensor(level_sizes[0][::-1]) / 2).max())
    return t_axes, t_grids, t_naive, err_px


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per measurement (median)")
    ap.add_argument("--archs", nargs="+", default=["resnet50", "pvt_v2_b0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    if args.quick:
        size, args.repeat, args.archs = (128, 256), 2, ["resnet18"]
    rows = []
    print(f"# warpadapt overhead: {size[0]} x {size[1]}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.repeat} interleaved rounds", flush=True)
    for arch in args.archs:
        variants = [(None, "all levels")]
        if arch.startswith("resnet"):
            variants.append(((1, 2, 3, 4), "strides 4-32 (FPN)"))
        for out_idx, label in variants:
            t, e, levels = train_step_ratio(arch, size, args.batch, args.repeat, out_idx)
            u = unwarp_cost(arch, size, args.batch, args.repeat, out_idx)
            rows.append((f"{arch} train step, {label}", f"{t['bare'] * 1e3:.0f} ms", f"{t['wrapped'] * 1e3:.0f} ms",
                         f"{t['wrapped'] / t['bare']:.3f}"))
            rows.append((f"{arch} eval step, {label}", f"{e['bare'] * 1e3:.0f} ms", f"{e['wrapped'] * 1e3:.0f} ms",
                         f"{e['wrapped'] / e['bare']:.3f}"))
            rows.append((f"{arch} unwarp fwd+bwd, {label}: separable vs grid_sample", f"{u['grid_sample'] * 1e3:.0f} ms",
                         f"{u['separable'] * 1e3:.0f} ms", f"{u['separable'] / u['grid_sample']:.2f}"))
            rows.append((f"{arch} unwarp fwd+bwd, {label}: grid_sample vs copy (floor)", f"{u['copy (floor)'] * 1e3:.0f} ms",
                         f"{u['grid_sample'] * 1e3:.0f} ms", f"{u['grid_sample'] / u['copy (floor)']:.2f}"))
            print(f"  done {arch} ({label}); levels {levels}", file=sys.stderr, flush=True)
    bsz, nb = (8, 50)
    t_axes, t_grids, t_naive, err = warp_build_cost(bsz, nb, size, (4, 8, 16, 32), max(1, args.repeat // 2))
    rows.append((f"saliency + maps + inverse 1-D axes, batch {bsz} x {nb} boxes, strides 4-32", "-", f"{t_axes * 1e3:.2f} ms", "-"))
    rows.append((f"saliency + maps + inverse 2-D grids, batch {bsz} x {nb} boxes, strides 4-32", "-", f"{t_grids * 1e3:.2f} ms", "-"))
    rows.append((f"inverse: naive full-res 2-D splat per image (baseline) vs ours (2-D grids)", f"{t_naive * 1e3:.0f} ms",
                 f"{t_grids * 1e3:.2f} ms", f"{t_naive / t_grids:.0f}x faster"))
    rows.append(("naive inverse max error vs exact, stride 4 (pixels)", "-", f"{err:.3f} px", "-"))
    print("\n| measurement | baseline | ours / wrapped | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return rows


if __name__ == "__main__":
    main()
