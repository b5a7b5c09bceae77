"""How much of a row's spread over seeds is evaluation noise? The same model on two disjoint target sets.

    python benchmarks/eval_noise.py results/uda_vs_source/after/runs/twopcnet__uda__s0 ...
    python benchmarks/eval_noise.py --images 200 --out results/eval_noise/detection.json RUN_DIR ...

For each finished run folder (``last.pt`` + ``config.yaml`` of ``recipes/twopcnet.py`` or ``recipes/mic.py``)
it scores the model the method reports (2PCNet: the EMA teacher once adapting; MIC: the student) on
target TEST scenes ``[0, n)`` and ``[n, 2n)`` (``n = --images``, the recipes' ``eval.max_images``
default 200), two disjoint sets of procedural scenes of the same distribution. A score on ``n`` scenes
then has the standard deviation ``sigma_n = sqrt(mean(d^2) / 2)`` over the runs, ``d`` each run's
difference between its halves. Compare it with the standard deviation over seeds of a row: what
``sigma_n`` does not explain is training noise, which a larger test split cannot remove. A test split
of ``k n`` scenes has ``sigma_n / sqrt(k)``.

Evaluation only: nothing trains. One JSON with every run's halves and the estimate.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def halves(run_dir: Path, images: int = 200, threads: int = 1) -> dict:
    """The reported model of a finished run on target test scenes [0, n) and [n, 2n)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from uda_diagnose import _finished_run

    from warpadapt.uda.build import detection_datasets, segmentation_datasets

    recipe = "twopcnet" if (run_dir / "config.yaml").read_text().find("burn_in") >= 0 else "mic"
    cfg, ckpt = _finished_run(run_dir, recipe, threads)
    adapted = cfg.uda.enabled and (recipe == "mic" or cfg.train.iters > cfg.train.burn_in)
    model = "teacher" if recipe == "twopcnet" and adapted else "student"
    state = ckpt[model] if model == "student" else {k.removeprefix("module."): v for k, v in ckpt[model].items()}
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(cfg, {"data": {"val_images": 2 * images}, "eval": {"target_split": "test"}})  # 2n test scenes
    if recipe == "twopcnet":
        *_, test, classes = detection_datasets(cfg)
    else:
        test = segmentation_datasets(cfg)[3]
    if len(test) < 2 * images:
        raise ValueError(f"{run_dir}: the target test split has {len(test)} images, --images {images} needs {2 * images}")
    parts = [torch.utils.data.Subset(test, range(0, images)), torch.utils.data.Subset(test, range(images, 2 * images))]
    scores = []
    if recipe == "twopcnet":
        from warpadapt.uda.build import detector_from_config
        from warpadapt.uda.evaluate import evaluate_detection

        net = detector_from_config(cfg, len(classes) + 1)
        net.load_state_dict(state)
        for part in parts:
            scores.append(evaluate_detection(net, part, classes, batch_size=cfg.eval.batch_size)["mAP50"])
        metric = "target_map50"
    else:
        from warpadapt.data.labels import CITYSCAPES_CLASSES
        from warpadapt.uda.build import segmentation_pipeline, segmenter_from_config
        from warpadapt.uda.evaluate import evaluate_segmentation

        net = segmenter_from_config(cfg)
        net.load_state_dict(state)
        ev = segmentation_pipeline(cfg)["eval"]
        for part in parts:
            scores.append(evaluate_segmentation(net, part, len(CITYSCAPES_CLASSES), batch_size=cfg.eval.batch_size,
                                                mode=ev["mode"], crop_size=ev["crop_size"], stride=ev["stride"])["miou"])
        metric = "target_miou"
    print(f"{run_dir.name} ({model}): {metric} {100 * scores[0]:.1f} on scenes [0, {images}), "
          f"{100 * scores[1]:.1f} on [{images}, {2 * images})", flush=True)
    return {"run": str(run_dir), "recipe": recipe, "model": model, "metric": metric, "images": images,
            "halves": scores}


def estimate(records: list[dict]) -> dict:
    """sigma_n (points) from the runs' half differences: sqrt(mean(d^2) / 2).

    >>> estimate([{"halves": [0.30, 0.32]}, {"halves": [0.25, 0.23]}])["sigma_points"]
    1.41
    """
    d = [100 * (r["halves"][0] - r["halves"][1]) for r in records]
    return {"runs": len(d), "differences_points": [round(v, 2) for v in d],
            "sigma_points": round(math.sqrt(sum(v * v for v in d) / (2 * len(d))), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--images", type=int, default=200, help="scenes per half (the recipes evaluate 200)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the records and the estimate to this JSON")
    a = ap.parse_args(argv)
    if a.images < 1:
        ap.error(f"--images: expected a positive number of scenes, got {a.images}")
    records = [halves(r, a.images, a.threads) for r in a.runs]
    est = estimate(records)
    print(f"evaluation noise of one {a.images}-scene score: sigma = {est['sigma_points']:.2f} points "
          f"over {est['runs']} runs (differences {est['differences_points']})")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"records": records, "estimate": est,
                                     "command": "python benchmarks/eval_noise.py " + " ".join(argv or sys.argv[1:])},
                                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
