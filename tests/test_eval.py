"""Metrics against hand-computed values: confusion matrix / mIoU and COCO mAP."""
import math

import pytest
import torch

from warpadapt.eval import ConfusionMatrix, detection_map, miou


# --------------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------------

# target: 3 pixels of class 0, 2 of class 1, 3 of class 2, 2 ignored
TARGET = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 255, 255])
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
# rows = target, cols = prediction:
#   t0: [2, 1, 0]   t1: [0, 1, 1]   t2: [1, 0, 2]
# IoU0 = 2 / (3 + 3 - 2) = 1/2, IoU1 = 1 / (2 + 2 - 1) = 1/3, IoU2 = 2 / (3 + 3 - 2) = 1/2
HAND_MAT = [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
HAND_IOU = [0.5, 1 / 3, 0.5]


def test_confusion_matrix_hand_computed():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    assert cm.mat.tolist() == HAND_MAT
    r = cm.compute()
    assert r["iou"].tolist() == pytest.approx(HAND_IOU)
    assert r["miou"] == pytest.approx(4 / 9)
    assert r["pixel_acc"] == pytest.approx(5 / 8)
    assert r["acc"].tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert r["macc"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_confusion_matrix_accumulates_and_accepts_images_and_scores():
    cm = ConfusionMatrix(3)
    cm.update(PRED[:5].reshape(1, 1, 5), TARGET[:5].reshape(1, 1, 5))
    cm.update(PRED[5:].reshape(1, 1, 5), TARGET[5:].reshape(1, 1, 5))
    assert cm.mat.tolist() == HAND_MAT
    # (N, C, H, W) scores: one-hot of PRED gives the same matrix
    scores = torch.nn.functional.one_hot(PRED, 3).float().T.reshape(1, 3, 2, 5)
    cm2 = ConfusionMatrix(3)
    cm2.update(scores, TARGET.reshape(1, 2, 5))
    assert cm2.mat.tolist() == HAND_MAT
    cm.reset()
    assert cm.mat.sum() == 0


def test_ignore_index_and_out_of_range_targets_skipped():
    cm = ConfusionMatrix(2, ignore_index=7)
    cm.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 7, 1, 9]))
    assert cm.mat.tolist() == [[1, 0], [0, 1]]
    # ignore pixels may hold any prediction, even an invalid one
    cm.update(torch.tensor([99]), torch.tensor([7]))
    assert cm.mat.sum() == 2


def test_miou_absent_classes_and_only_predicted_classes():
    # class 2 absent from target and prediction -> NaN, excluded from the mean
    r = ConfusionMatrix(3)
    r.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = r.compute()
    assert math.isnan(out["iou"][2]) and out["miou"] == 1.0
    # class 1 only predicted -> IoU 0 and counted in the mean
    assert miou(torch.tensor([0, 1]), torch.tensor([0, 0]), 3) == pytest.approx((0.5 + 0.0) / 2)
    # nothing counted -> NaN
    assert math.isnan(miou(torch.tensor([0]), torch.tensor([255]), 3))


def test_confusion_matrix_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="channels"):
        cm.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_confusion_matrix_large_random_matches_loop():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (2, 16, 16), generator=g)
    t[0, :3] = 255
    p = torch.randint(0, 5, (2, 16, 16), generator=g)
    cm = ConfusionMatrix(5)
    cm.update(p, t)
    ref = torch.zeros(5, 5, dtype=torch.long)
    for a, b in zip(t.flatten().tolist(), p.flatten().tolist()):
        if a != 255:
            ref[a, b] += 1
    assert torch.equal(cm.mat, ref)


# --------------------------------------------------------------------------------------------------
# Detection mAP
# --------------------------------------------------------------------------------------------------

def _t(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _p(boxes, scores, labels):
    d = _t(boxes, labels)
    d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def test_map50_hand_computed_101_point():
    # one class, 2 GT, 3 predictions ranked TP (0.9), FP (0.8), TP (0.7)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> interpolated 1 for r <= 0.5 (51 points of
    # 0.00..0.50), 2/3 for r in 0.51..1.00 (50 points): AP = (51 + 50 * 2/3) / 101
    t = [_t([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    p = [_p([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1])]
    r = detection_map(p, t, ["car"])
    hand = (51 + 50 * 2 / 3) / 101
    assert r["mAP50"] == pytest.approx(hand, abs=1e-9)
    assert r["AP"] == pytest.approx(hand, abs=1e-9)  # exact boxes: same at every IoU threshold
    assert r["AP_small"] == pytest.approx(hand, abs=1e-9)  # all boxes 10 x 10 < 32^2
    assert math.isnan(r["AP_medium"]) and math.isnan(r["AP_large"])
    assert r["AR"] == pytest.approx(1.0)


def test_map_perfect_and_no_predictions():
    t = [_t([[0, 0, 10, 10], [5, 5, 55, 55]], [1, 2]), _t([[0, 0, 200, 100]], [1])]
    perfect = [_p(x["boxes"].tolist(), [0.9] * len(x["labels"]), x["labels"].tolist()) for x in t]
    r = detection_map(perfect, t, ["car", "person"])
    for k in ("mAP50", "AP", "AP_small", "AP_medium", "AP_large"):
        assert r[k] == pytest.approx(1.0), k
    empty = [_p([], [], []), _p([], [], [])]
    r = detection_map(empty, t, ["car", "person"])
    for k in ("mAP50", "AP", "AP_small", "AP_medium", "AP_large", "AR"):
        assert r[k] == 0.0, k


def test_map_image_without_targets_gives_false_positives():
    # image 0: one GT found with score 0.5; image 1: no GT, one prediction with score 0.9 (FP)
    # ranked: FP, TP -> precision 0, 1/2 at recall 0, 1 -> interpolated 1/2 everywhere
    t = [_t([[0, 0, 10, 10]], [1]), _t([], [])]
    p = [_p([[0, 0, 10, 10]], [0.5], [1]), _p([[0, 0, 10, 10]], [0.9], [1])]
    assert detection_map(p, t, ["car"])["mAP50"] == pytest.approx(0.5)


def test_map_iou_thresholds_and_per_class():
    # IoU 0.62 matches at thresholds 0.50, 0.55, 0.60 out of 10 -> AP = 0.3, mAP50 = 1
    t = [_t([[0, 0, 10, 10], [0, 0, 100, 100]], [1, 2])]
    p = [_p([[0, 0, 10, 6.2], [0, 0, 100, 100]], [0.9, 0.9], [1, 2])]
    r = detection_map(p, t, ["car", "bus", "bike"])
    assert r["AP50_per_class"]["car"] == pytest.approx(1.0)
    assert r["AP_per_class"]["car"] == pytest.approx(0.3)
    assert r["AP_per_class"]["bus"] == pytest.approx(1.0)
    assert math.isnan(r["AP_per_class"]["bike"])  # no GT of that class anywhere
    assert r["AP"] == pytest.approx(0.65)  # mean over the classes with GT
    assert r["mAP75"] == pytest.approx(0.5)


def test_map_crowd_targets_are_ignored():
    t = [dict(_t([[0, 0, 10, 10], [30, 30, 40, 40]], [1, 1]), iscrowd=torch.tensor([0, 1]))]
    p = [_p([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.95], [1, 1])]
    assert detection_map(p, t, ["car"])["mAP50"] == pytest.approx(1.0)


def test_map_is_silent(capsys):
    t = [_t([[0, 0, 10, 10]], [1])]
    detection_map([_p([[0, 0, 10, 10]], [0.9], [1])], t, ["car"])
    assert capsys.readouterr().out == ""


def test_map_bad_input():
    t = [_t([[0, 0, 10, 10]], [1])]
    with pytest.raises(ValueError, match="one entry per image"):
        detection_map([], t, ["car"])
    with pytest.raises(ValueError, match=r"outside 1..1"):
        detection_map([_p([[0, 0, 10, 10]], [0.9], [2])], t, ["car"])
    with pytest.raises(ValueError, match="differ in length"):
        detection_map([_p([[0, 0, 10, 10]], [0.9, 0.8], [1])], t, ["car"])


def test_evaluation_reads_through_worker_processes_with_the_same_numbers():
    """num_workers > 0: the items come from DataLoader workers; the metrics equal the in-process ones."""
    from warpadapt.uda.evaluate import evaluate_detection, evaluate_segmentation

    class Copy(torch.nn.Module):
        def forward(self, x):
            return torch.cat([1 - x[:, :1], x[:, :1]], 1)

    class Boxes(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([[1., 1., float(im.shape[-1] - 1), 5.]]), "scores": im.mean().reshape(1),
                     "labels": torch.ones(1, dtype=torch.long)} for im in images]

    g = torch.Generator().manual_seed(0)
    seg = [{"image": torch.rand(3, 6, 8, generator=g), "semantic": torch.randint(0, 2, (6, 8), generator=g)} for _ in range(5)]
    det = [{"image": torch.rand(3, 6, 8 + i, generator=g), "boxes": torch.tensor([[1., 1., 7., 5.]]),
            "labels": torch.tensor([1])} for i in range(5)]
    a = evaluate_segmentation(Copy(), seg, 2, batch_size=2)
    b = evaluate_segmentation(Copy(), seg, 2, batch_size=2, num_workers=2)
    assert a["miou"] == b["miou"] and torch.equal(torch.as_tensor(a["iou"]), torch.as_tensor(b["iou"]))
    assert evaluate_detection(Boxes(), det, ["car"], batch_size=2) == evaluate_detection(Boxes(), det, ["car"], batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="num_workers"):
        evaluate_segmentation(Copy(), seg, 2, num_workers=-1)
