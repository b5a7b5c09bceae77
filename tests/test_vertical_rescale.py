"""The row-scale control (issue 19 item 3): random_vertical_rescale and uda.vertical_rescale in both recipes."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from warpadapt.uda.nightaug import random_vertical_rescale

ROOT = Path(__file__).resolve().parents[1]


def _painted(h=64, w=32, box=(4.0, 20.0, 12.0, 36.0)):
    """An image with one filled box (value 1) and the matching label map (class 7 inside, 0 outside)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    img = torch.zeros(1, 1, h, w)
    img[..., y0:y1, x0:x1] = 1.0
    lab = torch.zeros(1, h, w, dtype=torch.long)
    lab[:, y0:y1, x0:x1] = 7
    return img, lab, [{"boxes": torch.tensor([box]), "labels": torch.tensor([3])}]


@pytest.mark.parametrize("s", [0.6, 1.0, 1.7])
def test_image_labels_and_boxes_move_together(s):
    img, lab, t = _painted()
    out, moved, lab2, scales = random_vertical_rescale(img, (s, s), boxes=t, labels=lab)
    assert scales.tolist() == pytest.approx([s])
    rows = (out[0, 0, :, 8] > 0.5).nonzero()[:, 0]
    lrows = (lab2[0, :, 8] == 7).nonzero()[:, 0]
    y0, y1 = moved[0]["boxes"][0, 1].item(), moved[0]["boxes"][0, 3].item()
    assert y0 == pytest.approx(32 + (20 - 32) * s) and y1 == pytest.approx(32 + (36 - 32) * s)
    for r in (rows, lrows):  # the painted rows are the box's rows, to a pixel
        assert abs(r.min().item() - y0) <= 1.0 and abs(r.max().item() + 1 - y1) <= 1.0
    assert moved[0]["labels"].tolist() == [3]
    assert torch.equal(out[0, 0, :, 20], torch.zeros(64))  # columns are untouched: nothing leaks sideways
    if s < 1:  # squeezed: rows read from outside the image are 0, their labels ignore
        assert (lab2[0, 0] == 255).all() and (lab2[0, -1] == 255).all() and out[0, 0, 0].abs().max() == 0
    else:
        assert not (lab2 == 255).any()


def test_boxes_stretched_out_of_the_image_are_dropped_with_their_labels():
    img = torch.zeros(1, 3, 64, 32)
    t = [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 4.0], [0.0, 30.0, 8.0, 34.0]]), "labels": torch.tensor([1, 2]),
          "image_id": 5}]
    _, moved, _, _ = random_vertical_rescale(img, (3.0, 3.0), boxes=t)
    assert moved[0]["labels"].tolist() == [2] and moved[0]["image_id"] == 5  # the top box left the image
    assert moved[0]["boxes"].tolist() == [[0.0, 26.0, 8.0, 38.0]]


def test_scales_are_drawn_per_image_from_the_generator():
    img = torch.rand(6, 3, 16, 16)
    g = torch.Generator().manual_seed(3)
    _, _, _, s1 = random_vertical_rescale(img, (0.8, 1.25), g)
    _, _, _, s2 = random_vertical_rescale(img, (0.8, 1.25), torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and ((s1 >= 0.8) & (s1 <= 1.25)).all() and len(set(s1.tolist())) == 6
    with pytest.raises(ValueError, match=r"scale_range: expected \(lo, hi\) with 0 < lo <= hi"):
        random_vertical_rescale(img, (1.2, 0.8))


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"{name}_vr", ROOT / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipes_train_with_the_control_and_check_it(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_mic import TINY as MIC_TINY
    from test_twopcnet import TINY as DET_TINY

    det, seg = tmp_path / "det", tmp_path / "seg"
    _recipe("twopcnet").main(DET_TINY + [f"out_dir={det}", "train.iters=2", "warp.guidance=none", "uda.vertical_rescale=[0.7,1.4]"])
    _recipe("mic").main(MIC_TINY + [f"out_dir={seg}", "train.iters=2", "warp.guidance=none", "uda.vertical_rescale=[0.7,1.4]"])
    for d in (det, seg):
        assert json.loads((d / "final.json").read_text())["iters"] == 2
    ck = torch.load(det / "last.pt", weights_only=False)
    mine = ck["rng"][0] if isinstance(ck["rng"], list) else ck["rng"]
    assert set(mine["generators"]) == {"nightaug", "flip", "scale", "rescale"}  # its own stream, saved for resume
    with pytest.raises(ValueError, match=r"config: uda.vertical_rescale: expected null or \[lo, hi\]"):
        _recipe("mic").main(MIC_TINY + [f"out_dir={tmp_path / 'bad'}", "uda.vertical_rescale=[1.5,0.5]"])
