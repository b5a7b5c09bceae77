"""Command line for the synthetic domain pairs.

``python -m warpadapt.data export --pair NAME [--domain source|target] --split train|val|test --n N --out DIR``
writes Cityscapes-style PNGs and a COCO json, for one domain or (without ``--domain``) both::

    DIR/leftImg8bit/<split>/<pair>_<domain>/<stem>_leftImg8bit.png            RGB
    DIR/gtFine/<split>/<pair>_<domain>/<stem>_gtFine_labelTrainIds.png        uint8 train ids, 255 ignore
    DIR/gtFine/<split>/<pair>_<domain>/<stem>_gtFine_instanceIds.png          uint16 train_id * 1000 + k
    DIR/annotations/instances_<split>.json                                     COCO boxes

with ``stem = <pair>_<domain>_<index:06d>``. COCO ``file_name`` is relative to
``leftImg8bit/<split>/``; ``bbox`` is ``[x, y, w, h]`` of the modal box; ``area`` is the visible
pixel count of the instance. Exporting another pair/domain into the same DIR merges into the json
(images of the same ``<pair>_<domain>`` folder are replaced).

``python -m warpadapt.data preview --out docs/synthetic_pairs.png`` draws source/target scenes of
every pair with boxes. ``python -m warpadapt.data bench`` measures scenes per second.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _positive(name):
    def f(v):
        try:
            iv = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}: expected an integer, got {v!r}")
        if iv < 1:
            raise argparse.ArgumentTypeError(f"--{name}: expected >= 1, got {iv}")
        return iv
    return f


def _size(v):
    """``--size``: ``HxW`` (or ``H,W``; one number ``n`` means ``n x n``), each >= 16."""
    from warpadapt._utils import as_size
    try:
        parts = tuple(int(x) for x in v.lower().replace(",", "x").split("x"))
        return as_size(parts[0] if len(parts) == 1 else parts, "--size", minimum=16)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"--size: expected HxW such as 256x512 (H, W >= 16), got {v!r}") from None


def export(pair: str, domain: str, split: str, n: int, out: str, size=None, start: int = 0,
           progress: bool = True) -> str:
    """Export ``n`` items of ``pair``/``domain``/``split`` to ``out``; returns the json path.

    Args: see the module docstring (layout); ``size`` (H, W) overrides the pair's image size.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> os.path.basename(export("synthetic_clear2fog", "target", "val", 1, d, size=(32, 64), progress=False))
    'instances_val.json'
    """
    import cv2
    from tqdm import tqdm

    from warpadapt.data.pairs import SyntheticDrivingDataset

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not out:
        raise ValueError("out: expected an output directory")
    ds = SyntheticDrivingDataset(pair, domain, split, size=size, length=start + n)
    folder = ds.name
    img_dir = os.path.join(out, "leftImg8bit", split, folder)
    gt_dir = os.path.join(out, "gtFine", split, folder)
    ann_dir = os.path.join(out, "annotations")
    for d in (img_dir, gt_dir, ann_dir):
        os.makedirs(d, exist_ok=True)
    json_path = os.path.join(ann_dir, f"instances_{split}.json")
    coco = {"images": [], "annotations": [], "categories": [
        {"id": i + 1, "name": c, "supercategory": "driving"} for i, c in enumerate(ds.classes)]}
    if os.path.exists(json_path):
        with open(json_path) as fh:
            old = json.load(fh)
        keep = {im["id"] for im in old["images"] if not im["file_name"].startswith(folder + "/")}
        coco["images"] = [im for im in old["images"] if im["id"] in keep]
        coco["annotations"] = [a for a in old["annotations"] if a["image_id"] in keep]
    img_id = max([im["id"] for im in coco["images"]], default=0)
    ann_id = max([a["id"] for a in coco["annotations"]], default=0)
    for i in tqdm(range(start, start + n), desc=f"export {folder} {split}", disable=not progress):
        s = ds.render(i)
        stem = ds.stem(i)
        H, W = s["semantic"].shape
        rgb = (np.clip(s["image"], 0, 1) * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(os.path.join(img_dir, f"{stem}_leftImg8bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_labelTrainIds.png"), s["semantic"].astype(np.uint8))
        cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"), s["instance"].astype(np.uint16))
        img_id += 1
        coco["images"].append({"id": img_id, "file_name": f"{folder}/{stem}_leftImg8bit.png",
                               "width": int(W), "height": int(H)})
        for box, lab, iid in zip(s["boxes"].tolist(), s["labels"].tolist(), s["instance_ids"].tolist()):
            x1, y1, x2, y2 = box
            ann_id += 1
            coco["annotations"].append({
                "id": ann_id, "image_id": img_id, "category_id": int(lab),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((s["instance"] == iid).sum()),
                "iscrowd": 0})
    with open(json_path, "w") as fh:
        json.dump(coco, fh)
    return json_path


def preview(out: str, pairs=None, n: int = 2, size=(256, 512), seed_index: int = 0) -> str:
    """Write a grid (rows: pair x scene; columns: source | target, boxes drawn) to ``out``.

    >>> import tempfile
    >>> p = preview(os.path.join(tempfile.mkdtemp(), "p.png"), ["synthetic_day2night"], 1, (32, 64))
    >>> os.path.exists(p)
    True
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from warpadapt.data.labels import DETECTION_CLASSES
    from warpadapt.data.pairs import list_pairs, render_pair_sample
    from warpadapt.viz import show_boxes

    pairs = list(pairs or list_pairs())
    colors = plt.get_cmap("tab10")  # show_boxes colours label k with tab10 colour k - 1
    H, W = size
    fig, axes = plt.subplots(len(pairs) * n, 2, figsize=(2 * W / 80, len(pairs) * n * H / 80 + 0.3),
                             squeeze=False)
    for pi, name in enumerate(pairs):
        for j in range(n):
            idx = seed_index + pi * n + j
            scenes = render_pair_sample(name, idx, size=size)
            for k, (s, dom) in enumerate(zip(scenes, ("source", "target"))):
                ax = show_boxes(s["image"], s["boxes"], s["labels"], ax=axes[pi * n + j, k], linewidth=0.8)
                ax.set_title(f"{name} {dom} #{idx}", fontsize=7)
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=colors(i)) for i in range(len(DETECTION_CLASSES))]
    fig.legend(handles, DETECTION_CLASSES, loc="lower center", ncol=len(DETECTION_CLASSES), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def bench(n: int = 100, size=(256, 512), style: str = "day") -> float:
    """Scenes per second of ``generate_scene`` (single process) at ``size``.

    >>> bench(2, (32, 64)) > 0
    True
    """
    from warpadapt.data.synthetic import SceneParams, generate_scene
    p = SceneParams(height=size[0], width=size[1])
    generate_scene(0, 0, p, style)
    t = time.perf_counter()
    for i in range(n):
        generate_scene(0, i, p, style)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    """Entry point of ``python -m warpadapt.data``.

    >>> main(["bench", "--n", "1", "--size", "32x64"]) == 0  # doctest: +ELLIPSIS
    scenes/s: ...
    True
    """
    from warpadapt.data.pairs import DOMAINS, SPLITS, list_pairs
    ap = argparse.ArgumentParser(prog="python -m warpadapt.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a pair's split (both domains, or --domain) to disk (PNG + COCO json)")
    e.add_argument("--pair", required=True, choices=list_pairs())
    e.add_argument("--domain", default=None, choices=DOMAINS, help="default: both domains")
    e.add_argument("--split", required=True, choices=SPLITS)
    e.add_argument("--n", required=True, type=_positive("n"))
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=_size, default=None, help="HxW, default: the pair's image_size")
    e.add_argument("--start", type=int, default=0, help="first index")
    for name in ("preview", "show"):
        p = sub.add_parser(name, help="write a picture of source/target scenes of each pair")
        p.add_argument("--out", default="docs/synthetic_pairs.png")
        p.add_argument("--pairs", nargs="*", default=None, choices=list_pairs())
        p.add_argument("--n", type=_positive("n"), default=2, help="scenes per pair")
        p.add_argument("--size", type=_size, default=(256, 512))
        p.add_argument("--index", type=int, default=0)
    b = sub.add_parser("bench", help="measure scenes per second")
    b.add_argument("--n", type=_positive("n"), default=100)
    b.add_argument("--size", type=_size, default=(256, 512))
    b.add_argument("--style", default="day")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        for domain in [a.domain] if a.domain else DOMAINS:
            print(export(a.pair, domain, a.split, a.n, a.out, a.size, a.start))
    elif a.cmd in ("preview", "show"):
        print(preview(a.out, a.pairs, a.n, a.size, a.index))
    else:
        print(f"scenes/s: {bench(a.n, a.size, a.style):.1f} at {a.size[0]}x{a.size[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
