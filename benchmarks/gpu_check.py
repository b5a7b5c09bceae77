"""One command for a person with a GPU: do the recipes run right on this device, how fast, with how many syncs?

    python benchmarks/gpu_check.py                    # the device there is (CUDA if available)
    python benchmarks/gpu_check.py --device cpu --tiny   # what the test suite runs (seconds)
    python benchmarks/gpu_check.py --device cpu --tiny --sites --recipes mic   # where each sync comes from

For each recipe (``recipes/twopcnet.py``, ``recipes/mic.py``, their default synthetic pairs) and each
precision (``train.amp`` none and bf16, and fp16 on CUDA) it trains a few dozen iterations through the
recipe's own ``main`` on ``--device`` and prints: seconds per iteration, images per second, peak memory,
and host-device syncs per training step. Syncs are counted by patching the Python entry points that
read a tensor on the host (``Tensor.item``, ``tolist``, ``__bool__``, ``__float__``, ``__int__``,
``nonzero``; on CUDA only those of CUDA tensors, on the CPU all but the optimisers' CPU step counters) during two runs of N and 2N iterations: (count(2N) - count(N)) / N is the per-step number,
set-up and evaluation cancelling out. On CUDA the runs are also made under
``torch.cuda.set_sync_debug_mode("warn")`` (PyTorch then warns at every sync it sees, including ones
the Python patch cannot). Then the wrapped / bare train-step ratio (forward + backward, best of 5,
interleaved) of ResNet-50 and pvt_v2_b5 at 512 x 1024 (``--tiny``: resnet18 and pvt_v2_b0 at 64 x 128).
A 2-process torchrun of each recipe runs when 2+ GPUs exist. Nothing downloads (random init).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = {"twopcnet": ["data.image_size=[32,64]", "data.train_images=8", "data.val_images=2", "eval.max_images=1",
                     "train.batch_size=2", "train.burn_in=1", "model.rpn_batch_size=16", "model.roi_batch_size=16"],
        "mic": ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=1",
                "train.batch_size=2", "model.embed_dim=16", "eval.pictures=0"]}
FULL = {"twopcnet": ["eval.max_images=2", "train.burn_in=5"], "mic": ["eval.max_images=2", "eval.pictures=0"]}
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "nonzero")


@contextlib.contextmanager
def count_syncs(device: str = "cpu"):
    """Count the calls of the Tensor methods that read a value on the host: on CUDA those on CUDA tensors
    (a read of a CPU tensor is no sync); on the CPU every one except the optimisers' own reads of their CPU
    step counters (``torch.optim``: CPU tensors on a GPU run too), i.e. what would sync on a GPU."""
    counts = {"n": 0, "sites": {}}
    saved = {m: getattr(torch.Tensor, m) for m in SYNC_METHODS}
    cuda = str(device).startswith("cuda")

    def counting(fn):
        def wrapper(self, *args, **kwargs):
            if cuda:
                counts["n"] += int(self.is_cuda)
            else:
                frame, depth = sys._getframe(1), 0
                while frame is not None and depth < 4 and "torch/optim" not in frame.f_code.co_filename:
                    frame, depth = frame.f_back, depth + 1
                counts["n"] += int(frame is None or depth == 4)
            if cuda and self.is_cuda or not cuda and (frame is None or depth == 4):
                site = _site(sys._getframe(1))
                counts["sites"][site] = counts["sites"].get(site, 0) + 1
            return fn(self, *args, **kwargs)
        return wrapper

    for m, fn in saved.items():
        setattr(torch.Tensor, m, counting(fn))
    try:
        yield counts
    finally:
        for m, fn in saved.items():
            setattr(torch.Tensor, m, fn)


def _site(frame) -> str:
    """The first caller outside torch: ``file:line (function)`` relative to the checkout."""
    while frame is not None and "/torch/" in frame.f_code.co_filename and "torchvision" not in frame.f_code.co_filename:
        frame = frame.f_back
    if frame is None:
        return "?"
    name = frame.f_code.co_filename
    # a path test, not a string prefix: a venv beside the checkout (``/tmp/ci`` and ``/tmp/ci-venv``) is outside it
    name = str(Path(name).relative_to(ROOT)) if Path(name).is_relative_to(ROOT) else "/".join(Path(name).parts[-2:])
    return f"{name}:{frame.f_lineno} ({frame.f_code.co_name})"


def recipe_main(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_check", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_recipe(name: str, device: str, amp: str, iters: int, tiny: bool, out: Path) -> tuple[dict, dict]:
    args = [f"out_dir={out}", "overwrite=true", f"device={device}", f"train.amp={amp}", f"train.iters={iters}",
            "eval.every=0", "train.log_every=1000", *(TINY if tiny else FULL)[name]]
    if name == "mic":
        args.append(f"train.schedule_iters={iters}")
    with count_syncs(device) as counts:
        final = recipe_main(name)(args)
    return final, counts


def step_ratio(arch: str, size, device: str, reps: int = 5) -> float:
    """Wrapped / bare forward + backward time of a features_only timm model (best of ``reps``, interleaved)."""
    import timm

    import warpadapt
    model = timm.create_model(arch, features_only=True, pretrained=False).to(device).train()
    wrapped = warpadapt.wrap(model)
    x = torch.rand(2, 3, *size, device=device)
    h, w = size
    boxes = [torch.tensor([[w * 0.4, h * 0.45, w * 0.45, h * 0.5], [w * 0.1, h * 0.6, w * 0.2, h * 0.75]], device=device)] * 2
    times = {"bare": [], "wrapped": []}
    for i in range(reps + 1):
        for arm, fn in (("bare", lambda: model(x)), ("wrapped", lambda: wrapped(x, boxes))):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            sum(f.float().mean() for f in fn()).backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times[arm].append(time.perf_counter() - t0)
    return min(times["wrapped"]) / min(times["bare"])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and 2 + 4 iterations (the test suite's check)")
    ap.add_argument("--iters", type=int, default=None, help="N (runs of N and 2N iterations; default 20, tiny 2)")
    ap.add_argument("--recipes", nargs="+", default=["twopcnet", "mic"], choices=["twopcnet", "mic"])
    ap.add_argument("--sites", action="store_true", help="also print the syncs per step of each call site")
    a = ap.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    n = a.iters or (2 if a.tiny else 20)
    amps = ("none", "bf16", "fp16") if cuda else ("none", "bf16")
    rows, report = [], {"device": a.device, "torch": torch.__version__,
                        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}
    if cuda:
        torch.cuda.set_sync_debug_mode("warn")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in a.recipes:
            for amp in amps:
                short, c1 = run_recipe(recipe, a.device, amp, n, a.tiny, Path(tmp) / f"{recipe}_{amp}_a")
                long, c2 = run_recipe(recipe, a.device, amp, 2 * n, a.tiny, Path(tmp) / f"{recipe}_{amp}_b")
                batch = 2 * (2 if recipe == "twopcnet" else 1)  # source (+ NightAug copy) and target per step
                row = {"recipe": recipe, "amp": amp, "s_per_iter": long["seconds_per_iter"],
                       "images_per_s": batch / long["seconds_per_iter"], "peak_memory_mb": long.get("peak_memory_mb"),
                       "syncs_per_step": (c2["n"] - c1["n"]) / n}
                sites = {k: (v - c1["sites"].get(k, 0)) / n for k, v in c2["sites"].items()}
                row["sync_sites"] = {k: v for k, v in sorted(sites.items(), key=lambda kv: -kv[1]) if v > 0}
                rows.append(row)
                print(f"{recipe:9s} amp={amp:5s} {row['s_per_iter']:.3f} s/iter  {row['images_per_s']:.1f} images/s  "
                      f"peak {row['peak_memory_mb']:.0f} MiB  {row['syncs_per_step']:.1f} syncs/step", flush=True)
                if a.sites:
                    for site, k in row["sync_sites"].items():
                        print(f"    {k:5.2f} / step  {site}")
        if cuda and torch.cuda.device_count() >= 2:
            for recipe in ("twopcnet", "mic"):
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       str(ROOT / "recipes" / f"{recipe}.py"), f"out_dir={tmp}/ddp_{recipe}", "train.iters=10",
                       "eval.every=0", *(TINY if a.tiny else FULL)[recipe]]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                report[f"torchrun_{recipe}"] = "ok" if proc.returncode == 0 else proc.stderr[-2000:]
                print(f"torchrun 2 GPUs {recipe}: {'ok' if proc.returncode == 0 else 'FAILED'}")
    size = (64, 128) if a.tiny else (512, 1024)
    for arch in (("resnet18", "pvt_v2_b0") if a.tiny else ("resnet50", "pvt_v2_b5")):
        r = step_ratio(arch, size, a.device)
        report[f"ratio_{arch}"] = r
        print(f"wrapped / bare train step, {arch} at {size[0]} x {size[1]}: {r:.3f}")
    report["rows"] = rows
    print(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
