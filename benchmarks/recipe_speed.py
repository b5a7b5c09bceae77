"""Seconds per training iteration of a recipe with and without the warp, printed as a ratio.

    python benchmarks/recipe_speed.py                            # recipes/twopcnet.py, default config
    python benchmarks/recipe_speed.py --recipe mic --iters 20
    python benchmarks/recipe_speed.py --recipe twopcnet model.backbone=pvt_v2_b0 threads=1

The recipe's own ``main(argv)`` runs in this process for ``--iters`` iterations with
``warp.guidance=instance`` and then ``warp.guidance=none`` (``--rounds`` alternations, fresh model
each time; any ``key=value`` given here is passed on). A run's number is the recipe's
``seconds_per_iter`` from ``final.json`` (the whole iteration: data, NightAug, forward, teacher,
backward, step, EMA; set-up and evaluation excluded). For twopcnet two phases are timed: ``burn_in``
(source-only, ``uda.enabled=false``: the warped forward is the whole iteration) and ``adapt``
(``train.burn_in=0``: teacher pseudo-labels, student target pass and re-scoring added, warp stage
``always``). The table gives the best round of each arm (on a shared machine the least disturbed one),
in wall-clock seconds and, when the recipe reports it, in CPU seconds of the process (all threads:
``cpu_seconds_per_iter``), which other processes on a shared machine disturb much less.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"twopcnet": {"burn_in": ["uda.enabled=false"], "adapt": ["train.burn_in=0", "warp.stage=always"]},
          "mic": {"train": []}}
QUICK = {"twopcnet": ["eval.every=0", "eval.max_images=1", "data.val_images=1"],
         "mic": ["eval.every=0", "eval.max_images=1", "eval.pictures=0", "data.train_images=16"]}


def load_recipe(name: str):
    path = ROOT / "recipes" / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"--recipe: no recipe {path}")
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="twopcnet", choices=sorted(PHASES))
    ap.add_argument("--iters", type=int, default=20, help="training iterations per run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="key=value passed to the recipe")
    a = ap.parse_args(argv)
    if a.iters < 1 or a.rounds < 1:
        ap.error("--iters and --rounds must be >= 1")
    recipe = load_recipe(a.recipe)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase, extra in PHASES[a.recipe].items():
            times, cpu = {"instance": [], "none": []}, {"instance": [], "none": []}
            for r in range(a.rounds):
                for guidance in times:
                    final = recipe.main([f"out_dir={tmp}/{phase}_{guidance}_{r}", f"train.iters={a.iters}",
                                         *QUICK[a.recipe], *extra, *a.overrides, f"warp.guidance={guidance}"])
                    times[guidance].append(final["seconds_per_iter"])
                    cpu[guidance].append(final.get("cpu_seconds_per_iter", float("nan")))
                    print(f"{phase} round {r}: warp.guidance={guidance}: {final['seconds_per_iter']:.3f} s/iter "
                          f"({cpu[guidance][-1]:.3f} CPU s/iter)", flush=True)
            rows[phase] = {**{g: min(v) for g, v in times.items()}, **{f"cpu_{g}": min(v) for g, v in cpu.items()}}
    print(f"\nrecipes/{a.recipe}.py {' '.join(a.overrides)} ({a.rounds} x {a.iters} iterations per arm; "
          f"{platform.machine()}, Python {platform.python_version()})")
    print("| phase | warp s/iter | no warp s/iter | with / without | warp CPU s/iter | no warp CPU s/iter "
          "| with / without (CPU) |\n|---|---|---|---|---|---|---|")
    for phase, t in rows.items():
        print(f"| {phase} | {t['instance']:.3f} | {t['none']:.3f} | {t['instance'] / t['none']:.3f} "
              f"| {t['cpu_instance']:.3f} | {t['cpu_none']:.3f} | {t['cpu_instance'] / t['cpu_none']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
