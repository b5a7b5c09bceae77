"""Issue 17's real-layout run at real size: the synthetic renderer exported into the real datasets' layouts at
their real image sizes, trained on by the real-data configs for a few iterations, end to end.

    python benchmarks/real_layout.py                         # every run below; results/real_layout/<run>.json
    python benchmarks/real_layout.py --runs mic_cityscapes2acdc_paper --iters 2
    python benchmarks/real_layout.py --list                  # the runs and their commands, nothing run

1. ``python -m warpadapt.data export --layout ...`` writes, under ``--data`` (default
   /tmp/warpadapt_real_layout, not committed), ``cityscapes/`` (synthetic_clear2fog's clear source domain,
   1024 x 2048), ``acdc/`` (its fog target, ACDC's 1080 x 1920, condition fog) and ``bdd100k/``
   (synthetic_day2night's daytime source and night target, 720 x 1280, one ``det_<split>.json``):
   ``--train-images`` per domain for training, ``--val-images`` for validation. An export already there
   (``export.json`` naming the same sizes and counts) is reused.
2. Each run is the recipe's command as a user types it, the real-data config UNCHANGED except
   ``data.root``, ``out_dir``, ``threads=1``, ``train.iters=--iters``, ``data.workers=0`` (the 2-core box:
   no loader processes; data loading is inside s/iter, and also timed alone), ``model.pretrained_file=null``
   (random init: no weights file here), ``eval.max_images=--eval-images`` (and mic's ``eval.pictures=0``),
   ``train.log_every=1``, ``overwrite=true``; the ``..._adapt`` run adds ``train.burn_in=0`` so that every
   iteration adapts (teacher + target forwards), the plain run keeps the config's burn-in (source only).
   The 2PCNet runs get at most 2 iterations (one takes over 3 minutes on one thread); ``..._batch3`` runs
   ``bdd100k_day2night`` at ``train.batch_size=3`` (its batch 6 passes this box's memory, see --max-memory-gb).
3. One JSON per run in ``--results`` (default results/real_layout/): s/iter and CPU s/iter, peak memory
   (``final.json``: the peak resident set on the CPU, the allocator's peak on a GPU), the process's wall
   time, the data-loading time per iteration measured alone, the image sizes (on disk, after the config's
   resize, the crop), the exact command, the git commit (and whether the tree had uncommitted changes).
   A run whose JSON exists is skipped (delete it to measure again); one that failed leaves
   ``<run>.failed.log`` (its command, why, its output) and is skipped too unless ``--retry-failed``. A run
   whose resident set passes ``--max-memory-gb`` (default: the machine's RAM less 4 GiB) is stopped (a run
   too big for the box fails alone instead of waking the kernel's OOM killer).
4. ``--flops``: the training FLOPs of one iteration of each run (torch's FlopCounterMode over forwards of
   the config's model, one image per kind of pass, x 3 for the passes with a backward, times the passes of
   an iteration: :func:`flops`), added to its JSON: the base of docs' GPU-time ESTIMATE (FLOPs / an assumed
   sustained rate).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: the exports: (layout, pair, domain); sizes from warpadapt.data.__main__.REAL_SIZES
EXPORTS = (("cityscapes", "synthetic_clear2fog", "source"), ("acdc", "synthetic_clear2fog", "target"),
           ("bdd100k", "synthetic_day2night", "source"), ("bdd100k", "synthetic_day2night", "target"))

#: run name -> (recipe, config, dataset folder under --data given as data.root ("" = --data), extra overrides,
#: iterations at most: the 2PCNet ResNet-50 runs take over 3 minutes an iteration on one thread, they get 2)
RUNS = {
    "mic_cityscapes2acdc_paper": ("mic", "cityscapes2acdc_paper", "", [], None),
    "twopcnet_bdd100k_day2night_paper": ("twopcnet", "bdd100k_day2night_paper", "bdd100k", [], 2),
    "twopcnet_bdd100k_day2night_paper_adapt": ("twopcnet", "bdd100k_day2night_paper", "bdd100k",
                                               ["train.burn_in=0"], 2),
    "mic_cityscapes2acdc_fog": ("mic", "cityscapes2acdc_fog", "", [], None),
    "twopcnet_bdd100k_day2night": ("twopcnet", "bdd100k_day2night", "bdd100k", [], 2),
    "twopcnet_bdd100k_day2night_adapt": ("twopcnet", "bdd100k_day2night", "bdd100k", ["train.burn_in=0"], 2),
    # bdd100k_day2night's batch 6 with trainable BatchNorm passes the 2-core box's 19.5 GiB of host memory (the
    # two runs above are stopped by --max-memory-gb there): half the batch, to have its s/iter and memory
    "twopcnet_bdd100k_day2night_batch3": ("twopcnet", "bdd100k_day2night", "bdd100k", ["train.batch_size=3"], 2),
    "twopcnet_bdd100k_day2night_adapt_batch3": ("twopcnet", "bdd100k_day2night", "bdd100k",
                                                ["train.burn_in=0", "train.batch_size=3"], 2),
}


def git_state() -> dict:
    def git(*args):
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "modified": status.splitlines() if status else []}


def export_all(data: Path, n_train: int, n_val: int) -> dict:
    """The exports of EXPORTS under ``data`` (reused if ``export.json`` says the same sizes and counts)."""
    from warpadapt.data.__main__ import REAL_SIZES
    want = {"sizes": {k: list(v) for k, v in REAL_SIZES.items()}, "train": n_train, "val": n_val,
            "exports": [list(e) for e in EXPORTS]}
    marker = data / "export.json"
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in want} == want:
        print(f"export: reusing {data}", flush=True)
        return json.loads(marker.read_text())
    tic = time.perf_counter()
    for layout, pair, domain in EXPORTS:
        for split, n in (("train", n_train), ("val", n_val)):
            subprocess.run([PY, "-m", "warpadapt.data", "export", "--pair", pair, "--domain", domain, "--layout",
                            layout, "--split", split, "--n", str(n), "--out", str(data)], check=True, cwd=ROOT)
    info = {**want, "seconds": time.perf_counter() - tic}
    marker.write_text(json.dumps(info, indent=1))
    return info


def iterations(name: str, a) -> int:
    cap = RUNS[name][4]
    return min(a.iters, cap) if cap else a.iters


def command(name: str, data: Path, a) -> list[str]:
    recipe, config, sub, extra, _ = RUNS[name]
    quick = ["eval.pictures=0"] if recipe == "mic" else []
    return [PY, f"recipes/{recipe}.py", "--config", config, f"data.root={data / sub if sub else data}",
            f"out_dir={data / 'runs' / name}", "threads=1", f"train.iters={iterations(name, a)}", "data.workers=0",
            "model.pretrained_file=null", f"eval.max_images={a.eval_images}", *quick, "train.log_every=1",
            "overwrite=true", *extra]


def _cfg(argv: list[str]):
    from warpadapt.uda.config import load_config
    recipe = Path(argv[1]).stem
    return load_config(ROOT / argv[1], argv[2:], default="synthetic_clear2fog" if recipe == "mic" else
                       "synthetic_day2night")


def sizes_and_data_time(argv: list[str]) -> dict:
    """Image sizes (on disk, as the model sees them) and the seconds to load one iteration's images alone."""
    import torch
    from omegaconf import OmegaConf

    from warpadapt.uda.build import detection_datasets, segmentation_datasets
    torch.set_num_threads(1)
    cfg = _cfg(argv)
    bs = cfg.train.batch_size
    if Path(argv[1]).stem == "mic":
        sets = segmentation_datasets(cfg)
        src, tgt = sets[0], sets[1]
        out = {"disk": {d: list(s.dataset[0]["image"].shape[-2:]) for d, s in (("source", src), ("target", tgt))},
               "resized": {d: list(s.whole(0)["image"].shape[-2:]) for d, s in (("source", src), ("target", tgt))},
               "crop": OmegaConf.to_container(cfg.data.crop_size)}
        tic = time.perf_counter()
        for i in range(bs):
            src[i], tgt[i]  # noqa: B018  (read, resize, crop: what the loader does per draw, uncached)
        out["data_seconds_per_iter"] = time.perf_counter() - tic
        return out
    sets = detection_datasets(cfg)
    tic = time.perf_counter()
    items = [sets[k][i % len(sets[k])] for k in (0, 1) for i in range(bs)]
    t = time.perf_counter() - tic
    h, w = items[0]["image"].shape[-2:]
    scale = min(cfg.data.image_size[0] / min(h, w), cfg.data.image_size[1] / max(h, w))  # torchvision's resize
    return {"disk": {"source": [h, w], "target": list(items[-1]["image"].shape[-2:])},
            "resized": [round(h * scale), round(w * scale)], "data_seconds_per_iter": t}


def flops(argv: list[str]) -> dict:
    """Training FLOPs of one iteration: torch's FlopCounterMode (matmuls, convolutions) over FORWARD passes of
    one image of the config's model at the run's size, times 3 for a pass with a backward (the backward of a
    matmul or convolution is two of its forwards: the input and the weight gradient). The backward is not
    counted directly: torch 2.14's counter overcounts the backward of grouped convolutions by about the
    group count (a depthwise 3 x 3 over 64 channels: 77 MFLOPs counted for 2.4 done), and pvt_v2 / MiT
    have one in every block.

    mic: every student pass (source, ClassMix, MIC masked) is ``train.batch_size`` crops with a backward,
    the teacher one forward of the target crops; 2PCNet: the source images and their NightAug copies
    through the student with a backward (burn-in), plus when adapting the teacher's detection forward of the
    target images and the student's target pass with a backward (the re-scoring of a few proposals is not
    counted).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from warpadapt.uda.build import (detection_datasets, detector_from_config, segmentation_datasets,
                                     segmenter_from_config, warp_from_config)
    torch.set_num_threads(1)
    cfg = _cfg(argv)
    bs = cfg.train.batch_size
    torch.manual_seed(0)

    @torch.no_grad()
    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    if Path(argv[1]).stem == "mic":
        item = segmentation_datasets(cfg)[0][0]  # one training crop
        net = segmenter_from_config(cfg, warp_from_config(cfg)).train()
        train_f = count(lambda: net(item["image"][None], boxes=[item["boxes"]]))  # the warped source forward
        teacher_f = count(lambda: net(item["image"][None]))
        passes = (2 if cfg.uda.classmix else 1) + bool(cfg.uda.mic)
        total = bs * (passes * 3 * train_f + teacher_f)
        return {"per_image_train_forward": train_f, "per_image_teacher_forward": teacher_f,
                "student_passes_with_backward": passes, "batch_size": bs, "train_flops_per_iter": total}
    sets = detection_datasets(cfg)
    net = detector_from_config(cfg, len(sets[4]) + 1, warp_from_config(cfg)).train()
    item = next(sets[0][i] for i in range(len(sets[0])) if len(sets[0][i]["boxes"]))
    target = {"boxes": item["boxes"], "labels": item["labels"]}
    train_f = count(lambda: net([item["image"]], [target], warp=True))  # the burn-in source forward: warped
    net.eval()
    detect_f = count(lambda: net.detect([sets[1][0]["image"]]))
    copies = 2 if cfg.uda.nightaug else 1
    burn_in = bs * copies * 3 * train_f
    adapt = burn_in + bs * (detect_f + 3 * train_f)
    return {"per_image_train_forward": train_f, "per_image_teacher_detect": detect_f, "batch_size": bs,
            "source_copies": copies, "train_flops_per_iter_burn_in": burn_in, "train_flops_per_iter_adapt": adapt}


def resident_gb(pid: int) -> float:
    """Resident set of process ``pid`` in GiB (Linux /proc; 0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return kb / 2**20
    except (OSError, StopIteration, ValueError):
        return 0.0


def watch_memory(proc: subprocess.Popen, limit_gb: float) -> bool:
    """Wait for ``proc``; kill it (this process's own child, by its id) if its resident set passes ``limit_gb``,
    so that a run too big for the box fails alone instead of calling the kernel's OOM killer on its
    neighbours. Returns True when it had to kill."""
    while proc.poll() is None:
        if limit_gb and resident_gb(proc.pid) > limit_gb:
            proc.kill()
            proc.wait()
            return True
        time.sleep(1.0)
    return False


def run(name: str, data: Path, results: Path, a) -> dict | None:
    path = results / f"{name}.json"
    if path.is_file() and not a.flops:
        print(f"{name}: {path} exists, skipped", flush=True)
        return json.loads(path.read_text())
    failed = results / f"{name}.failed.log"
    if failed.is_file() and not a.retry_failed:
        print(f"{name}: failed before ({failed}), skipped (--retry-failed runs it again)", flush=True)
        return None
    argv = command(name, data, a)
    if path.is_file():  # --flops on a finished run: add the count
        rec = json.loads(path.read_text())
        if "flops" not in rec:
            rec["flops"] = flops(rec["argv"])
            path.write_text(json.dumps(rec, indent=1))
        return rec
    shown = " ".join(str(x) for x in argv).replace(PY, "python")
    print(f"{name}: {shown}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out_dir = data / "runs" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "stdout_stderr.log"
    tic = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        killed = watch_memory(proc, a.max_memory_gb)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        why = f"killed at {a.max_memory_gb} GiB resident (--max-memory-gb)" if killed else f"exit {proc.returncode}"
        (results / f"{name}.failed.log").write_text(f"{shown}\n{why}\n----\n" + log.read_text()[-20000:])
        print(f"{name}: FAILED ({why}), log in {results / (name + '.failed.log')}", flush=True)
        return None
    final = json.loads((out_dir / "final.json").read_text())
    steps = [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
             if r.get("kind") == "train"] if (out_dir / "metrics.jsonl").is_file() else []
    rec = {"run": name, "recipe": RUNS[name][0], "config": RUNS[name][1], "iters": iterations(name, a),
           "seconds_per_iter": final["seconds_per_iter"], "cpu_seconds_per_iter": final.get("cpu_seconds_per_iter"),
           "peak_memory_mb": final["peak_memory_mb"], "eval_seconds": final.get("eval_seconds"),
           "process_wall_seconds": wall, "eval_images": a.eval_images,
           "metrics": {k: v for k, v in final.items() if k.endswith(("miou", "map50"))},
           # the recipe's per-step log: timing fields only (twopcnet's seconds_per_iter is a running mean)
           "steps": [{k: r[k] for k in ("step", "seconds_per_iter", "data_seconds", "images_per_s", "peak_memory_mb")
                      if k in r} for r in steps],
           "command": shown, "argv": [str(x) for x in argv], "threads": 1,
           "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
           "git": git_state(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(json.dumps(rec, indent=1))  # first what the (long) run measured, then the extras
    rec["images"] = sizes_and_data_time(argv)
    if a.flops:
        rec["flops"] = flops(rec["argv"])
    path.write_text(json.dumps(rec, indent=1))
    print(f"{name}: {rec['seconds_per_iter']:.1f} s/iter, peak {rec['peak_memory_mb']:.0f} MiB, "
          f"process {wall:.0f} s -> {path}", flush=True)
    return rec


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/warpadapt_real_layout", help="export root (not committed)")
    ap.add_argument("--results", default=str(ROOT / "results" / "real_layout"))
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--iters", type=int, default=3, help="training iterations per run")
    ap.add_argument("--eval-images", type=int, default=2, help="eval.max_images (per domain)")
    ap.add_argument("--train-images", type=int, default=4, help="exported training images per domain")
    ap.add_argument("--val-images", type=int, default=2, help="exported validation images per domain")
    ap.add_argument("--flops", action="store_true", help="also count the training FLOPs of an iteration")
    total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ap.add_argument("--max-memory-gb", type=float, default=round(max(1.0, total_gb - 4), 1),
                    help="kill a run whose resident set passes this (default: the machine's RAM - 4 GiB; 0: off)")
    ap.add_argument("--retry-failed", action="store_true", help="run again the runs that left a .failed.log")
    ap.add_argument("--list", action="store_true", help="print the runs' commands and stop")
    a = ap.parse_args(argv)
    if min(a.iters, a.eval_images, a.train_images, a.val_images) < 1:
        ap.error("--iters, --eval-images, --train-images and --val-images must be >= 1")
    data, results = Path(a.data).resolve(), Path(a.results)
    if a.list:
        for name in a.runs:
            print(f"{name}: {' '.join(command(name, data, a)).replace(PY, 'python')}")
        return {}
    data.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    export_all(data, a.train_images, a.val_images)
    return {name: run(name, data, results, a) for name in a.runs}


if __name__ == "__main__":
    main()
