"""The adaptation table: every row of the paper's comparison on the synthetic pairs, 3 seeds each.

    python benchmarks/uda_table.py                 # run what is missing, then write docs/RESULTS.md
    python benchmarks/uda_table.py --report-only   # only rewrite docs/RESULTS.md from results/raw
    python benchmarks/uda_table.py --tables detection --seeds 0   # a part of it
    python benchmarks/uda_table.py --jobs 2        # two runs at once (2 cores: 1.39x the throughput)
    python benchmarks/uda_table.py --quick --out /tmp/q           # tiny runs (the test suite's check)

Each run is one recipe command (``recipes/twopcnet.py`` or ``recipes/mic.py``) with ``train.seed=S``
and ``eval.target_split=test``: tuning looked only at target ``val``; every number here is on the
held-out target ``test`` split. A finished run leaves ``<out>/raw/<run>.json`` (the recipe's
final.json, the exact command, wall time, machine); runs already there are skipped, so the table
fills over several sittings. Rows are compared per seed against the plain UDA row of the same table
(same seed = paired).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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

    @property
    def baseline_key(self) -> tuple[str, str] | None:
        if self.baseline is None:
            return None
        return tuple(self.baseline.split("/")) if "/" in self.baseline else (self.table, self.baseline)


DET, SEG = ("twopcnet", "synthetic_day2night"), ("mic", "synthetic_clear2fog")


def _rows() -> list[Row]:
    rows = []
    for recipe, config, table in (DET + ("detection",), SEG + ("segmentation",)):
        rows += [
            Row(table, "source_only", "source only", recipe, config, ("uda.enabled=false", "warp.guidance=none"), None),
            Row(table, "uda", "UDA (no warp)", recipe, config, ("warp.guidance=none",), None),
            Row(table, "static", "UDA + static prior", recipe, config, ("warp.guidance=static",)),
            Row(table, "geometric", "UDA + geometric prior", recipe, config, ("warp.guidance=geometric",)),
        ]
        if recipe == "twopcnet":
            rows += [Row(table, "instance_burn_in", "UDA + Instance-Warp (burn-in only)", recipe, config,
                         ("warp.guidance=instance", "warp.stage=burn_in")),
                     Row(table, "instance_always", "UDA + Instance-Warp (always)", recipe, config,
                         ("warp.guidance=instance", "warp.stage=always"))]
        else:
            rows.append(Row(table, "instance", "UDA + Instance-Warp", recipe, config, ("warp.guidance=instance",)))
    # warp intensity on the segmentation pair (FWHM 13 is the instance row itself)
    for fwhm in (4, 8):
        rows.append(Row("intensity", f"fwhm{fwhm}", f"Instance-Warp, FWHM {fwhm}", *SEG,
                        ("warp.guidance=instance", f"warp.fwhm={fwhm}"), "segmentation/uda"))
    # backbones on the segmentation pair (pvt_v2_b0 is the default: the segmentation table's rows)
    for bb in ("resnet18", "vit_tiny_patch16_224"):
        rows += [Row("backbones", f"{bb}_uda", f"{bb}: UDA (no warp)", *SEG, (f"model.backbone={bb}", "warp.guidance=none"), None),
                 Row("backbones", f"{bb}_instance", f"{bb}: + Instance-Warp", *SEG,
                     (f"model.backbone={bb}", "warp.guidance=instance"), f"{bb}_uda")]
    # BatchNorm running statistics kept to the source forward (train.bn_stats=source; docs/RESULTS_reading.md):
    # the UDA rows are paired against the same row trained with bn_stats=all, the warp rows against their UDA row
    for bb, base in (("pvt_v2_b0", "segmentation/uda"), ("resnet18", "backbones/resnet18_uda")):
        rows += [Row("bn_stats", f"{bb}_uda", f"{bb}: UDA (no warp), bn_stats=source", *SEG,
                     (f"model.backbone={bb}", "warp.guidance=none", "train.bn_stats=source"), base),
                 Row("bn_stats", f"{bb}_instance", f"{bb}: + Instance-Warp, bn_stats=source", *SEG,
                     (f"model.backbone={bb}", "warp.guidance=instance", "train.bn_stats=source"), f"{bb}_uda")]
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


def command(row: Row, seed: int, run_dir: Path, quick: bool) -> list[str]:
    cmd = [sys.executable, str(ROOT / "recipes" / f"{row.recipe}.py"), "--config", row.config,
           *row.overrides, f"train.seed={seed}", "eval.target_split=test", f"threads={RUN_THREADS}",
           f"out_dir={run_dir}"]
    return cmd + list(QUICK[row.recipe]) if quick else cmd


def _relative(text: str) -> str:
    """Paths inside the repository written relative to it (commands read the same on any machine)."""
    return text.replace(str(ROOT) + os.sep, "")


def _say(msg: str) -> None:
    """One write per line: jobs running side by side do not interleave their messages."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def run_one(row: Row, seed: int, out: Path, quick: bool) -> dict | None:
    raw = out / "raw" / f"{run_id(row, seed)}.json"
    if raw.exists():
        return json.loads(raw.read_text())
    run_dir = out / "runs" / run_id(row, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(row, seed, run_dir, quick)
    # resume=true: a sitting that was stopped mid-run continues from its last checkpoint
    cmd.append("resume=true")
    _say(f"[uda_table] {run_id(row, seed)}: {shlex.join(cmd[1:])}")
    t0 = time.time()
    with open(run_dir / "log.txt", "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        _say(f"[uda_table] FAILED {run_id(row, seed)} (exit {proc.returncode}); see {run_dir / 'log.txt'}")
        return None
    final = json.loads((run_dir / "final.json").read_text())
    record = {"run": run_id(row, seed), "table": row.table, "row": row.name, "label": row.label,
              "seed": seed, "recipe": row.recipe, "config": row.config,
              "command": _relative(shlex.join(["python", *cmd[1:]])),
              "wall_seconds": round(time.time() - t0, 1), "quick": quick,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "final": final}
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = raw.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, raw)
    return record


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
            cells.append(_ms(diffs, metrics[0][2]) + (f" (per seed: {', '.join(f'{d * 100:+.1f}' for d in diffs)})" if diffs else ""))
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
             f"at {w['size'][0]} x {w['size'][1]} ({w['boxes']} boxes), the recipes' warp options. Objects cover "
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


def _intensity_plot(recs: dict, seeds: list[int], path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = []
    for fwhm, table, name in ((4, "intensity", "fwhm4"), (8, "intensity", "fwhm8"), (13, "segmentation", "instance")):
        vals = [_num(recs[(table, name, s)]["final"].get("target_miou")) for s in seeds if (table, name, s) in recs]
        vals = [v * 100 for v in vals if v is not None]
        if vals:
            pts.append((fwhm, statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0))
    base = [_num(recs[("segmentation", "uda", s)]["final"].get("target_miou")) for s in seeds if ("segmentation", "uda", s) in recs]
    base = [v * 100 for v in base if v is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                label="UDA + Instance-Warp")
    if base:
        ax.axhline(statistics.mean(base), color="gray", linestyle="--", label="UDA (no warp)")
    ax.set_xlabel("warp FWHM (grid cells; larger = stronger zoom)")
    ax.set_ylabel("target test mIoU")
    ax.set_title("synthetic_clear2fog: target mIoU vs warp intensity")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


#: What the raw records in results/raw measured: a run records its command, not the code's version.
CODE_NOTE = ("**These runs used the recipes as they were up to commit 2ab6164, before they followed their "
             "methods' code** (2PCNet's KL reduction and boxes, warp stage and LR schedule; MIC's teacher mode, "
             "mask fill, mask mode, ClassMix draw and DAFormer's flips). They judge that port; the table is to be "
             "redone on the faithful recipes (`benchmarks/uda_vs_source.py` first checks that UDA beats source-only).")


def _decision_rule() -> list[str]:
    """The decision rule on the faithful recipes (``benchmarks/uda_vs_source.py --tag after``), first."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from uda_vs_source import decision

    folder = ROOT / "results" / "uda_vs_source" / "after"
    return ["## First: does the base method beat source-only? (faithful recipes, target val)", "",
            *decision(folder), "",
            f"From `results/uda_vs_source/after/raw/` (`python benchmarks/uda_vs_source.py --tag after`; every run "
            "the recipe's default with `warp.guidance=none`, `threads=1`). The tables below are the older runs.", ""]


def report(out: Path, seeds: list[int], doc: Path, reading: str = "") -> Path:
    recs = {}
    for p in sorted((out / "raw").glob("*.json")):
        r = json.loads(p.read_text())
        recs[(r["table"], r["row"], r["seed"])] = r
    total = sum(r["wall_seconds"] for r in recs.values())
    lines = ["# Results: the adaptation table on the synthetic pairs", "",
             "Written by `python benchmarks/uda_table.py` from `results/raw/*.json` (do not edit by hand: "
             "the plain reading lives in `docs/RESULTS_reading.md` and is pasted below).", "",
             *([CODE_NOTE, ""] + _decision_rule() if out.resolve() == (ROOT / "results").resolve() else []),
             f"Runs found: {len(recs)}; total training wall time {total / 3600:.1f} h. Seeds: {seeds}. "
             "Every number is on the held-out target `test` split (tuning looked at `val` only); "
             "mean ± std over seeds; Δ is the per-seed paired difference against the baseline row "
             "(same seed), its mean ± std and the per-seed values.", ""]
    machines = sorted({r["machine"] for r in recs.values()})
    if machines:
        lines += [f"Machine: {', '.join(machines)}.", ""]
    titles = {"detection": "Detection: 2PCNet on synthetic_day2night (target mAP50, %)",
              "segmentation": "Segmentation: DACS + MIC on synthetic_clear2fog (target mIoU, %)",
              "intensity": "Warp intensity (segmentation, synthetic_clear2fog; FWHM 13 = the table's Instance-Warp row; Δ against its UDA row)",
              "backbones": "Backbones (segmentation, synthetic_clear2fog; pvt_v2_b0 = the table above)",
              "bn_stats": "BatchNorm statistics from the source forward only (segmentation, train.bn_stats=source; "
                          "Δ of a UDA row: against the same row with bn_stats=all; of a warp row: against its UDA row)"}
    for table, title in titles.items():
        rows = [r for r in ROWS if r.table == table]
        lines += [f"## {title}", ""]
        lines += _table(rows, recs, seeds)
        if table in ("detection", "segmentation"):
            per_class = _per_class(rows, recs, seeds)
            if per_class:
                lines += ["", f"Per class, target test, paired Δ against the baseline (mean ± std over seeds):", ""]
                lines += per_class
        example = next((recs[k] for k in sorted(recs) if k[0] == table), None)
        if example:
            lines += ["", f"Command of one run (the others differ only in the row's overrides and the seed): "
                          f"`{_relative(example['command'])}`"]
        lines.append("")
    diagnosis = _warp_effects(out) + _diagnosis(out, seeds) + _diagnosis_segmentation(out, seeds) + _bn_recalibration(out, seeds)
    if diagnosis:
        lines += ["## Diagnosis", "", *diagnosis]
    if _intensity_plot(recs, seeds, doc.parent / "results_intensity.png"):
        lines += ["![target mIoU vs warp intensity](results_intensity.png)", ""]
    if reading:
        lines += ["## Reading", "", reading.strip(), ""]
    doc.write_text("\n".join(lines))
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="results folder (raw/ and runs/ inside)")
    ap.add_argument("--doc", type=Path, default=None, help="report path (default docs/RESULTS.md, or OUT/RESULTS.md with --quick)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    ap.add_argument("--rows", nargs="+", default=None, help="only these row names")
    ap.add_argument("--quick", action="store_true", help="tiny runs (seconds each): checks the pipeline, numbers mean nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one CPU thread; 2 on 2 cores)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    doc = args.doc or (args.out / "RESULTS.md" if args.quick else ROOT / "docs" / "RESULTS.md")
    if not args.report_only:
        todo = [(r, s) for s in args.seeds for r in ROWS
                if r.table in args.tables and (args.rows is None or r.name in args.rows)]
        def one(job):
            i, (row, seed) = job
            _say(f"[uda_table] {i}/{len(todo)}")
            return run_one(row, seed, args.out, args.quick) is None

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is a subprocess
            failed = sum(pool.map(one, enumerate(todo, 1)))
        if failed:
            print(f"[uda_table] {failed} run(s) failed")
    reading_file = ROOT / "docs" / "RESULTS_reading.md"
    reading = reading_file.read_text() if reading_file.exists() and not args.quick else ""
    print(f"[uda_table] wrote {report(args.out, args.seeds, doc, reading)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
