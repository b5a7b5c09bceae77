"""Seconds per training iteration of recipes/mic.py with and without the warp, and their ratio.

    python benchmarks/mic_speed.py                          # default config, 4 rounds of 30 iterations
    python benchmarks/mic_speed.py --rounds 5 model.backbone=resnet18 data.image_size=[256,512]

One process runs the recipe's own loop (``recipes/mic.py``'s ``main``) for ``--iters`` iterations with
``warp.guidance=instance`` and with ``warp.guidance=none``, ``--rounds`` times in ABBA order (instance
first in even rounds, none first in odd ones, so a drift in the machine's load favours neither), each
from a fresh model and otherwise the same command (any ``key=value`` given here is passed on). A
round's number is the recipe's ``seconds_per_iter`` (``final.json``: the whole iteration, data,
teacher, ClassMix, MIC, step and EMA included; set-up and evaluation excluded). The table reports
the best and the median round of each arm and the ratio of the best rounds (on a shared machine the
best round is the least disturbed one).

``--forward N`` also times what the warp changes, in isolation: the source phase's forward + backward
of the default model on one source batch of the config, with and without its boxes, interleaved, N
times each (minimum and median; the difference is the warp's cost per iteration).
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_recipe():
    spec = importlib.util.spec_from_file_location("mic_recipe", ROOT / "recipes" / "mic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_source_phase(mic, overrides, reps: int) -> dict:
    """Seconds of the source forward + backward with and without the warp, interleaved ``reps`` times."""
    import time

    import torch
    import torch.nn.functional as F

    cfg = mic.load_config("mic", list(overrides), default=mic.DEFAULT_CONFIG)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    batch = mic.collate([mic.build_datasets(cfg)[0][i] for i in range(cfg.train.batch_size)])
    net = mic.Segmenter(cfg.model.backbone, mic.NUM_CLASSES, cfg.model.out_indices, None, cfg.model.embed_dim).train()

    def step(boxes):
        tic = time.perf_counter()
        F.cross_entropy(net(batch["images"], boxes=boxes), batch["semantic"], ignore_index=255).backward()
        return time.perf_counter() - tic

    times = {"instance": [], "none": []}
    for i in range(reps + 3):  # 3 warm-up pairs
        for arm, boxes in (("instance", batch["boxes"]), ("none", None)):
            t = step(boxes)
            if i >= 3:
                times[arm].append(t)
    return {arm: (min(v), statistics.median(v)) for arm, v in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=30, help="training iterations per round and arm")
    ap.add_argument("--forward", type=int, default=0, metavar="N",
                    help="also time the source forward + backward with / without the warp, N times each")
    ap.add_argument("overrides", nargs="*", help="key=value passed to recipes/mic.py")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.iters < 1:
        ap.error("--rounds and --iters must be >= 1")
    mic = load_recipe()
    times: dict[str, list[float]] = {"instance": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for guidance in (("instance", "none") if r % 2 == 0 else ("none", "instance")):
                final = mic.main([f"out_dir={tmp}/{guidance}{r}", f"train.iters={a.iters}", "eval.every=0",
                                  "eval.max_images=1", "eval.pictures=0", "data.train_images=16", *a.overrides,
                                  f"warp.guidance={guidance}"])
                times[guidance].append(final["seconds_per_iter"])
                print(f"round {r}: warp.guidance={guidance}: {final['seconds_per_iter']:.3f} s/iter", flush=True)
    best = {g: min(v) for g, v in times.items()}
    print(f"\nrecipes/mic.py {' '.join(a.overrides)} ({a.rounds} rounds x {a.iters} iterations; "
          f"{platform.machine()}, {platform.python_version()})")
    print("| warp | best s/iter | median s/iter |\n|---|---|---|")
    for g, v in times.items():
        print(f"| {g} | {best[g]:.3f} | {statistics.median(v):.3f} |")
    ratio = best["instance"] / best["none"]
    print(f"\nwith / without warp: {ratio:.3f} (best rounds)")
    out = {"times": times, "ratio": ratio}
    if a.forward:
        phase = time_source_phase(mic, a.overrides, a.forward)
        added = [phase["instance"][k] - phase["none"][k] for k in (0, 1)]
        print(f"\nsource forward + backward ({a.forward} interleaved pairs): with warp min {phase['instance'][0]:.4f} / "
              f"median {phase['instance'][1]:.4f} s, without min {phase['none'][0]:.4f} / median {phase['none'][1]:.4f} s; "
              f"the warp adds {added[0] * 1000:.1f} ms (min) / {added[1] * 1000:.1f} ms (median) per iteration")
        out["source_phase"] = phase
    return out


if __name__ == "__main__":
    main()
