"""Seconds per training iteration of a recipe with and without the warp, printed as a ratio.

    python benchmarks/recipe_speed.py                                   # recipes/twopcnet.py, default config
    python benchmarks/recipe_speed.py --recipe mic --rounds 4 --iters 30 --forward 30 threads=1
    python benchmarks/recipe_speed.py --recipe twopcnet model.backbone=pvt_v2_b0 threads=1

The recipe runs as a user runs it (``python recipes/<recipe>.py ...``, one process per round) for
``--iters`` iterations with
``warp.guidance=instance`` and with ``warp.guidance=none``, ``--rounds`` times in ABBA order (instance
first in even rounds, none first in odd ones, so a drift in the machine's load favours neither arm),
each from a fresh model and otherwise the same command (any ``key=value`` given here is passed on).
A round's number is the recipe's ``seconds_per_iter`` from ``final.json`` (the whole iteration: data,
augmentation, forward, teacher, backward, step, EMA; set-up and evaluation excluded). For twopcnet two
phases are timed: ``burn_in`` (source-only, ``uda.enabled=false``: the warped forward is the whole
iteration) and ``adapt`` (``train.burn_in=0``: teacher pseudo-labels, student target pass and
re-scoring added, warp stage ``always``). The table gives the best round of each arm (on a shared
machine the least disturbed one), the median, and, when the recipe reports it, CPU seconds of the
process (all threads: ``cpu_seconds_per_iter``), which other processes disturb much less.

``--forward N`` (``--recipe mic``) also times what the warp changes, in isolation: the source phase's
forward + backward of the config's model on one source batch, with and without its boxes,
interleaved, N times each (minimum and median; the difference is the warp's cost per iteration).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"twopcnet": {"burn_in": ["uda.enabled=false"], "adapt": ["train.burn_in=0", "warp.stage=always"]},
          "mic": {"train": []}}
QUICK = {"twopcnet": ["eval.every=0", "eval.max_images=1", "data.val_images=1"],
         "mic": ["eval.every=0", "eval.max_images=1", "eval.pictures=0", "data.train_images=16"]}
ARMS = ("instance", "none")


def run_recipe(name: str, argv: list[str]) -> dict:
    """``python recipes/<name>.py argv`` in a subprocess; its ``final.json``."""
    out = next(a.split("=", 1)[1] for a in argv if a.startswith("out_dir="))
    subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), *argv], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads((Path(out) / "final.json").read_text())


def time_source_phase(overrides, reps: int) -> dict:
    """(min, median) seconds of mic's source forward + backward with and without the warp, interleaved."""
    import torch
    import torch.nn.functional as F

    from warpadapt.data import collate_segmentation
    from warpadapt.uda.build import segmentation_datasets, segmenter_from_config, warp_from_config
    from warpadapt.uda.config import load_config

    cfg = load_config(ROOT / "recipes" / "mic.py", list(overrides), default="synthetic_clear2fog")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    batch = collate_segmentation([segmentation_datasets(cfg)[0][i] for i in range(cfg.train.batch_size)])
    net = segmenter_from_config(cfg, warp_from_config(cfg)).train()

    def step(boxes):
        tic = time.perf_counter()
        F.cross_entropy(net(batch["images"], boxes=boxes), batch["semantic"], ignore_index=255).backward()
        return time.perf_counter() - tic

    times = {arm: [] for arm in ARMS}
    for i in range(reps + 3):  # 3 warm-up pairs
        for arm, boxes in zip(ARMS, (batch["boxes"], None)):
            t = step(boxes)
            if i >= 3:
                times[arm].append(t)
    return {arm: (min(v), statistics.median(v)) for arm, v in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="twopcnet", choices=sorted(PHASES))
    ap.add_argument("--iters", type=int, default=20, help="training iterations per round and arm")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per arm, in ABBA order")
    ap.add_argument("--forward", type=int, default=0, metavar="N",
                    help="mic: also time the source forward + backward with / without the warp, N times each")
    ap.add_argument("overrides", nargs="*", help="key=value passed to the recipe")
    a = ap.parse_args(argv)
    if a.iters < 1 or a.rounds < 1:
        ap.error("--iters and --rounds must be >= 1")
    if a.forward < 0 or (a.forward and a.recipe != "mic"):
        ap.error(f"--forward N needs N >= 0 and --recipe mic, got N={a.forward} with --recipe {a.recipe}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase, extra in PHASES[a.recipe].items():
            wall, cpu = {g: [] for g in ARMS}, {g: [] for g in ARMS}
            for r in range(a.rounds):
                for guidance in (ARMS if r % 2 == 0 else ARMS[::-1]):
                    final = run_recipe(a.recipe, [f"out_dir={tmp}/{phase}_{guidance}_{r}", f"train.iters={a.iters}",
                                                  *QUICK[a.recipe], *extra, *a.overrides, f"warp.guidance={guidance}"])
                    wall[guidance].append(final["seconds_per_iter"])
                    cpu[guidance].append(final.get("cpu_seconds_per_iter", math.nan))
                    print(f"{phase} round {r}: warp.guidance={guidance}: {wall[guidance][-1]:.3f} s/iter "
                          f"({cpu[guidance][-1]:.3f} CPU s/iter)", flush=True)
            rows[phase] = {"wall": wall, "cpu": cpu, "ratio": min(wall["instance"]) / min(wall["none"]),
                           "cpu_ratio": min(cpu["instance"]) / min(cpu["none"])}
    print(f"\nrecipes/{a.recipe}.py {' '.join(a.overrides)} ({a.rounds} rounds x {a.iters} iterations per arm, ABBA; "
          f"{platform.machine()}, Python {platform.python_version()})")
    print("| phase | warp best / median s/iter | no warp best / median s/iter | with / without (best) "
          "| with / without (CPU s, best) |\n|---|---|---|---|---|")
    for phase, t in rows.items():
        cells = [f"{min(t['wall'][g]):.3f} / {statistics.median(t['wall'][g]):.3f}" for g in ARMS]
        print(f"| {phase} | {cells[0]} | {cells[1]} | {t['ratio']:.3f} | {t['cpu_ratio']:.3f} |")
    if a.forward:
        phase = time_source_phase(a.overrides, a.forward)
        added = [phase["instance"][k] - phase["none"][k] for k in (0, 1)]
        print(f"\nsource forward + backward ({a.forward} interleaved pairs): with warp min {phase['instance'][0]:.4f} / "
              f"median {phase['instance'][1]:.4f} s, without min {phase['none'][0]:.4f} / median {phase['none'][1]:.4f} s; "
              f"the warp adds {added[0] * 1000:.1f} ms (min) / {added[1] * 1000:.1f} ms (median) per iteration")
        rows["source_phase"] = phase
    return rows


if __name__ == "__main__":
    main()
