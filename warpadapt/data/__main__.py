"""Command line for the synthetic domain pairs.

``python -m warpadapt.data export --pair NAME [--domain source|target] --split train|val|test --n N --out DIR``
writes Cityscapes-style PNGs and a COCO json, for one domain or (without ``--domain``) both
(``--layout synthetic``, the default)::

    DIR/leftImg8bit/<split>/<pair>_<domain>/<stem>_leftImg8bit.png            RGB
    DIR/gtFine/<split>/<pair>_<domain>/<stem>_gtFine_labelTrainIds.png        uint8 train ids, 255 ignore
    DIR/gtFine/<split>/<pair>_<domain>/<stem>_gtFine_instanceIds.png          uint16 train_id * 1000 + k
    DIR/annotations/instances_<split>.json                                     COCO boxes

with ``stem = <pair>_<domain>_<index:06d>``. COCO ``file_name`` is relative to
``leftImg8bit/<split>/``; ``bbox`` is ``[x, y, w, h]`` of the modal box; ``area`` is the visible
pixel count of the instance. Exporting another pair/domain into the same DIR merges into the json
(images of the same ``<pair>_<domain>`` folder are replaced).

``--layout cityscapes|acdc|darkzurich|bdd100k`` writes the layout of that real dataset instead, into
``DIR/<dataset>/`` and at the real dataset's image size unless ``--size`` says otherwise, so that the
real-data configs read it with only ``data.root`` changed (``recipes/configs/mic/cityscapes2acdc_*.yaml``:
``data.root=DIR``; ``recipes/configs/twopcnet/bdd100k_*.yaml``: ``data.root=DIR/bdd100k``)::

    cityscapes  1024 x 2048  DIR/cityscapes/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
                             DIR/cityscapes/gtFine/<split>/<city>/<stem>_gtFine_{labelTrainIds,labelIds,instanceIds}.png
    acdc        1080 x 1920  DIR/acdc/rgb_anon/<condition>/<split>/<seq>/<stem>_rgb_anon.png
                             DIR/acdc/gt/<condition>/<split>/<seq>/<stem>_gt_{labelTrainIds,labelIds}.png
    darkzurich  1080 x 1920  DIR/dark_zurich/rgb_anon/<split>/night/<seq>/<stem>_rgb_anon.png
                             DIR/dark_zurich/gt/<split>/night/<seq>/<stem>_gt_{labelTrainIds,labelIds}.png (not train)
    bdd100k      720 x 1280  DIR/bdd100k/images/100k/<split>/<stem>.jpg
                             DIR/bdd100k/labels/det_20/det_<split>.json

with ``<city>`` / ``<seq>`` = ``<pair>_<domain>``. Default domain (without ``--domain``): cityscapes the
source, acdc / darkzurich the target, bdd100k both. ``labelIds`` are Cityscapes label ids (train id ->
the first label id of it, ignore -> 0) and ``instanceIds`` follow real Cityscapes: ``label_id * 1000 + k`` on the pixels of person ... bicycle
(train ids 11-18), the label id elsewhere (traffic lights and signs have no instances there). ACDC and
Dark Zurich have no instance maps (their readers take boxes from the semantic map's components); Dark
Zurich's train split has no labels. The condition (ACDC / Dark Zurich folder, BDD100K attributes)
follows the pair's name (``..._clear2fog`` -> fog, ``..._day2night`` -> night, ``..._clear2rain``
-> rain; ``--condition`` to choose another of fog, night, rain, snow): BDD100K frames of the source
domain are ``weather: clear, timeofday: daytime``, target frames keep one of the two and change the
other (night -> ``timeofday: night``, fog / rain / snow -> ``weather: foggy / rainy / snowy``). BDD100K
boxes are ``det_20`` records (``box2d`` with inclusive corner pixels ``x2 = box x2 - 1``, ``person``
written ``pedestrian``) and images JPEG (quality 95). Exporting another domain or pair into the same
``det_<split>.json`` merges (frames of the same ``<pair>_<domain>`` are replaced).

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


#: ``--layout`` values: the synthetic export (COCO json + Cityscapes-style PNGs) and real datasets' layouts.
LAYOUTS = ("synthetic", "cityscapes", "acdc", "darkzurich", "bdd100k")

#: (H, W) of each real dataset's images: the default export size of its layout.
REAL_SIZES = {"cityscapes": (1024, 2048), "acdc": (1080, 1920), "darkzurich": (1080, 1920), "bdd100k": (720, 1280)}

#: the folder of each real layout under the export root (the real-data configs' ``data.<domain>.dir``).
LAYOUT_DIRS = {"cityscapes": "cityscapes", "acdc": "acdc", "darkzurich": "dark_zurich", "bdd100k": "bdd100k"}

#: the domain a layout holds when the CLI gets no ``--domain`` (None: both).
LAYOUT_DOMAINS = {"synthetic": None, "cityscapes": "source", "acdc": "target", "darkzurich": "target",
                  "bdd100k": None}

#: BDD100K frame attributes of the source domain; a target condition changes one of them.
BDD_CLEAR = {"weather": "clear", "timeofday": "daytime", "scene": "city street"}
#: target condition (ACDC's condition folders) -> the (attribute, value) of BDD100K frames that says it.
BDD_CONDITIONS = {"fog": ("weather", "foggy"), "night": ("timeofday", "night"), "rain": ("weather", "rainy"),
                  "snow": ("weather", "snowy")}


def condition_of(pair: str) -> str:
    """The adverse condition of a pair's target domain, from its name (``<source>2<condition>``).

    >>> condition_of("synthetic_clear2fog"), condition_of("synthetic_day2night"), condition_of("synthetic_clear2rain")
    ('fog', 'night', 'rain')
    """
    name = str(pair).rsplit("2", 1)[-1] if "2" in str(pair) else ""
    if name not in BDD_CONDITIONS:
        raise ValueError(f"condition: cannot tell the condition of pair {pair!r} from its name; pass one of "
                         f"{sorted(BDD_CONDITIONS)}")
    return name


def _train_to_label_lut():
    """uint8 LUT train id -> Cityscapes label id (the first label id of each train id; 255 -> 0, unlabeled)."""
    from warpadapt.data.labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID
    lut = np.zeros(256, np.uint8)
    for label_id, train_id in sorted(LABEL_ID_TO_TRAIN_ID.items(), reverse=True):
        if train_id != IGNORE_INDEX:
            lut[train_id] = label_id  # reverse order: the smallest label id of a train id wins
    return lut


def cityscapes_label_maps(semantic: np.ndarray, instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (train-id semantic, ``train_id * 1000 + k`` instance) maps as real Cityscapes writes them.

    Returns (labelIds uint8, instanceIds uint16): label ids everywhere, and ``label_id * 1000 + k`` on the
    instances of Cityscapes' instance classes (train ids 11-18); other pixels carry their label id.

    >>> sem = np.array([[0, 13, 6, 255]]); inst = np.array([[0, 13002, 6000, 0]])
    >>> [m.tolist() for m in cityscapes_label_maps(sem, inst)]
    [[[7, 26, 19, 0]], [[7, 26002, 19, 0]]]
    """
    from warpadapt.data.labels import CITYSCAPES_THING_TRAIN_IDS
    lut = _train_to_label_lut()
    label_ids = lut[np.asarray(semantic).astype(np.int64)]
    instance = np.asarray(instance).astype(np.int64)
    cls = instance // 1000
    thing = (instance >= 1000) & np.isin(cls, CITYSCAPES_THING_TRAIN_IDS)
    inst = np.where(thing, lut[np.clip(cls, 0, 255)].astype(np.int64) * 1000 + instance % 1000, label_ids)
    return label_ids, inst.astype(np.uint16)


def _bdd_name(name: str) -> str:
    """A canonical class name as BDD100K's ``det_20`` files spell it ("person" -> "pedestrian")."""
    return "pedestrian" if name == "person" else name


def _write_png(path: str, array: np.ndarray) -> None:
    import cv2
    if not cv2.imwrite(path, array):
        raise OSError(f"cannot write {path}")


def export(pair: str, domain: str, split: str, n: int, out: str, size=None, start: int = 0,
           progress: bool = True, layout: str = "synthetic", condition: str | None = None) -> str:
    """Export ``n`` items of ``pair``/``domain``/``split`` to ``out`` in ``layout``; returns the json path
    (``layout="synthetic"``) or the dataset's folder (``out/<dataset>``, the real layouts).

    Args: see the module docstring (layouts); ``size`` (H, W) overrides the render size (default: the
    pair's ``image_size``, for a real layout the real dataset's size, :data:`REAL_SIZES`); ``condition``:
    the target condition of acdc / darkzurich / bdd100k (default: from the pair's name, :func:`condition_of`).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> os.path.basename(export("synthetic_clear2fog", "target", "val", 1, d, size=(32, 64), progress=False))
    'instances_val.json'
    >>> p = export("synthetic_clear2fog", "target", "val", 1, d, size=(32, 64), progress=False, layout="acdc")
    >>> sorted(os.listdir(os.path.join(p, "rgb_anon"))), os.path.basename(p)
    (['fog'], 'acdc')
    """
    from tqdm import tqdm

    from warpadapt.data.pairs import DOMAINS, SyntheticDrivingDataset

    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not out:
        raise ValueError("out: expected an output directory")
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    if layout in ("acdc", "darkzurich") and domain != "target":
        raise ValueError(f"domain: layout {layout!r} holds the adverse-condition TARGET domain, got {domain!r} "
                         f"(the clear source domain goes into layout 'cityscapes')")
    if size is None and layout != "synthetic":
        size = REAL_SIZES[layout]
    ds = SyntheticDrivingDataset(pair, domain, split, size=size, length=start + n)
    if condition is None and domain == "target" and layout in ("acdc", "darkzurich", "bdd100k"):
        condition = condition_of(ds.cfg.name)
    if condition is not None and condition not in BDD_CONDITIONS:
        raise ValueError(f"condition: expected one of {sorted(BDD_CONDITIONS)}, got {condition!r}")
    if layout == "darkzurich" and condition != "night":
        raise ValueError(f"condition: Dark Zurich holds night images only, got {condition!r} (pair {ds.cfg.name})")
    writer = {"synthetic": _SyntheticWriter, "cityscapes": _CityscapesWriter, "acdc": _ACDCWriter,
              "darkzurich": _ACDCWriter, "bdd100k": _BDDWriter}[layout](ds, split, out, layout, condition)
    for i in tqdm(range(start, start + n), desc=f"export {layout} {ds.name} {split}", disable=not progress):
        s = ds.render(i)
        rgb = (np.clip(s["image"], 0, 1) * 255 + 0.5).astype(np.uint8)
        writer.add(ds.stem(i), s, rgb)
    return writer.finish()


class _SyntheticWriter:
    """Today's export: Cityscapes-style PNGs in one ``<pair>_<domain>`` folder + a COCO json."""

    def __init__(self, ds, split, out, layout, condition):
        self.folder = ds.name
        self.img_dir = os.path.join(out, "leftImg8bit", split, self.folder)
        self.gt_dir = os.path.join(out, "gtFine", split, self.folder)
        ann_dir = os.path.join(out, "annotations")
        for d in (self.img_dir, self.gt_dir, ann_dir):
            os.makedirs(d, exist_ok=True)
        self.json_path = os.path.join(ann_dir, f"instances_{split}.json")
        self.coco = {"images": [], "annotations": [], "categories": [
            {"id": i + 1, "name": c, "supercategory": "driving"} for i, c in enumerate(ds.classes)]}
        if os.path.exists(self.json_path):
            with open(self.json_path) as fh:
                old = json.load(fh)
            keep = {im["id"] for im in old["images"] if not im["file_name"].startswith(self.folder + "/")}
            self.coco["images"] = [im for im in old["images"] if im["id"] in keep]
            self.coco["annotations"] = [a for a in old["annotations"] if a["image_id"] in keep]
        self.img_id = max([im["id"] for im in self.coco["images"]], default=0)
        self.ann_id = max([a["id"] for a in self.coco["annotations"]], default=0)

    def add(self, stem, s, rgb):
        import cv2
        H, W = s["semantic"].shape
        _write_png(os.path.join(self.img_dir, f"{stem}_leftImg8bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        _write_png(os.path.join(self.gt_dir, f"{stem}_gtFine_labelTrainIds.png"), s["semantic"].astype(np.uint8))
        _write_png(os.path.join(self.gt_dir, f"{stem}_gtFine_instanceIds.png"), s["instance"].astype(np.uint16))
        self.img_id += 1
        self.coco["images"].append({"id": self.img_id, "file_name": f"{self.folder}/{stem}_leftImg8bit.png",
                                    "width": int(W), "height": int(H)})
        for box, lab, iid in zip(s["boxes"].tolist(), s["labels"].tolist(), s["instance_ids"].tolist()):
            x1, y1, x2, y2 = box
            self.ann_id += 1
            self.coco["annotations"].append({
                "id": self.ann_id, "image_id": self.img_id, "category_id": int(lab),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((s["instance"] == iid).sum()),
                "iscrowd": 0})

    def finish(self):
        with open(self.json_path, "w") as fh:
            json.dump(self.coco, fh)
        return self.json_path


class _CityscapesWriter:
    """Real Cityscapes: ``leftImg8bit`` + ``gtFine`` (labelTrainIds, labelIds, instanceIds), one city folder."""

    def __init__(self, ds, split, out, layout, condition):
        self.root = os.path.join(out, LAYOUT_DIRS[layout])
        self.img_dir = os.path.join(self.root, "leftImg8bit", split, ds.name)
        self.gt_dir = os.path.join(self.root, "gtFine", split, ds.name)
        for d in (self.img_dir, self.gt_dir):
            os.makedirs(d, exist_ok=True)

    def add(self, stem, s, rgb):
        import cv2
        label_ids, instance_ids = cityscapes_label_maps(s["semantic"], s["instance"])
        _write_png(os.path.join(self.img_dir, f"{stem}_leftImg8bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        _write_png(os.path.join(self.gt_dir, f"{stem}_gtFine_labelTrainIds.png"), s["semantic"].astype(np.uint8))
        _write_png(os.path.join(self.gt_dir, f"{stem}_gtFine_labelIds.png"), label_ids)
        _write_png(os.path.join(self.gt_dir, f"{stem}_gtFine_instanceIds.png"), instance_ids)

    def finish(self):
        return self.root


class _ACDCWriter:
    """ACDC (``rgb_anon/<condition>/<split>/<seq>``) or Dark Zurich (``rgb_anon/<split>/night/<seq>``)."""

    def __init__(self, ds, split, out, layout, condition):
        self.root = os.path.join(out, LAYOUT_DIRS[layout])
        rel = os.path.join(condition, split, ds.name) if layout == "acdc" else os.path.join(split, condition, ds.name)
        self.img_dir = os.path.join(self.root, "rgb_anon", rel)
        # Dark Zurich publishes no labels for its training images
        self.gt_dir = None if layout == "darkzurich" and split == "train" else os.path.join(self.root, "gt", rel)
        for d in (self.img_dir, self.gt_dir):
            if d is not None:
                os.makedirs(d, exist_ok=True)

    def add(self, stem, s, rgb):
        import cv2
        _write_png(os.path.join(self.img_dir, f"{stem}_rgb_anon.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if self.gt_dir is not None:
            label_ids, _ = cityscapes_label_maps(s["semantic"], s["instance"])
            _write_png(os.path.join(self.gt_dir, f"{stem}_gt_labelTrainIds.png"), s["semantic"].astype(np.uint8))
            _write_png(os.path.join(self.gt_dir, f"{stem}_gt_labelIds.png"), label_ids)

    def finish(self):
        return self.root


class _BDDWriter:
    """BDD100K: JPEGs in ``images/100k/<split>`` and ``det_20`` frames in ``labels/det_20/det_<split>.json``."""

    def __init__(self, ds, split, out, layout, condition):
        self.root = os.path.join(out, LAYOUT_DIRS[layout])
        self.img_dir = os.path.join(self.root, "images", "100k", split)
        label_dir = os.path.join(self.root, "labels", "det_20")
        for d in (self.img_dir, label_dir):
            os.makedirs(d, exist_ok=True)
        self.json_path = os.path.join(label_dir, f"det_{split}.json")
        self.prefix = ds.name + "_"
        self.classes = ds.classes
        self.attributes = dict(BDD_CLEAR)
        if ds.domain == "target":
            key, value = BDD_CONDITIONS[condition]
            self.attributes[key] = value
        self.frames = []

    def add(self, stem, s, rgb):
        import cv2
        H, W = s["semantic"].shape
        name = f"{stem}.jpg"
        if not cv2.imwrite(os.path.join(self.img_dir, name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"cannot write {os.path.join(self.img_dir, name)}")
        labels = []
        for k, (box, lab) in enumerate(zip(s["boxes"].tolist(), s["labels"].tolist())):
            x1, y1, x2, y2 = box
            labels.append({"id": f"{stem}_{k}", "category": _bdd_name(self.classes[lab - 1]),
                           "attributes": {"occluded": False,
                                          "truncated": bool(x1 <= 0 or y1 <= 0 or x2 >= W or y2 >= H)},
                           # det_20 stores the corner PIXELS: the last column / row is x2 - 1 / y2 - 1
                           "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2 - 1), "y2": float(y2 - 1)}})
        self.frames.append({"name": name, "attributes": dict(self.attributes), "timestamp": 10000, "labels": labels})

    def finish(self):
        frames = self.frames
        if os.path.exists(self.json_path):  # merge: frames of other pairs / domains kept, this one's replaced
            with open(self.json_path) as fh:
                frames = [fr for fr in json.load(fh) if not fr["name"].startswith(self.prefix)] + frames
        with open(self.json_path, "w") as fh:
            json.dump(frames, fh)
        return self.root


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
    e.add_argument("--domain", default=None, choices=DOMAINS,
                   help="default: both domains (layouts synthetic, bdd100k), the source (cityscapes), the target "
                        "(acdc, darkzurich)")
    e.add_argument("--split", required=True, choices=SPLITS)
    e.add_argument("--n", required=True, type=_positive("n"))
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=_size, default=None,
                   help="HxW, default: the pair's image_size (layout synthetic), the real dataset's size (the others)")
    e.add_argument("--start", type=int, default=0, help="first index")
    e.add_argument("--layout", default="synthetic", choices=LAYOUTS,
                   help="synthetic (default: PNGs + COCO json) or a real dataset's layout under OUT/<dataset>/")
    e.add_argument("--condition", default=None, choices=sorted(BDD_CONDITIONS),
                   help="target condition of acdc / darkzurich / bdd100k (default: from the pair's name)")
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
        default = LAYOUT_DOMAINS[a.layout]
        for domain in [a.domain or default] if a.domain or default else DOMAINS:
            print(export(a.pair, domain, a.split, a.n, a.out, a.size, a.start, layout=a.layout, condition=a.condition))
    elif a.cmd in ("preview", "show"):
        print(preview(a.out, a.pairs, a.n, a.size, a.index))
    else:
        print(f"scenes/s: {bench(a.n, a.size, a.style):.1f} at {a.size[0]}x{a.size[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
