"""What both recipes do around their loop: the checks every recipe shares, the static prior, and the run
state that makes a stopped run resume where it stopped.

:class:`RunState` saves and restores, in one atomic file (``out_dir/last.pt``): every object with a
``state_dict`` (models, EMA teacher, optimisers, schedulers, a gradient scaler), every named
``torch.Generator``, the step, the config, and every rank's global RNG state. One world-size policy:

- resumed with the number of processes that wrote it: each rank gets back its own RNG states (and its
  own buffers: BatchNorm running statistics are rank-local under ``wrap_ddp``), so the run continues
  bit for bit as if it had never stopped;
- resumed with another number: weights, optimiser, schedule and step are restored, and every random
  stream is re-seeded from (seed, step, rank) (one printed line says so): the run goes on correctly
  but is no longer bit-identical to an uninterrupted one (the data shards differ anyway).
"""
from __future__ import annotations

import json
import math
import platform
from contextlib import nullcontext
import random
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..modules import GUIDANCES
from ..saliency import fit_static_prior, load_prior, save_prior
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import check_choice, check_range
from .dist import DistInfo, all_gather_objects, barrier, setup_distributed

__all__ = ["MixedPrecision", "RunState", "StopSignal", "peak_memory_mb", "check_common", "log_values", "run_info",
           "start_run", "static_prior", "scaled_lr", "set_norm", "throughput_switches", "compile_backbone",
           "WARP_SCHEDULES", "warp_amplitude"]

#: ``warp.schedule``: how the warp's amplitude goes over the iterations that warp.
WARP_SCHEDULES = ("constant", "linear_decay", "cosine_decay")


def warp_amplitude(schedule: str, step: int, horizon: int) -> float:
    """The warp's amplitude at ``step`` of the ``horizon`` iterations that warp (``warp.schedule``):
    ``constant`` 1; ``linear_decay`` 1 - t; ``cosine_decay`` (1 + cos(pi t)) / 2, with t = step / horizon
    clipped to [0, 1], so a decaying warp reaches the identity at the horizon and the backbone ends on the
    scale it sees at test time. A function of the step only: a resumed run follows the same curve.

    >>> [warp_amplitude("linear_decay", s, 4) for s in (0, 1, 4, 9)]
    [1.0, 0.75, 0.0, 0.0]
    >>> round(warp_amplitude("cosine_decay", 1, 4), 4), warp_amplitude("constant", 3, 4)
    (0.8536, 1.0)
    """
    if schedule not in WARP_SCHEDULES:
        raise ValueError(f"config: warp.schedule: expected one of {WARP_SCHEDULES}, got {schedule!r}")
    t = min(max(step / max(horizon, 1), 0.0), 1.0)
    if schedule == "linear_decay":
        return 1.0 - t
    if schedule == "cosine_decay":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def start_run(cfg: DictConfig) -> tuple[DistInfo, Path, bool]:
    """Set a run up: torchrun's process group and device, CPU threads, the run folder.

    Rank 0 decides whether the run resumes (``resume=true`` and ``out_dir/last.pt`` present), refuses an
    ``out_dir`` that already holds a run unless ``resume=true`` or ``overwrite=true``
    (:func:`~warpadapt.uda.cli.check_out_dir`), writes the resolved ``config.yaml``, and tells every rank
    (an error there is raised on every rank, so no rank waits for the others forever).

    Returns:
        ``(info, out_dir, resuming)``.
    """
    from .cli import check_out_dir
    from .config import save_config

    info = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    decision: tuple = (True, False)
    if info.is_main:
        try:
            decision = (True, check_out_dir(out, resume=cfg.resume, overwrite=cfg.overwrite))
            save_config(cfg, out)
            (out / "run_info.json").write_text(json.dumps(run_info(info), indent=2) + "\n")
        except (ValueError, FileExistsError, OSError) as e:
            decision = (False, e)
    ok, value = all_gather_objects(decision)[0]
    if not ok:
        raise value
    return info, out, bool(value)


def check_common(cfg: DictConfig) -> None:
    """The checks of the keys every recipe has (each error names the key; the warp's own options are
    checked by :class:`~warpadapt.SaliencyWarp` when the recipe builds it).

    >>> cfg = OmegaConf.create({"threads": 0, "train": {"iters": 0}})
    >>> check_common(cfg)
    Traceback (most recent call last):
    ...
    ValueError: config: train.iters: expected an int >= 1, got 0
    """
    for key in ("train.iters", "train.batch_size", "train.log_every", "eval.max_images", "eval.batch_size",
                "data.train_images", "data.val_images", "warp.prior_images"):
        if OmegaConf.select(cfg, key) is not None or key == "train.iters":
            check_range(cfg, key, 1, integer=True)
    for key in ("train.warmup", "train.checkpoint_every", "eval.every", "threads", "data.workers"):
        if OmegaConf.select(cfg, key) is not None:
            check_range(cfg, key, 0, integer=True)
    check_range(cfg, "train.seed", None, integer=True)
    check_range(cfg, "train.lr", 1e-12)
    check_choice(cfg, "eval.target_split", ("val", "test"))
    check_choice(cfg, "eval.model", ("auto", "student", "teacher"))
    if cfg.eval.model == "teacher" and not cfg.uda.enabled:
        raise ValueError("config: eval.model: teacher needs uda.enabled=true (source-only training has no teacher)")
    check_choice(cfg, "warp.guidance", GUIDANCES)
    if OmegaConf.select(cfg, "warp.schedule") is not None:
        check_choice(cfg, "warp.schedule", WARP_SCHEDULES)
    ro = OmegaConf.select(cfg, "warp.resample_only")
    if ro is not None and not isinstance(ro, bool):
        raise ValueError(f"config: warp.resample_only: expected true or false, got {ro!r}")
    vr = OmegaConf.select(cfg, "uda.vertical_rescale")
    if vr is not None and not (len(vr) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vr)
                               and 0 < vr[0] <= vr[1]):
        raise ValueError(f"config: uda.vertical_rescale: expected null or [lo, hi] with 0 < lo <= hi, got {vr}")
    if OmegaConf.select(cfg, "train.amp") is not None:
        check_choice(cfg, "train.amp", MixedPrecision.MODES)
    for key, choices in (("train.lr_base_scale", ("linear", "sqrt")), ("train.matmul_precision", ("highest", "high", "medium"))):
        if OmegaConf.select(cfg, key) is not None:
            check_choice(cfg, key, choices)
    if OmegaConf.select(cfg, "train.lr_base_size") is not None:
        check_range(cfg, "train.lr_base_size", 1, integer=True)
    size = cfg.data.image_size
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in size):
        raise ValueError(f"config: data.image_size: expected [H, W] with ints >= 32, got {list(size)}")


def scaled_lr(cfg: DictConfig, info: DistInfo, batch_size: int | None = None) -> float:
    """The learning rate of this run: ``train.lr`` as given when ``train.lr_base_size`` is null (at any
    number of processes); else ``train.lr`` is the rate for a GLOBAL batch of ``lr_base_size`` images and
    is scaled to this run's ``batch_size x world_size`` by ``train.lr_base_scale`` (timm's
    ``--lr-base-size`` / ``--lr-base-scale``): ``linear`` (Goyal et al. 2017, for SGD) or ``sqrt``
    (the usual rule for Adam-type optimisers).

    >>> cfg = OmegaConf.create({"train": {"lr": 0.04, "batch_size": 6, "lr_base_size": 18, "lr_base_scale": "linear"}})
    >>> round(scaled_lr(cfg, DistInfo(world_size=3)), 6), round(scaled_lr(cfg, DistInfo()), 6)
    (0.04, 0.013333)
    >>> cfg.train.lr_base_size = None; scaled_lr(cfg, DistInfo(world_size=8))
    0.04
    """
    t = cfg.train
    base = OmegaConf.select(cfg, "train.lr_base_size")
    if base is None:
        return float(t.lr)
    global_batch = int(batch_size or t.batch_size) * info.world_size
    ratio = global_batch / int(base)
    return float(t.lr) * (ratio if OmegaConf.select(cfg, "train.lr_base_scale", default="linear") == "linear"
                          else ratio ** 0.5)


def set_norm(model: torch.nn.Module, cfg: DictConfig, info: DistInfo) -> torch.nn.Module:
    """``model.norm``: ``bn`` (as built), ``frozen`` (FrozenBatchNorm2d) or ``sync`` (SyncBatchNorm when the
    run has several processes: one set of batch statistics over the global batch, identical running
    statistics on every rank). PyTorch's SyncBatchNorm has no CPU kernel, so ``sync`` under a CPU
    torchrun is refused here rather than at the first forward. Call it before the optimiser, the
    teacher and the DDP wrapper.

    >>> net = torch.nn.Sequential(torch.nn.BatchNorm2d(2))
    >>> type(set_norm(net, OmegaConf.create({"model": {"norm": "sync"}}), DistInfo())[0]).__name__  # 1 process
    'BatchNorm2d'
    """
    from ..models.detector import convert_norm

    norm = OmegaConf.select(cfg, "model.norm", default="bn")
    if norm == "sync" and info.enabled and info.device.type != "cuda":
        raise ValueError("config: model.norm: sync needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel); "
                         "use model.norm=bn under a CPU torchrun")
    return convert_norm(model, norm, distributed=info.enabled)


def compile_backbone(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``train.compile``: ``torch.compile`` the timm network inside the model's wrapped backbone, in place
    (``nn.Module.compile``: parameter names and checkpoints unchanged). The warp, the unwarp and the
    heads stay eager (their shapes follow the boxes). Returns ``model``.

    >>> from warpadapt import wrap
    >>> import timm
    >>> net = wrap(timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(3,)))
    >>> compile_backbone(net, backend="eager") is net
    True
    """
    from ..wrap import WarpedBackbone

    found = [m for m in model.modules() if isinstance(m, WarpedBackbone)]
    if not found:
        raise TypeError(f"model: expected a module holding a warpadapt WarpedBackbone, got {type(model).__name__}")
    for wb in found:
        wb.model.compile(backend=backend)
    return model


def throughput_switches(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module:
    """The config's speed switches (all off by default; none changes the method): ``train.cudnn_benchmark``
    (cuDNN picks the fastest convolution per shape), ``train.matmul_precision`` (``highest`` | ``high`` |
    ``medium``: ``torch.set_float32_matmul_precision``, TF32 on Ampere and newer) and ``train.channels_last``
    (the model's weights in NHWC: faster convolutions on tensor cores). Call it before the DDP wrapper and
    the teacher; ``train.compile`` is :func:`compile_backbone`, after the teacher. Returns the model
    (converted in place).

    >>> cfg = OmegaConf.create({"train": {"channels_last": True, "matmul_precision": "highest"}})
    >>> net = throughput_switches(cfg, torch.nn.Conv2d(3, 4, 3))
    >>> net.weight.is_contiguous(memory_format=torch.channels_last)
    True
    """
    if OmegaConf.select(cfg, "train.cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    precision = OmegaConf.select(cfg, "train.matmul_precision")
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
    if OmegaConf.select(cfg, "train.channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def run_info(info: DistInfo | None = None) -> dict:
    """What a run folder records about where it ran (``run_info.json``): the command line, the git commit
    of the code (``None`` outside a checkout), package versions, the device names, the world size and the
    CPU (model, the vector instruction set torch's kernels use, threads). The same code and seed train
    different weights on CPUs whose kernels differ (AVX2 against AVX-512 rounds differently), so a number
    is reproduced to the digit only on a CPU of the same ``capability``.

    >>> sorted(run_info())[:4], run_info()["versions"]["torch"] == torch.__version__
    (['argv', 'cpu', 'cuda', 'devices'], True)
    >>> run_info()["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    True
    """
    import importlib.metadata as md

    info = info or DistInfo()
    root = Path(__file__).resolve().parents[2]
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        commit = {"commit": git.stdout.strip(), "dirty": bool(dirty.stdout.strip())} if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for pkg in ("warpadapt", "torch", "torchvision", "timm", "kornia", "albumentations", "numpy", "omegaconf"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["torch"] = torch.__version__
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"]
    cpu = {"model": _cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads()}
    return {"argv": sys.argv, "git": commit, "host": platform.node(), "python": platform.python_version(),
            "versions": versions, "devices": devices, "cuda": torch.version.cuda if cuda else None,
            "world_size": info.world_size, "cpu": cpu}


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_memory_mb(info: DistInfo | None = None) -> float:
    """Peak memory of this process in MiB: the CUDA allocator's peak on a GPU, else the peak resident set.

    >>> peak_memory_mb() > 0
    True
    """
    info = info or DistInfo()
    if info.device.type == "cuda":
        return torch.cuda.max_memory_allocated(info.device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class MixedPrecision:
    """``train.amp``: ``none`` (float32), ``bf16`` or ``fp16`` autocast of the training forwards, and for
    fp16 a ``GradScaler`` whose gradients are unscaled before clipping. The warp's geometry stays float32
    inside autocast (:func:`warpadapt.maps.autocast_off`). With ``none`` every call is the plain float32
    one (``loss.backward()``, clipping, ``optimizer.step()``): the same numbers as without this class.
    ``state_dict`` / ``load_state_dict``: the scaler's, for :class:`RunState`.

    >>> net = torch.nn.Linear(4, 1); opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> amp = MixedPrecision("bf16", "cpu")
    >>> with amp.autocast():
    ...     out = net(torch.rand(2, 4))
    >>> out.dtype
    torch.bfloat16
    >>> amp.backward(out.float().sum()); amp.step(opt, list(net.parameters()), clip=1.0)
    """

    MODES = ("none", "bf16", "fp16")

    def __init__(self, mode: str, device) -> None:
        if mode not in self.MODES:
            raise ValueError(f"config: train.amp: expected one of {self.MODES}, got {mode!r}")
        self.mode, self.device = mode, torch.device(device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=mode == "fp16")

    def autocast(self):
        """The autocast region of a training forward (nothing for ``none``)."""
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer, params=(), clip: float = 0.0) -> None:
        """Unscale (fp16), clip the gradient norm to ``clip`` (0: no clipping), step, update the scale."""
        if clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)


def log_values(values: dict, info: DistInfo, step: int) -> dict[str, float]:
    """The scalars a recipe logs, as floats averaged over the ranks, with ONE host sync per call.

    The recipe keeps its losses as tensors during the step and calls this at ``train.log_every`` steps
    only: the values are stacked, all-reduced (one collective) and read back once. A non-finite value
    on ANY rank raises ``FloatingPointError`` on every rank with the same message, so no rank waits
    for the others in a collective that never comes.

    >>> log_values({"loss": torch.tensor(0.5), "q": 0.25}, DistInfo(), 10)
    {'loss': 0.5, 'q': 0.25}
    >>> log_values({"loss": torch.tensor(float("nan"))}, DistInfo(), 10)
    Traceback (most recent call last):
    ...
    FloatingPointError: loss is nan at step 10 (on some rank): lower train.lr, or look at the data of that step
    """
    names = list(values)
    if not names:
        return {}
    flat = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=info.device).detach().reshape(())
                        for v in values.values()])
    if info.enabled:
        torch.distributed.all_reduce(flat)
        flat = flat / info.world_size
    out = dict(zip(names, flat.tolist()))  # the one host sync
    bad = [k for k, v in out.items() if v != v or v in (float("inf"), float("-inf"))]
    if bad:
        raise FloatingPointError(f"{bad[0]} is {out[bad[0]]} at step {step} (on some rank): lower train.lr, "
                                 "or look at the data of that step")
    return out


class StopSignal:
    """SIGTERM / SIGUSR1 (what clusters send before they kill a job) -> "save a checkpoint and exit 0".

    ``StopSignal()`` installs the handlers (main thread only; the previous handlers come back with
    :meth:`close`). :meth:`requested` says whether any rank got a signal: one small all-reduce, so call it
    at logging / checkpoint steps, and every rank then stops at the same step.

    >>> stop = StopSignal(); stop.requested(DistInfo())
    False
    >>> import os; os.kill(os.getpid(), signal.SIGUSR1); stop.requested(DistInfo())
    True
    >>> stop.close()
    """

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = {}
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler (the run stops only when killed)
                pass

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def requested(self, info: DistInfo) -> bool:
        if not info.enabled:  # one process: no collective, no device round trip
            return self.received is not None
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=info.device)
        if info.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def static_prior(cfg: DictConfig, source_train, out_dir: str | Path, info: DistInfo):
    """FOVEA's static prior for ``warp.guidance=static`` (None for any other guidance): the mean
    instance saliency of the boxes of the first ``warp.prior_images`` source training items. Rank 0
    fits it once and caches it in ``out_dir/static_prior.npz``; every rank then reads that file, so
    all ranks warp with the same map.

    >>> import tempfile, torch
    >>> cfg = OmegaConf.create({"warp": {"guidance": "static", "prior_images": 2, "grid_size": [5, 9],
    ...                                  "bandwidth_scale": 64.0, "amplitude_scale": 1.0}})
    >>> items = [{"image": torch.zeros(3, 32, 64), "boxes": torch.tensor([[8., 8., 16., 16.]])}] * 2
    >>> static_prior(cfg, items, tempfile.mkdtemp(), DistInfo()).shape
    torch.Size([5, 9])
    """
    w = cfg.warp
    if w.guidance != "static":
        return None
    path = Path(out_dir) / "static_prior.npz"
    if info.is_main and not path.is_file():
        n = min(int(w.prior_images), len(source_train))
        items = [source_train[i] for i in range(n)]
        prior = fit_static_prior([it["boxes"] for it in items], [tuple(it["image"].shape[-2:]) for it in items],
                                 tuple(w.grid_size), w.bandwidth_scale, w.amplitude_scale)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_prior(path, prior, images=n)
    barrier()
    return load_prior(path)


def _reseed(seed: int, step: int, rank: int, generators: dict) -> None:
    base = (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63)
    random.seed(base)
    np.random.seed(base % (2**32))
    torch.manual_seed(base)
    for i, g in enumerate(generators.values()):
        g.manual_seed(base + 1 + i)


class RunState:
    """The resumable state of a run: ``save(step)`` on every rank, ``load()`` -> the step to start at.

    Args:
        path: the checkpoint file (``out_dir/last.pt``).
        info: this process's :class:`~warpadapt.uda.dist.DistInfo`.
        cfg: the run's config (saved with the state; ``train.seed`` re-seeds on a world-size change).
        generators: named ``torch.Generator`` objects of this rank (NightAug, ClassMix, masks ...).
        **objects: named objects with ``state_dict`` / ``load_state_dict`` (model, teacher, optimizer ...).

    Every rank calls :meth:`save` (the RNG states are gathered from all of them); rank 0 writes the file
    atomically; every rank returns after it exists.

    Example:
        >>> import tempfile
        >>> net, g = torch.nn.Linear(2, 2), torch.Generator().manual_seed(1)
        >>> state = RunState(Path(tempfile.mkdtemp()) / "last.pt", DistInfo(), OmegaConf.create({"train": {"seed": 0}}),
        ...                  generators={"mix": g}, model=net)
        >>> state.save(7); a = torch.rand(1, generator=g)
        >>> _ = net.weight.data.zero_(); state.load(), bool(torch.rand(1, generator=g) == a), bool(net.weight.any())
        (7, True, True)
    """

    def __init__(self, path: str | Path, info: DistInfo, cfg: DictConfig, *, generators: dict | None = None,
                 **objects: Any) -> None:
        self.path, self.info, self.cfg = Path(path), info, cfg
        self.generators = dict(generators or {})
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"{name}: expected an object with state_dict() / load_state_dict(), got {type(obj).__name__}")
        self.objects = objects
        self.checkpoint_every = int(OmegaConf.select(cfg, "train.checkpoint_every", default=0) or 0)
        self.stop = StopSignal()  # the handlers are put back when this state goes away (or after a stop)
        weakref.finalize(self, self.stop.close)
        self.stopped: int | None = None  # the step a signal stopped the run at
        self._saved: int | None = None

    def after_step(self, step: int, check_signal: bool) -> bool:
        """Preemption, called after every step: save every ``train.checkpoint_every`` steps (independent of
        evaluation), and when ``check_signal`` (the recipe's logging steps: the check is one collective)
        and any rank got SIGTERM / SIGUSR1, save and return True: the recipe stops; ``resume=true``
        continues exactly from there."""
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step)
        if check_signal and self.stop.requested(self.info):
            if self._saved != step:
                self.save(step)
            self.stopped = step
            self.stop.close()
            if self.info.is_main:
                print(f"stopped by a signal after step {step}: checkpoint {self.path}; continue with resume=true")
            return True
        return False

    def _own_buffers(self) -> dict:
        """Under torchrun: this rank's buffers of every module (BatchNorm running statistics follow each
        rank's own batches, ``wrap_ddp``), so a resumed run gives every rank its own back."""
        if not self.info.enabled:
            return {}
        return {name: {k: b.detach().to("cpu", copy=True) for k, b in obj.named_buffers()}
                for name, obj in self.objects.items() if isinstance(obj, torch.nn.Module)}

    def save(self, step: int) -> None:
        rngs = all_gather_objects({"global": rng_state(), "buffers": self._own_buffers(),
                                   "generators": {k: g.get_state() for k, g in self.generators.items()}})
        if self.info.is_main:
            state = {name: obj.state_dict() for name, obj in self.objects.items()}
            state.update(step=int(step), world_size=self.info.world_size, rng=rngs,
                         config=OmegaConf.to_container(self.cfg, resolve=True))
            save_checkpoint(self.path, state)
        barrier()
        self._saved = int(step)

    def load(self) -> int:
        """Restore everything from :attr:`path`; returns the step it was saved at."""
        state = load_checkpoint(self.path)
        missing = [k for k in ("step", "rng", *self.objects) if k not in state]
        if missing:
            raise ValueError(f"resume: {self.path} has no {missing} (written by another version or recipe?); "
                             "start a new out_dir or pass overwrite=true")
        for name, obj in self.objects.items():
            obj.load_state_dict(state[name])
        step, rngs = int(state["step"]), state["rng"]
        if len(rngs) == self.info.world_size:
            mine = rngs[self.info.rank]
            set_rng_state(mine["global"])
            for name, g in self.generators.items():
                g.set_state(mine["generators"][name])
            with torch.no_grad():  # this rank's own buffers (the state dicts above hold rank 0's)
                for name, bufs in mine.get("buffers", {}).items():
                    own = dict(self.objects[name].named_buffers())
                    for k, b in bufs.items():
                        own[k].copy_(b)
        else:
            if self.info.is_main:
                print(f"resume: {self.path} was written by {len(rngs)} processes, this run has {self.info.world_size}: "
                      "weights, optimiser, schedule and step restored; random streams re-seeded from (seed, step, rank), "
                      "so the run is not bit-identical to an uninterrupted one")
            _reseed(self.cfg.train.seed, step, self.info.rank, self.generators)
        return step
