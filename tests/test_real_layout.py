"""The synthetic renderer exported into real datasets' layouts (``python -m warpadapt.data export --layout ...``)
is read back exactly by the real-data readers and trained on, end to end, by the real-data configs with only
``data.root`` pointing at it (plus tiny sizes): issue 17's real-layout run, at small size.

The real-size run (1024 x 2048 Cityscapes, 1080 x 1920 ACDC, 720 x 1280 BDD100K through the paper configs) is
``benchmarks/real_layout.py``; its numbers are in docs/segmentation.md and docs/detection.md.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from warpadapt.data import BDD100KDetection, CityscapesSegmentation, SyntheticDrivingDataset
from warpadapt.data.__main__ import LAYOUT_DIRS, REAL_SIZES, cityscapes_label_maps, export, main
from warpadapt.data.boxes import boxes_from_semantic
from warpadapt.data.labels import BDD_CLASSES, CITYSCAPES_THING_TRAIN_IDS, CLASS_TO_TRAIN_ID
from warpadapt.data.reader_utils import read_label_png
from warpadapt.data.segmentation_readers import label_ids_to_train_ids
from warpadapt.uda.build import detection_datasets, segmentation_datasets
from warpadapt.uda.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SEG_SIZE, DET_SIZE = (64, 128), (72, 128)  # 1/16 of Cityscapes' 1024 x 2048, 1/10 of BDD100K's 720 x 1280
COUNTS = {"train": 4, "val": 2}
SEG, DET = "synthetic_clear2fog", "synthetic_day2night"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One export root holding cityscapes/, acdc/, dark_zurich/ and bdd100k/, as /data would."""
    root = tmp_path_factory.mktemp("real_layout")
    for split, n in COUNTS.items():
        export(SEG, "source", split, n, str(root), size=SEG_SIZE, progress=False, layout="cityscapes")
        export(SEG, "target", split, n, str(root), size=SEG_SIZE, progress=False, layout="acdc")
        export(DET, "target", split, n, str(root), size=SEG_SIZE, progress=False, layout="darkzurich")
        # the CLI: without --domain the bdd100k layout gets both domains (daytime source, night target)
        assert main(["export", "--pair", DET, "--layout", "bdd100k", "--split", split, "--n", str(n),
                     "--out", str(root), "--size", f"{DET_SIZE[0]}x{DET_SIZE[1]}"]) == 0
        for pair in ("synthetic_clear2fog", "synthetic_clear2rain"):  # foggy / rainy daytime targets, same json
            export(pair, "target", split, n, str(root), size=DET_SIZE, progress=False, layout="bdd100k")
    return root


def _gen(pair, domain, split, size):
    return SyntheticDrivingDataset(pair, domain, split, size=size, length=COUNTS[split])


def _sorted(boxes, labels):
    order = sorted(range(len(labels)), key=lambda i: (list(boxes[i]), int(labels[i])))
    return [list(boxes[i]) for i in order], [int(labels[i]) for i in order]


@pytest.mark.parametrize("split", list(COUNTS))
def test_cityscapes_layout_reads_back_exactly(data, split):
    gen = _gen(SEG, "source", split, SEG_SIZE)
    ds = CityscapesSegmentation(data / "cityscapes", split)  # real Cityscapes' defaults: label-id instances
    assert len(ds) == len(gen)
    n_boxes = 0
    for i in range(len(gen)):
        g, s = gen[i], ds[i]
        assert s["meta"]["file_name"] == g["meta"]["file_name"]  # <pair>_source/<stem>_leftImg8bit.png
        assert s["image"].shape == (3, *SEG_SIZE) and (s["image"] - g["image"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(s["semantic"], g["semantic"])
        # labelIds alone give the same train ids (real Cityscapes ships both)
        gt = Path(s["meta"]["path"].replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine"))
        assert np.array_equal(label_ids_to_train_ids(read_label_png(Path(f"{gt}_labelIds.png"))), g["semantic"].numpy())
        inst = read_label_png(Path(f"{gt}_instanceIds.png"))
        assert np.array_equal(inst, cityscapes_label_maps(g["semantic"].numpy(), g["instance"].numpy())[1])
        assert inst.max() < 34000 and (inst[inst >= 1000] // 1000 >= 24).all()  # label ids 24..33, as Cityscapes
        # boxes: every generator instance of a Cityscapes thing class (person ... bicycle), same box, train id + 1
        tids = [CLASS_TO_TRAIN_ID[gen.classes[lab - 1]] for lab in g["labels"].tolist()]
        keep = [k for k, t in enumerate(tids) if t in CITYSCAPES_THING_TRAIN_IDS]
        want = _sorted(g["boxes"][keep].tolist(), [tids[k] + 1 for k in keep])
        assert _sorted(s["boxes"].tolist(), s["labels"].tolist()) == want
        n_boxes += len(keep)
    assert n_boxes > 0


@pytest.mark.parametrize("split", list(COUNTS))
def test_acdc_and_dark_zurich_layouts_read_back_exactly(data, split):
    gen = _gen(SEG, "target", split, SEG_SIZE)
    ds = CityscapesSegmentation(data / "acdc", split, layout="acdc", conditions="fog")
    assert len(ds) == len(gen) and sorted(os.listdir(data / "acdc/rgb_anon")) == ["fog"]
    for i in range(len(gen)):
        g, s = gen[i], ds[i]
        assert s["meta"]["condition"] == "fog" and "instance" not in s  # ACDC has no instance maps
        assert s["image"].shape == (3, *SEG_SIZE) and (s["image"] - g["image"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(s["semantic"], g["semantic"])
        boxes, cls = boxes_from_semantic(g["semantic"], CITYSCAPES_THING_TRAIN_IDS)  # components, as the reader
        assert _sorted(s["boxes"].tolist(), s["labels"].tolist()) == _sorted(boxes.tolist(), (cls + 1).tolist())
    # Dark Zurich: night only; the training images have no labels (as the real set), val has them
    dz = CityscapesSegmentation(data / "dark_zurich", split, layout="darkzurich", conditions="night",
                                require_labels=split != "train")
    night = _gen(DET, "target", split, SEG_SIZE)
    assert len(dz) == len(night) and dz[0]["meta"]["condition"] == "night"
    assert ("semantic" in dz[0]) == (split != "train")
    if split != "train":
        assert torch.equal(dz[1]["semantic"], night[1]["semantic"])


@pytest.mark.parametrize("split", list(COUNTS))
def test_bdd100k_layout_reads_back_exactly(data, split):
    for pair, domain, filters in ((DET, "source", {"timeofday": "daytime", "weather": "clear"}),
                                  (DET, "target", {"timeofday": "night"}),
                                  ("synthetic_clear2fog", "target", {"weather": "foggy"}),
                                  ("synthetic_clear2rain", "target", {"weather": "rainy"})):
        gen = _gen(pair, domain, split, DET_SIZE)
        ds = BDD100KDetection(data / "bdd100k", split, **filters)
        assert len(ds) == len(gen) and ds.stats["boxes_clipped"] == ds.stats["boxes_dropped_degenerate"] == 0
        n_boxes = 0
        for i in range(len(gen)):
            g, s = gen[i], ds[i]
            assert s["meta"]["file_name"] == f"{gen.stem(i)}.jpg"
            assert s["image"].shape == (3, *DET_SIZE)
            assert (s["image"] - g["image"]).abs().mean() < 0.03  # JPEG, quality 95
            # det_20 names ("pedestrian"), inclusive corner pixels: the reader's boxes are the generator's
            labels = [BDD_CLASSES.index(gen.classes[lab - 1]) + 1 for lab in g["labels"].tolist()]
            got, want = _sorted(s["boxes"].tolist(), s["labels"].tolist()), _sorted(g["boxes"].tolist(), labels)
            assert got[1] == want[1] and np.allclose(got[0], want[0], atol=1e-4) if want[1] else not got[1]
            n_boxes += len(labels)
        assert n_boxes > 0
    frames = json.loads((data / "bdd100k/labels/det_20" / f"det_{split}.json").read_text())
    assert len(frames) == 4 * COUNTS[split]  # four exports merged into one json
    assert {lab["category"] for fr in frames for lab in fr["labels"]} <= {"pedestrian", *BDD_CLASSES} - {"person"}


def _mic_cfg(name, root, *extra):
    return load_config(ROOT / "recipes/mic.py", ["--config", name, f"data.root={root}", *extra],
                       default="synthetic_clear2fog")


def _det_cfg(name, root, *extra):
    return load_config(ROOT / "recipes/twopcnet.py", ["--config", name, f"data.root={root}", *extra],
                       default="synthetic_day2night")


def test_real_data_configs_select_the_exported_domains(data):
    """Each real-data config, only data.root changed, picks the domains it names from the export root."""
    n_tr, n_val = COUNTS["train"], COUNTS["val"]
    small = ["data.source.scale=[128,64]", "data.target.scale=[128,64]"]
    for name in ("cityscapes2acdc_fog", "cityscapes2acdc_all", "cityscapes2acdc_paper", "cityscapes2darkzurich"):
        sets = segmentation_datasets(_mic_cfg(name, data, *small))
        assert [len(s) for s in sets] == [n_tr, n_tr, n_val, n_val], name
    for name in ("cityscapes2acdc_night", "cityscapes2acdc_rain", "cityscapes2acdc_snow"):  # only fog is exported
        with pytest.raises(ValueError, match="empty dataset"):
            segmentation_datasets(_mic_cfg(name, data, *small))
    bdd = data / LAYOUT_DIRS["bdd100k"]
    # the daytime source of day2night holds the foggy and rainy daytime frames too, as in BDD100K itself
    for name, want, target in (("bdd100k_day2night", 3, {"timeofday": "night"}),
                               ("bdd100k_day2night_paper", 3, {"timeofday": "night"}),
                               ("bdd100k_clear2foggy", 2, {"weather": "foggy"}),
                               ("bdd100k_clear2rainy", 2, {"weather": "rainy"})):
        s_tr, t_tr, s_val, t_val, classes = detection_datasets(_det_cfg(name, bdd))
        assert classes == list(BDD_CLASSES)
        assert [len(s) for s in (s_tr, t_tr, s_val, t_val)] == [want * n_tr, n_tr, want * n_val, n_val], name
        for ds in (t_tr, t_val):
            key, value = next(iter(target.items()))
            assert {ds[i]["meta"]["attributes"][key] for i in range(len(ds))} == {value}


def test_real_sizes_are_the_datasets_and_bad_requests_fail(tmp_path):
    assert REAL_SIZES == {"cityscapes": (1024, 2048), "acdc": (1080, 1920), "darkzurich": (1080, 1920),
                          "bdd100k": (720, 1280)}
    with pytest.raises(ValueError, match="TARGET"):
        export(SEG, "source", "val", 1, str(tmp_path), size=(32, 64), progress=False, layout="acdc")
    with pytest.raises(ValueError, match="night"):
        export(SEG, "target", "val", 1, str(tmp_path), size=(32, 64), progress=False, layout="darkzurich")
    with pytest.raises(ValueError, match="layout"):
        export(SEG, "target", "val", 1, str(tmp_path), progress=False, layout="kitti")
    # --condition overrides the pair's own (e.g. the rain pair as ACDC snow)
    p = export("synthetic_clear2rain", "target", "val", 1, str(tmp_path), size=(32, 64), progress=False,
               layout="acdc", condition="snow")
    assert os.listdir(Path(p) / "rgb_anon") == ["snow"]


def _run(recipe, argv, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *argv, f"out_dir={out}"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    final = json.loads((out / "final.json").read_text())
    assert math.isfinite(final["seconds_per_iter"]) and final["peak_memory_mb"] > 0
    return final


def test_mic_real_config_trains_on_the_exported_layouts(data, tmp_path):
    """recipes/mic.py --config cityscapes2acdc_paper (MIC's setting: RCS, mask mode separate) on the export,
    with the images scaled / cropped small and a small backbone; as a user runs it (a subprocess)."""
    final = _run("mic", ["--config", "cityscapes2acdc_paper", f"data.root={data}", "threads=1", "train.iters=2",
                         "train.warmup=1", "data.workers=0", "data.source.scale=[128,64]",
                         "data.target.scale=[128,64]", "data.crop_size=[32,64]", "uda.mask_patch=8",
                         "model.backbone=pvt_v2_b0", "model.embed_dim=16", "eval.max_images=2", "eval.batch_size=2",
                         "eval.pictures=1"], tmp_path / "mic")
    assert final["iters"] == 2 and final["target_split"] == "val"
    assert all(math.isfinite(final[k]) and 0 <= final[k] <= 1 for k in ("source_miou", "target_miou"))


@pytest.mark.parametrize("config", ["bdd100k_day2night", "bdd100k_day2night_paper"])
def test_twopcnet_real_config_trains_on_the_exported_layout(data, tmp_path, config):
    """recipes/twopcnet.py --config bdd100k_day2night[_paper] on the export's bdd100k/ (burn-in, then adaptation;
    the paper config with frozen BatchNorm, from random init here)."""
    final = _run("twopcnet", ["--config", config, f"data.root={data / 'bdd100k'}", "threads=1",
                              "train.iters=2", "train.burn_in=1", "train.warmup=1", "train.batch_size=2",
                              "data.workers=0", f"data.image_size=[{DET_SIZE[0]},{DET_SIZE[1]}]",
                              "model.backbone=resnet18", "model.out_indices=[2,3]", "model.fpn_channels=32",
                              "model.representation_size=64", "model.rpn_batch_size=32", "model.roi_batch_size=32",
                              "eval.max_images=2", "eval.batch_size=2"], tmp_path / "det")
    assert final["iters"] == 2 and final["evaluated"] == "teacher" and final["uda"]
    assert all(math.isfinite(final[k]) for k in ("source_map50", "target_map50"))
    assert list(final["target_ap50_per_class"]) == list(BDD_CLASSES)


def test_benchmark_changes_only_root_out_dir_threads_iterations_and_eval(tmp_path, capsys):
    """benchmarks/real_layout.py --list: each run is its config's command with only the listed keys set."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("real_layout_bench", ROOT / "benchmarks" / "real_layout.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--list", "--data", str(tmp_path)]) == {}
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(bench.RUNS)
    allowed = {"data.root", "out_dir", "threads", "train.iters", "data.workers", "model.pretrained_file",
               "eval.max_images", "eval.pictures", "train.log_every", "overwrite", "train.burn_in",
               "train.batch_size"}  # (the batch only in the ..._batch3 runs)
    for line in lines:
        name, cmd = line.split(": ", 1)
        args = cmd.split()
        assert args[:4] == ["python", f"recipes/{bench.RUNS[name][0]}.py", "--config", bench.RUNS[name][1]]
        assert {a.split("=")[0] for a in args[4:]} <= allowed, line
        assert f"data.root={tmp_path}" in cmd and "threads=1" in args
    assert bench.resident_gb(os.getpid()) > 0 and bench.resident_gb(2**22 + 12345) == 0.0


def test_exporter_doctests():
    """pytest's --doctest-modules skips files named __main__.py: run the exporter's examples here."""
    import doctest

    import warpadapt.data.__main__ as cli
    result = doctest.testmod(cli, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
