"""recipes/mic.py (DACS + MIC + Instance-Warp segmentation): modes, outputs, resume, torchrun, errors, warp."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from warpadapt.data.labels import CITYSCAPES_CLASSES
from warpadapt.uda.logger import read_jsonl
from warpadapt.models import Segmenter
from warpadapt.modules import SaliencyWarp
from warpadapt.uda.build import segmentation_datasets
from warpadapt.uda.checkpoint import load_checkpoint
from warpadapt.uda.config import load_config
from warpadapt.uda.logger import read_jsonl
from warpadapt.wrap import WarpedBackbone

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mic.py"
_spec = importlib.util.spec_from_file_location("mic_recipe", RECIPE)
mic = importlib.util.module_from_spec(_spec)  # tests call its main(argv) (and spy on the names it calls)
_spec.loader.exec_module(mic)

# tiny and fast: 48 x 96 images, 2 images per batch, 4 training scenes per domain, 2 evaluation images
TINY = ["data.image_size=[48,96]", "data.train_images=4", "train.batch_size=2", "model.embed_dim=16",
        "eval.max_images=2", "eval.batch_size=2", "eval.pictures=1", "train.warmup=1", "threads=1",
        "train.log_every=1", "eval.every=100"]


# one of each family the README promises: hierarchical transformers (MiT lineage, Swin, EfficientFormerV2),
# CNNs (ResNet, ConvNeXt) and a plain ViT
BACKBONES = ["pvt_v2_b0", "convnext_atto", "swin_tiny_patch4_window7_224", "efficientformerv2_s0",
             "vit_tiny_patch16_224", "resnet18"]


def run(out, *overrides, iters=2):
    return mic.main([f"out_dir={out}", f"train.iters={iters}", "train.schedule_iters=6", *TINY, *overrides])


@pytest.mark.parametrize("mode", [
    [],  # the default: instance warp + ClassMix + MIC
    ["uda.enabled=false"],
    ["uda.classmix=false"],
    ["uda.mic=false"],
    ["warp.guidance=static", "warp.prior_images=3"],
    ["warp.guidance=geometric"],
    ["warp.guidance=none"],
    ["--config", "synthetic_inline"],
    ["uda.teacher_mode=eval", "uda.mask_mode=separatetrgaug", "uda.classmix_pool=image", "uda.classmix_ignore=false",
     "uda.augment_per_image=true"],  # this recipe's behaviour before it followed DAFormer / MIC's code
    ["uda.rcs=true", "uda.mask_mode=separatesrcaug"],
], ids=["default", "source_only", "no_classmix", "no_mic", "static", "geometric", "no_warp", "inline_pair", "previous",
        "rcs"])
def test_every_mode_runs_and_writes_outputs(tmp_path, mode):
    final = run(tmp_path, *mode)
    for name in ("config.yaml", "metrics.jsonl", "final.json", "curves.png", "predictions.png", "last.pt"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "final.json").read_text())
    assert saved["iters"] == 2 and saved["seconds_per_iter"] > 0
    assert 0 <= saved["source_miou"] <= 1 and 0 <= saved["target_miou"] <= 1
    assert set(saved["target_iou"]) == set(CITYSCAPES_CLASSES)
    assert saved["target_miou"] == pytest.approx(final["target_miou"])
    train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    uda = "uda.enabled=false" not in mode
    assert ("loss_mix" in train[-1]) == uda and ("loss_mic" in train[-1]) == (uda and "uda.mic=false" not in mode)
    assert (tmp_path / "static_prior.npz").is_file() == ("warp.guidance=static" in mode)


def test_resume_equals_straight_run(tmp_path):
    straight, first = tmp_path / "straight", tmp_path / "resumed"
    a = run(straight, "eval.every=2", iters=6)
    run(first, "eval.every=2", iters=3)
    b = run(first, "eval.every=2", "resume=true", iters=6)
    sa, sb = load_checkpoint(straight / "last.pt"), load_checkpoint(first / "last.pt")
    assert sa["step"] == sb["step"] == 6
    for key in ("student", "teacher"):
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name]), (key, name)
    for key in ("source_miou", "target_miou", "source_iou", "target_iou"):
        assert json.dumps(a[key]) == json.dumps(b[key]), key
    evals = [r["step"] for r in read_jsonl(first / "metrics.jsonl") if r["kind"] == "eval"]
    assert 6 in evals and 4 in evals
    # resuming a finished run evaluates again (same numbers) but logs no second final record
    c = run(first, "eval.every=2", "resume=true", iters=6)
    assert json.dumps(c["target_miou"]) == json.dumps(b["target_miou"])
    evals = [r["step"] for r in read_jsonl(first / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals.count(6) == 1 and evals.count(4) == 1, evals


def test_the_target_split_is_read_at_evaluation_only(tmp_path):
    """benchmarks/uda_table.py scores the val-selected models on test by evaluating them again: the split
    must not reach training (mid-run evaluations and their pictures included)."""
    a = run(tmp_path / "val", "eval.every=1", "eval.target_split=val", iters=3)
    b = run(tmp_path / "test", "eval.every=1", "eval.target_split=test", iters=3)
    ca, cb = load_checkpoint(tmp_path / "val" / "last.pt"), load_checkpoint(tmp_path / "test" / "last.pt")
    for key in ("student", "teacher"):
        assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key]), key
    assert a["weights_digests"] == b["weights_digests"] and a["source_miou"] == b["source_miou"]
    assert (a["target_split"], b["target_split"]) == ("val", "test")


def test_lr_schedule_does_not_depend_on_train_iters():
    cfg = load_config(RECIPE, ["train.iters=3", "train.schedule_iters=10", "train.warmup=2"], default="synthetic_clear2fog")
    longer = load_config(RECIPE, ["train.iters=10", "train.schedule_iters=10", "train.warmup=2"], default="synthetic_clear2fog")
    assert [mic.lr_factor(s, cfg.train) for s in range(3)] == [mic.lr_factor(s, longer.train) for s in range(3)]
    # mmcv's linear warm-up (DAFormer's poly10warm): 1e-6 at step 0, 1 at step train.warmup, times the poly decay
    assert mic.lr_factor(0, cfg.train) == pytest.approx(1e-6) and mic.lr_factor(10, cfg.train) == 0.0
    assert mic.lr_factor(1, cfg.train) == pytest.approx((1 - 0.5 * (1 - 1e-6)) * 0.9)
    assert mic.lr_factor(2, cfg.train) == pytest.approx(0.8)


def _torchrun(out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(RECIPE),
           f"out_dir={out}", "device=cpu", *TINY, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "final.json").read_text()) if (out / "final.json").exists() else None


def test_torchrun_two_processes_identical_weights_and_exact_resume(tmp_path):
    """2 gloo processes on different data shards: after every step both ranks hold bit-identical student and
    teacher weights (DDP all-reduces once per step, over the three backward passes), and a 2-process run
    stopped at step 2 and resumed ends on exactly the weights of the uninterrupted one."""
    straight = _torchrun(tmp_path / "straight", "train.iters=3", "train.schedule_iters=3")
    assert straight["world_size"] == 2 and straight["iters"] == 3
    assert straight["ranks_in_sync"] and len(straight["weights_digests"]) == 2
    assert len(load_checkpoint(tmp_path / "straight" / "last.pt")["rng"]) == 2  # every rank's RNG state
    assert _torchrun(tmp_path / "split", "train.iters=2", "train.schedule_iters=3")["ranks_in_sync"]
    resumed = _torchrun(tmp_path / "split", "train.iters=3", "train.schedule_iters=3", "resume=true")
    assert resumed["weights_digests"] == straight["weights_digests"]
    assert resumed["target_miou"] == straight["target_miou"]


@pytest.mark.parametrize("args, error, match", [
    (["train.iterz=3"], ValueError, "train.iterz"),
    (["train.iters=many"], ValueError, "train.iters"),
    (["warp.guidance=saliency"], ValueError, "warp.guidance"),
    (["uda.mask_ratio=1.5"], ValueError, "uda.mask_ratio"),
    (["data.pair=synthetic_day2snow"], ValueError, "data.pair"),
    (["--config", "cityscapes2acdc_fog"], ValueError, "data.root"),
    (["--config", "cityscapes2acdc_fog", "data.root=/nonexistent/data"], FileNotFoundError, "/nonexistent/data/cityscapes"),
    (["model.backbone=resnet_nope"], ValueError, "resnet_nope"),
    (["eval.model=best"], ValueError, "eval.model"),
    (["eval.model=teacher", "uda.enabled=false"], ValueError, "eval.model"),
])
def test_bad_config_gives_a_clear_error(tmp_path, args, error, match):
    with pytest.raises(error, match=match):
        mic.main([f"out_dir={tmp_path}", *TINY, *args])


def test_only_source_images_are_warped(tmp_path, monkeypatch):
    """Record every segmenter call, what its timm backbone received and what the warp produced."""
    calls, phase = [], ["train"]
    seg_forward, backbone_run, warp_forward = Segmenter.forward, WarpedBackbone._run, SaliencyWarp.forward

    def spy_segmenter(self, images, boxes=None, **kwargs):  # the teacher (train mode, like MIC's) runs without gradients
        calls.append(dict(phase=phase[0], teacher=not torch.is_grad_enabled(), images=images.detach().clone(),
                          expected=self.normalize(images).detach().clone(), boxes=boxes, backbone_in=None, warped=None))
        return seg_forward(self, images, boxes, **kwargs)

    def spy_run(self, images, **kwargs):
        calls[-1]["backbone_in"] = images.detach().clone()
        return backbone_run(self, images, **kwargs)

    def spy_warp(self, images, boxes=None):
        warped, w = warp_forward(self, images, boxes)
        calls[-1]["warped"] = warped.detach().clone()
        return warped, w

    evaluate = mic.evaluate_segmenter

    def spy_evaluate(*args, **kwargs):
        phase[0] = "eval"
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(Segmenter, "forward", spy_segmenter)
    monkeypatch.setattr(WarpedBackbone, "_run", spy_run)
    monkeypatch.setattr(SaliencyWarp, "forward", spy_warp)
    monkeypatch.setattr(mic, "evaluate_segmenter", spy_evaluate)
    run(tmp_path, "data.image_size=[64,128]", iters=3)

    train = [c for c in calls if c["phase"] == "train"]
    assert len(train) == 3 * 4  # per iteration: source, teacher on target, ClassMix, MIC
    for it in range(3):
        src, teacher, mixed, masked = train[4 * it: 4 * it + 4]
        # source: warped with its label boxes (objects present), features of the warped image
        assert src["boxes"] is not None and sum(len(b) for b in src["boxes"]) > 0 and not src["teacher"]
        assert src["warped"] is not None and torch.equal(src["backbone_in"], src["warped"])
        assert not torch.allclose(src["backbone_in"], src["expected"], atol=1e-3)
        # teacher, mixed and masked images: the backbone sees exactly the (normalised) image
        assert teacher["teacher"] and not mixed["teacher"] and not masked["teacher"]
        for c in (teacher, mixed, masked):
            assert c["boxes"] is None and c["warped"] is None
            assert torch.equal(c["backbone_in"], c["expected"])
        assert not torch.equal(teacher["images"], src["images"])
        # MIC, mask mode separate: source image 0 and target image 0 (no colour augmentation), masked in
        # blocks; a masked pixel is the normalisation mean, so the backbone sees exactly 0 there
        masked_px = (masked["expected"] == 0).all(1, keepdim=True)
        assert 0.4 < masked_px.float().mean() < 0.95  # ~70 % of the blocks
        kept = ~masked_px.expand_as(masked["images"])
        plain = torch.stack([src["images"][0], teacher["images"][0]])  # the unwarped source, the raw target
        assert masked["images"].shape == plain.shape and torch.equal(masked["images"][kept], plain[kept])
    evals = [c for c in calls if c["phase"] == "eval"]
    assert evals and all(c["warped"] is None and torch.equal(c["backbone_in"], c["expected"]) for c in evals)


@pytest.mark.parametrize("bn_stats", ["all", "source"])
def test_bn_stats_source_leaves_running_stats_to_the_source_forward(tmp_path, monkeypatch, bn_stats):
    """bn_stats=source: of the 3 student forwards per iteration only the source one moves the running stats."""
    seen, seg_forward = [], Segmenter.forward

    def spy(self, images, boxes=None, **kwargs):
        out = seg_forward(self, images, boxes, **kwargs)
        if self.training and torch.is_grad_enabled():  # the fusion BatchNorm's running mean after each student forward
            seen.append(self.head.fuse[1].running_mean.clone())
        return out

    monkeypatch.setattr(Segmenter, "forward", spy)
    run(tmp_path, "model.backbone=resnet18", f"train.bn_stats={bn_stats}", iters=2)
    assert len(seen) == 6  # source, ClassMix, MIC per iteration
    moved = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert moved == ([True] * 5 if bn_stats == "all" else [False, False, True, False, False])
    ckpt = load_checkpoint(tmp_path / "last.pt")["student"]
    assert int(ckpt["head.fuse.1.num_batches_tracked"]) == (6 if bn_stats == "all" else 2)
    with pytest.raises(ValueError, match="train.bn_stats"):
        run(tmp_path / "bad", "train.bn_stats=target")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_any_backbone_runs_with_the_default_config(tmp_path, backbone):
    """Only model.backbone changes: the levels come from timm's feature_info, fixed-size families get img_size."""
    final = run(tmp_path, f"model.backbone={backbone}", "data.image_size=[32,64]", iters=2)
    assert final["iters"] == 2 and 0 <= final["target_miou"] <= 1


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_dataset_folders_cityscapes_to_acdc(tmp_path):
    """data.pair=folders reads Cityscapes + ACDC layouts (resized to data.image_size, boxes from instance maps)."""
    import numpy as np

    rng = np.random.default_rng(0)
    sem = np.zeros((64, 128), np.uint8)
    sem[:20] = 10
    sem[40:52, 30:44] = 13  # a car
    inst = np.zeros((64, 128), np.uint16)
    inst[40:52, 30:44] = 26000  # Cityscapes label id 26 (car), instance 0
    for split in ("train", "val"):
        for k in range(2):
            stem = f"ulm_{k:06d}_000019"
            _png(tmp_path / f"cityscapes/leftImg8bit/{split}/ulm/{stem}_leftImg8bit.png", rng.integers(0, 255, (64, 128, 3), np.uint8))
            _png(tmp_path / f"cityscapes/gtFine/{split}/ulm/{stem}_gtFine_labelTrainIds.png", sem)
            _png(tmp_path / f"cityscapes/gtFine/{split}/ulm/{stem}_gtFine_instanceIds.png", inst)
            _png(tmp_path / f"acdc/rgb_anon/fog/{split}/GOPR0475/{stem}_rgb_anon.png", rng.integers(0, 255, (64, 128, 3), np.uint8))
            _png(tmp_path / f"acdc/gt/fog/{split}/GOPR0475/{stem}_gt_labelTrainIds.png", sem)
    # the DAFormer pipeline of the config (keep-ratio scales, random crops, flips; val at the label's size),
    # at a small scale: 64 x 128 images -> 48 x 96, 32 x 64 crops
    small = ["data.source.scale=[96,48]", "data.target.scale=[96,48]", "data.crop_size=[32,64]"]
    out = tmp_path / "run"
    final = mic.main(["--config", "cityscapes2acdc_fog", f"data.root={tmp_path}", f"out_dir={out}", "train.iters=1",
                      "train.schedule_iters=6", "data.workers=0", "model.backbone=pvt_v2_b0", "uda.mask_patch=8", *TINY,
                      *small])
    assert final["iters"] == 1 and (out / "final.json").is_file()
    cfg = lambda *extra: load_config(RECIPE, ["--config", "cityscapes2acdc_fog", f"data.root={tmp_path}", *TINY, *extra],  # noqa: E731
                                     default="synthetic_clear2fog")
    src, _, _, tgt_val = segmentation_datasets(cfg(*small))
    assert src[0]["image"].shape == (3, 32, 64) and src.whole(0)["image"].shape == (3, 48, 96)
    assert tgt_val[0]["semantic"].shape == (64, 128)  # evaluated at the label's own resolution
    # without scales and crops: every image resized to data.image_size, as before
    src = segmentation_datasets(cfg("data.source.scale=null", "data.target.scale=null", "data.crop_size=null",
                                    "data.flip=false"))[0]
    item = src[0]
    assert item["image"].shape == (3, 48, 96) and item["semantic"].shape == (48, 96)
    assert item["boxes"].tolist() == [[23.0, 30.0, 33.0, 39.0]]  # the car (label-id instance map), nearest-resized x 0.75


def test_classmix_image_pool_takes_whole_classes_half_of_them_never_ignore():
    """uda.classmix_pool=image, uda.classmix_ignore=false: this recipe's ClassMix before it followed DACS's code."""
    from warpadapt.uda.mix import classmix_masks, mix

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (5, 16, 24), generator=g)
    labels[:, :2] = 255
    labels[3] = 4  # one class only: it is taken
    kw = dict(num_classes=19, pool="image", include_ignore=False)
    masks = classmix_masks(labels, torch.Generator().manual_seed(1), **kw)
    again = classmix_masks(labels, torch.Generator().manual_seed(1), **kw)
    assert torch.equal(masks, again)
    for lab, m in zip(labels, masks):
        present = set(lab[lab != 255].unique().tolist())
        taken = set(lab[m].unique().tolist())
        assert taken <= present and len(taken) == (len(present) + 1) // 2
        assert torch.equal(m, torch.isin(lab, torch.tensor(sorted(taken))))  # whole classes
        assert not m[lab == 255].any()
    mixed = mix(masks, labels, torch.full_like(labels, 99))
    assert torch.equal(mixed[masks], labels[masks]) and (mixed[~masks] == 99).all()


def test_patch_mask_and_strong_augment_are_seeded():
    from warpadapt.uda.mix import patch_mask, strong_augment

    keep = patch_mask(8, (64, 128), 8, 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(keep, patch_mask(8, (64, 128), 8, 0.7, torch.Generator().manual_seed(0)))
    assert 0.2 < keep.mean() < 0.4  # 30 % kept
    assert torch.equal(keep.unfold(2, 8, 8).unfold(3, 8, 8).amin((-1, -2)), keep.unfold(2, 8, 8).unfold(3, 8, 8).amax((-1, -2)))
    x = torch.rand(6, 3, 32, 32)
    a = strong_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, strong_augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, strong_augment(x, torch.Generator().manual_seed(4)))
    with pytest.raises(TypeError, match="generator"):
        strong_augment(x, None)


def test_speed_benchmark_runs_both_arms():
    spec = importlib.util.spec_from_file_location("recipe_speed", ROOT / "benchmarks" / "recipe_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--recipe", "mic", "--rounds", "2", "--iters", "1", "--forward", "1", *TINY])
    assert set(out["train"]["wall"]) == {"instance", "none"} and all(len(v) == 2 for v in out["train"]["wall"].values())
    assert all(v > 0 for v in out["train"]["cpu"]["none"])  # the recipe reports CPU seconds too
    assert out["train"]["ratio"] > 0 and set(out["source_phase"]) == {"instance", "none"}
    with pytest.raises(SystemExit):  # --forward times mic's source phase only
        bench.main(["--recipe", "twopcnet", "--forward", "1"])


def test_imagenet_feature_distance_runs_with_a_weights_file_only(tmp_path, capsys):
    """uda.imnet_fdist > 0: with model.pretrained_file the source loss gains DAFormer's feature distance
    (logged, finite, > 0); without a file it is switched off with one line."""
    import timm
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    common = ["model.backbone=resnet18", "model.out_indices=[1,2]", "uda.imnet_fdist=0.5", "uda.fdist_min_ratio=0.5",
              "warp.classes=synthetic", "train.iters=3", *TINY]
    mic.main([f"out_dir={tmp_path / 'fd'}", f"model.pretrained_file={weights}", *common])
    logged = [r["loss_fdist"] for r in read_jsonl(tmp_path / "fd" / "metrics.jsonl") if r["kind"] == "train"]
    # 0 on a batch without thing-class feature pixels, else > 0 (warped, train-mode BatchNorm: never the copy's)
    assert len(logged) == 3 and all(0 <= v < float("inf") for v in logged) and max(logged) > 0
    mic.main([f"out_dir={tmp_path / 'nofd'}", *common])
    assert "uda.imnet_fdist: off" in capsys.readouterr().out
    assert all("loss_fdist" not in r for r in read_jsonl(tmp_path / "nofd" / "metrics.jsonl"))
