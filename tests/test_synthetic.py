"""Tests of the synthetic driving scenes, domain effects, pairs, dataset and export CLI."""
import json
import os

import numpy as np
import pytest
import torch

from warpadapt.data import (
    CLASS_TO_TRAIN_ID, DETECTION_CLASSES, SyntheticDrivingDataset, apply_effects, collate,
    generate_scene, get_pair, list_pairs, render_pair_sample,
)
from warpadapt.data.__main__ import export, main
from warpadapt.data.synthetic import SceneParams

SMALL = SceneParams(height=64, width=128)


def test_deterministic_per_seed_and_index():
    a, b = generate_scene(3, 7, SMALL), generate_scene(3, 7, SMALL)
    for k in ("image", "semantic", "instance", "depth", "boxes", "labels"):
        np.testing.assert_array_equal(a[k], b[k])
    c = generate_scene(3, 8, SMALL)
    d = generate_scene(4, 7, SMALL)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], d["image"])


def test_same_layout_in_every_style():
    a = generate_scene(0, 2, SMALL, "day")
    b = generate_scene(0, 2, SMALL, "night_city")
    np.testing.assert_array_equal(a["semantic"], b["semantic"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    assert not np.allclose(a["image"], b["image"])


def test_sample_contract():
    ds = SyntheticDrivingDataset("synthetic_day2night", "target", "val", size=(64, 128), length=3)
    assert len(ds) == 3 and ds.classes == DETECTION_CLASSES
    it = ds[0]
    assert it["image"].dtype == torch.float32 and it["image"].shape == (3, 64, 128)
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    n = len(it["labels"])
    assert it["boxes"].dtype == torch.float32 and it["boxes"].shape == (n, 4)
    assert it["labels"].dtype == torch.int64 and n > 0
    assert int(it["labels"].min()) >= 1 and int(it["labels"].max()) <= len(DETECTION_CLASSES)
    assert it["semantic"].dtype == torch.int64 and it["semantic"].shape == (64, 128)
    assert it["instance"].dtype == torch.int64 and it["instance"].shape == (64, 128)
    assert it["depth"].dtype == torch.float32 and it["depth"].shape == (64, 128)
    assert {"file_name", "index"} <= set(it["meta"])
    torch.testing.assert_close(ds[0]["image"], it["image"])  # deterministic items
    b = collate([ds[0], ds[1]])
    assert b["images"].shape == (2, 3, 64, 128) and len(b["boxes"]) == 2 and len(b["labels"]) == 2
    assert b["semantic"].shape == (2, 64, 128) and b["depth"].shape == (2, 64, 128)
    assert set(CLASS_TO_TRAIN_ID) == set(DETECTION_CLASSES)


def test_boxes_are_modal_boxes_of_instance_pixels():
    for i in range(6):
        s = generate_scene(1, i, SceneParams(height=128, width=256))
        inst = s["instance"]
        ids = set(np.unique(inst[inst > 0]).tolist())
        assert ids == set(s["instance_ids"].tolist())  # every instance has exactly one box
        for box, lab, iid in zip(s["boxes"], s["labels"], s["instance_ids"]):
            ys, xs = np.nonzero(inst == iid)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert iid // 1000 == CLASS_TO_TRAIN_ID[DETECTION_CLASSES[lab - 1]]
            assert (s["semantic"][inst == iid] == iid // 1000).all()


def test_semantic_ids_allowed():
    allowed = set(range(19)) | {255}
    for i in range(4):
        s = generate_scene(2, i, SMALL)
        assert set(np.unique(s["semantic"]).tolist()) <= allowed
        assert s["semantic"].dtype == np.uint8
        assert (s["depth"] > 0).all()


def test_objects_shrink_toward_horizon():
    h, bottom = [], []
    for i in range(12):
        s = generate_scene(0, i, SceneParams(height=128, width=256))
        keep = np.isin(s["labels"], [DETECTION_CLASSES.index(c) + 1 for c in ("car", "person")])
        b = s["boxes"][keep]
        h += list(b[:, 3] - b[:, 1])
        bottom += list(b[:, 3])
    assert np.corrcoef(h, bottom)[0, 1] > 0.5


def test_premise_small_objects_and_background_shift():
    """Objects cover few pixels, most boxes are small, domains change background more than objects."""
    cov, small = [], []
    for i in range(32):
        s = generate_scene(0, i)  # 256 x 512
        cov.append((s["instance"] > 0).mean())
        b = s["boxes"]
        small += list((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) < 0.01 * 256 * 512)
    print(f"\nobject pixel coverage {np.mean(cov):.4f}, boxes < 1% of image {np.mean(small):.3f}")
    assert np.mean(cov) <= 0.08
    assert np.mean(small) > 0.5
    for name in list_pairs():
        bg, ob = [], []
        for i in range(12):
            s, t = render_pair_sample(name, i)
            d = np.abs(s["image"] - t["image"]).mean(-1)
            m = s["instance"] > 0
            bg.append(d[~m].mean())
            ob.append(d[m].mean())
        r = np.mean(bg) / np.mean(ob)
        print(f"{name}: background {np.mean(bg):.3f} objects {np.mean(ob):.3f} ratio {r:.2f}")
        assert r > 1.0


@pytest.mark.parametrize("spec", [
    "night", "fog", "rain",
    {"name": "albumentations.RandomSnow", "args": {"snow_point_range": [0.1, 0.3]}},
    {"name": "kornia.augmentation.ColorJitter", "args": {"brightness": 0.3, "hue": 0.1}},
])
def test_effects_reproducible(spec):
    s = generate_scene(0, 1, SMALL)
    a = apply_effects(s["image"], s, [spec], np.random.default_rng(5))
    b = apply_effects(s["image"], s, [spec], np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == s["image"].shape and a.dtype == np.float32
    assert not np.array_equal(a, s["image"])


def test_export_layout_and_coco(tmp_path):
    from pycocotools.coco import COCO
    import cv2
    out = str(tmp_path)
    js = export("synthetic_clear2rain", "source", "train", 3, out, size=(64, 128), progress=False)
    stem = "synthetic_clear2rain_source_000001"
    d = os.path.join(out, "leftImg8bit", "train", "synthetic_clear2rain_source")
    g = os.path.join(out, "gtFine", "train", "synthetic_clear2rain_source")
    img = cv2.imread(os.path.join(d, stem + "_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
    lab = cv2.imread(os.path.join(g, stem + "_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    ins = cv2.imread(os.path.join(g, stem + "_gtFine_instanceIds.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 128, 3) and lab.dtype == np.uint8 and ins.dtype == np.uint16
    ds = SyntheticDrivingDataset("synthetic_clear2rain", "source", "train", size=(64, 128), length=3)
    ref = ds.render(1)
    np.testing.assert_array_equal(lab, ref["semantic"])
    np.testing.assert_array_equal(ins, ref["instance"])
    coco = COCO(js)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DETECTION_CLASSES)
    ims = coco.loadImgs(coco.getImgIds())
    assert len(ims) == 3
    for im in ims:
        idx = int(im["file_name"].split("_")[-2])
        assert os.path.exists(os.path.join(out, "leftImg8bit", "train", im["file_name"]))
        assert (im["width"], im["height"]) == (128, 64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        r = ds.render(idx)
        got = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns]).reshape(-1, 4)
        assert len(anns) == len(r["boxes"])
        np.testing.assert_allclose(got, r["boxes"], atol=1.0)
        assert [a["category_id"] for a in anns] == r["labels"].tolist()
        assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in anns)
    with open(js) as fh:
        assert set(json.load(fh)) >= {"images", "annotations", "categories"}


def test_export_cli_without_domain_writes_both_domains(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["export", "--pair", "synthetic_day2night", "--split", "val", "--n", "2", "--out", out,
                 "--size", "32x64"]) == 0
    for domain in ("source", "target"):
        folder = f"synthetic_day2night_{domain}"
        names = sorted(os.listdir(os.path.join(out, "leftImg8bit", "val", folder)))
        assert names == [f"{folder}_{i:06d}_leftImg8bit.png" for i in range(2)]
    with open(os.path.join(out, "annotations", "instances_val.json")) as fh:
        files = sorted(im["file_name"].split("/")[0] for im in json.load(fh)["images"])
    assert files == ["synthetic_day2night_source"] * 2 + ["synthetic_day2night_target"] * 2
    # --domain still picks one
    other = str(tmp_path / "one")
    main(["export", "--pair", "synthetic_day2night", "--domain", "target", "--split", "val", "--n", "1",
          "--out", other, "--size", "32"])
    assert os.listdir(os.path.join(other, "leftImg8bit", "val")) == ["synthetic_day2night_target"]


def test_bad_input_raises_naming_argument(capsys):
    with pytest.raises(ValueError, match="name"):
        get_pair("nope")
    with pytest.raises(ValueError, match="domain"):
        SyntheticDrivingDataset(domain="middle")
    with pytest.raises(ValueError, match="split"):
        SyntheticDrivingDataset(split="nope")  # "test" is a split since issue 11
    with pytest.raises(ValueError, match="size"):
        SyntheticDrivingDataset(size=(8, 8))
    with pytest.raises(ValueError, match="length"):
        SyntheticDrivingDataset(length=-1)
    with pytest.raises(ValueError, match="image_size"):
        get_pair("synthetic_day2night", image_size=[4, 4])
    with pytest.raises(ValueError, match="style"):
        generate_scene(0, 0, SMALL, style="mars")
    with pytest.raises(ValueError, match="params"):
        generate_scene(0, 0, {"height": 8, "width": 8})
    with pytest.raises(ValueError, match="scene params"):
        generate_scene(0, 0, {"heigth": 64})
    s = generate_scene(0, 0, SMALL)
    with pytest.raises(ValueError, match="effects"):
        apply_effects(s["image"], s, ["blizzard"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        apply_effects(s["image"], s, ["fog"], 0)
    with pytest.raises(ValueError, match="n"):
        export("synthetic_day2night", "source", "train", 0, "/tmp/unused")
    with pytest.raises(SystemExit):
        main(["export", "--pair", "nope", "--domain", "source", "--split", "train", "--n", "1", "--out", "x"])
    assert "--pair" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--pair", "synthetic_day2night", "--domain", "source", "--split", "train",
              "--n", "zero", "--out", "x"])
    assert "--n" in capsys.readouterr().err


def test_test_split_is_held_out():
    """The test split holds scenes of its own (disjoint seeds) and train/val are unchanged by it."""
    from warpadapt.data.pairs import SPLITS, SyntheticDrivingDataset, pair_scene_seed

    assert SPLITS == ("train", "val", "test")
    seeds = {s: pair_scene_seed(0, "target", s) for s in SPLITS}
    assert len(set(seeds.values())) == 3
    test = SyntheticDrivingDataset("synthetic_clear2fog", "target", "test", size=(32, 64), length=2)
    val = SyntheticDrivingDataset("synthetic_clear2fog", "target", "val", size=(32, 64), length=2)
    assert len(SyntheticDrivingDataset("synthetic_clear2fog", "target", "test")) == 200
    assert not torch.equal(test[0]["image"], val[0]["image"])
