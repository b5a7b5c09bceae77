"""warpadapt.data.pipeline + the real-resolution parts of Prepared, segmentation_datasets and evaluation.

DAFormer / MIC's pipeline: keep-ratio resize per domain, random crop with the category max-ratio
retry, flip, evaluation at the label's resolution (whole or sliding window); and the old fixed-size
pipeline, still what a config without the new keys gets, item for item.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from warpadapt.data import (Prepared, SyntheticDrivingDataset, boxes_from_instance_map, boxes_from_semantic,
                            get_pair, guidance_train_ids)
from warpadapt.data.labels import IGNORE_INDEX
from warpadapt.data.pipeline import (PAD_RGB, DrawKeys, TrainView, crop_boxes, hflip_boxes, random_crop_box,
                                     rescale_size)
from warpadapt.data.segmentation_readers import label_ids_to_train_ids
from warpadapt.eval import ConfusionMatrix
from warpadapt.uda.build import segmentation_datasets, segmentation_loader, segmentation_pipeline
from warpadapt.uda.config import load_config
from warpadapt.uda.data import InfiniteSampler, infinite_loader
from warpadapt.uda.dist import DistInfo
from warpadapt.uda.evaluate import evaluate_segmentation, segmentation_logits, slide_logits, slide_windows

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mic.py"
THINGS = guidance_train_ids("synthetic")
H, W = 64, 128


@pytest.fixture(scope="module")
def raw():
    return SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(H, W), length=3)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _old_prepare(s, size, thing_ids):
    """The fixed-size Prepared.prepare as it was before the pipeline existed (frozen reference)."""
    image, (h, w) = s["image"], size
    sem = s.get("semantic", torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.long))
    labels = {"semantic": sem, "instance": s.get("instance")}
    if image.shape[-2:] != (h, w):
        image = F.interpolate(image[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
        labels = {k: None if v is None else F.interpolate(v[None, None].float(), (h, w), mode="nearest")[0, 0].long()
                  for k, v in labels.items()}
    if labels["instance"] is not None:
        boxes, _ = boxes_from_instance_map(labels["instance"], 1000, thing_ids,
                                           class_of=lambda c: torch.where(c >= 24, label_ids_to_train_ids(c), c))
    else:
        boxes, _ = boxes_from_semantic(labels["semantic"], thing_ids)
    image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return {"image": image.float() / 255, "semantic": labels["semantic"].to(torch.uint8).long(), "boxes": boxes}


def _rectangles(h, w, n, rng, classes=(13, 11, 14)):
    """An instance map of ``n`` non-touching filled rectangles (Cityscapes train-id encoding) + semantic map."""
    inst = torch.zeros(h, w, dtype=torch.long)
    sem = torch.zeros(h, w, dtype=torch.long)  # road
    placed = 0
    while placed < n:
        bh, bw = int(rng.integers(3, h // 3)), int(rng.integers(3, w // 3))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        if (inst[max(y - 1, 0):y + bh + 1, max(x - 1, 0):x + bw + 1] != 0).any():
            continue
        c = classes[placed % len(classes)]
        inst[y:y + bh, x:x + bw] = c * 1000 + placed
        sem[y:y + bh, x:x + bw] = c
        placed += 1
    return inst, sem


def _sorted(boxes):
    return sorted(map(tuple, boxes.tolist()))


# ------------------------------------------------------------------------------------------ resize
def test_rescale_size_is_mmseg_keep_ratio():
    assert rescale_size((1024, 2048), (1024, 512)) == (512, 1024)  # Cityscapes
    assert rescale_size((1080, 1920), (960, 540)) == (540, 960)  # ACDC, Dark Zurich
    assert rescale_size((1080, 1920), (1920, 1080)) == (1080, 1920)  # HRDA's full resolution: unchanged
    assert rescale_size((1052, 1914), (1024, 512)) == (512, 932)  # GTA: the short edge limits
    assert rescale_size((2048, 1024), (1024, 512)) == (1024, 512)  # portrait: long edge to the long side (mmcv)
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(20, 3000, 2))
        sw, sh = (int(v) for v in rng.integers(20, 2000, 2))
        nh, nw = rescale_size((h, w), (sw, sh))
        f = min(max(sw, sh) / max(h, w), min(sw, sh) / min(h, w))
        assert (nh, nw) == (int(h * f + 0.5), int(w * f + 0.5))
        assert max(nh, nw) <= max(sw, sh) + 1 and min(nh, nw) <= min(sw, sh) + 1  # fits (up to rounding)
        assert abs(nw / nh - w / h) <= 2 * max(w / h, 1) / min(nh, nw) + 1e-9  # keeps the aspect ratio


def test_prepared_scale_keeps_ratio_labels_nearest_and_eval_labels_at_their_resolution(raw):
    r = raw[0]
    train = Prepared(raw, None, THINGS, cache=False, scale=(64, 48))  # fits 64 x 128 into 64 x 48: x 0.5
    item = train[0]
    assert item["image"].shape == (3, 32, 64) and item["semantic"].shape == (32, 64)
    # OpenCV-style bilinear at x 0.5 is the 2 x 2 mean (no antialiasing filter), quantised like a PNG
    want = r["image"].unfold(1, 2, 2).unfold(2, 2, 2).mean((-1, -2))
    assert torch.equal(item["image"], (want.clamp(0, 1) * 255).round() / 255)
    assert torch.equal(item["semantic"], r["semantic"][::2, ::2])
    assert torch.equal(item["boxes"], boxes_from_instance_map(r["instance"][::2, ::2], 1000, THINGS)[0])
    val = Prepared(raw, None, THINGS, cache=True, scale=(64, 48), keep_labels=True)[0]
    assert val["image"].shape == (3, 32, 64) and torch.equal(val["image"], item["image"])
    assert torch.equal(val["semantic"], r["semantic"]) and torch.equal(val["boxes"], item["boxes"])
    same = Prepared(raw, None, THINGS, cache=False)[0]  # neither size nor scale: as the dataset gives it
    assert same["image"].shape == (3, H, W) and torch.equal(same["semantic"], r["semantic"])


def test_real_dataset_sizes_through_the_pipeline():
    """Cityscapes 2048 x 1024 -> 1024 x 512 -> 512 x 512 crops; ACDC 1920 x 1080 -> 960 x 540, labels kept."""
    g = torch.Generator().manual_seed(0)

    def item(h, w):
        sem = torch.zeros(h, w, dtype=torch.long)
        sem[: h // 3], sem[h // 2:, w // 4: w // 2] = 10, 13
        return {"image": torch.rand(3, h, w, generator=g), "semantic": sem}

    cs, acdc = _Items([item(1024, 2048)]), _Items([item(1080, 1920)])
    src = Prepared(cs, None, (13,), cache=True, scale=(1024, 512), view=TrainView((512, 512), True, 0.75, seed=0))
    assert src.cache == {} and src[(0, 3)]["image"].shape == (3, 512, 512)
    assert src.cache[0]["image"].shape == (3, 512, 1024) and src.cache[0]["image"].dtype == torch.uint8
    tgt = Prepared(acdc, None, (13,), cache=False, scale=(960, 540), view=TrainView((512, 512), True, 1.0, seed=1))
    assert tgt[(0, 5)]["image"].shape == (3, 512, 512)
    val = Prepared(acdc, None, (13,), cache=False, scale=(960, 540), keep_labels=True)[0]
    assert val["image"].shape == (3, 540, 960) and val["semantic"].shape == (1080, 1920)


def test_bad_sizes_name_the_argument(raw):
    with pytest.raises(ValueError, match="scale: give a fixed size or a keep-ratio scale, not both"):
        Prepared(raw, (32, 64), THINGS, False, scale=(64, 32))
    with pytest.raises(ValueError, match=r"^size: expected \(h, w\)"):
        Prepared(raw, (32, 0), THINGS, False)
    with pytest.raises(ValueError, match=r"^scale: expected \(W, H\)"):
        Prepared(raw, None, THINGS, False, scale=[64])
    with pytest.raises(ValueError, match="keep_labels"):
        Prepared(raw, None, THINGS, False, keep_labels=True, view=TrainView((32, 32)))
    with pytest.raises(ValueError, match="^crop_size"):
        TrainView((32, -1))
    with pytest.raises(ValueError, match="^cat_max_ratio"):
        TrainView((32, 32), cat_max_ratio=0.0)


# ------------------------------------------------------------------ the old pipeline, bit for bit
def test_old_defaults_give_the_old_items(raw):
    class NoInstance(_Items):
        def __getitem__(self, i):
            return {k: v for k, v in self.items[i].items() if k != "instance"}

    for data in (raw, NoInstance(raw)):
        for size in ((H, W), (H // 2, W // 2), (37, 53), (96, 200)):
            ds = Prepared(data, size, THINGS, cache=True)
            for i in range(len(raw)):
                new, old = ds[i], _old_prepare(data[i], size, THINGS)
                assert new.keys() == old.keys()
                for k in old:
                    assert new[k].dtype == old[k].dtype and torch.equal(new[k], old[k]), (size, i, k)


def _folders(tmp_path, h=64, w=128):
    from PIL import Image

    def png(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    rng = np.random.default_rng(0)
    sem = np.zeros((h, w), np.uint8)
    sem[:20] = 10
    sem[40:52, 30:44] = 13  # a car
    inst = np.zeros((h, w), np.uint16)
    inst[40:52, 30:44] = 26000  # Cityscapes label id 26 (car), instance 0
    for split in ("train", "val"):
        for k in range(2):
            stem = f"ulm_{k:06d}_000019"
            cs, acdc = tmp_path / "cityscapes", tmp_path / "acdc"
            png(cs / f"leftImg8bit/{split}/ulm/{stem}_leftImg8bit.png", rng.integers(0, 255, (h, w, 3), np.uint8))
            png(cs / f"gtFine/{split}/ulm/{stem}_gtFine_labelTrainIds.png", sem)
            png(cs / f"gtFine/{split}/ulm/{stem}_gtFine_instanceIds.png", inst)
            png(acdc / f"rgb_anon/fog/{split}/GOPR0475/{stem}_rgb_anon.png", rng.integers(0, 255, (h, w, 3), np.uint8))
            png(acdc / f"gt/fog/{split}/GOPR0475/{stem}_gt_labelTrainIds.png", sem)
    return tmp_path


TINY = ["data.image_size=[48,96]", "data.train_images=3", "data.val_images=2"]


@pytest.mark.parametrize("config", ["synthetic_clear2fog", "synthetic_inline", "cityscapes2acdc_fog"])
def test_the_yamls_with_the_old_pipeline_build_the_old_datasets(tmp_path, config):
    """The pipeline keys set to the behaviour before them (no scale, no crop, no flip) give the old items."""
    extra = [f"data.root={_folders(tmp_path)}"] if config.startswith("cityscapes") else []
    old_pipeline = ["data.source.scale=null", "data.target.scale=null", "data.crop_size=null", "data.flip=false"]
    cfg = load_config(RECIPE, ["--config", config, *extra, *TINY, *old_pipeline], default="synthetic_clear2fog")
    p = segmentation_pipeline(cfg)
    assert p["scale"] == {"source": None, "target": None} and p["crop_size"] is None and not p["flip"]
    assert p["eval"] == {"mode": "whole", "crop_size": None, "stride": None}
    sets = segmentation_datasets(cfg)
    for ds in sets:
        assert ds.size == (48, 96) and ds.scale is None and ds.view is None and not ds.keep_labels
        for i in range(len(ds)):
            new, old = ds[i], _old_prepare(ds.dataset[i], (48, 96), ds.thing_ids)
            assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in old)


# ------------------------------------------------------------------------------- crop and flip
class _CountingRng:
    """A stand-in Generator: integers() returns ``values`` in turn and counts its calls."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def integers(self, lo, hi):
        v = self.values[self.calls % len(self.values)] % hi
        self.calls += 1
        return v


def test_random_crop_box_is_mmseg_random_crop():
    rng = np.random.default_rng(0)
    for _ in range(50):  # offsets uniform in the margins, sides larger than the image clipped
        crop = random_crop_box((40, 30), (16, 64), rng)
        assert crop[1] - crop[0] == 16 and (crop[2], crop[3]) == (0, 30) and 0 <= crop[0] <= 24
    one_class = torch.zeros(20, 20, dtype=torch.uint8)
    r = _CountingRng(range(100))
    crop = random_crop_box((20, 20), (8, 8), r, one_class, cat_max_ratio=0.75)
    assert r.calls == 22 and crop == (7, 15, 8, 16)  # 10 rejected windows, then an 11th taken untested
    r = _CountingRng(range(100))
    random_crop_box((20, 20), (8, 8), r, one_class, cat_max_ratio=1.0)
    assert r.calls == 2  # no ratio test: one window
    ignored = torch.full((20, 20), IGNORE_INDEX, dtype=torch.uint8)
    ignored[:, :10] = 1
    ignored[:, 10:12] = 2  # labelled pixels of the window [0, 8) x [4, 12): 6 columns of 1, 2 of 2: 75 % -> rejected
    r = _CountingRng([0, 4, 0, 6])  # the next window, [0, 8) x [6, 14): 4 + 2 columns: 66 % -> accepted
    assert random_crop_box((20, 20), (8, 8), r, ignored, cat_max_ratio=0.75) == (0, 8, 6, 14) and r.calls == 4
    # the retry works: with 0.75, accepted windows avoid the big class whenever they can
    sem = torch.zeros(64, 64, dtype=torch.uint8)
    sem[:, 48:] = 5
    rng = np.random.default_rng(1)
    for _ in range(20):
        y1, y2, x1, x2 = random_crop_box((64, 64), (32, 32), rng, sem, cat_max_ratio=0.75)
        share = float((sem[y1:y2, x1:x2] == 0).float().mean())
        assert share < 0.75 or x2 <= 48  # accepted, or (rarely) the untested 11th window


def test_boxes_follow_crop_and_flip_like_boxes_recomputed_from_the_cropped_maps():
    rng = np.random.default_rng(0)
    checked = flipped = clipped = 0
    for trial in range(40):
        inst, sem = _rectangles(60, 90, 5, rng)
        boxes, _ = boxes_from_instance_map(inst, 1000, (11, 13, 14))
        item = {"image": torch.rand(3, 60, 90), "semantic": sem, "instance": inst, "boxes": boxes}
        view = TrainView((32, 40), flip=True, seed=trial)
        for draw in range(5):
            out = view(item, index=trial, draw=draw)
            from_instance, _ = boxes_from_instance_map(out["instance"], 1000, (11, 13, 14))
            from_semantic, _ = boxes_from_semantic(out["semantic"], (11, 13, 14))
            assert _sorted(out["boxes"]) == _sorted(from_instance) == _sorted(from_semantic)
            checked += len(out["boxes"])
            flipped += out["view"]["flip"]
            y1, y2, x1, x2 = out["view"]["crop"]
            meets = (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1)
            inside = (boxes[:, 0] >= x1) & (boxes[:, 2] <= x2) & (boxes[:, 1] >= y1) & (boxes[:, 3] <= y2)
            assert len(out["boxes"]) == int(meets.sum())
            clipped += int((meets & ~inside).sum())  # boxes the window edge cuts
            want = item["image"][:, y1:y2, x1:x2]
            assert torch.equal(out["image"], want.flip(-1) if out["view"]["flip"] else want)
    assert checked > 100 and 50 < flipped < 150 and clipped > 50


def test_box_helpers():
    b = torch.tensor([[2., 3., 8., 9.], [0., 0., 1., 1.]])
    assert crop_boxes(b, 4, 4, 10, 10).tolist() == [[0., 0., 4., 5.]]
    assert torch.equal(hflip_boxes(hflip_boxes(b, 12), 12), b)
    assert crop_boxes(torch.zeros(0, 4), 1, 1, 2, 2).shape == (0, 4)
    assert hflip_boxes(torch.zeros(0, 4), 3).shape == (0, 4)


def test_pad_to_the_crop_with_ignore_and_the_normalisation_mean():
    from warpadapt.models.segmenter import IMAGENET_MEAN

    assert PAD_RGB == IMAGENET_MEAN  # padded pixels are 0 after normalisation, as mmseg pads
    item = {"image": torch.full((3, 20, 30), 7, dtype=torch.uint8), "semantic": torch.ones(20, 30, dtype=torch.uint8),
            "boxes": torch.tensor([[1., 1., 5., 5.]])}
    out = TrainView((32, 32), flip=False)(item, 0, 0)
    assert out["image"].shape == (3, 32, 32) and out["semantic"].shape == (32, 32)
    assert (out["image"][:, :20, :30] == 7).all() and (out["semantic"][:20, :30] == 1).all()
    assert (out["semantic"][20:] == IGNORE_INDEX).all() and (out["semantic"][:, 30:] == IGNORE_INDEX).all()
    assert out["image"][:, 25, 31].tolist() == [round(v * 255) for v in IMAGENET_MEAN]
    assert out["boxes"].tolist() == [[1., 1., 5., 5.]] and out["view"]["crop"] == (0, 20, 0, 30)


def test_views_are_fixed_by_seed_draw_and_index(raw):
    view = TrainView((32, 48), flip=True, cat_max_ratio=0.75, seed=(3, 0))
    cached = Prepared(raw, None, THINGS, cache=True, view=view)
    fresh = Prepared(raw, None, THINGS, cache=False, view=view)
    seen = set()
    for i in range(3):
        for draw in range(6):
            a, b, c = cached[(i, draw)], cached[(i, draw)], fresh[(i, draw)]
            for k in ("image", "semantic", "boxes"):
                assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k])
            assert a["view"] == c["view"] and a["image"].shape == (3, 32, 48)
            seen.add((i, a["view"]["crop"], a["view"]["flip"]))
    assert len(seen) > 9  # different draws: different views
    assert cached[1]["view"] == cached[(1, 0)]["view"]  # a plain index is draw 0
    other = Prepared(raw, None, THINGS, cache=False, view=TrainView((32, 48), True, 0.75, seed=(3, 1)))
    assert any(other[(0, d)]["view"] != cached[(0, d)]["view"] for d in range(6))
    assert all(len(cached.cache[i]) == 3 and cached.cache[i]["image"].shape == (3, H, W) for i in range(3))


# --------------------------------------------------------------------------- loader, resume, ranks
def _batches(it, n):
    return [next(it) for _ in range(n)]


def _equal_batches(a, b):
    return all(torch.equal(x["images"], y["images"]) and torch.equal(x["semantic"], y["semantic"])
               and all(torch.equal(p, q) for p, q in zip(x["boxes"], y["boxes"])) for x, y in zip(a, b))


def test_loader_resumes_with_the_same_crops_and_workers_change_nothing(raw):
    ds = Prepared(raw, None, THINGS, cache=True, view=TrainView((32, 64), True, 0.75, seed=(0, 0)))
    full = _batches(segmentation_loader(ds, 2, seed=5), 5)
    resumed = _batches(segmentation_loader(ds, 2, seed=5, start_step=3), 2)
    assert _equal_batches(full[3:], resumed)
    workers = _batches(segmentation_loader(ds, 2, seed=5, num_workers=2), 5)
    assert _equal_batches(full, workers)
    # every draw has its own key: the stream position
    keys = next(iter(DrawKeys(InfiniteSampler(3, 2, seed=5, start_step=4))))
    assert [k[1] for k in keys] == [8, 9]


def test_draw_keys_are_global_positions_so_two_ranks_crop_like_one(raw):
    ds = Prepared(raw, None, THINGS, cache=True, view=TrainView((32, 64), True, seed=(0, 0)))
    one = _batches(segmentation_loader(ds, 4, seed=1), 2)
    ranks = [_batches(segmentation_loader(ds, 2, seed=1, info=DistInfo(rank=r, world_size=2)), 2) for r in (0, 1)]
    for step in range(2):
        both = torch.cat([ranks[0][step]["images"], ranks[1][step]["images"]])
        assert torch.equal(both, one[step]["images"])


class _StepSampler(torch.utils.data.Sampler):
    """Another index stream (like rare-class sampling): batches a function of (seed, step, rank), no world_size."""

    def __init__(self, n, batch_size, rank=0, start_step=0):
        self.n, self.batch_size, self.rank, self.start_step = n, batch_size, rank, start_step

    def __iter__(self):
        step = self.start_step
        while True:
            rng = np.random.default_rng([step, self.rank])
            yield [int(v) for v in rng.integers(0, self.n, self.batch_size)]
            step += 1


def test_loader_keys_any_step_sampler_and_whole_items_skip_the_view(raw):
    ds = Prepared(raw, None, THINGS, cache=True, view=TrainView((32, 64), True, seed=(0, 0)))
    full = _batches(segmentation_loader(ds, 2, batch_sampler=_StepSampler(3, 2)), 4)
    resumed = _batches(segmentation_loader(ds, 2, start_step=2, batch_sampler=_StepSampler(3, 2, start_step=2)), 2)
    assert _equal_batches(full[2:], resumed)
    keys = iter(DrawKeys(_StepSampler(3, 2, rank=1, start_step=3), world_size=2))
    assert [k[1] for k in next(keys)] == [14, 15]
    with pytest.raises(TypeError, match="world_size"):
        DrawKeys(_StepSampler(3, 2))
    with pytest.raises(ValueError, match="batch_sampler"):
        segmentation_loader(ds, 2, start_step=1, batch_sampler=_StepSampler(3, 2))
    whole, plain = ds.whole(1), Prepared(raw, None, THINGS, cache=False)[1]
    assert whole.keys() == plain.keys() and all(torch.equal(whole[k], plain[k]) for k in plain)


def test_loader_without_a_view_is_infinite_loader(raw):
    from warpadapt.data import collate_segmentation

    ds = Prepared(raw, (32, 64), THINGS, cache=True)
    a = _batches(segmentation_loader(ds, 2, seed=2, start_step=1), 3)
    b = _batches(infinite_loader(ds, 2, seed=2, start_step=1, collate_fn=collate_segmentation), 3)
    assert _equal_batches(a, b)


# ----------------------------------------------------------------------------------- evaluation
class _Pixelwise(nn.Module):
    """Logits that depend on each pixel's own value only (a 1 x 1 convolution)."""

    def __init__(self, k=5):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x)


def test_slide_windows_are_mmseg_slide_inference_windows():
    assert slide_windows((540, 960), (512, 512), (256, 256)) == [
        (0, 512, 0, 512), (0, 512, 256, 768), (0, 512, 448, 960),
        (28, 540, 0, 512), (28, 540, 256, 768), (28, 540, 448, 960)]
    for size, crop, stride in (((37, 91), (16, 20), (5, 7)), ((8, 8), (16, 16), (4, 4)), ((33, 17), (33, 17), (11, 3))):
        count = torch.zeros(size)
        for y1, y2, x1, x2 in slide_windows(size, crop, stride):
            assert y2 - y1 == min(crop[0], size[0]) and x2 - x1 == min(crop[1], size[1])
            count[y1:y2, x1:x2] += 1
        assert (count > 0).all()
        rows = max(size[0] - crop[0] + stride[0] - 1, 0) // stride[0] + 1  # mmseg's h_grids
        cols = max(size[1] - crop[1] + stride[1] - 1, 0) // stride[1] + 1
        assert len(slide_windows(size, crop, stride)) == rows * cols
    with pytest.raises(ValueError, match="stride"):
        slide_windows((10, 10), (4, 4), (5, 2))


class _Context(nn.Module):
    """A small CNN with spatial context and a stride-2 output (logits upsampled by the caller)."""

    def __init__(self, k=4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, k, 5, padding=2))

    def forward(self, x):
        return self.net(x)


def test_slide_equals_whole_when_the_window_covers_the_image():
    torch.manual_seed(0)
    net = _Context().eval()
    x = torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        whole = segmentation_logits(net, x, (80, 144))
        for crop in ((40, 72), (64, 128)):
            slide = segmentation_logits(net, x, (80, 144), mode="slide", crop_size=crop, stride=(20, 36))
            assert torch.equal(slide, whole)
        # smaller windows see less context: a different (averaged) result
        assert not torch.allclose(segmentation_logits(net, x, (80, 144), mode="slide", crop_size=(16, 16),
                                                      stride=(8, 8)), whole)


def test_a_position_only_model_gives_the_same_result_either_way():
    torch.manual_seed(0)
    net = _Pixelwise(6)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 45), torch.linspace(0, 1, 77), indexing="ij")
    x = torch.stack([yy, xx, yy * xx])[None].repeat(2, 1, 1, 1)  # each pixel's value is its position
    with torch.no_grad():
        whole = segmentation_logits(net, x, (90, 154))
        slide = segmentation_logits(net, x, (90, 154), mode="slide", crop_size=(16, 24), stride=(7, 9))
        torch.testing.assert_close(slide, whole, rtol=0, atol=1e-5)
        assert torch.equal(slide.argmax(1), whole.argmax(1))
        torch.testing.assert_close(slide_logits(net, x, (16, 24), (7, 9)), net(x), rtol=0, atol=1e-5)


def test_evaluation_scores_at_the_label_resolution():
    torch.manual_seed(0)
    net = _Pixelwise(3).eval()
    items = []
    for _ in range(3):
        sem = torch.randint(0, 3, (24, 40))
        sem[:2] = IGNORE_INDEX
        items.append({"image": torch.rand(3, 12, 20), "semantic": sem})
    cm = ConfusionMatrix(3)
    with torch.no_grad():
        for it in items:
            logits = F.interpolate(net(it["image"][None]), (24, 40), mode="bilinear", align_corners=False)
            cm.update(logits.argmax(1), it["semantic"][None])
    want = cm.compute()
    for mode in ("whole", "slide"):
        got = evaluate_segmentation(net, items, 3, batch_size=2, mode=mode, crop_size=(8, 8), stride=(4, 4))
        assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)
        assert got["pixel_acc"] == pytest.approx(want["pixel_acc"], abs=1e-12)
    with pytest.raises(ValueError, match="mode"):
        evaluate_segmentation(net, items, 3, mode="sliding")


# ------------------------------------------------------------------------------------- config
def _cfg(*overrides, pair="synthetic_clear2fog", root=None):
    from omegaconf import OmegaConf

    base = load_config(RECIPE, ["--config", pair, *([f"data.root={root}"] if root else []), *TINY],
                       default="synthetic_clear2fog")
    cfg = OmegaConf.merge(OmegaConf.to_container(base), OmegaConf.from_dotlist(list(overrides)))
    return cfg


@pytest.mark.parametrize("override, key", [
    ("data.crop_size=[512]", "data.crop_size"), ("data.crop_size=[16,16]", "data.crop_size"),
    ("data.source.scale=[1024,0]", "data.source.scale"), ("data.target.scale=960", "data.target.scale"),
    ("data.flip=1", "data.flip"), ("data.cat_max_ratio=1.5", "data.cat_max_ratio"),
    ("eval.mode=sliding", "eval.mode"), ("eval.crop_size=[8,8]", "eval.crop_size"),
    ("eval.stride=[600,600]", "eval.stride"),
])
def test_bad_pipeline_keys_are_named(override, key):
    cfg = _cfg("data.crop_size=[512,512]", override) if key == "eval.stride" else _cfg(override)
    with pytest.raises(ValueError, match=rf"^config: {key}: "):
        segmentation_pipeline(cfg)


def test_daformer_keys_on_folders(tmp_path):
    root = _folders(tmp_path, h=96, w=192)  # a small Cityscapes: halved by the scale, like 2048 x 1024
    cfg = _cfg("data.source.scale=[96,48]", "data.target.scale=[90,45]", "data.crop_size=[32,32]", "data.flip=true",
               "eval.mode=slide", pair="cityscapes2acdc_fog", root=root)
    src, tgt, src_val, tgt_val = segmentation_datasets(cfg)
    assert src.scale == (96, 48) and src.view.cat_max_ratio == 0.75 and tgt.view.cat_max_ratio == 1.0
    assert src.view.seed != tgt.view.seed and src_val.view is None and src_val.keep_labels
    a = src[(0, 11)]
    assert a["image"].shape == (3, 32, 32) and a["semantic"].shape == (32, 32)
    assert src.cache is None or src.cache[0]["image"].shape == (3, 48, 96)
    assert tgt[(1, 2)]["image"].shape == (3, 32, 32)
    v = src_val[0]
    assert v["image"].shape == (3, 48, 96) and v["semantic"].shape == (96, 192)
    assert tgt_val[0]["image"].shape == (3, 45, 90)  # 96 x 192 fitted into 90 x 45
    car = [[15.0, 20.0, 22.0, 26.0]]  # the car at 40:52 (rows) x 30:44 (columns) of the 96 x 192 map, halved
    assert v["boxes"].tolist() == car
    from warpadapt.models import Segmenter
    from warpadapt.uda.build import evaluate_segmenter

    torch.manual_seed(0)
    net = Segmenter("resnet18", num_classes=19, embed_dim=8)
    out = evaluate_segmenter(net, (src_val, tgt_val), cfg)
    assert 0 <= out["source_miou"] <= 1 and 0 <= out["target_miou"] <= 1


def test_synthetic_flip_only_keeps_the_size(raw):
    cfg = _cfg("data.flip=true")
    src, tgt, src_val, _ = segmentation_datasets(cfg)
    assert src.view is not None and src.view.crop_size is None and src_val.view is None
    a = src[(0, 1)]
    assert a["image"].shape == (3, 48, 96) and a["view"]["crop"] == (0, 48, 0, 96)
    plain = Prepared(src.dataset, (48, 96), THINGS, cache=False)[0]
    assert torch.equal(a["image"], plain["image"].flip(-1) if a["view"]["flip"] else plain["image"])
