"""The adaptation table on the faithful recipes: every row of the paper's comparison and the controls.

    python benchmarks/uda_table.py --jobs 2        # run what is missing (prints the compute left), then write docs/RESULTS.md
    python benchmarks/uda_table.py --report-only   # only rewrite docs/RESULTS.md and the README headline from results/raw
    python benchmarks/uda_table.py --tables detection --seeds 0   # a part of it
    python benchmarks/uda_table.py --quick --out /tmp/q           # tiny runs (the test suite's check)
    python benchmarks/uda_table.py --jobs 2 --hours 2.5           # a sitting: start only runs that end within 2.5 h

Each run is one recipe command (``recipes/twopcnet.py`` or ``recipes/mic.py``) with ``train.seed=S``,
``threads=1`` and ``eval.target_split=test``: tuning looks only at target ``val`` (the ``fwhm_select``
rows, whose best FWHM of 4 / 8 / 13 on val every Instance-Warp row then uses); every other number is on
the held-out target ``test`` split. The UDA and Instance-Warp rows get seeds 0-4, the others 0-2
(``Row.seeds``; ``--seeds`` narrows). A finished run leaves ``<out>/raw/<run>.json`` (the recipe's
final.json, the exact command, wall time, machine); runs already there are skipped, so the table fills
over several sittings, and the runner prints what is left in core-hours before it starts.

Detection rows that share their first ``train.burn_in`` iterations (``Row.burn_in``: UDA and NightAug-only;
Instance-Warp burn-in-only and always, and the FWHM-selection row of the same FWHM) train them once per seed, in
``<out>/runs/<recipe>__burn_in__<group>__s<seed>``, and resume from a copy of that folder (resume is exact:
tests/test_twopcnet.py; the target split a burn-in was scored on does not reach its weights). The Instance-Warp rows at the
chosen FWHM on seeds 0-2 train exactly what their fwhm_select run trained (``twin``): their test numbers are
that model evaluated on test (the split is read at evaluation only; tests check both train identical weights).
Each such fwhm_select run evaluates its model on test as soon as it ends and keeps that in its record
(``test_eval``, read only by its twin once the FWHM is chosen), so the twins need no ``runs/`` folder.
Rows are compared per seed against their baseline row (same seed = paired): the paired difference, its mean
and a 95 % t interval.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    table: str            # detection | segmentation | intensity | backbones | bn_stats
    name: str             # row id, unique within its table
    label: str            # what the table shows
    recipe: str           # twopcnet | mic
    config: str           # the pair's config name
    overrides: tuple = field(default_factory=tuple)
    baseline: str | None = "uda"   # the row it is paired against (same seed): "name" in this table or "table/name"
    seeds: int = 3                 # seeds 0 .. seeds - 1
    burn_in: str | None = None     # detection: rows with the same group share their burn-in (trained once per seed)
    split: str = "test"            # target split evaluated (val: the FWHM selection only)
    fwhm: bool = False             # an Instance-Warp row: warp.fwhm is the value fwhm_select chose on val
    also: tuple = ()               # further rows of its table it is paired against in the report (same seed)

    @property
    def baseline_key(self) -> tuple[str, str] | None:
        if self.baseline is None:
            return None
        return tuple(self.baseline.split("/")) if "/" in self.baseline else (self.table, self.baseline)


DET, SEG = ("twopcnet", "synthetic_day2night"), ("mic", "synthetic_clear2fog")


#: The row-scale control's range (uda.vertical_rescale), sized to the warp it controls for: at the FWHM chosen
#: on val (4, both pairs) the Instance-Warp changes the row bands by x1.06 / 1.03 / 0.99 / 0.94 (horizon down) and the
#: median box area by x1.10 (``uda_diagnose.py --warps --fwhm 4``, results/diagnose/warps.json); [0.9, 1.1] covers
#: both. (It was [0.7, 1.7] for FWHM 13's x1.7 before any of its runs; a control far stronger than the
#: treatment would answer another question.)
VERTICAL_RESCALE = "[0.9,1.1]"
FWHMS = (4, 8, 13)  # the FWHM selection on target val (the paper's 13 and two weaker warps)


def _rows() -> list[Row]:
    rows = []
    for recipe, config, table in (DET + ("detection",), SEG + ("segmentation",)):
        det = recipe == "twopcnet"
        base_src = ("uda.enabled=false", "uda.nightaug=false") if det else ("uda.enabled=false",)
        rows += [
            Row(table, "source_only", "source only", recipe, config, (*base_src, "warp.guidance=none"), None),
            *([Row(table, "nightaug_only", "NightAug only (2PCNet without its teacher)", recipe, config,
                   ("uda.enabled=false", "warp.guidance=none"), None, burn_in="plain")] if det else []),
            # also against source-only on test (the decision rule itself is on val)
            Row(table, "uda", "UDA (no warp)", recipe, config, ("warp.guidance=none",), None, seeds=5,
                burn_in="plain" if det else None, also=("source_only",)),
            Row(table, "static", "UDA + static prior", recipe, config, ("warp.guidance=static",)),
            Row(table, "geometric", "UDA + geometric prior", recipe, config, ("warp.guidance=geometric",)),
            Row(table, "vertical_rescale", "UDA + random vertical rescale (row-scale control, no warp)", recipe, config,
                ("warp.guidance=none", f"uda.vertical_rescale={VERTICAL_RESCALE}")),
        ]
        inst = "instance_burn_in" if det else "instance"
        if det:
            rows += [Row(table, "instance_burn_in", "UDA + Instance-Warp (burn-in only)", recipe, config,
                         ("warp.guidance=instance", "warp.stage=burn_in"), seeds=5, burn_in="instance", fwhm=True),
                     Row(table, "instance_always", "UDA + Instance-Warp (always)", recipe, config,
                         ("warp.guidance=instance", "warp.stage=always"), seeds=5, burn_in="instance", fwhm=True)]
        else:
            rows.append(Row(table, "instance", "UDA + Instance-Warp", recipe, config, ("warp.guidance=instance",),
                            seeds=5, fwhm=True))
        warp = ("warp.guidance=instance",) + (("warp.stage=burn_in",) if det else ())
        rows += [Row(table, f"schedule_{k}", f"Instance-Warp, amplitude {k.replace('_', ' ')} to 0", recipe, config,
                     (*warp, f"warp.schedule={k}"), inst, fwhm=True) for k in ("linear_decay", "cosine_decay")]
        rows.append(Row(table, "amplitude_range", "Instance-Warp, amplitude ~ U(0, 1) per image", recipe, config,
                        (*warp, "warp.amplitude_range=[0.0,1.0]"), inst, fwhm=True))
        # the interpolation control: Instance-Warp's feature resampling U(W(f(x))) without its geometry
        # (uda_diagnose --round-trip-parts: most of the round trip's change at FWHM 4 is interpolation)
        # paired with UDA (what the interpolation costs) and with the full warp (what the geometry adds to it)
        rows.append(Row(table, "resample_only", "UDA + Instance-Warp's feature resampling only (interpolation "
                        "control, no geometry)", recipe, config, (*warp, "warp.resample_only=true"), fwhm=True,
                        also=(inst,)))
        # the FWHM of every Instance-Warp row, chosen on target VAL: the best mean over seeds 0-2 of these rows
        for f in FWHMS:
            rows.append(Row("fwhm_select", f"{table}_fwhm{f}", f"{table}: Instance-Warp, FWHM {f} (target val)",
                            recipe, config, (*warp, f"warp.fwhm={f}"), None, split="val",
                            burn_in=f"instance_fwhm{f}" if det else None))
    # backbones on the segmentation pair (pvt_v2_b0 is the default: the segmentation table's rows)
    for bb in ("resnet18", "vit_tiny_patch16_224", "convnext_atto"):
        rows += [Row("backbones", f"{bb}_uda", f"{bb}: UDA (no warp)", *SEG, (f"model.backbone={bb}", "warp.guidance=none"), None),
                 Row("backbones", f"{bb}_instance", f"{bb}: + Instance-Warp", *SEG,
                     (f"model.backbone={bb}", "warp.guidance=instance"), f"{bb}_uda", fwhm=True)]
    return rows


ROWS = _rows()
TABLES = tuple(dict.fromkeys(r.table for r in ROWS))
QUICK = {  # tiny runs: they check the pipeline end to end, their numbers mean nothing
    "twopcnet": ("data.image_size=[32,64]", "data.train_images=16", "data.val_images=2", "eval.max_images=2",
                 "eval.every=0", "train.batch_size=2", "train.iters=2", "train.burn_in=1", "train.warmup=1",
                 "model.out_indices=[2,3]", "model.rpn_batch_size=32", "model.roi_batch_size=32",
                 "warp.prior_images=8"),
    "mic": ("data.image_size=[48,96]", "data.train_images=4", "data.val_images=2", "train.batch_size=2",
            "model.embed_dim=16", "eval.max_images=2", "eval.batch_size=2", "eval.pictures=0", "train.iters=2",
            "train.warmup=1", "eval.every=0", "warp.prior_images=4"),
}


# Every run uses one CPU thread, whatever --jobs is: thread count changes float rounding, so the
# numbers of a run do not depend on how many ran beside it. Two 1-thread runs side by side on 2 cores
# train 1.39x faster in total than one 2-thread run (0.435 s/iter each vs 0.303, mic default, measured).
RUN_THREADS = 1


def run_id(row: Row, seed: int) -> str:
    return f"{row.table}__{row.name}__s{seed}"


def _metric(recipe: str) -> str:
    return "target_map50" if recipe == "twopcnet" else "target_miou"


def _fwhm_of(row: Row) -> int:
    """The FWHM a ``fwhm_select`` row tries (its name ends in ``fwhm<F>``)."""
    return int(row.name.rsplit("fwhm", 1)[1])


def fwhm_choice(out: Path, recipe: str) -> int | None:
    """The FWHM the Instance-Warp rows of ``recipe`` use: the best mean target-VAL metric over the seeds of
    the ``fwhm_select`` rows (ties: the larger, the paper's side); None until every one of those runs is done."""
    means = {}
    for row in (r for r in ROWS if r.table == "fwhm_select" and r.recipe == recipe):
        vals = []
        for s in range(row.seeds):
            raw = out / "raw" / f"{run_id(row, s)}.json"
            if not raw.exists():
                return None
            vals.append(json.loads(raw.read_text())["final"][_metric(recipe)])
        means[_fwhm_of(row)] = statistics.mean(vals)
    return max(sorted(means, reverse=True), key=lambda f: means[f]) if means else None  # max keeps the first


def resolve(row: Row, fwhm: int | None) -> tuple[tuple, str | None]:
    """(overrides, burn-in group) of a row once the FWHM is known (Instance-Warp rows: ``warp.fwhm``, and the
    burn-in they share is that of the selection row with the same FWHM)."""
    if not row.fwhm:
        return row.overrides, row.burn_in
    if fwhm is None:
        raise ValueError(f"{row.table}/{row.name}: the FWHM selection on val is not finished")
    return (*row.overrides, f"warp.fwhm={fwhm}"), (f"instance_fwhm{fwhm}" if row.burn_in else None)


def command(row: Row, seed: int, run_dir: Path, quick: bool, overrides: tuple | None = None) -> list[str]:
    cmd = [sys.executable, str(ROOT / "recipes" / f"{row.recipe}.py"), "--config", row.config,
           *(row.overrides if overrides is None else overrides), f"train.seed={seed}", f"eval.target_split={row.split}",
           f"threads={RUN_THREADS}", f"out_dir={run_dir}"]
    return cmd + list(QUICK[row.recipe]) if quick else cmd


def _relative(text: str) -> str:
    """Paths inside the repository written relative to it (commands read the same on any machine)."""
    return text.replace(str(ROOT) + os.sep, "")


def _say(msg: str) -> None:
    """One write per line: jobs running side by side do not interleave their messages."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


_LOCKS: dict = {}
_LOCKS_GUARD = threading.Lock()


def _burn_in_path(row: Row, group: str, seed: int, out: Path) -> Path:
    # keyed by recipe, not table: the fwhm_select rows' burn-ins are the Instance-Warp rows' at that FWHM
    return out / "runs" / f"{row.recipe}__burn_in__{group}__s{seed}"


def _burn_in_folder(row: Row, group: str, seed: int, out: Path, overrides: tuple, quick: bool) -> Path | None:
    """The shared burn-in of ``group`` for this seed, trained once (rows waiting for it block on a lock);
    None if it failed. Its run is the row's own command stopped at ``train.burn_in``."""
    folder = _burn_in_path(row, group, seed, out)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(folder, threading.Lock())
    with lock:
        if not (folder / "final.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            probe = command(row, seed, folder, quick, overrides)
            iters = _config_value(row.recipe, probe[2:], "train.burn_in")
            cmd = probe + ["resume=true", f"train.iters={iters}"]
            _say(f"[uda_table] burn-in {folder.name}: {shlex.join(cmd[1:])}")
            with open(folder / "log.txt", "a") as log:
                if subprocess.run(cmd, cwd=ROOT, env=_recipe_env(), stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                    _say(f"[uda_table] FAILED burn-in {folder.name}; see {folder / 'log.txt'}")
                    return None
    return folder


def _config_value(recipe: str, args: list[str], key: str):
    """A value of the config a recipe command line resolves to (``--config NAME k=v ...``)."""
    from omegaconf import OmegaConf

    from warpadapt.uda.config import load_config

    return OmegaConf.select(load_config(ROOT / "recipes" / f"{recipe}.py", list(args), default=""), key)


def twin(row: Row, overrides: tuple, seed: int) -> Row | None:
    """The ``fwhm_select`` row that trains exactly this row's model at this seed (the same overrides; only the
    target split it is scored on differs): the Instance-Warp rows at the chosen FWHM, seeds 0-2. The split is
    read at evaluation only (``tests/test_uda_table.py`` checks that both splits train bit-identical weights),
    so the test number of such a row is that model evaluated on test: selecting on val, reporting on test."""
    if row.table == "fwhm_select":
        return None
    return next((r for r in ROWS if r.table == "fwhm_select" and (r.recipe, r.config) == (row.recipe, row.config)
                 and set(r.overrides) == set(overrides) and seed < r.seeds), None)


def _recipe_env() -> dict:
    """Every recipe the runner starts imports the warpadapt of this checkout, whose commit its record names:
    a script's sys.path starts at its own folder, so an editable install of another checkout would win."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _recipe_final(row: Row, seed: int, run_dir: Path, cmd: list[str]) -> dict | None:
    """Run one recipe command (output appended to ``run_dir/log.txt``); its final.json, None if it failed."""
    with open(run_dir / "log.txt", "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=_recipe_env(), stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        _say(f"[uda_table] FAILED {run_id(row, seed)} (exit {proc.returncode}); see {run_dir / 'log.txt'}")
        return None
    return json.loads((run_dir / "final.json").read_text())


def _evaluate_copy(row: Row, seed: int, src_dir: Path, run_dir: Path, quick: bool, overrides: tuple,
                   trained: dict) -> tuple[dict, list[str], float] | None:
    """The finished model in ``src_dir`` evaluated on ``row.split`` by ``row``'s command: a copy of that folder
    (in ``run_dir``) resumed at its last step, which only evaluates. (final, command, seconds), None if it
    failed or the weights are not ``trained``'s, bit for bit. The final keeps the training time per iteration."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(src_dir, run_dir, ignore=shutil.ignore_patterns("final.json", "log.txt"))
    cmd = command(row, seed, run_dir, quick, overrides) + ["resume=true"]
    _say(f"[uda_table] {run_id(row, seed)}: the model of {src_dir.name} evaluated on {row.split}: {shlex.join(cmd[1:])}")
    t0 = time.time()
    final = _recipe_final(row, seed, run_dir, cmd)
    if final is None:
        return None
    if final.get("weights_digests") != trained.get("weights_digests"):
        _say(f"[uda_table] FAILED {run_id(row, seed)}: its weights are not those of {src_dir.name}")
        return None
    for key in ("seconds_per_iter", "cpu_seconds_per_iter"):  # the evaluation-only resume trained nothing
        final[key] = trained.get(key)
    return final, cmd, round(time.time() - t0, 1)


def _test_eval(row: Row, seed: int, out: Path, quick: bool, overrides: tuple, final: dict) -> dict | None:
    """A finished ``fwhm_select`` run's model evaluated on target TEST, kept in its record (``test_eval``) and
    read by nothing but its twin rows once the FWHM is chosen on val: the twins need no run folder, so a
    sitting on a fresh machine (``runs/`` is not committed) does not re-train them. The copy is removed."""
    test_row = replace(row, split="test")
    eval_dir = out / "runs" / f"{run_id(row, seed)}__test"
    got = _evaluate_copy(test_row, seed, out / "runs" / run_id(row, seed), eval_dir, quick, overrides, final)
    shutil.rmtree(eval_dir, ignore_errors=True)
    if got is None:
        return None
    final_test, cmd, wall = got
    return {"command": _relative(shlex.join(["python", *cmd[1:]])), "wall_seconds": wall, "final": final_test}


def _evaluate_twin(row: Row, seed: int, out: Path, quick: bool, overrides: tuple, source: Row) -> dict | None:
    """``row`` at ``seed`` from the finished run of its twin: the test evaluation its record keeps
    (``test_eval``), or else a copy of its run folder evaluated on ``row.split``. The record says which run
    trained the model and keeps that run's training time per iteration."""
    trained = json.loads((out / "raw" / f"{run_id(source, seed)}.json").read_text())
    extra = {"trained_by": run_id(source, seed), "train_command": trained["command"]}
    kept = trained.get("test_eval")
    if row.split == "test" and kept is not None:
        cmd = command(row, seed, out / "runs" / run_id(row, seed), quick, overrides) + ["resume=true"]
        _say(f"[uda_table] {run_id(row, seed)}: the model of {run_id(source, seed)} on test, from its record")
        return _write_record(row, seed, out, cmd, kept["final"], kept["wall_seconds"], quick,
                             evaluated_by=kept["command"], environment=trained.get("environment"), **extra)
    got = _evaluate_copy(row, seed, out / "runs" / run_id(source, seed), out / "runs" / run_id(row, seed), quick,
                         overrides, trained["final"])
    if got is None:
        return None
    final, cmd, wall = got
    return _write_record(row, seed, out, cmd, final, wall, quick, **extra)


def _twin_ready(out: Path, source: Row, seed: int) -> bool:
    """Whether the finished run of ``source`` at ``seed`` can stand in for its twin without training: its record
    keeps a test evaluation, or its run folder is still here to evaluate."""
    raw = out / "raw" / f"{run_id(source, seed)}.json"
    return raw.exists() and ("test_eval" in json.loads(raw.read_text())
                             or (out / "runs" / run_id(source, seed) / "last.pt").exists())


def _plan(row: Row, seed: int, out: Path, quick: bool):
    """What ``run_one`` does for this job, decided in one place: None while it waits for the FWHM choice, else
    ``(overrides, burn-in group or None, twin source whose model it evaluates, or None when it trains)``."""
    choice = fwhm_choice(out, row.recipe) if row.fwhm else None
    if row.fwhm and choice is None:
        if not quick:
            return None
        choice = 13  # tiny runs: the paper's FWHM
    overrides, group = resolve(row, choice)
    source = twin(row, overrides, seed)
    return overrides, group, source if source is not None and _twin_ready(out, source, seed) else None


def _burn_in_pending(row: Row, seed: int, out: Path, quick: bool = False) -> Path | None:
    """The shared burn-in folder this job would train first, or None (no shared burn-in, already trained, the
    run has its own checkpoint or its record, a twin evaluation, or the FWHM is not chosen yet)."""
    if row.burn_in is None or (out / "raw" / f"{run_id(row, seed)}.json").exists() \
            or (out / "runs" / run_id(row, seed) / "last.pt").exists():
        return None
    plan = _plan(row, seed, out, quick)
    if plan is None or plan[1] is None or plan[2] is not None:
        return None
    folder = _burn_in_path(row, plan[1], seed, out)
    return None if (folder / "final.json").exists() else folder


def run_jobs(jobs: list, workers: int, work, key) -> int:
    """``work(job)`` for every job on ``workers`` threads; returns how many returned True. Jobs start in order,
    except that one whose ``key(job)`` (its shared burn-in) a running job is training lets the next one go first:
    it would only wait on the burn-in's lock with a core idle. If every job left waits so, the first starts."""
    pending, running, errors, failed = list(jobs), [], [], [0]
    guard = threading.Lock()

    def worker():
        while True:
            with guard:
                if not pending or errors:
                    return
                busy = {key(j) for j in running} - {None}
                job = pending.pop(next((i for i, j in enumerate(pending) if key(j) not in busy), 0))
                running.append(job)
            try:
                bad = work(job)
            except BaseException as e:  # re-raised below, as pool.map would
                with guard:
                    errors.append(e)
                    running.remove(job)
                return
            with guard:
                running.remove(job)
                failed[0] += bool(bad)

    threads = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return failed[0]


def run_one(row: Row, seed: int, out: Path, quick: bool) -> dict | None:
    raw = out / "raw" / f"{run_id(row, seed)}.json"
    if raw.exists():
        return json.loads(raw.read_text())
    plan = _plan(row, seed, out, quick)
    if plan is None:
        _say(f"[uda_table] {run_id(row, seed)} waits: its FWHM is chosen on val by the fwhm_select rows, not all done")
        return None
    overrides, group, source = plan
    if source is not None:
        return _evaluate_twin(row, seed, out, quick, overrides, source)
    run_dir = out / "runs" / run_id(row, seed)
    t0 = time.time()
    burn = None
    if group is not None and not (run_dir / "last.pt").exists():  # resume from a copy of the shared burn-in
        burn = _burn_in_folder(row, group, seed, out, overrides, quick)
        if burn is None:
            return None
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(burn, run_dir, ignore=shutil.ignore_patterns("final.json", "log.txt"))
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(row, seed, run_dir, quick, overrides)
    # resume=true: a sitting that was stopped mid-run continues from its last checkpoint
    cmd.append("resume=true")
    _say(f"[uda_table] {run_id(row, seed)}: {shlex.join(cmd[1:])}")
    final = _recipe_final(row, seed, run_dir, cmd)
    if final is None:
        return None
    extra = {"burn_in": _relative(str(burn))} if burn is not None else {}
    if row.table == "fwhm_select" and any(twin(r, resolve(r, _fwhm_of(row))[0], seed) == row for r in ROWS if r.fwhm):
        kept = _test_eval(row, seed, out, quick, overrides, final)
        if kept is None:
            return None
        extra["test_eval"] = kept
    return _write_record(row, seed, out, cmd, final, round(time.time() - t0, 1), quick, **extra)


def _write_record(row: Row, seed: int, out: Path, cmd: list[str], final: dict, wall: float, quick: bool,
                  environment: dict | None = None, **extra) -> dict:
    """``<out>/raw/<run>.json``, written atomically: the run's final.json, its exact command, wall time, machine,
    and the package versions and CPU its run folder's run_info.json recorded (``environment``: the same
    code and seed train other weights on a CPU whose kernels differ, see ``warpadapt.uda.run.run_info``)."""
    raw = out / "raw" / f"{run_id(row, seed)}.json"
    if environment is None:
        info = out / "runs" / run_id(row, seed) / "run_info.json"
        if info.exists():
            got = json.loads(info.read_text())
            # git: the commit (and dirty flag) of the warpadapt the run imported, from the run itself
            environment = {"versions": got.get("versions"), "cpu": got.get("cpu"), "git": got.get("git")}
    record = {"run": run_id(row, seed), "table": row.table, "row": row.name, "label": row.label,
              "seed": seed, "recipe": row.recipe, "config": row.config,
              "command": _relative(shlex.join(["python", *cmd[1:]])),
              "wall_seconds": wall, "quick": quick,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "commit": _git_commit(), **({"environment": environment} if environment else {}), **extra,
              "final": final}
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = raw.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, raw)
    return record


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


#: Core-minutes of one run when no finished run says better (threads=1, 2 cores, the faithful defaults),
#: and of a run that only evaluates the model of its fwhm_select twin.
DEFAULT_MINUTES = {"twopcnet": 25.0, "mic": 14.0}
EVAL_MINUTES = 1.0


def run_minutes(out: Path, cpu: str | None = None):
    """The estimated wall minutes of one run (a function of row and seed): the median wall time of the
    finished runs of its recipe (``DEFAULT_MINUTES`` before any), a run resuming from a shared burn-in at the
    same (an upper bound), a run with a ``twin`` at ``EVAL_MINUTES`` (unless the FWHM is chosen and that twin
    kept neither its test evaluation nor its run folder: then it re-trains). With ``cpu`` (a CPU model name,
    as the records keep it), the median is over the runs made on that CPU when there are at least 3 of the
    recipe's: machines differ by ~1.7x."""
    runs: dict = {}  # recipe -> [(CPU model, minutes)]
    for p in (out / "raw").glob("*.json"):
        r = json.loads(p.read_text())
        if _num(r.get("wall_seconds")) is not None and not r.get("quick") and not r.get("trained_by"):
            model = ((r.get("environment") or {}).get("cpu") or {}).get("model")
            runs.setdefault(r.get("recipe"), []).append((model, r["wall_seconds"] / 60))
    done = {}
    for recipe, got in runs.items():
        here = [m for c, m in got if cpu is not None and c == cpu]
        done[recipe] = here if len(here) >= 3 else [m for _, m in got]

    def minutes(row: Row, seed: int) -> float:
        if row.fwhm:  # a twin evaluates; once the FWHM is chosen, only if its source needs no re-training
            chosen = fwhm_choice(out, row.recipe)
            source = twin(row, resolve(row, chosen or FWHMS[-1])[0], seed)
            if source is not None and (chosen is None or _twin_ready(out, source, seed)):
                return EVAL_MINUTES
        return statistics.median(done[row.recipe]) if done.get(row.recipe) else DEFAULT_MINUTES[row.recipe]

    return minutes


def this_cpu() -> str | None:
    """This machine's CPU model as the run records keep it (``warpadapt.uda.run.run_info``); None if the
    checkout's warpadapt does not import here."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from warpadapt.uda.run import run_info
    except ImportError:
        return None
    return run_info()["cpu"]["model"]


def compute_left(todo: list[tuple[Row, int]], out: Path, cpu: str | None = None) -> tuple[int, float]:
    """(runs left, core-hours left), each run at its ``run_minutes`` estimate (on ``cpu``, when given)."""
    left = [(r, s) for r, s in todo if not (out / "raw" / f"{run_id(r, s)}.json").exists()]
    minutes = run_minutes(out, cpu)
    return len(left), sum(minutes(r, s) for r, s in left) / 60


# ------------------------------------------------------------------ report
METRICS = {  # table kind -> (key in final.json, column title, scale)
    "twopcnet": [("target_map50", "target mAP50", 100), ("target_ap_small", "AP small", 100),
                 ("target_ap_medium", "AP medium", 100), ("target_ap_large", "AP large", 100),
                 ("source_map50", "source mAP50", 100)],
    "mic": [("target_miou", "target mIoU", 100), ("target_thing_miou", "thing mIoU", 100),
            ("source_miou", "source mIoU", 100)],
}


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _ms(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values if _num(v) is not None]  # None / NaN (e.g. no pseudo-labels): left out
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


#: Student's t, 0.975 quantile, by degrees of freedom (a 95 % two-sided interval); 1.96 beyond.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def paired_interval(diffs: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the 95 % t interval of the mean of paired differences (None under 2 of them).

    >>> [round(v, 3) for v in paired_interval([3.0, 1.0])]
    [2.0, -10.706, 14.706]
    """
    if len(diffs) < 2:
        return None
    m, sd, n = statistics.mean(diffs), statistics.stdev(diffs), len(diffs)
    t = T975.get(n - 1) or next((T975[k] for k in sorted(T975) if k >= n - 1), 1.96)
    half = t * sd / math.sqrt(n)
    return m, m - half, m + half


def _delta_cell(diffs: list[float], scale: float) -> str:
    """mean ± std of the paired differences, their 95 % t interval and whether it excludes 0, per seed."""
    if not diffs:
        return "-"
    d = [v * scale for v in diffs]
    ci = paired_interval(d)
    text = _ms(diffs, scale)
    if ci is not None:
        text += f", 95 % CI [{ci[1]:+.1f}, {ci[2]:+.1f}] ({'excludes' if ci[1] > 0 or ci[2] < 0 else 'includes'} 0)"
    return text + f" (per seed: {', '.join(f'{v:+.1f}' for v in d)})"


def _table(rows: list[Row], recs: dict, seeds: list[int]) -> list[str]:
    recipe = rows[0].recipe
    metrics = METRICS[recipe]
    head = ["row", "n"] + [m[1] for m in metrics] + [f"Δ {metrics[0][1]} vs baseline (paired)", "s / iter", "eval s", "eval time / baseline's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        got = [recs[(row.table, row.name, s)] for s in seeds if (row.table, row.name, s) in recs]
        cells = [row.label, str(len(got))]
        for key, _, scale in metrics:
            cells.append(_ms([_num(r["final"].get(key)) for r in got], scale))
        if row.baseline:
            diffs = []
            for s in seeds:
                a, b = recs.get((row.table, row.name, s)), recs.get((*row.baseline_key, s))
                if a and b and _num(a["final"].get(metrics[0][0])) is not None and _num(b["final"].get(metrics[0][0])) is not None:
                    diffs.append(a["final"][metrics[0][0]] - b["final"][metrics[0][0]])
            base = next(r for r in ROWS if (r.table, r.name) == row.baseline_key)
            cells.append(_delta_cell(diffs, metrics[0][2]) + ("" if base.name == "uda" or not diffs else f" vs {base.label}"))
        else:
            cells.append("baseline" if any(r.baseline_key == (row.table, row.name) for r in ROWS) else "-")
        cells.append(_ms([_num(r["final"].get("seconds_per_iter")) for r in got], 1, 2))
        cells.append(_ms([_num(r["final"].get("eval_seconds")) for r in got], 1, 1))
        ratios = []  # per seed, against the paired baseline run (evaluation never warps: ~1 up to machine noise)
        for s in seeds:
            a, b = recs.get((row.table, row.name, s)), recs.get((*row.baseline_key, s)) if row.baseline else None
            if a and b and _num(a["final"].get("eval_seconds")) and _num(b["final"].get("eval_seconds")):
                ratios.append(a["final"]["eval_seconds"] / b["final"]["eval_seconds"])
        cells.append(_ms(ratios, 1, 2) if ratios else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _also(rows: list[Row], recs: dict, seeds: list[int]) -> list[str]:
    """The further pairings of ``Row.also``: row minus the other row, seed by seed, with the 95 % t interval."""
    metric, _, scale = METRICS[rows[0].recipe][0]
    labels = {r.name: r.label for r in rows}
    lines = []
    for row in rows:
        for other in row.also:
            diffs = [recs[(row.table, row.name, s)]["final"][metric] - recs[(row.table, other, s)]["final"][metric]
                     for s in seeds if (row.table, row.name, s) in recs and (row.table, other, s) in recs
                     and _num(recs[(row.table, row.name, s)]["final"].get(metric)) is not None
                     and _num(recs[(row.table, other, s)]["final"].get(metric)) is not None]
            if diffs:
                lines.append(f"| {row.label} | {labels[other]} | {len(diffs)} | {_delta_cell(diffs, scale)} |")
    return ["| row | minus | n | Δ (paired) |", "|---|---|---|---|", *lines] if lines else []


PER_CLASS = {"twopcnet": ("target_ap50_per_class", "AP50"), "mic": ("target_iou", "IoU")}


def _per_class(rows: list[Row], recs: dict, seeds: list[int]) -> list[str]:
    """Where a row's difference comes from: per class, the paired (same seed) Δ of the target metric
    against the row's baseline, mean over the seeds both have. Classes absent from the test split
    (null in final.json) are left out."""
    key, metric = PER_CLASS[rows[0].recipe]
    paired = [r for r in rows if r.baseline]
    cols, classes = {}, []
    for row in paired:
        per = {}
        for s in seeds:
            a, b = recs.get((row.table, row.name, s)), recs.get((*row.baseline_key, s))
            if not (a and b):
                continue
            for c, v in a["final"].get(key, {}).items():
                w = b["final"].get(key, {}).get(c)
                if _num(v) is not None and _num(w) is not None:
                    per.setdefault(c, []).append(v - w)
                    classes += [c] if c not in classes else []
        if per:
            cols[row] = per
    if not cols:
        return []
    lines = [f"| class | " + " | ".join(f"Δ {metric}: {r.label}" for r in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_ms(per.get(c, []), 100).replace(" (n=1)", "") for per in cols.values()) + " |")
    return lines


def _warp_effects(out: Path) -> list[str]:
    """benchmarks/uda_diagnose.py --warps: what each guidance does to the source objects."""
    path = out / "diagnose" / "warps.json"
    if not path.exists():
        return []
    w = json.loads(path.read_text())
    lines = ["### What each guidance does to the source objects", "",
             f"`python benchmarks/uda_diagnose.py --warps`: {w['images']} source training scenes of {w['pair']} "
             f"at {w['size'][0]} x {w['size'][1]} ({w['boxes']} boxes), the recipes' warp options (instance: FWHM "
             f"{w.get('instance_fwhm', 13):g}). Objects cover "
             f"{100 * w['share_before']:.1f} % of the pixels before any warp. Zoom = warped box area / original area.",
             "", "| guidance | object pixel share after | box zoom, median | 10th percentile | boxes shrunk "
                 "| small (< 32² px) boxes: zoom median | height of the road row bands, horizon -> bottom |",
             "|---|---|---|---|---|---|---|"]
    for g in ("instance", "static", "geometric"):
        if g in w:
            v = w[g]
            lines.append(f"| {g} | {100 * v['share_after']:.1f} % | {v['zoom_median']:.2f} | {v['zoom_p10']:.2f} | "
                         f"{100 * v['shrunk']:.0f} % | {v['small_zoom_median']:.2f} | "
                         + " / ".join(f"x{z:.2f}" for z in v.get("row_band_zoom", [])) + " |")
    return lines + [""]


def _diagnoses(out: Path, table: str, seeds: list[int]) -> dict[str, list[dict]]:
    """row name -> the benchmarks/uda_diagnose.py records of that table's runs with these seeds."""
    diag = {}
    for p in sorted((out / "diagnose").glob(f"{table}__*.json")):
        d = json.loads(p.read_text())
        _, row, seed = d["run"].rsplit("__", 2)
        if int(seed[1:]) in seeds:
            diag.setdefault(row, []).append(d)
    return diag


def _diagnosis(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py's per-run JSON, averaged per detection row: the final student and
    teacher on target test, and the pseudo-labels each would give on target train."""
    diag = _diagnoses(out, "detection", seeds)
    if not diag:
        return []
    lines = ["| row | n | model | target mAP50 | AP small | pseudo-labels / image (ground truth) | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for row in (r for r in ROWS if r.table == "detection" and r.name in diag):
        runs = diag[row.name]
        for model in ("teacher", "student"):
            got = [d[model] for d in runs if model in d]
            if not got:
                continue
            q = [g["pseudo"] for g in got]
            lines.append(f"| {row.label} | {len(got)} | {model} | {_ms([g['target_map50'] for g in got], 100)} | "
                         f"{_ms([g['target_ap_small'] for g in got], 100)} | "
                         f"{_ms([x['pseudo_per_image'] for x in q], 1, 2)} ({statistics.mean(x['gt_per_image'] for x in q):.2f}) | "
                         f"{_ms([x['precision'] for x in q], 100)} | {_ms([x['recall'] for x in q], 100)} |")
    thr = next(iter(diag.values()))[0]["threshold"]
    return ["### Detection: student or teacher, and the pseudo-labels they give", "",
            f"`python benchmarks/uda_diagnose.py` on the final checkpoints: target test mAP50 of the final "
            f"student and EMA teacher, and their detections above the pseudo-label threshold {thr} on 200 "
            "target train images matched to the ground truth the method never sees (IoU 0.5, same class). "
            "Source only has no teacher: its row shows the pseudo-labels a source-trained model would give.",
            "", *lines, ""]


def _diagnosis_segmentation(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py on the segmentation runs: student / teacher, confident pixels, road."""
    diag = _diagnoses(out, "segmentation", seeds)
    if not diag:
        return []
    lines = ["| row | n | model | target mIoU | thing mIoU | confident pixels | their accuracy "
             "| road predicted / true share | road IoU | road recall, horizon -> bottom (4 row bands) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in ROWS if r.table == "segmentation" and r.name in diag):
        for model in ("teacher", "student"):
            got = [d[model] for d in diag[row.name] if model in d]
            if got:
                lines.append(
                    f"| {row.label} | {len(got)} | {model} | {_ms([g['target_miou'] for g in got], 100)} | "
                    f"{_ms([g['target_thing_miou'] for g in got], 100)} | {_ms([g['confident_share'] for g in got], 100)} | "
                    f"{_ms([g['confident_accuracy'] for g in got], 100)} | {_ms([g['road_pred_share'] for g in got], 100)} / "
                    f"{statistics.mean(g['road_gt_share'] for g in got) * 100:.1f} | {_ms([g['road_iou_train'] for g in got], 100)} | "
                    + " / ".join(f"{100 * statistics.mean(g['road_recall_by_band'][k] for g in got):.0f}"
                                 for k in range(len(got[0]['road_recall_by_band']))) + " |")
    thr = next(iter(diag.values()))[0]["threshold"]
    return ["### Segmentation: student or teacher, and the pseudo-labels they give", "",
            "`python benchmarks/uda_diagnose.py` on the final checkpoints: target test mIoU of the final student "
            f"(what MIC reports) and EMA teacher; on 100 target train images, the share of labelled pixels whose max "
            f"probability passes {thr} (DACS's confidence) and their accuracy, and the share predicted as road "
            "against the true share, road IoU, and road recall in four bands of image rows (40-55 %, 55-70 %, "
            "70-85 %, 85-100 % of the height: far road at the horizon, where the instance and static warps "
            "magnify, to near road at the bottom, which they compress; mean over seeds) (all %).", "", *lines, ""]


def _bn_recalibration(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py --bn: each segmentation row's final student with its BatchNorm running
    statistics as trained and re-estimated from plain source / target train images, paired against the
    row's baseline under the same treatment."""
    recs = {}
    for p in sorted((out / "diagnose" / "bn").glob("*.json")):
        d = json.loads(p.read_text())
        table, row, seed = d["run"].rsplit("__", 2)
        if int(seed[1:]) in seeds:
            recs[(table, row, int(seed[1:]))] = d
    if not recs:
        return []
    variants = (("as_trained", "as trained"), ("source", "from source train"), ("target", "from target train"))
    lines = ["| row | n | " + " | ".join(f"target mIoU, statistics {v}" for _, v in variants) + " | "
             + " | ".join(f"Δ vs baseline, {v}" for _, v in variants) + " |", "|" + "---|" * (2 + 2 * len(variants))]
    for row in (r for r in ROWS if r.recipe == "mic"):
        got = [recs[(row.table, row.name, s)] for s in seeds if (row.table, row.name, s) in recs]
        if not got:
            continue
        cells = [row.label, str(len(got))] + [_ms([g[k]["target_miou"] for g in got], 100) for k, _ in variants]
        pairs = [(recs[(row.table, row.name, s)], recs[(*row.baseline_key, s)]) for s in seeds
                 if row.baseline and (row.table, row.name, s) in recs and (*row.baseline_key, s) in recs]
        for k, _ in variants:
            diffs = [a[k]["target_miou"] - b[k]["target_miou"] for a, b in pairs]
            cells.append(_ms(diffs, 100) + (f" ({', '.join(f'{100 * d:+.1f}' for d in diffs)})" if diffs else ""))
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(recs.values()))["images"]
    return ["### Segmentation: BatchNorm running statistics", "",
            "`python benchmarks/uda_diagnose.py --bn`: the final student of each segmentation run on target test "
            "as trained, and with the running statistics of its BatchNorm layers re-estimated "
            f"(`warpadapt.uda.bn.recompute_bn_stats`) from {n} plain source train images or {n} target train images "
            "(no labels); Δ pairs each row with its baseline under the same treatment (same seed). If a row's "
            "statistics, not its weights, hold it back, the re-estimated columns say so.", "", *lines, ""]


def _scale_group(run: str) -> tuple[str, str, int]:
    """(group, its unwarped counterpart's group, seed) of a scale-sweep record's run name: a table run
    ``detection__<row>__s<k>`` (counterpart: the UDA row) or a burn-in ``twopcnet__burn_in__<kind>__s<k>``
    (counterpart: the plain burn-in)."""
    head, seed = run.rsplit("__", 1)
    if head.startswith("twopcnet__burn_in__"):
        return head, "twopcnet__burn_in__plain", int(seed[1:])
    return head, "detection__uda", int(seed[1:])


def _scale_sweep(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py --scales: each detection model's mAP50 with its test images resized,
    per group mean ± std and the paired Δ against the unwarped counterpart at each scale."""
    recs = {}
    for p in sorted((out / "diagnose" / "scales").glob("*.json")):
        d = json.loads(p.read_text())
        group, _, seed = _scale_group(d["run"])
        if seed in seeds:
            recs[(group, seed)] = d
    if not recs:
        return []
    scales = next(iter(recs.values()))["scales"]
    head = " | ".join(f"x{s:g}" for s in scales)
    lines = [f"| model | seeds | target mAP50: {head} | Δ vs unwarped (paired): {head} | source mAP50: {head} |",
             "|---|---|" + "---|" * (3 * len(scales))]
    for group in sorted({g for g, _ in recs}, key=lambda g: (not g.startswith("twopcnet"), g)):
        got = sorted(s for g, s in recs if g == group)
        rows = [recs[(group, s)] for s in got]
        if rows[0]["scales"] != scales:
            raise ValueError(f"{group}: scale-sweep records with scales {rows[0]['scales']}, others {scales}")
        twin = _scale_group(rows[0]["run"])[1]
        pairs = [(recs[(group, s)], recs[(twin, s)]) for s in got if twin != group and (twin, s) in recs]
        label = _group_label(group)
        cells = [_ms([r["target"]["map50"][k] for r in rows], 100) for k in range(len(scales))]
        cells += [_ms([a["target"]["map50"][k] - b["target"]["map50"][k] for a, b in pairs], 100) if pairs else "-"
                  for k in range(len(scales))]
        cells += [_ms([r["source"]["map50"][k] for r in rows], 100) for k in range(len(scales))]
        lines.append(f"| {label} ({rows[0]['model']}) | {', '.join(map(str, got))} | " + " | ".join(cells) + " |")
    size = next(iter(recs.values()))["image_size"]
    return ["### Detection: test-time image scale", "",
            "`python benchmarks/uda_diagnose.py --scales " + " ".join(f"{s:g}" for s in scales) + " --runs ...`: the "
            f"model each run reports on target test and source val with every image resized to x s its input size "
            f"({size[0]} x {size[1]}), boxes scored in the original pixels. If a warp-trained detector learned its "
            "objects at the magnified size the warp showed it, it gains more than the unwarped one as s grows; Δ "
            "pairs each model with its unwarped counterpart of the same seed (the UDA row, or the plain burn-in).",
            "", *lines, ""]


def _records_by_group(folder: Path, seeds: list[int]) -> dict[str, list[dict]]:
    """The diagnose records in ``folder`` of the given seeds, by run group (``_scale_group``), burn-ins first."""
    recs = {}
    for p in sorted(folder.glob("*.json")):
        d = json.loads(p.read_text())
        group, _, seed = _scale_group(d["run"])
        if seed in seeds:
            recs.setdefault(group, []).append(d)
    return {g: recs[g] for g in sorted(recs, key=lambda g: (not g.startswith("twopcnet"), g))}


def _group_label(group: str) -> str:
    """A diagnose group's name in the report: the detection row's label, or the burn-in's kind."""
    labels = {f"detection__{r.name}": r.label for r in ROWS if r.table == "detection"}
    return labels.get(group, group.replace("twopcnet__burn_in__", "burn-in only (student), "))


def _round_trip_parts(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py --round-trip-parts: the round trip's change of each backbone level split
    into resampling the features and the backbone not commuting with the warp, per group mean over seeds."""
    recs = {}
    for folder in sorted((out / "diagnose").glob("round_trip_parts*")):
        for group, got in _records_by_group(folder, seeds).items():
            recs[(got[0]["fwhm"], group)] = got
    if not recs:
        return []
    recs = {k: recs[k] for k in sorted(recs, key=lambda k: (not k[1].startswith("twopcnet"), k[1], k[0]))}
    names = (("total", "total: U f(Wx) - f(x)"), ("feature_resampling", "features resampled: U W f(x) - f(x)"),
             ("equivariance", "not commuting: U f(Wx) - U W f(x)"), ("image_resampling", "image resampled: f(U W x) - f(x)"))
    first = next(iter(recs.values()))[0]
    lines = ["| model | FWHM | n | " + " | ".join(h for _, h in names) + " |", "|---|---|---|" + "---|" * len(names)]
    for (fwhm, group), got in recs.items():
        cells = [" / ".join(f"{100 * statistics.mean(g['parts'][k][lvl] for g in got):.0f}"
                            for lvl in range(len(got[0]["strides"]))) for k, _ in names]
        lines.append(f"| {_group_label(group)} ({got[0]['model']}) | {fwhm:g} | {len(got)} | " + " | ".join(cells) + " |")
    return ["### Detection: where the round trip's feature change comes from", "",
            "`python benchmarks/uda_diagnose.py --round-trip-parts --fwhm F --runs ...`: on the first "
            f"{first['images']} source val images, with f the backbone, W the Instance-Warp (FWHM F, "
            "from the ground-truth boxes) and U its unwarp, each column is a relative change ||.|| / ||f(x)|| in %, "
            "per backbone level (stride " + " / ".join(map(str, first["strides"])) + "). The total splits "
            "(triangle inequality) into resampling a feature map twice at its stride, which even a backbone that "
            "commuted with the warp would show, and the backbone not commuting with it; the last column is the "
            "backbone on the image warped and unwarped (its blur only).", "", *lines, ""]


def _round_trip(out: Path, seeds: list[int]) -> list[str]:
    """benchmarks/uda_diagnose.py --round-trip (and with --resample-only): each detection model plain and
    under the training warp's round trip (or the interpolation control's), per group mean ± std over seeds,
    and how much the round trip changes its backbone levels."""
    text = []
    for folder, flag, what, formula in (
            ("round_trip", "", "the training warp's round trip: each image warped by Instance-Warp (FWHM {f}) from "
             "its ground-truth boxes, the backbone run on it, every level unwarped, as the recipe does while it warps",
             "unwarp(f(warp(x)))"),
            ("round_trip_resample", " --resample-only", "the interpolation control's round trip: the backbone on the "
             "true image, every level resampled by the Instance-Warp (FWHM {f}, from the ground-truth boxes) and "
             "back, as the `resample_only` row trains", "unwarp(warp(f(x)))")):
        recs = _records_by_group(out / "diagnose" / folder, seeds)
        if not recs:
            continue
        lines = ["| model | n | source mAP50: plain | round trip | Δ | target mAP50: plain | round trip | Δ "
                 "| backbone levels' change (source val), finest -> coarsest |", "|---|---|---|---|---|---|---|---|---|"]
        for group, got in recs.items():
            cells = []
            for split in ("source", "target"):
                cells += [_ms([g[split]["plain"] for g in got], 100), _ms([g[split]["round_trip"] for g in got], 100),
                          _ms([g[split]["round_trip"] - g[split]["plain"] for g in got], 100)]
            change = " / ".join(f"{100 * statistics.mean(g['source']['feature_change'][k] for g in got):.0f} %"
                                for k in range(len(got[0]["source"]["feature_change"])))
            lines.append(f"| {_group_label(group)} ({got[0]['model']}) | {len(got)} | " + " | ".join(cells)
                         + f" | {change} |")
        fwhm = next(iter(recs.values()))[0]["fwhm"]
        text += ["### Detection: " + ("the warp's round trip" if not flag else "the interpolation control's round trip"),
                 "", f"`python benchmarks/uda_diagnose.py --round-trip{flag} --fwhm {fwhm:g} --runs ...`: the model "
                 "each run reports on source val and target test as at test time (plain), and with its backbone under "
                 + what.format(f=f"{fwhm:g}") + " (BatchNorm in eval mode). Δ = round trip - plain. The last column is "
                 f"||{formula} - f(x)|| / ||f(x)|| of each backbone level, mean over the images: how different the "
                 "features the heads train on under it are from the ones they meet at test time.", "", *lines, ""]
    return text


#: The table before the recipes followed their methods' code, kept as it was measured.
SUPERSEDED = ("The table measured on the recipes before they followed their methods' code (up to commit 2ab6164; 51 "
              "runs, 3 seeds) is kept, with its raw records, diagnosis and reading, in "
              "`results/superseded/port_2ab6164/` (RESULTS.md there).")
#: The tags of results/uda_vs_source whose runs decide the rule: each pair's runs of its recipe's defaults.
DECISION_TAGS = {"twopcnet": "burn_in600_iters900", "mic": "table_models"}


def _decision_rule() -> list[str]:
    """The decision rule on the faithful recipes (``benchmarks/uda_vs_source.py``), first, with what was
    tried for detection."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from uda_vs_source import decision, tried

    root = ROOT / "results" / "uda_vs_source"
    commits = {}
    for recipe, tag in DECISION_TAGS.items():
        for p in (root / tag / "raw").glob(f"{recipe}__*.json"):
            commits.setdefault(recipe, set()).add(json.loads(p.read_text()).get("commit", "?"))
    where = "; ".join(f"{recipe}: `results/uda_vs_source/{tag}/raw/` (`python benchmarks/uda_vs_source.py --tag {tag} "
                      f"--recipes {recipe}`, commits {', '.join(sorted(commits.get(recipe, {'-'})))})"
                      for recipe, tag in DECISION_TAGS.items())
    return ["## First: does the base method beat source-only? (faithful recipes, target val)", "",
            *decision({r: root / t for r, t in DECISION_TAGS.items()}), "",
            f"From {where}; every run the recipe's default with `warp.guidance=none`, `threads=1`, target val.", "",
            "### What was tried for detection (each tag of `results/uda_vs_source/`, target val, seeds 0-2)", "",
            *tried(root, "twopcnet"), ""]


TITLES = {"detection": "Detection: 2PCNet on synthetic_day2night (target mAP50, %)",
          "segmentation": "Segmentation: DACS + MIC on synthetic_clear2fog (target mIoU, %)",
          "fwhm_select": "FWHM of the warp, chosen on target VAL (every Instance-Warp row above uses the choice)",
          "backbones": "Backbones (segmentation, synthetic_clear2fog; pvt_v2_b0 = the segmentation table)"}


#: The packages whose kernels the recipes call: their versions tell run environments apart.
ENV_PACKAGES = ("torch", "torchvision", "timm", "kornia", "albumentations", "numpy")


def _environment_key(rec: dict) -> tuple[tuple[str, str], ...] | None:
    """What besides the code moves a run's numbers (``warpadapt.uda.run.run_info``): the CPU and its kernels,
    and the versions of the packages whose kernels the recipes call, as (name, text) pairs; None for a record
    made before they were kept."""
    env = rec.get("environment")
    if not env or not env.get("cpu"):
        return None
    cpu, versions = env["cpu"], env.get("versions") or {}
    return (("cpu", f"{cpu.get('model')} ({cpu.get('capability')})"),
            *((k, f"{k} {versions[k]}") for k in ENV_PACKAGES if k in versions))


def _environments(recs: dict) -> list[str]:
    """A paragraph naming the environments the records ran in (run counts), and the paired differences whose
    two runs ran in different ones: such a pair differs by kernel noise on top of the treatment (no bias: both
    runs keep the seed, initialisation and data order), so a reader can tell them apart."""
    keys = {k: _environment_key(r) for k, r in recs.items()}
    counts: dict = {}
    for key in keys.values():
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if len(counts) < 2:
        return []
    # an entry (by name) every environment has with one value says nothing; the CPU is always named
    values = [dict(key) for key in counts]
    shared = {n for n in set().union(*values) if n != "cpu" and len({v.get(n) for v in values}) == 1}
    order = [n for n in ("cpu", *ENV_PACKAGES) if n in set().union(*values) and n not in shared]
    names = {key: ", ".join(dict(key).get(n, f"{n} not recorded") for n in order) for key in counts}
    mixed = []
    for row in ROWS:  # its baseline pairing, then those of Row.also
        against = ([row.baseline_key] if row.baseline else []) + [(row.table, o) for o in row.also]
        for base in against:
            for (t, name, seed), key in sorted(keys.items(), key=lambda kv: kv[0][2]):
                other = keys.get((*base, seed))
                if (t, name) == (row.table, row.name) and key is not None and other is not None and other != key:
                    mixed.append(f"{row.table}/{row.name} s{seed}"
                                 + ("" if base == row.baseline_key and row.baseline else f" (vs {base[1]})"))
    unknown = sum(key is None for key in keys.values())
    return ["Environments (CPU, kernel capability, package versions where they differ): "
            + "; ".join(f"{names[k]}: {n} runs" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            + (f"; not recorded (runs made before records kept it): {unknown} runs" if unknown else "") + ". "
            + ("Paired differences whose two runs ran in different environments (kernel noise on top of the "
               "treatment, no bias): " + ", ".join(mixed) + "." if mixed else
               "Every paired difference compares runs of one environment."), ""]


METHOD = {"twopcnet": "2PCNet", "mic": "DACS + MIC"}
#: The README's headline: these rows of each table, each paired with UDA seed by seed.
HEADLINE = {"detection": ("source_only", "uda", "instance_burn_in", "instance_always"),
            "segmentation": ("source_only", "uda", "instance")}
HEADLINE_MARKERS = ("<!-- headline: written by benchmarks/uda_table.py from results/raw; do not edit -->",
                    "<!-- /headline -->")


def headline(recs: dict, seeds: list[int]) -> list[str]:
    """The headline table: per pair, source-only, UDA and the Instance-Warp rows on target test (mean ±
    std over the seeds they have) and each row minus UDA, paired by seed, with its 95 % t interval and
    whether that excludes zero."""
    lines = ["| pair (target test) | row | seeds | score | Δ vs UDA, paired: mean ± std [95 % t interval] |",
             "|---|---|---|---|---|"]
    for table, names in HEADLINE.items():
        rows = {r.name: r for r in ROWS if r.table == table}
        metric, title, scale = METRICS[rows["uda"].recipe][0]
        pair = (f"{rows['uda'].config}, {METHOD[rows['uda'].recipe]} "
                f"({'teacher ' if table == 'detection' else ''}{title}, %)")
        for name in names:
            got = {s: _num(recs[(table, name, s)]["final"].get(metric)) for s in seeds if (table, name, s) in recs}
            got = {s: v for s, v in got.items() if v is not None}
            if not got:
                continue
            cell = "baseline" if name == "uda" else "-"
            if name != "uda":
                d = [(v - recs[(table, "uda", s)]["final"][metric]) * scale for s, v in got.items()
                     if (table, "uda", s) in recs and _num(recs[(table, "uda", s)]["final"].get(metric)) is not None]
                ci = paired_interval(d)
                if ci is not None:
                    cell = (f"**{ci[0]:+.1f}** ± {statistics.stdev(d):.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}], "
                            f"{'excludes' if ci[1] > 0 or ci[2] < 0 else 'includes'} 0")
                elif d:
                    cell = f"{d[0]:+.1f} (n=1)"
            lines.append(f"| {pair} | {rows[name].label} | {', '.join(map(str, got))} | "
                         f"{_ms(list(got.values()), scale)} | {cell} |")
            pair = ""  # the pair is named on its first row only
    return lines


def write_headline(readme: Path, lines: list[str]) -> bool:
    """Put ``lines`` between the README's headline markers (replacing what was there); False, and the
    file untouched, when it has no such pair of markers."""
    text = readme.read_text()
    start, end = HEADLINE_MARKERS
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return False
    readme.write_text(text[:i + len(start)] + "\n" + "\n".join(lines) + "\n" + text[j:])
    return True


def report(out: Path, seeds: list[int], doc: Path, reading: str = "") -> Path:
    recs = {}
    for p in sorted((out / "raw").glob("*.json")):
        r = json.loads(p.read_text())
        recs[(r["table"], r["row"], r["seed"])] = r
    total = sum(r["wall_seconds"] for r in recs.values())
    main_results = out.resolve() == (ROOT / "results").resolve()
    todo = [(r, s) for r in ROWS for s in range(r.seeds)]
    lines = ["# Results: the adaptation table on the synthetic pairs", "",
             "Written by `python benchmarks/uda_table.py` from `results/raw/*.json` (do not edit by hand: "
             "the plain reading lives in `docs/RESULTS_reading.md` and is pasted below).", "",
             *([SUPERSEDED, ""] + _decision_rule() if main_results else []),
             f"Runs found: {len(recs)} of {len(todo)}; total training wall time {total / 3600:.1f} h; left: about "
             f"{compute_left(todo, out)[1]:.1f} core-hours. UDA and Instance-Warp rows: seeds 0-4, the others 0-2. "
             "Every number is on the held-out target `test` split except the FWHM selection's (target `val`); "
             "mean ± std over seeds; Δ is the per-seed paired difference against the baseline row "
             "(same seed): its mean ± std, the 95 % t interval of the mean, and the per-seed values.", ""]
    for recipe in ("twopcnet", "mic"):
        f = fwhm_choice(out, recipe)
        lines += [f"FWHM used by the Instance-Warp rows of `{recipe}.py`: "
                  + (f"**{f}** (best mean on target val)." if f else "not chosen yet (the fwhm_select rows are not all done).")]
    lines.append("")
    machines = sorted({r["machine"] for r in recs.values()})
    if machines:
        lines += [f"Machine: {', '.join(machines)}.", ""]
    lines += _environments(recs)
    lines += ["## Headline", "", *headline(recs, seeds), ""]
    if main_results and doc.resolve() == (ROOT / "docs" / "RESULTS.md").resolve():
        status = (f"The table has {len(recs)} of {len(todo)} runs so far (about "
                  f"{compute_left(todo, out)[1]:.0f} core-hours left by the runner's estimate).")
        if not write_headline(ROOT / "README.md", [status, "", *headline(recs, seeds)]):
            print("[uda_table] README.md has no headline markers: its headline was not rewritten", file=sys.stderr)
    for table, title in TITLES.items():
        for recipe in ("twopcnet", "mic"):
            rows = [r for r in ROWS if r.table == table and r.recipe == recipe]
            if not rows:
                continue
            lines += [f"## {title}" + (f" ({recipe}.py)" if table == "fwhm_select" else ""), ""]
            lines += _table(rows, recs, seeds)
            also = _also(rows, recs, seeds)
            if also:
                lines += ["", "Further paired comparisons, target test (same seeds):", "", *also]
            if table in ("detection", "segmentation"):
                per_class = _per_class(rows, recs, seeds)
                if per_class:
                    lines += ["", "Per class, target test, paired Δ against the baseline (mean ± std over seeds):", ""]
                    lines += per_class
            example = next((recs[k] for k in sorted(recs) if k[0] == table and recs[k]["recipe"] == recipe), None)
            if example:
                lines += ["", f"Command of one run (the others differ only in the row's overrides and the seed): "
                              f"`{_relative(example['command'])}`"]
            lines.append("")
    diagnosis = (_warp_effects(out) + _diagnosis(out, seeds) + _diagnosis_segmentation(out, seeds)
                 + _bn_recalibration(out, seeds) + _scale_sweep(out, seeds) + _round_trip(out, seeds)
                 + _round_trip_parts(out, seeds))
    if diagnosis:
        lines += ["## Diagnosis", "", *diagnosis]
    if reading:
        lines += ["## Reading", "", reading.strip(), ""]
    doc.write_text("\n".join(lines))
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="results folder (raw/ and runs/ inside)")
    ap.add_argument("--doc", type=Path, default=None, help="report path (default docs/RESULTS.md, or OUT/RESULTS.md with --quick)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: each row's own, 0-4 or 0-2)")
    ap.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    ap.add_argument("--rows", nargs="+", default=None, help="only these row names")
    ap.add_argument("--quick", action="store_true", help="tiny runs (seconds each): checks the pipeline, numbers mean nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one CPU thread; 2 on 2 cores)")
    ap.add_argument("--hours", type=float, default=None,
                    help="this sitting's wall-clock budget: a run starts only if its estimated time (the compute-left "
                         "estimate) ends inside it; the rest is left for the next sitting")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.hours is not None and not args.hours >= 0:
        ap.error(f"--hours must be >= 0, got {args.hours}")
    deadline = None if args.hours is None else time.time() + args.hours * 3600
    doc = args.doc or (args.out / "RESULTS.md" if args.quick else ROOT / "docs" / "RESULTS.md")
    if not args.report_only:
        todo = [(r, s) for r in ROWS for s in range(r.seeds)
                if r.table in args.tables and (args.rows is None or r.name in args.rows)
                and (args.seeds is None or s in args.seeds)]
        # seed-major: a sitting stopped part-way leaves whole seeds across rows (paired comparisons)
        todo.sort(key=lambda job: job[1])
        cpu = this_cpu()  # the estimates use this CPU's finished runs when there are enough of them
        n, hours = compute_left(todo, args.out, cpu)
        _say(f"[uda_table] {n} of {len(todo)} runs left, about {hours:.1f} core-hours on this CPU ({cpu}) "
             f"({hours / args.jobs:.1f} h with --jobs {args.jobs})")
        failed = 0
        # the FWHM selection first: every Instance-Warp row uses its choice
        for phase in ([j for j in todo if j[0].table == "fwhm_select"], [j for j in todo if j[0].table != "fwhm_select"]):
            def one(job, phase=phase):
                i, (row, seed) = job
                if deadline is not None and not (args.out / "raw" / f"{run_id(row, seed)}.json").exists() \
                        and time.time() + 60 * run_minutes(args.out, cpu)(row, seed) > deadline:
                    _say(f"[uda_table] {run_id(row, seed)} left for the next sitting: it would not end within --hours")
                    return True
                _say(f"[uda_table] {i}/{len(phase)} of this phase")
                return run_one(row, seed, args.out, args.quick) is None

            # each job is a subprocess; a job waiting for a burn-in that another one trains lets the next go first
            failed += run_jobs(list(enumerate(phase, 1)), args.jobs, one,
                               key=lambda job: _burn_in_pending(job[1][0], job[1][1], args.out, args.quick))
        if failed:
            print(f"[uda_table] {failed} run(s) failed, wait or were left for the next sitting")
        n, hours = compute_left(todo, args.out, cpu)
        _say(f"[uda_table] left: {n} runs, about {hours:.1f} core-hours on this CPU")
    reading_file = ROOT / "docs" / "RESULTS_reading.md"
    reading = reading_file.read_text() if reading_file.exists() and not args.quick else ""
    print(f"[uda_table] wrote {report(args.out, sorted({s for r in ROWS for s in range(r.seeds)}), doc, reading)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
