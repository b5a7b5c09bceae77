"""recipes/twopcnet.py against 2PCNet's code (mecarill/2pcnet), one hand-made case per formula.

- the consistency loss: ``ConsistencyLosses.losses`` (twophase/modeling/custom_losses.py);
- the boxes it runs over: the student's ``fast_rcnn_inference`` on its sampled proposals and the teacher's
  ``inference(..., proposal_index=...)`` (twophase/modeling/roi_heads/fast_rcnn.py);
- NightAug (twophase/data/transforms/night_aug.py) and the data mapper's horizontal flip;
- the student-scale curriculum (twophase/engine/trainer.py, ``run_step_full_semisup`` step 6 and 8);
- FrozenBN / SyncBatchNorm (``model.norm``), the constant LR, the defaults.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.misc import FrozenBatchNorm2d

import warpadapt.uda.nightaug as nightaug
from warpadapt.models import Detector, DetectorOutput
from warpadapt.models.detector import convert_norm
from warpadapt.uda.config import load_config
from warpadapt.uda.nightaug import night_aug, random_hflip

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "twopcnet.py"


def _recipe():
    spec = importlib.util.spec_from_file_location("twopcnet_recipe_fidelity", RECIPE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_detector(**kw):
    torch.manual_seed(0)
    return Detector("resnet18", 3, out_indices=(2, 3), fpn_channels=16, min_size=64, max_size=128,
                    representation_size=32, **kw)


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _twopcnet_kl(student_logits, teacher_logits, over_classes=np.mean):
    """2PCNet's loss written out: KLDivLoss(reduction='none')(log p_s, p_t) = p_t (log p_t - log p_s);
    .mean(axis=1) * p_t.max(axis=1); mean over the boxes."""
    p_s, p_t = _softmax(np.asarray(student_logits, float)), _softmax(np.asarray(teacher_logits, float))
    kl = p_t * (np.log(p_t) - np.log(p_s))
    return float(np.mean(over_classes(kl, axis=1) * p_t.max(axis=1)))


# ----------------------------------------------------------------------------- 1. the loss reduction
def test_consistency_loss_is_2pcnets_mean_over_classes():
    s = [[0.0, 1.0, -1.0, 0.5], [2.0, 0.0, 0.0, 0.0], [-1.0, -1.0, 3.0, 0.0]]  # 3 boxes, K + 1 = 4 classes
    t = [[0.5, 2.0, -1.0, 0.0], [1.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 4.0]]
    # by hand for box 1: p_t = softmax([1, 1, 0, -2]), p_s = softmax([2, 0, 0, 0])
    p_t1 = np.exp([1.0, 1.0, 0.0, -2.0]) / np.exp([1.0, 1.0, 0.0, -2.0]).sum()
    p_s1 = np.exp([2.0, 0.0, 0.0, 0.0]) / np.exp([2.0, 0.0, 0.0, 0.0]).sum()
    box1 = p_t1.max() * np.mean(p_t1 * (np.log(p_t1) - np.log(p_s1)))
    rec = _recipe()
    single = rec.consistency_loss(torch.tensor(s[1:2]), torch.tensor(t[1:2]))
    assert float(single) == pytest.approx(box1, rel=1e-5)
    expected = _twopcnet_kl(s, t)
    got = rec.consistency_loss(torch.tensor(s), torch.tensor(t))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    summed = rec.consistency_loss(torch.tensor(s), torch.tensor(t), "sum")  # the old reduction, still reachable
    assert float(summed) == pytest.approx(_twopcnet_kl(s, t, np.sum), rel=1e-5)
    assert float(summed) == pytest.approx(4 * expected, rel=1e-5)  # K + 1 times the mean


def test_consistency_loss_without_boxes_is_zero_and_backpropagates():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = _recipe().consistency_loss(logits, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0, 4)


# ----------------------------------------------------------------------------- 2. which boxes
# Two 64 x 64 images. Probabilities per proposal: background, class 1, class 2 (log -> logits).
PROPOSALS = [torch.tensor([[0., 0., 20., 20.],      # 0: class 1 at 0.9
                           [1., 1., 20., 20.],      # 1: class 1 at 0.8, IoU 0.90 with 0: NMS removes it
                           [30., 30., 50., 50.],    # 2: class 2 at 0.6 AND class 1 at 0.3: two detections
                           [40., 0., 60., 20.],     # 3: background
                           [0., 40., 20., 60.]]),   # 4: class 1 at 0.2: cut by detections_per_img = 3
             torch.tensor([[0., 0., 10., 10.],      # 5: class 1 at 0.7, its class-1 deltas move it 1 px right
                           [55., 55., 70., 70.]])]  # 6: class 2 at 0.49, clipped to the image
PROBS = [[0.06, 0.9, 0.04], [0.16, 0.8, 0.04], [0.1, 0.3, 0.6], [0.98, 0.01, 0.01], [0.78, 0.2, 0.02],
         [0.29, 0.7, 0.01], [0.5, 0.01, 0.49]]
SIZES = [(64, 64), (64, 64)]


def _hand_made():
    logits = torch.tensor(PROBS).log()
    deltas = torch.zeros(7, 12)
    deltas[5, 4] = 1.0  # proposal 5, class 1, dx: torchvision's weights (10, 10, 5, 5): 1 / 10 of the width
    return logits, deltas


def test_detections_among_keeps_exactly_the_expected_detections():
    det = _tiny_detector(box_detections_per_img=3)
    logits, deltas = _hand_made()
    d0, d1 = det.detections_among(PROPOSALS, logits, deltas, SIZES, score_thresh=0.05)
    assert d0["index"].tolist() == [0, 2, 2] and d0["row"].tolist() == [0, 2, 2]
    assert d0["labels"].tolist() == [1, 2, 1]
    assert torch.allclose(d0["scores"], torch.tensor([0.9, 0.6, 0.3]))
    assert torch.allclose(d0["boxes"], torch.tensor([[0., 0., 20., 20.], [30., 30., 50., 50.], [30., 30., 50., 50.]]))
    assert d1["index"].tolist() == [0, 1] and d1["row"].tolist() == [5, 6] and d1["labels"].tolist() == [1, 2]
    assert torch.allclose(d1["scores"], torch.tensor([0.7, 0.49]))
    assert torch.allclose(d1["boxes"], torch.tensor([[1., 0., 11., 10.], [55., 55., 64., 64.]]), atol=1e-5)
    assert [len(d["index"]) for d in det.detections_among(PROPOSALS, logits, deltas, SIZES, 0.95)] == [0, 0]


def test_detections_among_agrees_with_torchvision_postprocess():
    """On random logits and deltas: the same boxes, scores and labels as RoIHeads.postprocess_detections
    (which drops the proposal indices this method returns), once the boxes that clipping made empty are
    left out: torchvision removes them, detectron2's ``fast_rcnn_inference`` (2PCNet) keeps them."""
    det = _tiny_detector()
    g = torch.Generator().manual_seed(0)
    props = []
    for n in (40, 25):
        xy = torch.rand(n, 2, generator=g) * 50
        props.append(torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 30], 1))
    logits = torch.randn(65, 3, generator=g) * 2
    deltas = torch.randn(65, 12, generator=g) * 0.5
    ours = det.detections_among(props, logits, deltas, [(64, 80), (48, 64)])
    boxes, scores, labels = det.roi_heads.postprocess_detections(logits, deltas, props, [(64, 80), (48, 64)])
    dropped = 0
    for d, b, s, lab in zip(ours, boxes, scores, labels):
        empty = ((d["boxes"][:, 2:] - d["boxes"][:, :2]) < 1e-2).any(1)
        dropped += int(empty.sum())
        d = {k: v[~empty] for k, v in d.items()}
        assert len(d["scores"]) > 3
        assert torch.allclose(d["boxes"], b) and torch.allclose(d["scores"], s) and torch.equal(d["labels"], lab)
        row = torch.softmax(logits, 1)[d["row"], d["labels"]]
        assert torch.allclose(row, d["scores"])  # each detection's score is its proposal's probability
    assert dropped > 0  # the case is there


def _hand_made_output(student_scale: float = 1.0):
    logits, deltas = _hand_made()
    logits.requires_grad_(True)
    sizes = [(round(64 * student_scale),) * 2] * 2
    images = ImageList(torch.zeros(2, 3, *sizes[0]), sizes)
    props = [p * student_scale for p in PROPOSALS]
    return DetectorOutput({}, props, [], logits, images, deltas)


def test_teacher_pools_exactly_the_proposals_behind_the_detections_and_loss_matches():
    """2PCNet: the student's detections give proposal indices; the student's logits of those proposals
    (once per detection) and the teacher's logits of the same proposal boxes enter the KL. Here the
    student saw the image at half size (uda.student_scale): the teacher gets the boxes at its own size."""
    rec = _recipe()
    student, teacher = _tiny_detector(box_detections_per_img=3), _tiny_detector().eval()
    out = _hand_made_output(student_scale=0.5)
    t_il = ImageList(torch.rand(2, 3, 64, 64), SIZES)
    uc = SimpleNamespace(consistency_boxes="detections", consistency_score_thresh=0.05)
    s_logits, boxes = rec.consistency_pairs(student, out, t_il, uc)
    assert torch.equal(s_logits.detach(), out.class_logits.detach()[[0, 2, 2, 5, 6]])
    expected = [PROPOSALS[0][[0, 2, 2]], PROPOSALS[1][[0, 1]]]  # proposal boxes, not the regressed ones
    assert all(torch.allclose(b, e) for b, e in zip(boxes, expected))
    pooled, t_logits = [], []
    teacher.roi_heads.box_roi_pool.register_forward_pre_hook(lambda m, args: pooled.append(args[1]))
    teacher.roi_heads.box_predictor.register_forward_hook(lambda m, args, o: t_logits.append(o[0]))
    with torch.no_grad():
        rescored = teacher.rescore(t_il, boxes)
    assert len(pooled) == 1 and all(torch.allclose(b, e) for b, e in zip(pooled[0], expected))
    assert torch.equal(rescored, t_logits[0])
    loss = rec.consistency_loss(s_logits, rescored)
    assert float(loss.detach()) == pytest.approx(_twopcnet_kl(s_logits.detach().numpy(), rescored.numpy()), rel=1e-5)
    loss.backward()
    assert out.class_logits.grad[[1, 3, 4]].abs().sum() == 0 and out.class_logits.grad[[0, 2, 5, 6]].abs().sum() > 0
    # the old behaviour: every sampled proposal, once
    s_all, b_all = rec.consistency_pairs(student, out, t_il, SimpleNamespace(consistency_boxes="proposals"))
    assert s_all is out.class_logits and all(torch.allclose(b, p) for b, p in zip(b_all, PROPOSALS))


def test_no_detections_gives_zero_loss():
    rec = _recipe()
    out = _hand_made_output()
    out.class_logits.data[:, 0] = 20.0  # everything is background
    uc = SimpleNamespace(consistency_boxes="detections", consistency_score_thresh=0.05)
    s_logits, boxes = rec.consistency_pairs(_tiny_detector(), out, out.images, uc)
    assert s_logits.shape == (0, 3) and [len(b) for b in boxes] == [0, 0]
    t_logits = _tiny_detector().eval().rescore(out.images, boxes)
    loss = rec.consistency_loss(s_logits, t_logits)
    loss.backward()
    assert float(loss.detach()) == 0.0


# ----------------------------------------------------------------------------- NightAug
def test_rectangles_are_2pcnets_slices():
    """img[:, y1:y2, x1:x2] with four independent corners, one more while rand > 0.4."""
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    b, h, w, r = 32, 12, 16, 16
    masks = nightaug._rect_masks(g, b, h, w, r, "cpu")
    g.set_state(state)
    go, ys = torch.rand(b, r, generator=g) > 0.4, torch.randint(h, (b, r, 2), generator=g)
    xs = torch.randint(w, (b, r, 2), generator=g)
    for i in range(b):
        want = torch.zeros(h, w, dtype=torch.bool)
        for j in range(r):
            if not go[i, j]:
                break
            want[ys[i, j, 0]:ys[i, j, 1], xs[i, j, 0]:xs[i, j, 1]] = True  # empty when y1 >= y2 or x1 >= x2
        assert torch.equal(masks[i, 0], want)
    assert masks.any() and not masks.all()


def test_final_paste_back_restores_the_pre_darkening_image(monkeypatch):
    """With glare, noise and blur off, the output equals the input exactly inside the last paste-back
    rectangles (2PCNet's ``mask_img(img, cln_img_zero)`` after the contrast step) and is darker elsewhere."""
    recorded = []
    rect = nightaug._rect_masks
    monkeypatch.setattr(nightaug, "_rect_masks", lambda *a, **k: recorded.append(rect(*a, **k)) or recorded[-1])
    monkeypatch.setattr(nightaug, "_glare", lambda x, g, n: x)
    monkeypatch.setattr(nightaug, "_noise", lambda x, g: x)
    monkeypatch.setattr(nightaug, "gaussian_blur2d", lambda x, k, s: x)
    x = torch.rand(8, 3, 40, 60) * 0.8 + 0.1
    y = night_aug(x, torch.Generator().manual_seed(3))
    assert len(recorded) == 4  # after gamma, brightness, contrast, then the final one
    final = recorded[-1].expand_as(x)
    assert final.any() and torch.equal(y[final], x[final])
    untouched = ~(recorded[0] | recorded[1] | recorded[2] | recorded[3]).expand_as(x)
    assert (y[untouched] < x[untouched]).float().mean() > 0.9  # brightness at least: darker


def test_glare_peak_is_one():
    x = torch.zeros(16, 3, 60, 80)
    y = nightaug._glare(x, torch.Generator().manual_seed(0), 5)
    peaks = y.amax(dim=(1, 2, 3))
    assert set(peaks.tolist()) == {0.0, 1.0}  # no blob, or a blob whose centre pixel is white
    assert ((y == 1.0).sum(dim=(1, 2, 3)) > 0).tolist() == (peaks == 1.0).tolist()


def test_noise_sigma_is_an_integer_up_to_49_over_255():
    x = torch.zeros(48, 3, 64, 64)
    y = nightaug._noise(x, torch.Generator().manual_seed(0))
    assert (y >= 0).all()
    sigma = (2 * (y ** 2).mean(dim=(1, 2, 3))).sqrt() * 255  # half-normal: E[n^2] = s^2 / 2
    fired = sigma > 0
    assert 0 < fired.sum() < 48
    assert (sigma <= 49 * 1.05).all() and sigma.max() > 30  # beyond the old bound 0.1 = 25.5 / 255


def test_hflip_moves_image_and_boxes_together():
    img = torch.zeros(3, 20, 30)
    img[:, 5:10, 2:8] = 1.0
    t = {"boxes": torch.tensor([[2., 5., 8., 10.]]), "labels": torch.tensor([3])}
    (flipped,), (ft,) = random_hflip([img], [t], p=1.0)
    x1, y1, x2, y2 = (int(v) for v in ft["boxes"][0])
    assert (x1, y1, x2, y2) == (22, 5, 28, 10) and flipped[:, y1:y2, x1:x2].eq(1).all() and flipped.sum() == img.sum()
    (same,), (st,) = random_hflip([img], [t], p=0.0)
    assert torch.equal(same, img) and torch.equal(st["boxes"], t["boxes"])


def test_source_batch_flips_before_nightaug(monkeypatch):
    """2PCNet's mapper flips the source image, then the trainer makes the NightAug copy of it: both copies
    share the flip and the boxes."""
    rec = _recipe()
    monkeypatch.setattr(rec, "night_aug", lambda x, g: x * 0.5)
    images, targets = [], []
    for i in range(8):
        img = torch.zeros(3, 16, 32)
        img[:, 2:6, i:i + 4] = 1.0
        images.append(img)
        targets.append({"boxes": torch.tensor([[float(i), 2., i + 4., 6.]]), "labels": torch.tensor([1])})
    gens = {"flip": torch.Generator().manual_seed(1), "nightaug": torch.Generator().manual_seed(2)}
    uc = SimpleNamespace(hflip=True, nightaug=True)
    out_images, out_targets = rec.source_batch(images, targets, uc, gens)
    assert len(out_images) == len(out_targets) == 16
    flips = []
    for k in range(16):
        x1, y1, x2, y2 = (int(v) for v in out_targets[k]["boxes"][0])
        value = 1.0 if k < 8 else 0.5
        assert out_images[k][:, y1:y2, x1:x2].eq(value).all() and out_images[k].sum() == value * 3 * 16
        flips.append(x1 != k % 8)
    assert flips[:8] == flips[8:] and 0 < sum(flips[:8]) < 8


# ----------------------------------------------------------------------------- student scale
def test_student_scale_curriculum_draws():
    rec = _recipe()
    spec = {"s0": [0.5, 0.8], "steps": [10, 20], "sigma": 0.15, "floor": 0.75, "min_area": 16}
    draws = [rec.student_scale(it, spec, torch.Generator().manual_seed(it))[0] for it in range(30)]
    assert all(0.75 <= s <= 1.0 for s in draws)
    assert sum(s == 0.75 for s in draws[:10]) >= 9  # s0 0.5: clipped to the floor nearly always
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert rec.student_scale(12, spec, g1) == rec.student_scale(12, spec, g2)  # deterministic per generator
    flat = {"s0": [0.5, 0.8], "steps": [10, 20], "sigma": 0.0, "floor": 0.4}
    assert [rec.student_scale(it, flat, g1)[0] for it in (0, 9, 10, 19, 20)] == [0.5, 0.5, 0.8, 0.8, 1.0]


def test_scaled_student_sees_scaled_images_and_boxes_and_drops_small_pseudo_boxes(monkeypatch):
    det = _tiny_detector().train()
    img = torch.zeros(3, 64, 128)
    img[:, 8:40, 16:48] = 1.0
    pseudo = [{"boxes": torch.tensor([[16., 8., 48., 40.], [100., 50., 106., 56.]]), "labels": torch.tensor([1, 2]),
               "scores": torch.tensor([0.9, 0.85])}]  # the second: 36 px^2, 9 px^2 at scale 0.5
    seen = []
    rpn_forward = det.rpn.forward
    monkeypatch.setattr(det.rpn, "forward", lambda images, feats, targets=None: seen.append(targets) or
                        rpn_forward(images, feats, targets))
    out = det([img], pseudo, roi_loss=False, scale=0.5, min_box_area=16.0)
    assert out.images.image_sizes == [(32, 64)]
    (t,) = seen[-1]
    assert torch.allclose(t["boxes"], torch.tensor([[8., 4., 24., 20.]])) and t["labels"].tolist() == [1]
    assert t["scores"].tolist() == pytest.approx([0.9])
    x = out.images.tensors[0, 0]
    assert x[4:20, 8:24].min() > x[24:, 30:].max()  # the bright square moved with its box
    det([img], pseudo, roi_loss=False, min_box_area=16.0)  # full scale: 36 px^2 stays
    assert len(seen[-1][0]["boxes"]) == 2


# ----------------------------------------------------------------------------- norm layers
def test_frozen_norm_keeps_statistics_and_affine_through_a_training_step():
    det = convert_norm(_tiny_detector(), "frozen")
    body = det.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in det.modules())
    frozen = {n: b.clone() for n, b in det.named_buffers() if "bn" in n or "downsample.1" in n}
    assert frozen and any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    params = [p for p in det.parameters() if p.requires_grad]
    conv = next(p for n, p in det.named_parameters() if "conv1" in n).clone()
    opt = torch.optim.SGD(params, lr=0.1)
    tgt = [{"boxes": torch.tensor([[10., 10., 30., 40.]]), "labels": torch.tensor([1])}]
    out = det.train()(torch.rand(1, 3, 64, 128), tgt)
    sum(out.losses.values()).backward()
    opt.step()
    assert all(torch.equal(b, frozen[n]) for n, b in det.named_buffers() if n in frozen)
    assert not torch.equal(conv, next(p for n, p in det.named_parameters() if "conv1" in n))
    fresh = _tiny_detector()
    fresh.load_state_dict(det.state_dict())  # a frozen run reopens into a plain-BN detector (diagnostics)


def test_sync_norm_converts_when_distributed():
    det = convert_norm(_tiny_detector(), "sync", distributed=True)
    kinds = {type(m) for m in det.modules()}
    assert nn.SyncBatchNorm in kinds and nn.BatchNorm2d not in kinds
    plain = convert_norm(_tiny_detector(), "sync")  # no process group here: plain BatchNorm
    assert nn.BatchNorm2d in {type(m) for m in plain.modules()}
    with pytest.raises(ValueError, match="norm"):
        convert_norm(_tiny_detector(), "group")


# ----------------------------------------------------------------------------- schedule and defaults
def test_defaults_are_the_authors_and_lr_is_constant_after_warm_up():
    cfg = load_config(RECIPE, [], default="synthetic_day2night")
    assert cfg.warp.stage == "burn_in" and list(cfg.train.lr_steps) == [] and cfg.model.norm == "bn"
    assert cfg.uda.kl_reduction == "mean" and cfg.uda.consistency_boxes == "detections" and cfg.uda.hflip
    assert cfg.uda.student_scale is None and cfg.uda.consistency_score_thresh == 0.05
    for name in ("bdd100k_day2night", "coco_pair"):
        assert list(load_config(RECIPE, ["--config", name], default="synthetic_day2night").train.lr_steps) == []
    opt, sched = _recipe().optimizer_and_schedule(cfg.train, [nn.Parameter(torch.zeros(1))])
    lrs = []
    for _ in range(cfg.train.warmup + 600):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[cfg.train.warmup - 1] == lrs[-1] == cfg.train.lr
    stepped = load_config(RECIPE, ["train.lr_steps=[100]"], default="synthetic_day2night").train
    opt, sched = _recipe().optimizer_and_schedule(stepped, [nn.Parameter(torch.zeros(1))])
    for _ in range(101):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * stepped.lr)


def test_bad_student_scale_names_the_key():
    rec = _recipe()
    for bad in ("uda.student_scale={s0: 1.5}", "uda.student_scale={s0: [0.8, 0.9], steps: [5]}",
                "uda.student_scale={s0: 0.8, flor: 0.7}", "uda.student_scale=0.8"):
        with pytest.raises(ValueError, match=r"uda\.student_scale"):
            rec.check(load_config(RECIPE, [bad], default="synthetic_day2night"))


# ----------------------------------------------------------------------------- diagnostics
def test_diagnose_bn_re_estimates_a_detection_run(tmp_path):
    from test_twopcnet import TINY  # tests/ is on sys.path (pytest's rootdir-less test modules)
    name = "detection__uda__s0"
    run_dir = tmp_path / "runs" / name
    _recipe().main(TINY + [f"out_dir={run_dir}", "train.iters=2"])
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    assert diag.main(["--results", str(tmp_path), "--runs", name, "--bn", "--images", "2"]) == 0
    rec = json.loads((tmp_path / "diagnose" / "bn_detection" / f"{name}.json").read_text())
    assert set(rec) == {"run", "images", "norm", "as_trained", "source", "target"}
    assert set(rec["target"]) == {"source_map50", "target_map50", "target_ap_small"}


def test_eval_noise_first_half_is_the_recipes_own_test_score(tmp_path):
    """benchmarks/eval_noise.py: the reported model (the teacher once adapting) on test scenes [0, n) scores
    exactly what the recipe logged on its n-image test split; [n, 2n) are other scenes."""
    from test_twopcnet import TINY
    run_dir = tmp_path / "run"
    _recipe().main(TINY + [f"out_dir={run_dir}", "train.iters=2", "eval.target_split=test"])
    final = json.loads((run_dir / "final.json").read_text())
    spec = importlib.util.spec_from_file_location("eval_noise", ROOT / "benchmarks" / "eval_noise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rec = mod.halves(run_dir, images=2)
    assert rec["model"] == "teacher" and rec["recipe"] == "twopcnet"
    assert rec["halves"][0] == pytest.approx(final["target_map50"], abs=1e-9)
    assert mod.estimate([rec])["sigma_points"] == pytest.approx(abs(100 * (rec["halves"][0] - rec["halves"][1])) / 2 ** 0.5, abs=0.01)
    out = tmp_path / "noise.json"
    assert mod.main([str(run_dir), "--images", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["records"][0]["halves"] == rec["halves"]


def test_input_scale_resizes_what_the_backbone_sees_and_keeps_boxes_in_input_pixels():
    torch.manual_seed(0)
    det = _tiny_detector().eval()
    seen = []
    det.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    img = torch.rand(3, 64, 128)
    with torch.no_grad():
        det.detect([img])
        with det.input_scale(1.5):
            out = det.detect([img])
    assert seen[0] == (64, 128) and seen[1] == (96, 192)
    b = out[0]["boxes"]
    assert len(b) == 0 or (b[:, [0, 2]].max() <= 128 + 1e-4 and b[:, [1, 3]].max() <= 64 + 1e-4)
    with pytest.raises(RuntimeError, match="inside"), det.input_scale(2.0):
        raise RuntimeError("inside")
    assert det.transform.min_size == (64,) and det.transform.max_size == 128  # restored after an error too
    for bad in (0.0, -1.0, 9.0, "2"):
        with pytest.raises(ValueError, match="scale"), det.input_scale(bad):
            pass


def test_diagnose_scale_sweep_at_scale_one_is_the_recipes_own_score(tmp_path):
    from test_twopcnet import TINY
    name = "detection__uda__s0"
    run_dir = tmp_path / "runs" / name
    _recipe().main(TINY + [f"out_dir={run_dir}", "train.iters=2", "eval.target_split=test"])
    final = json.loads((run_dir / "final.json").read_text())
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    assert diag.main(["--results", str(tmp_path), "--runs", name, "--scales", "1", "2"]) == 0
    rec = json.loads((tmp_path / "diagnose" / "scales" / f"{name}.json").read_text())
    assert rec["model"] == "teacher" and rec["scales"] == [1.0, 2.0]
    assert rec["target"]["map50"][0] == pytest.approx(final["target_map50"], abs=1e-9)
    assert rec["source"]["map50"][0] == pytest.approx(final["source_map50"], abs=1e-9)
    with pytest.raises(SystemExit):
        diag.main(["--results", str(tmp_path), "--runs", name, "--scales", "0"])


def test_warp_stats_fwhm_reaches_the_instance_guidance_only():
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    default = diag.warp_stats(images=4, size=(64, 128))
    four = diag.warp_stats(images=4, size=(64, 128), fwhm=4.0)
    assert default["instance_fwhm"] == 13.0 and four["instance_fwhm"] == 4.0
    assert four["instance"]["zoom_median"] != pytest.approx(default["instance"]["zoom_median"], abs=1e-4)
    assert four["static"] == default["static"] and four["geometric"] == default["geometric"]


def test_diagnose_round_trip_parts_split_the_round_trips_change(tmp_path):
    """--round-trip-parts: its total is --round-trip's feature change on the same images; the total is at
    most feature resampling + not commuting (each nonzero, the warp does something); one stride a level."""
    from test_twopcnet import TINY
    name = "detection__uda__s0"
    run_dir = tmp_path / "runs" / name
    _recipe().main(TINY + [f"out_dir={run_dir}", "train.iters=2", "eval.target_split=test", "warp.guidance=none"])
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    for flags in (["--round-trip"], ["--round-trip-parts"], ["--round-trip", "--resample-only"]):
        assert diag.main(["--results", str(tmp_path), "--runs", name, *flags, "--fwhm", "8"]) == 0
    rt = json.loads((tmp_path / "diagnose" / "round_trip" / f"{name}.json").read_text())
    ro = json.loads((tmp_path / "diagnose" / "round_trip_resample" / f"{name}.json").read_text())
    rec = json.loads((tmp_path / "diagnose" / "round_trip_parts_fwhm8" / f"{name}.json").read_text())
    parts = rec["parts"]
    assert rec["images"] == 2 and rec["fwhm"] == 8.0 and rec["model"] == "teacher"  # TINY: 2 source val images
    assert len(rec["strides"]) == 2 and rec["strides"][0] < rec["strides"][1]
    assert parts["total"] == pytest.approx(rt["source"]["feature_change"], rel=1e-5)  # the same images
    # --resample-only's round trip is the part that resamples the features only; the plain model is the same
    assert not rt["resample_only"] and ro["resample_only"]
    assert parts["feature_resampling"] == pytest.approx(ro["source"]["feature_change"], rel=1e-5)
    assert ro["source"]["plain"] == rt["source"]["plain"] and ro["target"]["plain"] == rt["target"]["plain"]
    for lvl in range(2):
        assert parts["total"][lvl] <= parts["feature_resampling"][lvl] + parts["equivariance"][lvl] + 1e-6
        assert all(parts[k][lvl] > 0 for k in parts)


def test_diagnose_round_trip_plain_is_the_recipes_own_score(tmp_path):
    """--round-trip: the plain column re-evaluates to the run's own numbers; the round trip changes the
    backbone's features (the warp does something) and the flag is restored; a burn-in-only run's
    reported model is its student."""
    from test_twopcnet import TINY
    name = "detection__uda__s0"
    run_dir = tmp_path / "runs" / name
    _recipe().main(TINY + [f"out_dir={run_dir}", "train.iters=2", "eval.target_split=test", "warp.guidance=none"])
    final = json.loads((run_dir / "final.json").read_text())
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    assert diag.main(["--results", str(tmp_path), "--runs", name, "--round-trip", "--fwhm", "8"]) == 0
    rec = json.loads((tmp_path / "diagnose" / "round_trip" / f"{name}.json").read_text())
    assert rec["model"] == "teacher" and rec["fwhm"] == 8.0 and rec["guidance"] == "none"
    assert rec["target"]["plain"] == pytest.approx(final["target_map50"], abs=1e-9)
    assert rec["source"]["plain"] == pytest.approx(final["source_map50"], abs=1e-9)
    assert len(rec["source"]["feature_change"]) == 2 and all(0 < c < 10 for c in rec["source"]["feature_change"])
    det = _tiny_detector(warp={"fwhm": 8.0}).eval()
    with diag._warping_in_eval(det.backbone.body):
        assert det.backbone.body.warps(boxes=[torch.zeros(0, 4)]) and not det.backbone.body.model.training
    assert not det.backbone.body.training
