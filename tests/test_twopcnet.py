"""recipes/twopcnet.py: every mode runs and writes its outputs, resume is exact, torchrun works, bad
configs fail naming the key, and only the labelled source forward is warped.

Runs are in-process (the recipe's ``main(argv)``) at 32 x 64 with a few iterations. The atomic
checkpoint under SIGKILL is tested in tests/test_uda.py (test_checkpoint_sigkill_mid_write_keeps_previous).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import warpadapt.models.detector as detector_mod
from warpadapt.modules import SaliencyWarp
from warpadapt.uda.build import detection_datasets
from warpadapt.uda.checkpoint import load_checkpoint
from warpadapt.uda.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "twopcnet.py"
TINY = ["data.image_size=[32,64]", "data.train_images=16", "data.val_images=2", "eval.max_images=2",
        "eval.every=0", "train.batch_size=2", "train.iters=3", "train.burn_in=1", "train.warmup=2",
        "model.out_indices=[2,3]", "model.rpn_batch_size=32", "model.roi_batch_size=32",
        "train.log_every=1", "threads=1", "warp.prior_images=8"]
FINAL_KEYS = {"source_map50", "target_map50", "target_ap_small", "target_ap_medium", "target_ap_large",
              "target_ap50_per_class", "seconds_per_iter", "iters"}


# one of each family: CNNs (ResNet, ConvNeXt), hierarchical transformers (MiT lineage, Swin with img_size
# set by the recipe, EfficientFormerV2) and a plain ViT (a simple pyramid in front of the FPN)
BACKBONES = ["pvt_v2_b0", "convnext_atto", "swin_tiny_patch4_window7_224", "efficientformerv2_s0",
             "vit_tiny_patch16_224", "resnet18"]


def _config(*argv):
    return load_config(RECIPE, list(argv), default="synthetic_day2night")


def _recipe():
    spec = importlib.util.spec_from_file_location("twopcnet_recipe", RECIPE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(tmp_path, *overrides, name="run"):
    out = tmp_path / name
    final = _recipe().main(TINY + [f"out_dir={out}", *overrides])
    return out, final


def _check_outputs(out: Path, iters: int):
    for f in ("config.yaml", "metrics.jsonl", "final.json", "last.pt", "curves.png"):
        assert (out / f).is_file(), f
    final = json.loads((out / "final.json").read_text())
    assert FINAL_KEYS <= set(final) and final["iters"] == iters
    assert set(final["target_ap50_per_class"]) >= {"car", "person"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [iters]
    assert any("loss_objectness" in r for r in records if r["kind"] == "train")
    return final, records


@pytest.mark.parametrize("overrides", [
    ["uda.enabled=false"],                                   # source-only
    ["warp.guidance=none"],                                  # 2PCNet without the warp
    ["warp.guidance=instance", "warp.stage=always"],
    ["warp.guidance=instance", "warp.stage=burn_in"],
    ["warp.guidance=static"],
    ["warp.guidance=geometric", "uda.nightaug=false"],
    ["uda.consistency_boxes=proposals", "uda.kl_reduction=sum"],  # the pre-2PCNet-code behaviours
    ["uda.student_scale={s0: [0.8, 0.9], steps: [3, 4], floor: 0.75}", "model.norm=frozen", "uda.hflip=false"],
], ids=["source_only", "uda_no_warp", "instance_always", "instance_burn_in", "static", "geometric",
        "proposals_sum", "student_scale_frozen"])
def test_modes_run_and_write_outputs(tmp_path, overrides):
    out, final = run(tmp_path, *overrides)
    final_file, records = _check_outputs(out, 3)
    uda = "uda.enabled=false" not in overrides
    assert final_file["evaluated"] == ("teacher" if uda else "student")
    adapt = [r for r in records if r["kind"] == "train" and "loss_consistency" in r]
    assert len(adapt) == (2 if uda else 0)  # iterations 2 and 3 adapt (burn_in = 1)
    if "warp.guidance=static" in overrides:
        assert (out / "static_prior.npz").is_file()


def test_resume_gives_identical_weights_and_metrics(tmp_path):
    common = ["train.iters=6", "train.burn_in=2", "train.lr_steps=[4]"]
    a, fa = run(tmp_path, *common, name="straight")
    b, _ = run(tmp_path, *common[1:], "train.iters=3", name="split")
    b, fb = run(tmp_path, *common, "resume=true", name="split")
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["step"] == cb["step"] == 6
    for part in ("student", "teacher"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (a, b))  # NaN -> null: comparable
    drop = {"seconds_per_iter", "cpu_seconds_per_iter", "eval_seconds", "peak_memory_mb"}
    assert {k: v for k, v in fa.items() if k not in drop} == {k: v for k, v in fb.items() if k not in drop}
    steps = [json.loads(x)["step"] for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(6) == 2  # one train + one eval record at 6, no duplicates
    b, _ = run(tmp_path, *common, "resume=true", name="split")  # resuming a finished run logs nothing new
    steps = [json.loads(x)["step"] for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(6) == 2


def test_the_target_split_is_read_at_evaluation_only(tmp_path):
    """benchmarks/uda_table.py scores the val-selected models on test by evaluating them again: that is
    only the same experiment if the split never reaches training, mid-run evaluations included."""
    common = ["train.iters=3", "train.burn_in=1", "eval.every=1", "warp.guidance=instance"]
    a, fa = run(tmp_path, *common, "eval.target_split=val", name="val")
    b, fb = run(tmp_path, *common, "eval.target_split=test", name="test")
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for part in ("student", "teacher"):
        assert all(torch.equal(ca[part][k], cb[part][k]) for k in ca[part]), part
    assert fa["weights_digests"] == fb["weights_digests"] and fa["source_map50"] == fb["source_map50"]
    assert (fa["target_split"], fb["target_split"]) == ("val", "test")


def test_only_source_images_reach_the_backbone_warped(tmp_path, monkeypatch):
    """Record every input of the timm model (student AND teacher: the hook is deep-copied) and every
    SaliencyWarp call: the warps are exactly one per iteration on the source+NightAug batch, the
    backbone received each warped batch and never its unwarped original, and every other backbone
    input (teacher pseudo-labels, student target forward, teacher re-scoring, evaluation) is unwarped."""
    seen, warps = [], []
    make = detector_mod.create_backbone

    def recording(*args, **kwargs):
        model = make(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
        return model

    forward = SaliencyWarp.forward

    def recording_warp(self, images, boxes=None):
        warped, w = forward(self, images, boxes)
        warps.append((images.detach().clone(), warped.detach().clone()))
        return warped, w

    monkeypatch.setattr(detector_mod, "create_backbone", recording)
    monkeypatch.setattr(SaliencyWarp, "forward", recording_warp)
    run(tmp_path, "warp.stage=always")
    assert len(warps) == 3  # one warped forward per iteration
    for original, warped in warps:
        assert original.shape[0] == 4  # 2 source images + their NightAug copies
        assert not torch.allclose(original, warped)  # the GT boxes really moved pixels
        assert any(x.shape == warped.shape and torch.equal(x, warped) for x in seen)
        assert not any(x.shape == original.shape and torch.equal(x, original) for x in seen)
    unwarped = [x for x in seen if not any(x.shape == w.shape and torch.equal(x, w) for _, w in warps)]
    # 2 adaptation iterations x (teacher detections, whose features the re-scoring reuses, + student
    # target forward) + 2 evaluation batches (source val, target val)
    assert len(seen) == 3 + 2 * 2 + 2 and len(unwarped) == 2 * 2 + 2
    assert all(x.shape[0] == 2 for x in unwarped)  # target batches (2) and eval batches (2 images)

    seen.clear(), warps.clear()
    run(tmp_path, name="burn_in")  # the default warp.stage=burn_in (the authors' code): burn-in only
    assert len(warps) == 1


@pytest.mark.parametrize("backbone", BACKBONES)
def test_any_backbone_runs_with_the_default_config(tmp_path, backbone):
    """Only model.backbone changes (the default model.out_indices=null: FPN levels from timm's feature_info)."""
    tiny = [o for o in TINY if not o.startswith("model.out_indices=")]
    final = _recipe().main([*tiny, f"out_dir={tmp_path}", f"model.backbone={backbone}", "train.iters=2"])
    assert (tmp_path / "final.json").is_file() and final["iters"] == 2


@pytest.mark.parametrize("override, key", [
    ("train.iterz=3", "train.iterz"),
    ("warp.guidance=fancy", "warp.guidance"),
    ("warp.stage=never", "warp.stage"),
    ("train.iters=many", "train.iters"),
    ("uda.threshold=1.5", "uda.threshold"),
    ("data.pair=mars", "data.pair"),
    ("eval.model=best", "eval.model"),
    ("model.norm=group", "model.norm"),
    ("uda.kl_reduction=max", "uda.kl_reduction"),
    ("uda.consistency_boxes=all", "uda.consistency_boxes"),
    ("uda.student_scale={s0: 2.0}", "uda.student_scale"),
])
def test_bad_config_names_the_key(tmp_path, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        run(tmp_path, override)


def test_missing_dataset_names_key_or_layout(tmp_path):
    with pytest.raises(ValueError, match=r"data\.root"):
        _recipe().main(["--config", "bdd100k_day2night", f"out_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"labels/det_20/det_<split>\.json"):
        _recipe().main(["--config", "bdd100k_day2night", f"out_dir={tmp_path}", f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="COCO detection json"):
        _recipe().main(["--config", "coco_pair", f"out_dir={tmp_path}", f"data.root={tmp_path}"])


def test_every_config_loads():
    names = sorted(p.stem for p in (ROOT / "recipes" / "configs" / "twopcnet").glob("*.yaml"))
    assert {"synthetic_day2night", "synthetic_clear2fog", "synthetic_clear2rain", "synthetic_inline",
            "bdd100k_day2night", "bdd100k_clear2rainy", "bdd100k_clear2foggy", "coco_pair"} <= set(names)
    for n in names:
        cfg = _config("--config", n)
        assert cfg.warp.guidance == "instance" and cfg.train.iters > cfg.train.burn_in


def test_inline_pair_runs(tmp_path):
    out, final = run(tmp_path, "--config", "synthetic_inline", "train.iters=2")
    assert final["iters"] == 2


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_identical_weights_and_exact_resume(tmp_path):
    """2 gloo processes on different shards: bit-identical student and teacher weights on both ranks at the
    end; stopped after step 2 (past burn-in: the teacher exists, each rank's BatchNorm statistics its own)
    and resumed, the run ends on exactly the weights of the uninterrupted one."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")

    def launch(out, *args):
        cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(RECIPE), *TINY, "threads=1", f"out_dir={out}",
               "device=cpu", *args]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((out / "final.json").read_text())

    straight = launch(tmp_path / "straight")
    assert straight["world_size"] == 2 and straight["iters"] == 3
    assert straight["ranks_in_sync"] and len(set(straight["weights_digests"])) == 1 == len(straight["weights_digests"]) - 1
    launch(tmp_path / "split", "train.iters=2")
    resumed = launch(tmp_path / "split", "resume=true")
    assert resumed["weights_digests"] == straight["weights_digests"]


def test_detector_warps_only_in_training_with_boxes():
    from warpadapt.models import Detector
    torch.manual_seed(0)
    det = Detector("resnet18", 3, out_indices=(2, 3), fpn_channels=16, min_size=64, max_size=128,
                   representation_size=32)
    imgs = torch.rand(2, 3, 64, 128)
    tgts = [{"boxes": torch.tensor([[10., 10., 30., 40.]]), "labels": torch.tensor([1])}] * 2
    il, _ = det.transform(list(imgs))
    det.train()
    plain = det.features(il, tgts, warp=False)
    warped = det.features(il, tgts, warp=True)
    assert list(plain) == list(warped) and all(plain[k].shape == warped[k].shape for k in plain)
    assert not torch.allclose(plain["0"], warped["0"])  # warped, then unwarped: not the same features
    det.eval()
    assert all(torch.equal(a, b) for a, b in zip(det.features(il, tgts, warp=True).values(), det.backbone(il.tensors).values()))
    with pytest.raises(ValueError, match="warp"):
        det(list(imgs), warp=True)
    assert det.strides == [8, 16, 32]


def test_speed_benchmark_times_both_phases_and_arms():
    spec = importlib.util.spec_from_file_location("recipe_speed", ROOT / "benchmarks" / "recipe_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # train.iters from the benchmark (2), the rest of TINY after it (TINY's train.iters would win)
    rows = bench.main(["--recipe", "twopcnet", "--rounds", "1", "--iters", "2",
                       *[o for o in TINY if not o.startswith("train.iters=")]])
    assert set(rows) == {"burn_in", "adapt"}
    for t in rows.values():
        assert {g: len(v) for g, v in t["wall"].items()} == {"instance": 1, "none": 1}
        assert t["ratio"] > 0 and t["cpu_ratio"] > 0


def _exported(tmp_path, size=(48, 96)):
    """The synthetic day->night pair exported to disk, one folder per domain (COCO json + PNGs)."""
    from warpadapt.data.__main__ import export
    for dom in ("source", "target"):
        for split, n in (("train", 4), ("val", 2)):
            export("synthetic_day2night", dom, split, n, str(tmp_path / dom), size=size)
    return tmp_path


def test_coco_pair_config_trains_on_folders_end_to_end(tmp_path):
    """--config coco_pair (real-data settings) on COCO jsons written by `python -m warpadapt.data export`."""
    root = _exported(tmp_path / "data")
    paths = [f"data.{dom}.{split}_{kind}={dom}/" + ("leftImg8bit/" + split if kind == "images" else
                                                     f"annotations/instances_{split}.json")
             for dom in ("source", "target") for split in ("train", "val") for kind in ("images", "json")]
    out = tmp_path / "run"
    final = _recipe().main(["--config", "coco_pair", f"data.root={root}", *paths, *TINY, "data.workers=0",
                            "model.backbone=resnet18", "model.fpn_channels=32", "model.representation_size=64",
                            "eval.batch_size=2", f"out_dir={out}"])
    assert final["iters"] == 3 and final["target_split"] == "val" and final["eval_images"] == 2
    cats = json.loads((root / "source/annotations/instances_train.json").read_text())["categories"]
    assert list(final["target_ap50_per_class"]) == [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    _check_outputs(out, 3)


def test_bdd100k_config_trains_on_a_bdd_folder_end_to_end(tmp_path):
    """--config bdd100k_day2night on a BDD100K-layout folder (det_20 jsons, images/100k/<split>/), the
    domains picked by the timeofday attribute."""
    src = _exported(tmp_path / "exp")
    root = tmp_path / "bdd"
    for split in ("train", "val"):
        frames = []
        for dom, tod in (("source", "daytime"), ("target", "night")):
            coco = json.loads((src / dom / f"annotations/instances_{split}.json").read_text())
            cats = {c["id"]: c["name"] for c in coco["categories"]}
            for im in coco["images"]:
                name = f"{dom}_{Path(im['file_name']).name}"
                (root / "images/100k" / split).mkdir(parents=True, exist_ok=True)
                shutil.copy(src / dom / "leftImg8bit" / split / im["file_name"], root / "images/100k" / split / name)
                boxes = [{"category": cats[a["category_id"]].replace("person", "pedestrian"),
                          "box2d": {"x1": a["bbox"][0], "y1": a["bbox"][1], "x2": a["bbox"][0] + a["bbox"][2],
                                    "y2": a["bbox"][1] + a["bbox"][3]}}
                         for a in coco["annotations"] if a["image_id"] == im["id"]]
                frames.append({"name": name, "attributes": {"timeofday": tod, "weather": "clear"}, "labels": boxes})
        (root / "labels/det_20").mkdir(parents=True, exist_ok=True)
        (root / f"labels/det_20/det_{split}.json").write_text(json.dumps(frames))
    out = tmp_path / "run"
    final = _recipe().main(["--config", "bdd100k_day2night", f"data.root={root}", *TINY, "data.workers=0",
                            "model.backbone=resnet18", "model.fpn_channels=32", "model.representation_size=64",
                            "eval.batch_size=2", f"out_dir={out}"])
    assert final["iters"] == 3 and final["eval_images"] == 2
    _check_outputs(out, 3)
    sets = detection_datasets(_config("--config", "bdd100k_day2night", f"data.root={root}"))
    assert [len(s) for s in sets[:4]] == [4, 4, 2, 2]  # the timeofday filter splits the one folder
    assert {sets[1][i]["meta"]["attributes"]["timeofday"] for i in range(4)} == {"night"}


def test_eval_model_picks_student_or_teacher(tmp_path):
    """auto evaluates the teacher after burn-in (2PCNet); eval.model=student the student: a finished run
    resumed with the other choice reports the other model's numbers."""
    out, auto = run(tmp_path, name="r")
    assert auto["evaluated"] == "teacher"
    _, student = run(tmp_path, "resume=true", "eval.model=student", name="r")
    assert student["evaluated"] == "student" and student["iters"] == auto["iters"]
    _, again = run(tmp_path, "resume=true", name="r")
    assert again["target_ap50_per_class"] == auto["target_ap50_per_class"]  # the same teacher, the same numbers
    with pytest.raises(ValueError, match=r"eval\.model"):
        run(tmp_path, "eval.model=teacher", "uda.enabled=false", name="bad")
