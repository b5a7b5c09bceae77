"""Dataset readers on tiny fake trees in the real layouts and file names."""
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from warpadapt.data.detection_readers import BDD100KDetection, CocoDetection
from warpadapt.data.labels import BDD_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_THING_TRAIN_IDS
from warpadapt.data.segmentation_readers import (
    CityscapesSegmentation,
    _instance_boxes,
    _semantic_boxes,
    label_ids_to_train_ids,
)


def _rgb(path: Path, w: int, h: int, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    Image.fromarray(arr).save(path)


def _png(path: Path, arr: np.ndarray, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr).astype(dtype)).save(path)


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _check_contract(s: dict, classes) -> None:
    assert s["image"].dtype == torch.float32 and s["image"].dim() == 3 and s["image"].shape[0] == 3
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert s["boxes"].dtype == torch.float32 and s["boxes"].shape[1:] == (4,)
    assert s["labels"].dtype == torch.int64 and s["labels"].shape == s["boxes"].shape[:1]
    if len(s["labels"]):
        assert int(s["labels"].min()) >= 1 and int(s["labels"].max()) <= len(classes)
    h, w = s["image"].shape[-2:]
    b = s["boxes"]
    assert bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all())
    assert bool((b[:, 2] <= w).all() and (b[:, 3] <= h).all())
    assert bool((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())
    assert "file_name" in s["meta"] and "index" in s["meta"]
    for key in ("semantic", "instance"):
        if key in s:
            assert s[key].dtype == torch.int64 and s[key].shape == (h, w)


# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------

def _coco_tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    _rgb(root / "a.png", 40, 30)
    _rgb(root / "sub" / "b.jpg", 20, 10)
    _rgb(root / "c.png", 16, 16)
    coco = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "sub/b.jpg"},  # no width/height: read from the header
            {"id": 12, "file_name": "c.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [35, -5, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 2, "bbox": [45, 5, 4, 4], "iscrowd": 0},
            {"id": 4, "image_id": 10, "category_id": 2, "bbox": [5, 5, 0, 4], "iscrowd": 0},
            {"id": 5, "image_id": 10, "category_id": 5, "bbox": [0, 0, 40, 30], "iscrowd": 1},
            {"id": 6, "image_id": 11, "category_id": 2, "bbox": [18.5, 2, 4, 3.5]},
            {"id": 7, "image_id": 11, "category_id": 9, "bbox": [0, 0, 2, 2], "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "person"}, {"id": 2, "name": "car"},
                       {"id": 9, "name": "sign"}],
    }
    ann = tmp_path / "annotations" / "instances_val.json"
    _json(ann, coco)
    return root, ann


def test_coco_boxes_labels_clipping_and_stats(tmp_path, caplog):
    root, ann = _coco_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(root, ann)
    assert ds.classes == ["car", "person", "sign"]  # sorted by category id 2, 5, 9
    assert len(ds) == 3
    a, b, c = ds[0], ds[1], ds[2]
    for s in (a, b, c):
        _check_contract(s, ds.classes)
    # [1, 2, 3, 4] -> (1, 2, 4, 6); [35, -5, 10, 10] -> (35, -5, 45, 5) clipped to (35, 0, 40, 5);
    # [45, 5, 4, 4] lies outside -> dropped; zero width -> dropped; crowd -> skipped
    assert a["boxes"].tolist() == [[1, 2, 4, 6], [35, 0, 40, 5]]
    assert a["labels"].tolist() == [2, 1]
    assert a["image"].shape == (3, 30, 40)
    assert a["meta"]["file_name"] == "a.png" and a["meta"]["index"] == 0
    assert a["meta"]["image_id"] == 10
    # header size (20 x 10) used for clipping: (18.5, 2, 22.5, 5.5) -> (18.5, 2, 20, 5.5)
    assert b["boxes"].tolist() == [[18.5, 2, 20, 5.5], [0, 0, 2, 2]]
    assert b["labels"].tolist() == [1, 3]
    assert c["boxes"].shape == (0, 4) and c["labels"].shape == (0,)
    assert ds.stats == {"images": 3, "boxes_total": 7, "crowd_skipped": 1,
                        "other_class_skipped": 0, "boxes_clipped": 2,
                        "boxes_dropped_degenerate": 2, "boxes_kept": 4}
    assert "2 boxes clipped" in caplog.text and "2 degenerate boxes dropped" in caplog.text


def test_coco_classes_order_and_filter(tmp_path):
    root, ann = _coco_tree(tmp_path)
    ds = CocoDetection(root, ann, classes=["sign", "person"])
    assert ds.classes == ["sign", "person"]
    assert ds[0]["labels"].tolist() == [2]  # only the person box remains
    assert ds[1]["labels"].tolist() == [1]
    assert ds.stats["other_class_skipped"] == 4  # car boxes
    ds = CocoDetection(root, ann, classes=["person"], remove_empty=True)
    assert len(ds) == 1 and ds[0]["meta"]["file_name"] == "a.png"
    with pytest.raises(ValueError, match=r"\['truck'\].*available"):
        CocoDetection(root, ann, classes=["truck"])


def test_coco_transforms(tmp_path):
    root, ann = _coco_tree(tmp_path)

    def flip(s):
        s = dict(s)
        s["image"] = s["image"].flip(-1)
        w = s["image"].shape[-1]
        s["boxes"] = torch.stack([w - s["boxes"][:, 2], s["boxes"][:, 1],
                                  w - s["boxes"][:, 0], s["boxes"][:, 3]], 1)
        return s

    s = CocoDetection(root, ann, transforms=flip)[0]
    assert s["boxes"].tolist()[0] == [36, 2, 39, 6]
    assert s["image"][0, 0, -1] == 1.0  # the red corner pixel moved


def test_coco_errors(tmp_path):
    root, ann = _coco_tree(tmp_path)
    layout = re.escape("'bbox': [x, y, w, h]")
    with pytest.raises(FileNotFoundError, match=layout):
        CocoDetection(root, tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match=layout):
        CocoDetection(tmp_path / "nope", ann)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        CocoDetection(root, bad)
    _json(bad, {"annotations": []})
    with pytest.raises(ValueError, match="not a COCO detection json"):
        CocoDetection(root, bad)
    _json(bad, {"images": [], "annotations": [], "categories": []})
    with pytest.raises(ValueError, match="empty dataset"):
        CocoDetection(root, bad)
    # corrupt image: the error names the file
    (root / "c.png").write_bytes(b"not a png at all")
    ds = CocoDetection(root, ann)
    with pytest.raises(ValueError, match=r"c\.png"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]


# --------------------------------------------------------------------------------------------------
# BDD100K
# --------------------------------------------------------------------------------------------------

def _bdd_frames(old: bool):
    ped, motor, bike = ("person", "motor", "bike") if old else ("pedestrian", "motorcycle",
                                                                 "bicycle")
    return [
        {"name": "n1.jpg", "attributes": {"weather": "clear", "timeofday": "night",
                                          "scene": "city street"},
         "labels": [
             {"id": 1, "category": ped, "box2d": {"x1": 10.0, "y1": 5.0, "x2": 19.0, "y2": 24.0}},
             {"id": 2, "category": "car", "box2d": {"x1": 55.0, "y1": 30.0, "x2": 70.0,
                                                     "y2": 40.0}},
             {"id": 3, "category": "drivable area", "poly2d": [[0, 0], [1, 1]]},
             {"id": 4, "category": "other vehicle", "box2d": {"x1": 0, "y1": 0, "x2": 3, "y2": 3}},
         ]},
        {"name": "d1.jpg", "attributes": {"weather": "rainy", "timeofday": "daytime",
                                          "scene": "highway"},
         "labels": [
             {"id": 5, "category": motor, "box2d": {"x1": 0.0, "y1": 0.0, "x2": 4.0, "y2": 4.0}},
             {"id": 6, "category": bike, "box2d": {"x1": 8.0, "y1": 8.0, "x2": 8.0, "y2": 9.0}},
             {"id": 7, "category": "traffic light",
              "box2d": {"x1": 70.0, "y1": 0.0, "x2": 70.0, "y2": 3.0}},
         ]},
        {"name": "d2.jpg", "attributes": {"weather": "clear", "timeofday": "daytime",
                                          "scene": "highway"},
         "labels": None},
    ]


def _bdd_tree(tmp_path: Path, split: str = "val", old: bool = False) -> Path:
    root = tmp_path / "bdd100k"
    for fr in _bdd_frames(old):
        _rgb(root / "images" / "100k" / split / fr["name"], 64, 36)
    if old:
        _json(root / "labels" / f"bdd100k_labels_images_{split}.json", _bdd_frames(old))
    else:
        _json(root / "labels" / "det_20" / f"det_{split}.json", _bdd_frames(old))
    return root


@pytest.mark.parametrize("old", [False, True], ids=["det_20", "bdd100k_labels_images"])
def test_bdd_layouts_boxes_and_aliases(tmp_path, old):
    root = _bdd_tree(tmp_path, old=old)
    ds = BDD100KDetection(root, "val", image_size=(64, 36))
    assert ds.classes == list(BDD_CLASSES) and len(ds) == 3
    n1, d1, d2 = ds[0], ds[1], ds[2]
    for s in (n1, d1, d2):
        _check_contract(s, ds.classes)
    # inclusive corner pixels: x2 + 1, y2 + 1; the car box (55..71, 30..41) is clipped to 64 x 36
    assert n1["boxes"].tolist() == [[10, 5, 20, 25], [55, 30, 64, 36]]
    assert [ds.classes[i - 1] for i in n1["labels"]] == ["person", "car"]  # det_20 "pedestrian": canonical "person"
    # one-pixel-wide bicycle kept; the traffic light at x = 70 is outside the 64-wide image
    assert d1["boxes"].tolist() == [[0, 0, 5, 5], [8, 8, 9, 10]]
    assert [ds.classes[i - 1] for i in d1["labels"]] == ["motorcycle", "bicycle"]
    assert d2["boxes"].shape == (0, 4)
    assert n1["meta"]["attributes"]["timeofday"] == "night"
    assert n1["meta"]["file_name"] == "n1.jpg"
    assert ds.stats["boxes_total"] == 6 and ds.stats["other_class_skipped"] == 1
    assert ds.stats["boxes_clipped"] == 1 and ds.stats["boxes_dropped_degenerate"] == 1
    assert ds.stats["boxes_kept"] == 4


def test_bdd_exclusive_corners_and_class_subset(tmp_path):
    root = _bdd_tree(tmp_path)
    ds = BDD100KDetection(root, "val", classes=["car", "pedestrian"], inclusive_corners=False,
                          image_size=(64, 36))
    s = ds[0]
    assert s["boxes"].tolist() == [[10, 5, 19, 24], [55, 30, 64, 36]]
    assert s["labels"].tolist() == [2, 1]


def test_bdd_attribute_filters(tmp_path):
    root = _bdd_tree(tmp_path)
    night = BDD100KDetection(root, "val", timeofday="night")
    assert [night[i]["meta"]["file_name"] for i in range(len(night))] == ["n1.jpg"]
    day = BDD100KDetection(root, "val", timeofday=["daytime", "dawn/dusk"])
    assert len(day) == 2
    rainy_day = BDD100KDetection(root, "val", timeofday="daytime", weather=["rainy"])
    assert len(rainy_day) == 1 and rainy_day[0]["meta"]["file_name"] == "d1.jpg"
    clear_highway = BDD100KDetection(root, "val", weather="clear", scene="highway")
    assert len(clear_highway) == 1
    with pytest.raises(ValueError, match=r"timeofday.*night.*weather.*snowy"):
        BDD100KDetection(root, "val", timeofday="night", weather="snowy")


def test_bdd_errors(tmp_path):
    root = _bdd_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("labels/det_20/det_<split>.json")):
        BDD100KDetection(root, "train")
    with pytest.raises(FileNotFoundError, match=re.escape("images/100k/<split>/<name>")):
        BDD100KDetection(tmp_path / "elsewhere", "val")
    _json(root / "labels" / "det_20" / "det_train.json", _bdd_frames(False))
    with pytest.raises(FileNotFoundError, match=re.escape("images/100k/<split>/<name>")):
        BDD100KDetection(root, "train")
    (root / "images" / "100k" / "val" / "n1.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"n1\.jpg"):
        BDD100KDetection(root, "val")[0]


# --------------------------------------------------------------------------------------------------
# Cityscapes-style segmentation
# --------------------------------------------------------------------------------------------------

H, W = 12, 16


def _cityscapes_maps(encoding: str):
    """Label-id map, train-id map and instance map (label or train id encoding) for one image."""
    label_ids = np.full((H, W), 7)  # road
    label_ids[:3] = 23  # sky
    label_ids[0, 0] = 0  # unlabeled
    label_ids[4:8, 2:6] = 26  # car #1
    label_ids[5:9, 8:10] = 26  # car #2
    label_ids[9:12, 12:14] = 24  # person
    label_ids[1, 14:16] = 26  # car group without instance id (crowd)
    label_ids[10, 0] = 33  # bicycle pixel, instance 0
    train = label_ids_to_train_ids(label_ids)
    cls = label_ids if encoding == "label" else train
    inst = label_ids.copy() if encoding == "label" else train.copy()
    inst[4:8, 2:6] = cls[4, 2] * 1000 + 0
    inst[5:9, 8:10] = cls[5, 8] * 1000 + 1
    inst[9:12, 12:14] = cls[9, 12] * 1000 + 0
    inst[10, 0] = cls[10, 0] * 1000 + 0
    return label_ids, train, inst


EXPECTED_BOXES = [[0, 10, 1, 11], [12, 9, 14, 12], [2, 4, 6, 8], [8, 5, 10, 9]]
EXPECTED_NAMES = ["bicycle", "person", "car", "car"]


def _sorted(boxes, labels):
    order = sorted(range(len(labels)),
                   key=lambda i: (boxes[i][1], boxes[i][0], boxes[i][3], boxes[i][2], labels[i]))
    return [boxes[i] for i in order], [labels[i] for i in order]


def _city_tree(tmp_path: Path, variant: str = "trainIds", encoding: str = "label",
               with_instances: bool = True, split: str = "val") -> Path:
    root = tmp_path / "cityscapes"
    label_ids, train, inst = _cityscapes_maps(encoding)
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        _rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", W, H)
        gt = root / "gtFine" / split / city
        if variant == "trainIds":
            _png(gt / f"{stem}_gtFine_labelTrainIds.png", train)
        else:
            _png(gt / f"{stem}_gtFine_labelIds.png", label_ids)
        if with_instances:
            _png(gt / f"{stem}_gtFine_instanceIds.png", inst, np.uint16)
    return root


@pytest.mark.parametrize("variant", ["trainIds", "labelIds"])
def test_cityscapes_semantic_instances_boxes(tmp_path, variant):
    root = _city_tree(tmp_path, variant)
    ds = CityscapesSegmentation(root, "val")
    assert ds.classes == list(CITYSCAPES_CLASSES) and len(ds) == 2
    s = ds[0]
    _check_contract(s, ds.classes)
    _, train, inst = _cityscapes_maps("label")
    assert torch.equal(s["semantic"], torch.from_numpy(train))
    assert s["semantic"][0, 0] == 255 and s["semantic"][5, 0] == 0 and s["semantic"][1, 1] == 10
    assert s["semantic"][4, 2] == 13 and s["semantic"][10, 0] == 18
    assert torch.equal(s["instance"], torch.from_numpy(inst))
    boxes, names = _sorted(s["boxes"].tolist(), [ds.classes[i - 1] for i in s["labels"]])
    # (the car group at row 1 has no instance id: no box)
    assert (boxes, names) == _sorted(EXPECTED_BOXES, EXPECTED_NAMES)
    assert s["meta"]["file_name"] == "aachen/aachen_000000_000019_leftImg8bit.png"
    assert s["meta"]["condition"] == "aachen" and ds[1]["meta"]["index"] == 1


def test_cityscapes_train_id_instance_encoding(tmp_path):
    root = _city_tree(tmp_path, encoding="train")
    for enc in ("auto", "train"):
        s = CityscapesSegmentation(root, "val", instance_encoding=enc)[0]
        boxes, names = _sorted(s["boxes"].tolist(), [CITYSCAPES_CLASSES[i - 1] for i in s["labels"]])
        assert (boxes, names) == _sorted(EXPECTED_BOXES, EXPECTED_NAMES)
    # reading train-id encoded maps as label ids gives the wrong classes (all unknown -> no boxes)
    s = CityscapesSegmentation(root, "val", instance_encoding="label")[0]
    assert len(s["boxes"]) == 0


def test_cityscapes_boxes_from_connected_components(tmp_path):
    root = _city_tree(tmp_path, with_instances=False)
    s = CityscapesSegmentation(root, "val")[0]
    assert "instance" not in s
    boxes, names = _sorted(s["boxes"].tolist(), [CITYSCAPES_CLASSES[i - 1] for i in s["labels"]])
    # no instance map: the car group (row 1) becomes a component too; car 1 (columns 2..5) and
    # car 2 (columns 8..9) do not touch, so they stay separate
    expected = _sorted(EXPECTED_BOXES + [[14, 1, 16, 2]], EXPECTED_NAMES + ["car"])
    assert (boxes, names) == expected
    s = CityscapesSegmentation(root, "val", thing_classes=(13,))[0]
    assert [CITYSCAPES_CLASSES[i - 1] for i in s["labels"]] == ["car"] * 3


def test_cityscapes_filters_transforms_and_unlabelled(tmp_path):
    root = _city_tree(tmp_path)
    ds = CityscapesSegmentation(root, "val", conditions="bonn",
                                transforms=lambda s: {**s, "tag": 1})
    assert len(ds) == 1 and ds[0]["meta"]["condition"] == "bonn" and ds[0]["tag"] == 1
    with pytest.raises(ValueError, match=r"conditions=\['zurich'\]"):
        CityscapesSegmentation(root, "val", conditions=["zurich"])
    # test split without labels
    _rgb(root / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png", W, H)
    ds = CityscapesSegmentation(root, "test")
    with pytest.raises(FileNotFoundError,
                       match=r"berlin_000000_000019_gtFine_labelTrainIds\.png.*require_labels"):
        ds[0]
    s = CityscapesSegmentation(root, "test", require_labels=False)[0]
    assert "semantic" not in s and s["boxes"].shape == (0, 4) and s["labels"].shape == (0,)


def test_cityscapes_errors(tmp_path):
    root = _city_tree(tmp_path)
    pattern = re.escape("leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png")
    with pytest.raises(FileNotFoundError, match=pattern):
        CityscapesSegmentation(root, "train")
    with pytest.raises(FileNotFoundError, match=pattern):
        CityscapesSegmentation(tmp_path / "nothing", "val")
    with pytest.raises(ValueError, match="layout must be one of"):
        CityscapesSegmentation(root, "val", layout="kitti")
    # label map of the wrong size
    gt = root / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    _png(gt, np.zeros((H + 1, W)))
    with pytest.raises(ValueError, match="semantic map.*shape"):
        CityscapesSegmentation(root, "val")[0]
    # corrupt image
    img = root / "leftImg8bit" / "val" / "bonn" / "bonn_000001_000019_leftImg8bit.png"
    img.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=r"bonn_000001_000019_leftImg8bit\.png"):
        CityscapesSegmentation(root, "val")[1]


def _acdc_tree(tmp_path: Path) -> Path:
    root = tmp_path / "acdc"
    _, train, _ = _cityscapes_maps("label")
    for cond, seq in (("fog", "GOPR0475"), ("night", "GOPR0351"), ("rain", "GOPR0400")):
        stem = f"{seq}_frame_000041"
        _rgb(root / "rgb_anon" / cond / "val" / seq / f"{stem}_rgb_anon.png", W, H)
        _png(root / "gt" / cond / "val" / seq / f"{stem}_gt_labelTrainIds.png", train)
        # reference images of the same place (no labels) must not be picked up as "val"
        _rgb(root / "rgb_anon" / cond / "val_ref" / seq / f"{stem}_ref_rgb_anon.png", W, H)
    return root


def test_acdc(tmp_path):
    root = _acdc_tree(tmp_path)
    ds = CityscapesSegmentation(root, "val", layout="acdc")
    assert len(ds) == 3
    assert [ds[i]["meta"]["condition"] for i in range(3)] == ["fog", "night", "rain"]
    ds = CityscapesSegmentation(root, "val", layout="acdc", conditions=["night", "snow"])
    s = ds[0]
    _check_contract(s, ds.classes)
    assert len(ds) == 1
    assert s["meta"]["file_name"] == "night/val/GOPR0351/GOPR0351_frame_000041_rgb_anon.png"
    assert s["semantic"][4, 2] == 13 and s["semantic"][0, 0] == 255
    boxes, names = _sorted(s["boxes"].tolist(), [ds.classes[i - 1] for i in s["labels"]])
    assert (boxes, names) == _sorted(EXPECTED_BOXES + [[14, 1, 16, 2]], EXPECTED_NAMES + ["car"])
    with pytest.raises(ValueError, match=r"conditions=\['snow'\]"):
        CityscapesSegmentation(root, "val", layout="acdc", conditions="snow")
    with pytest.raises(FileNotFoundError, match=re.escape(
            "rgb_anon/<condition>/<split>/<seq>/<stem>_rgb_anon.png")):
        CityscapesSegmentation(tmp_path, "val", layout="acdc")
    # labelIds fallback
    gt = root / "gt" / "fog" / "val" / "GOPR0475" / "GOPR0475_frame_000041_gt_labelTrainIds.png"
    gt.unlink()
    label_ids, train, _ = _cityscapes_maps("label")
    _png(gt.with_name("GOPR0475_frame_000041_gt_labelIds.png"), label_ids)
    s = CityscapesSegmentation(root, "val", layout="acdc", conditions="fog")[0]
    assert torch.equal(s["semantic"], torch.from_numpy(train))


def test_dark_zurich(tmp_path):
    root = tmp_path / "Dark_Zurich"
    _, train, _ = _cityscapes_maps("label")
    stem = "GOPR0356_frame_000321"
    _rgb(root / "rgb_anon" / "val" / "night" / "GOPR0356" / f"{stem}_rgb_anon.png", W, H)
    _png(root / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelTrainIds.png", train)
    for cond in ("day", "twilight", "night"):
        _rgb(root / "rgb_anon" / "train" / cond / "GOPR0001" / f"GOPR0001_frame_00000{len(cond)}"
             "_rgb_anon.png", W, H)
    ds = CityscapesSegmentation(root, "val", layout="darkzurich")
    s = ds[0]
    _check_contract(s, ds.classes)
    assert torch.equal(s["semantic"], torch.from_numpy(train))
    assert s["meta"]["file_name"] == f"val/night/GOPR0356/{stem}_rgb_anon.png"
    assert len(s["boxes"]) == 5
    # train split: no labels
    with pytest.raises(FileNotFoundError, match=r"_gt_labelTrainIds\.png"):
        CityscapesSegmentation(root, "train", layout="darkzurich")[0]
    tr = CityscapesSegmentation(root, "train", layout="darkzurich", conditions=["day", "night"],
                                require_labels=False)
    assert len(tr) == 2 and {tr[i]["meta"]["condition"] for i in range(2)} == {"day", "night"}
    with pytest.raises(FileNotFoundError, match=re.escape(
            "rgb_anon/<split>/<condition>/<seq>/<stem>_rgb_anon.png")):
        CityscapesSegmentation(root, "test", layout="darkzurich")


# --------------------------------------------------------------------------------------------------
# Box helpers
# --------------------------------------------------------------------------------------------------

def test_box_helpers():
    assert label_ids_to_train_ids(np.array([-1, 7, 8, 24, 33, 34, 255])).tolist() == \
        [255, 0, 1, 11, 18, 255, 255]
    assert label_ids_to_train_ids(torch.tensor([26, 1000])).tolist() == [13, 255]
    b, c = _instance_boxes(np.zeros((3, 3), dtype=np.int64), CITYSCAPES_THING_TRAIN_IDS, "auto")
    assert b.shape == (0, 4) and c.shape == (0,)
    with pytest.raises(ValueError, match="encoding"):
        _instance_boxes(np.zeros((3, 3)), CITYSCAPES_THING_TRAIN_IDS, "x")
    m = np.zeros((4, 6), dtype=np.int64)
    m[1:3, 2:5] = 26001  # a car given with label id 26
    m[0, 0] = 11000  # a person given with train id 11
    b, c = _instance_boxes(m, CITYSCAPES_THING_TRAIN_IDS, "auto")
    assert b.tolist() == [[0.0, 0.0, 1.0, 1.0], [2.0, 1.0, 5.0, 3.0]] and c.tolist() == [11, 13]
    # 4- versus 8-connectivity on a diagonal pair of pixels
    s = np.zeros((2, 2), dtype=np.int64)
    s[0, 0] = s[1, 1] = 11
    assert len(_semantic_boxes(s, CITYSCAPES_THING_TRAIN_IDS)[0]) == 1
    assert len(_semantic_boxes(s, CITYSCAPES_THING_TRAIN_IDS, connectivity=4)[0]) == 2


def test_cityscapes_detection_classes_on_synthetic_style_tree(tmp_path):
    # the synthetic export: train-id instance encoding, 0 on stuff, traffic lights/signs as things
    root = tmp_path / "synth"
    sem = np.full((H, W), 0)
    sem[:4] = 10
    inst = np.zeros((H, W), dtype=np.int64)
    sem[2:6, 1:2] = 6
    inst[2:6, 1:2] = 6000  # traffic light #0
    sem[6:10, 4:9] = 13
    inst[6:10, 4:9] = 13000  # car #0
    sem[6:10, 9:12] = 13
    inst[6:10, 9:12] = 13001  # car #1, touching car #0
    stem = "000000"
    folder = "day2night_night"
    _rgb(root / "leftImg8bit" / "train" / folder / f"{stem}_leftImg8bit.png", W, H)
    _png(root / "gtFine" / "train" / folder / f"{stem}_gtFine_labelTrainIds.png", sem)
    _png(root / "gtFine" / "train" / folder / f"{stem}_gtFine_instanceIds.png", inst, np.uint16)
    names = ("person", "rider", "car", "truck", "bicycle", "traffic light", "traffic sign")
    ds = CityscapesSegmentation(root, "train", detection_classes=names)
    assert ds.classes == list(names) and ds.semantic_classes == list(CITYSCAPES_CLASSES)
    s = ds[0]
    _check_contract(s, ds.classes)
    boxes, labels = _sorted(s["boxes"].tolist(), s["labels"].tolist())
    assert boxes == [[1, 2, 2, 6], [4, 6, 9, 10], [9, 6, 12, 10]]
    assert labels == [6, 3, 3]
    # default thing classes (11..18) skip the traffic light
    assert CityscapesSegmentation(root, "train")[0]["labels"].tolist() == [14, 14]
    # BDD spelling accepted; unknown names rejected
    ds = CityscapesSegmentation(root, "train", detection_classes=["pedestrian", "car"])
    assert ds[0]["labels"].tolist() == [2, 2] and ds.classes == ["person", "car"]
    with pytest.raises(ValueError, match="'van' is not a Cityscapes class"):
        CityscapesSegmentation(root, "train", detection_classes=["van"])


# --------------------------------------------------------------------------------------------------
# Round trip with the synthetic exporter
# --------------------------------------------------------------------------------------------------

def test_round_trip_synthetic_export(tmp_path):
    """generate -> `python -m warpadapt.data export` -> read back with both readers."""
    import importlib.util
    import subprocess
    import sys

    try:
        if importlib.util.find_spec("warpadapt.data.__main__") is None:
            raise ImportError("warpadapt.data.__main__ not found")
        from warpadapt.data.pairs import SyntheticDrivingDataset, list_pairs
    except ImportError as err:
        pytest.skip(f"synthetic exporter not importable yet: {err}")
    pair = "synthetic_clear2fog" if "synthetic_clear2fog" in list_pairs() else list_pairs()[0]
    n, size = 3, (64, 128)
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "warpadapt.data", "export", "--pair", pair, "--domain", "target",
           "--split", "val", "--n", str(n), "--out", str(out), "--size", f"{size[0]}x{size[1]}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]

    gen = SyntheticDrivingDataset(pair, "target", "val", size=size, length=n)
    coco = CocoDetection(out / "leftImg8bit" / "val", out / "annotations" / "instances_val.json")
    seg = CityscapesSegmentation(out, "val", detection_classes=gen.classes)
    assert list(coco.classes) == list(gen.classes) == seg.classes
    assert len(coco) == len(seg) == n
    assert coco.stats["boxes_dropped_degenerate"] == 0
    n_boxes = 0
    for i in range(n):
        g, c, s = gen[i], coco[i], seg[i]
        assert c["meta"]["file_name"] == s["meta"]["file_name"]
        assert c["image"].shape == s["image"].shape == (3, *size)
        # PNG stores 8 bits per channel
        assert (c["image"] - g["image"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(s["semantic"], g["semantic"].long())
        for got in (c, s):
            order_g = _sorted(g["boxes"].tolist(), g["labels"].tolist())
            order = _sorted(got["boxes"].tolist(), got["labels"].tolist())
            assert order[1] == order_g[1]
            assert np.allclose(order[0], order_g[0], atol=1.0) if order[0] else not order_g[0]
        n_boxes += len(g["boxes"])
    assert n_boxes > 0


def test_bdd_label_json_is_parsed_once_per_process(tmp_path, monkeypatch):
    """The day and night readers of one split share one parse of the (large) label json; a changed file is
    read again."""
    import warpadapt.data.reader_utils as ru
    root = _bdd_tree(tmp_path)
    calls = []
    real_load = json.load
    monkeypatch.setattr(ru.json, "load", lambda f: calls.append(f.name) or real_load(f))
    night = BDD100KDetection(root, "val", timeofday="night")
    day = BDD100KDetection(root, "val", timeofday=["daytime", "dawn/dusk"])
    assert len(calls) == 1 and len(night) + len(day) >= 2
    label = next((root / "labels").rglob("*.json"))
    frames = real_load(open(label))
    label.write_text(json.dumps(frames[:1]))  # another size: parsed afresh
    assert len(BDD100KDetection(root, "val")) == 1 and len(calls) == 2
