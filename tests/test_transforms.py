"""Tests for warpadapt.transforms: the image and its labels warped together (kornia and albumentations)."""

import math

import albumentations as A
import kornia.augmentation as K
import numpy as np
import pytest
import torch

from warpadapt.transforms import AlbuSaliencyWarp, RandomSaliencyWarp, attach_box_guidance, boxes_from_kornia

H, W = 96, 160
# integer pascal_voc boxes (x1, y1, x2, y2): the object covers pixels x1..x2-1, y1..y2-1
BOXES = [
    [[30.0, 40.0, 42.0, 50.0], [100.0, 20.0, 112.0, 34.0]],
    [[70.0, 60.0, 86.0, 72.0], [10.0, 10.0, 20.0, 22.0]],
]


def render(boxes, h=H, w=W):
    """(len(boxes), h, w) float label maps: box i of an image filled with label i + 1."""
    out = torch.zeros(len(boxes), h, w)
    for b, bxs in enumerate(boxes):
        for i, (x1, y1, x2, y2) in enumerate(bxs):
            out[b, int(y1) : int(y2), int(x1) : int(x2)] = i + 1
    return out


def label_bbox(mask, label):
    """Tight continuous box (x1, y1, x2, y2) of the pixels of ``label`` in a 2-D map."""
    ys, xs = np.nonzero(np.asarray(mask) == label)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def centre_keypoints(boxes):
    """A keypoint (pixel index, kornia/albumentations convention) in the middle of each box."""
    return [[[(x1 + x2) // 2, (y1 + y2) // 2] for x1, y1, x2, y2 in bxs] for bxs in boxes]


def image_batch(b=2, seed=0):
    """Smooth random images (low-frequency content, so resampling there and back is nearly lossless)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, H // 8, W // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)


def guided_sequence(**kw):
    aug = RandomSaliencyWarp(**kw)
    seq = K.AugmentationSequential(aug, data_keys=["input", "bbox_xyxy", "mask", "keypoints"])
    attach_box_guidance(seq)
    return seq, aug


# ----------------------------------------------------------------------------------------- kornia
def test_kornia_sequence_warps_labels_consistently():
    seq, _ = guided_sequence()
    img, boxes = image_batch(), torch.tensor(BOXES)
    mask, kps = render(BOXES)[:, None], torch.tensor(centre_keypoints(BOXES), dtype=torch.float32)
    out, wboxes, wmask, wkps = seq(img, boxes, mask, kps)
    assert out.shape == img.shape and wmask.shape == mask.shape and wboxes.shape == boxes.shape
    assert not torch.allclose(out, img, atol=1e-3)
    for b in range(2):
        for i in range(2):
            label = i + 1
            got = label_bbox(wmask[b, 0], label)
            np.testing.assert_allclose(got, wboxes[b, i].numpy(), atol=1.5)
            # the object gets more pixels
            assert (wmask[b, 0] == label).sum() > (mask[b, 0] == label).sum()
            # the keypoint lands on the same object
            x, y = wkps[b, i].round().long().tolist()
            assert wmask[b, 0, y, x] == label


def test_kornia_inverse_restores_labels():
    seq, _ = guided_sequence()
    img, boxes = image_batch(), torch.tensor(BOXES)
    mask, kps = render(BOXES)[:, None], torch.tensor(centre_keypoints(BOXES), dtype=torch.float32)
    out = seq(img, boxes, mask, kps)
    bimg, bboxes, bmask, bkps = seq.inverse(*out)
    assert (bboxes - boxes).abs().max() < 1e-3
    assert (bkps - kps).abs().max() < 1e-3
    assert (bmask == mask).float().mean() > 0.99
    # resampling loses a little where the warp compressed; far closer than the warped image
    assert (bimg - img).abs().mean() < 0.01 < (out[0] - img).abs().mean()


def test_kornia_standalone_saliency_boxes_and_replay():
    aug = RandomSaliencyWarp(fwhm=9.0)
    img = image_batch()
    boxes = [torch.tensor(BOXES[0]), torch.zeros(0, 4)]
    out = aug(img, saliency_boxes=boxes)
    params = aug._params
    assert params["map_y"].shape == (2, 31) and params["map_x"].shape == (2, 51)
    assert torch.allclose(out[1], img[1], atol=1e-5)  # no boxes: identity
    assert torch.equal(aug(img, params=params), out)  # replay
    back = aug.inverse(out)
    assert (back - img).abs().mean() < 0.01
    with pytest.raises(ValueError, match="saliency_boxes"):
        aug(img, params=params, saliency_boxes=boxes)
    with pytest.raises(ValueError, match="needs the sample's boxes"):  # guidance is for one draw only
        aug(img)


def test_kornia_empty_boxes_identity():
    seq, _ = guided_sequence()
    img = image_batch()
    mask = render(BOXES)[:, None]
    empty = torch.zeros(2, 0, 4)
    kps = torch.tensor(centre_keypoints(BOXES), dtype=torch.float32)
    out, wboxes, wmask, wkps = seq(img, empty, mask, kps)
    assert torch.allclose(out, img, atol=1e-5)
    assert torch.equal(wmask, mask)
    assert torch.allclose(wkps, kps, atol=1e-4)
    assert wboxes.shape == (2, 0, 4)


def test_kornia_p0_unchanged():
    seq, _ = guided_sequence(p=0.0)
    img, boxes = image_batch(), torch.tensor(BOXES)
    mask, kps = render(BOXES)[:, None], torch.tensor(centre_keypoints(BOXES), dtype=torch.float32)
    out, wboxes, wmask, wkps = seq(img, boxes, mask, kps)
    assert torch.equal(out, img) and torch.equal(wboxes, boxes) and torch.equal(wmask, mask) and torch.equal(wkps, kps)


def test_kornia_deterministic_with_seed_and_partial_gate():
    b = 8
    boxes = torch.tensor(BOXES * 4)
    img = image_batch(b)
    mask = render(BOXES * 4)[:, None]
    kps = torch.tensor(centre_keypoints(BOXES * 4), dtype=torch.float32)
    runs = []
    for _ in range(2):
        seq, _ = guided_sequence(p=0.5)
        torch.manual_seed(3)
        runs.append(seq(img, boxes, mask, kps))
        back = seq.inverse(*runs[-1])
        assert (back[1] - boxes).abs().max() < 1e-3
        assert (back[3] - kps).abs().max() < 1e-3
    for x, y in zip(*runs):
        assert torch.equal(x, y)
    out, wboxes, wmask, _ = runs[0]
    warped = (out - img).flatten(1).abs().amax(1) > 1e-4
    assert 0 < int(warped.sum()) < b  # the gate applied to some samples only
    for i in range(b):  # labels follow the per-sample decision
        assert torch.equal(wboxes[i], boxes[i]) != bool(warped[i])
        assert torch.equal(wmask[i], mask[i]) != bool(warped[i])


def test_kornia_dict_input_and_xywh_key():
    aug = RandomSaliencyWarp()
    seq = K.AugmentationSequential(aug, data_keys=None)
    attach_box_guidance(seq)
    img, boxes = image_batch(), torch.tensor(BOXES)
    xywh = torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], -1)
    out = seq({"input": img, "bbox_xywh": xywh, "mask": render(BOXES)[:, None]})
    wb = out["bbox_xywh"]
    # xywh output -> pascal_voc corners agree with the mask's extent
    corners = torch.cat([wb[..., :2], wb[..., :2] + wb[..., 2:]], -1)
    for b in range(2):
        for i in range(2):
            np.testing.assert_allclose(label_bbox(out["mask"][b, 0], i + 1), corners[b, i].numpy(), atol=1.5)
    back = seq.inverse(out["input"], out["bbox_xywh"], data_keys=["input", "bbox_xywh"])
    assert (back[1] - xywh).abs().max() < 1e-3


def test_kornia_guidance_without_boxes_raises():
    seq = K.AugmentationSequential(RandomSaliencyWarp(), data_keys=["input", "mask"])
    with pytest.raises(ValueError, match="attach_box_guidance"):
        seq(image_batch(), render(BOXES)[:, None])
    # static-free guidances need no boxes
    seq = K.AugmentationSequential(RandomSaliencyWarp(guidance="geometric"), data_keys=["input", "mask"])
    out, m = seq(image_batch(), render(BOXES)[:, None])
    assert out.shape == (2, 3, H, W) and set(m.unique().tolist()) <= {0.0, 1.0, 2.0}
    with pytest.raises(ValueError, match="no RandomSaliencyWarp"):
        attach_box_guidance(K.AugmentationSequential(K.RandomHorizontalFlip()))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"fwhm": -1.0}, "fwhm"),
        ({"fwhm": math.inf}, "fwhm"),
        ({"bandwidth_scale": 0.0}, "bandwidth_scale"),
        ({"amplitude_scale": float("nan")}, "amplitude_scale"),
        ({"grid_size": (1, 5)}, "grid_size"),
        ({"grid_size": (3.5, 5)}, "grid_size"),
        ({"guidance": "boxes"}, "guidance"),
        ({"guidance": "static"}, "prior"),
        ({"p": 1.5}, "p must"),
    ],
)
@pytest.mark.parametrize("cls", [RandomSaliencyWarp, AlbuSaliencyWarp])
def test_bad_options_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


def test_boxes_from_kornia_modes():
    b = torch.tensor([[[10.0, 20.0, 30.0, 40.0]]])
    assert boxes_from_kornia(b, "xyxy_plus").tolist() == b.tolist()
    verts = torch.tensor([[[[10.0, 20.0], [30.0, 20.0], [30.0, 40.0], [10.0, 40.0]]]])
    assert boxes_from_kornia(verts, "vertices_plus").tolist() == b.tolist()
    out = boxes_from_kornia([torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(0, 4)])
    assert [o.shape[0] for o in out] == [1, 0]


# ----------------------------------------------------------------------------------- albumentations
def albu_compose(fmt="pascal_voc", seed=0, **kw):
    return A.Compose(
        [AlbuSaliencyWarp(**kw)],
        bbox_params=A.BboxParams(format=fmt, label_fields=["labels"]),
        keypoint_params=A.KeypointParams(format="xy", label_fields=["kp_labels"]),
        seed=seed,
    )


def _applied_warp(compose):
    return compose.transforms[0].get_applied_params()["warp"]


def albu_sample(dtype=np.uint8):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3)).astype(dtype)
    if dtype == np.float32:
        img = img / np.float32(255)
    return {
        "image": img,
        "mask": render(BOXES[:1])[0].numpy().astype(np.uint8),
        "bboxes": BOXES[0],
        "labels": [1, 2],
        "keypoints": centre_keypoints(BOXES[:1])[0],
        "kp_labels": [1, 2],
    }


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_albumentations_compose_labels_consistent(dtype):
    sample = albu_sample(dtype)
    out = albu_compose()(**sample)
    assert not np.array_equal(out["image"], sample["image"])
    assert out["image"].dtype == dtype and out["image"].shape == (H, W, 3)
    assert out["mask"].dtype == np.uint8 and set(np.unique(out["mask"])) <= {0, 1, 2}
    assert list(out["labels"]) == [1, 2]
    for box, label in zip(out["bboxes"], out["labels"]):
        np.testing.assert_allclose(label_bbox(out["mask"], label), np.asarray(box), atol=1.5)
        assert (out["mask"] == label).sum() > (sample["mask"] == label).sum()
    for (x, y), label in zip(out["keypoints"], out["kp_labels"]):
        assert out["mask"][int(round(y)), int(round(x))] == label


def test_albumentations_inverse_through_applied_warp():
    tf = albu_compose()
    sample = albu_sample()
    out = tf(**sample)
    warp = _applied_warp(tf)
    back = warp.inverse_boxes(torch.tensor(np.asarray(out["bboxes"], np.float32))[None], (H, W))[0]
    np.testing.assert_allclose(back.numpy(), np.asarray(BOXES[0]), atol=1e-3)
    kb = warp.inverse_points(torch.tensor(np.asarray(out["keypoints"], np.float32))[None] + 0.5, (H, W))[0] - 0.5
    np.testing.assert_allclose(kb.numpy(), np.asarray(sample["keypoints"], np.float32), atol=1e-3)
    m = warp.unapply(torch.from_numpy(out["mask"]).float()[None, None], mode="nearest")[0, 0].numpy()
    assert (m == sample["mask"]).mean() > 0.99


@pytest.mark.parametrize("fmt", ["coco", "yolo", "albumentations"])
def test_albumentations_bbox_formats_agree(fmt):
    ref = albu_compose()(**albu_sample())
    sample = albu_sample()
    b = np.asarray(BOXES[0])
    conv = {
        "coco": np.c_[b[:, :2], b[:, 2:] - b[:, :2]],
        "yolo": np.c_[(b[:, :2] + b[:, 2:]) / 2 / [W, H], (b[:, 2:] - b[:, :2]) / [W, H]],
        "albumentations": b / [W, H, W, H],
    }[fmt]
    sample["bboxes"] = conv
    out = albu_compose(fmt)(**sample)
    got = np.asarray(out["bboxes"], np.float64)
    if fmt == "coco":
        got = np.c_[got[:, :2], got[:, :2] + got[:, 2:]]
    elif fmt == "yolo":
        c, s = got[:, :2] * [W, H], got[:, 2:] * [W, H]
        got = np.c_[c - s / 2, c + s / 2]
    else:
        got = got * [W, H, W, H]
    np.testing.assert_allclose(got, np.asarray(ref["bboxes"]), atol=1e-3)
    # the same warp up to float rounding of the format conversion (uint8 pixels within one level)
    assert np.abs(out["image"].astype(int) - ref["image"].astype(int)).max() <= 1


def test_albumentations_empty_boxes_identity_and_p0():
    sample = albu_sample()
    sample.update(bboxes=np.zeros((0, 4)), labels=[])
    out = albu_compose()(**sample)
    np.testing.assert_array_equal(out["image"], sample["image"])
    np.testing.assert_array_equal(out["mask"], sample["mask"])
    np.testing.assert_allclose(np.asarray(out["keypoints"]), np.asarray(sample["keypoints"], np.float64), atol=1e-4)
    sample = albu_sample()
    out = albu_compose(p=0.0)(**sample)
    np.testing.assert_array_equal(out["image"], sample["image"])
    np.testing.assert_allclose(np.asarray(out["bboxes"]), np.asarray(BOXES[0]), atol=1e-4)


def test_albumentations_deterministic_with_seed():
    def run(seed):
        tf = A.Compose(
            [AlbuSaliencyWarp(p=0.5)],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
            seed=seed,
        )
        sample = albu_sample()
        del sample["keypoints"], sample["kp_labels"]
        return [tf(**sample)["image"] for _ in range(6)]

    a, b = run(7), run(7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    ref = albu_sample()["image"]
    n_warped = sum(not np.array_equal(x, ref) for x in a)
    assert 0 < n_warped < 6


def test_albumentations_requires_bboxes_for_instance_guidance():
    with pytest.raises(ValueError, match="bboxes"):
        AlbuSaliencyWarp()(image=np.zeros((8, 8, 3), np.uint8))
    out = AlbuSaliencyWarp(guidance="geometric")(image=np.zeros((16, 16), np.float32))
    assert out["image"].shape == (16, 16)
