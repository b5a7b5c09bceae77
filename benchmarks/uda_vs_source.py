"""Does the base method beat source-only training? UDA minus source-only, per seed, on target VAL.

    python benchmarks/uda_vs_source.py --tag after                 # run what is missing, print the table
    python benchmarks/uda_vs_source.py --tag before --jobs 2 --recipes twopcnet
    python benchmarks/uda_vs_source.py --tag after --report-only

Every run is the recipe's default config (``recipes/configs/twopcnet/synthetic_day2night.yaml``,
``recipes/configs/mic/synthetic_clear2fog.yaml``) with ``warp.guidance=none`` (the base method, no warp),
``train.seed=S``, ``threads=1`` and the target VAL split (nothing here looks at test). The ``--tag`` names
the code version (``before`` / ``after`` a change): the raw records go to ``results/uda_vs_source/<tag>/``
(one JSON per run: the final metrics of the student AND the teacher, the exact commands, the git
commit); finished runs are skipped, so the table fills over several sittings.

The arms (``ARMS``): source-only is the detector or segmenter trained on source images alone, the papers'
lower bound (for 2PCNet without NightAug, which is part of the method); detection also has
``nightaug_only``, 2PCNet without its teacher (source + NightAug copies), to tell the augmentation's share
of the gain from the self-training's. NightAug-only and UDA share their burn-in: their first
``train.burn_in`` iterations are the same computation (the teacher does not exist yet), so each seed trains
them once and both rows resume from a copy of that folder (resume is exact: tests/test_twopcnet.py). Each finished run is then evaluated once
more with the other model (``resume=true eval.model=student|teacher`` re-evaluates without training).

Variants of the adaptation phase only (``uda.threshold=0.6`` ...) need neither new baselines nor a new
burn-in: ``--arms uda --source-from after --burn-in-from after`` trains the UDA arm from the burn-in
folders of tag ``after`` and compares it with that tag's baseline records (the report names them).

    python benchmarks/uda_vs_source.py --tag thr0.6 --arms uda --source-from after --burn-in-from after uda.threshold=0.6
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"twopcnet": "synthetic_day2night", "mic": "synthetic_clear2fog"}
METRIC = {"twopcnet": "target_map50", "mic": "target_miou"}
#: Each recipe's arms and their overrides. Source-only is the papers' lower bound: the detector trained on
#: source images alone (2PCNet's NightAug is part of the method, so it is off). ``nightaug_only``: 2PCNet
#: without its teacher (source + NightAug copies), the share of the gain the augmentation alone brings.
ARMS = {"twopcnet": {"source_only": ["uda.enabled=false", "uda.nightaug=false"], "nightaug_only": ["uda.enabled=false"],
                     "uda": []},
        "mic": {"source_only": ["uda.enabled=false"], "uda": []}}
#: Detection arms whose first ``train.burn_in`` iterations are one computation (source + NightAug, no teacher).
SHARED_BURN_IN = ("nightaug_only", "uda")
ALL_ARMS = tuple(dict.fromkeys(a for arms in ARMS.values() for a in arms))


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _recipe(recipe: str, run_dir: Path, args: list[str], log: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--config", CONFIG[recipe], "warp.guidance=none",
           "threads=1", "eval.target_split=val", f"out_dir={run_dir}", *args]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd[1:]) + "\n")
        f.flush()
        # this checkout's warpadapt, not an editable install of another (the record names this commit)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return json.loads((run_dir / "final.json").read_text()) | {"command": " ".join(["python", *cmd[1:]])}


_LOCKS: dict = {}
_LOCKS_GUARD = threading.Lock()


def _burn_in(recipe: str, seed: int, runs: Path, extra: list[str]) -> Path | None:
    """Detection: the shared burn-in folder of this seed, trained once (its final evaluation at
    ``train.burn_in`` is the one a straight run logs there: the student, the same images)."""
    if recipe != "twopcnet":
        return None
    folder = runs / f"{recipe}__burn_in__s{seed}"
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(folder, threading.Lock())
    with lock:  # the two arms of a seed wait for one burn-in
        if not (folder / "final.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            iters = _config_value(recipe, "train.burn_in", extra)
            _recipe(recipe, folder, [f"train.seed={seed}", "resume=true", *extra, f"train.iters={iters}"],
                    folder / "log.txt")
    return folder


def _config_value(recipe: str, key: str, extra: list[str]):
    from omegaconf import OmegaConf

    from warpadapt.uda.config import load_config

    cfg = load_config(ROOT / "recipes" / f"{recipe}.py", ["--config", CONFIG[recipe], *extra], default=CONFIG[recipe])
    return OmegaConf.select(cfg, key)


#: The uda_table table whose rows train these arms (same names, same overrides; only the split differs).
TABLE = {"twopcnet": "detection", "mic": "segmentation"}
#: Config keys that do not reach training (where a run writes, whether it resumes, what it evaluates).
NOT_TRAINING = ("out_dir", "resume", "overwrite", "eval")


def training_config_difference(saved: Path, recipe: str, args: list[str]) -> list[str]:
    """The keys (dotted) in which the training config of a run folder's ``config.yaml`` differs from the
    one ``args`` resolve to for this arm, ignoring ``NOT_TRAINING``; [] = the same experiment."""
    from omegaconf import OmegaConf

    from warpadapt.uda.config import load_config

    def flat(d, prefix=""):
        return {k2: v2 for k, v in d.items() if prefix + k not in NOT_TRAINING
                for k2, v2 in (flat(v, prefix + k + ".") if isinstance(v, dict) else {prefix + k: v}).items()}

    here = load_config(ROOT / "recipes" / f"{recipe}.py", ["--config", CONFIG[recipe], "warp.guidance=none", "threads=1", *args],
                       default=CONFIG[recipe])
    a, b = flat(OmegaConf.to_container(OmegaConf.load(saved), resolve=True)), flat(OmegaConf.to_container(here, resolve=True))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def run_one(recipe: str, arm: str, seed: int, out: Path, extra: list[str], burn_in_from: Path | None = None,
            models_from: Path | None = None) -> dict | None:
    """One arm of one seed (skipped when its raw record exists). ``burn_in_from``: the tag folder whose
    shared burn-in this run resumes from (default: ``out``'s own). ``models_from``: a
    ``benchmarks/uda_table.py`` results folder whose finished run of this arm and seed (trained for the
    table, scored on test) is evaluated here on val instead of training it again (None while that run is
    not finished; its config must be this arm's, up to ``NOT_TRAINING``, and its weights come back bit for bit)."""
    raw = out / "raw" / f"{recipe}__{arm}__s{seed}.json"
    if raw.exists():
        return json.loads(raw.read_text())
    runs = out / "runs"
    run_dir = runs / f"{recipe}__{arm}__s{seed}"
    log = runs / f"{recipe}__{arm}__s{seed}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    base = [f"train.seed={seed}", "resume=true", *ARMS[recipe][arm], *extra]
    trained = None
    if models_from is not None:
        model = models_from / "runs" / f"{TABLE[recipe]}__{arm}__s{seed}"
        if not ((model / "final.json").exists() and (model / "last.pt").exists()):
            print(f"[uda_vs_source] {recipe} {arm} seed {seed} waits: {model} is not a finished run", flush=True)
            return None
        differ = training_config_difference(model / "config.yaml", recipe, base)
        if differ:
            raise ValueError(f"--models-from: {model} trained another experiment than {recipe} {arm} seed {seed} "
                             f"(config keys {', '.join(differ)} differ)")
        trained = json.loads((model / "final.json").read_text())
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(model, run_dir, ignore=shutil.ignore_patterns("final.json", "log.txt"))
    burn = (_burn_in(recipe, seed, (burn_in_from or out) / "runs", extra if burn_in_from is None else [])
            if arm in SHARED_BURN_IN and trained is None else None)
    if burn is not None and not (run_dir / "last.pt").exists():  # resume from a copy of the shared burn-in
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(burn, run_dir, ignore=shutil.ignore_patterns("final.json", "log.txt"))
    finals = {}
    first = "teacher" if (recipe == "twopcnet" and arm == "uda") else "student"
    finals[first] = _recipe(recipe, run_dir, base, log)
    if trained is not None and finals[first]["weights_digests"] != trained["weights_digests"]:
        raise RuntimeError(f"--models-from: {run_dir} evaluated other weights than {models_from} trained")
    if arm == "uda":  # the other model of the same finished run, re-evaluated without training
        other = "student" if first == "teacher" else "teacher"
        finals[other] = _recipe(recipe, run_dir, [*base, f"eval.model={other}"], log)
    record = {"recipe": recipe, "arm": arm, "seed": seed, "tag": out.name, "commit": _git_commit(),
              "overrides": extra, "final": finals}
    if burn is not None:
        record["burn_in"] = str(burn.relative_to(ROOT)) if burn.is_relative_to(ROOT) else str(burn)
    if trained is not None:
        record["trained_by"] = _relative(models_from / "runs" / f"{TABLE[recipe]}__{arm}__s{seed}")
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = raw.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(raw)
    return record


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _records(out: Path, recipe: str, source_from: Path | None = None) -> dict:
    """{(arm, seed): record} of ``out``; the baseline arms (source-only, NightAug-only) from ``source_from``
    when given (a variant of the adaptation phase: only its UDA arm trained)."""
    def load(folder: Path, arms) -> dict:
        recs = (json.loads(p.read_text()) for p in (folder / "raw").glob(f"{recipe}__*.json"))
        return {(r["arm"], r["seed"]): r for r in recs if r["arm"] in arms}
    if source_from is None:
        return load(out, ALL_ARMS)
    return load(out, ["uda"]) | load(source_from, [a for a in ALL_ARMS if a != "uda"])


def report(out: Path, recipes, seeds, source_from: Path | None = None) -> str:
    lines = [f"UDA minus source-only on target val ({out.name}); student / teacher (the baselines: their student)", ""]
    if source_from is not None:
        lines += [f"Baseline records from tag `{source_from.name}` (`results/uda_vs_source/{source_from.name}/raw/`).", ""]
    for recipe in recipes:
        recs = _records(out, recipe, source_from)
        key = METRIC[recipe]
        base_arms = [a for a in ARMS[recipe] if a != "uda"]
        lines += [f"### {recipe} ({CONFIG[recipe]}, {key})", "",
                  "| seed | " + " | ".join(a.replace("_", " ") for a in base_arms) + " | UDA student | UDA teacher |",
                  "|---|" + "---|" * (len(base_arms) + 2)]
        for s in seeds:
            cells = [f"{100 * recs[(a, s)]['final']['student'][key]:.1f}" if (a, s) in recs else "-" for a in base_arms]
            cells += [f"{100 * recs[('uda', s)]['final'][m][key]:.1f}" if ("uda", s) in recs else "-"
                      for m in ("student", "teacher")]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        for baseline in base_arms:
            for m in ("student", "teacher"):
                d = [v for v in _deltas(recs, recipe, m, baseline, seeds) if v is not None]
                if d:
                    sd = statistics.stdev(d) if len(d) > 1 else float("nan")
                    lines.append(f"\n{m} - {baseline.replace('_', ' ')}: {statistics.mean(d):+.1f} ± {sd:.1f} over "
                                 f"{len(d)} seeds (per seed {', '.join(f'{v:+.1f}' for v in d)})")
        lines.append("")
    return "\n".join(lines)


#: The model each method reports (2PCNet evaluates its EMA teacher, MIC its student).
REPORTED = {"twopcnet": "teacher", "mic": "student"}
#: The decision rule (issue 19): UDA beats source-only by at least this many points on target val,
#: in the mean over seeds 0-2 AND on every seed, for the student and for the reported model.
MARGIN = 2.0


def _deltas(recs: dict, recipe: str, model: str, baseline: str, seeds) -> list:
    """Per seed: 100 x (UDA ``model`` - ``baseline``'s student) on the recipe's metric, None where missing."""
    key = METRIC[recipe]
    return [None if (baseline, s) not in recs or ("uda", s) not in recs else
            100 * (recs[("uda", s)]["final"][model][key] - recs[(baseline, s)]["final"]["student"][key]) for s in seeds]


def decision(out, seeds=(0, 1, 2), source_from: Path | None = None) -> list[str]:
    """The decision rule's table (markdown lines): UDA minus source-only on target VAL per seed, both pairs,
    student and reported model, with PASS / FAIL (FAIL also when a seed is missing). Detection also gets
    UDA minus NightAug-only (2PCNet without its teacher) when those runs exist: shown, not part of the rule.
    ``out``: one tag folder, or {recipe: tag folder} when the pairs' runs live in different tags."""
    folders = out if isinstance(out, dict) else {r: out for r in CONFIG}
    lines = [f"| pair (metric) | model | against | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | rule |",
             "|---|---|---|" + "---|" * (len(seeds) + 2)]
    verdicts = []
    for recipe in CONFIG:
        recs = _records(folders[recipe], recipe, source_from)
        name = f"{recipe} {CONFIG[recipe]} ({METRIC[recipe]})"
        baselines = ["source_only"] + (["nightaug_only"] if any(a == "nightaug_only" for a, _ in recs) else [])
        for baseline in baselines:
            for model in ("student", "teacher") if REPORTED[recipe] == "teacher" else ("student",):
                deltas = _deltas(recs, recipe, model, baseline, seeds)
                have = [d for d in deltas if d is not None]
                ok = len(have) == len(seeds) and min(have) >= MARGIN and statistics.mean(have) >= MARGIN
                if baseline == "source_only":
                    verdicts.append(ok)
                    verdict = "PASS" if ok else "FAIL"
                else:
                    verdict = f"({'>=' if ok else 'not >='} {MARGIN:g}; not in the rule)"
                mean = f"{statistics.mean(have):+.1f}" if have else "-"
                label = model + (" (reported)" if model == REPORTED[recipe] else "")
                lines.append(f"| {name} | {label} | {baseline.replace('_', ' ')} | "
                             + " | ".join("missing" if d is None else f"{d:+.1f}" for d in deltas)
                             + f" | {mean} | {verdict} |")
    rule = (f"Rule: UDA minus source-only >= {MARGIN:g} points on target val, in the mean over seeds "
            f"{', '.join(map(str, seeds))} and on every seed, for the student and for the model the method reports. ")
    return [rule + ("**Passed on both pairs.**" if all(verdicts) else "**Not passed**: the warp rows would judge a "
            "testbed on which the base method does not beat source-only."), "", *lines]


def tried(root: Path, recipe: str = "twopcnet", seeds=(0, 1, 2)) -> list[str]:
    """Markdown lines: every tag under ``root`` that has a ``tag.json`` (written by each call of this
    script), one row per tag: its overrides, where its baselines come from, the mean of each arm and the
    per-seed UDA minus each baseline (reported model; the student against source-only too)."""
    key, reported = METRIC[recipe], REPORTED[recipe]
    base_arms = [a for a in ARMS[recipe] if a != "uda"]
    names = [a.replace("_", " ") for a in base_arms]
    lines = ["| tag | overrides (every run) | baselines from | " + " | ".join(names) + f" | UDA {reported} | "
             + " | ".join(f"{reported} - {n}, per seed (mean)" for n in names) + " | student - source only, per seed (mean) |",
             "|---|---|---|" + "---|" * (2 * len(base_arms) + 2)]

    def mean(v) -> str:
        return f"{100 * statistics.mean(v):.1f} (n={len(v)})" if v else "-"

    def per_seed(d) -> str:
        d = [v for v in d if v is not None]
        return f"{', '.join(f'{v:+.1f}' for v in d)} ({statistics.mean(d):+.1f})" if d else "-"

    for meta_file in sorted(root.glob("*/tag.json")):
        meta = json.loads(meta_file.read_text())
        folder = meta_file.parent
        recs = _records(folder, recipe, root / meta["source_from"] if meta.get("source_from") else None)
        if not any(r == recipe for r in meta.get("recipes", [recipe])) or not recs:
            continue
        cells = [f"`{folder.name}`", " ".join(f"`{o}`" for o in meta.get("overrides", [])) or "(defaults)",
                 f"`{meta['source_from']}`" if meta.get("source_from") else "itself"]
        cells += [mean([recs[(a, s)]["final"]["student"][key] for s in seeds if (a, s) in recs]) for a in base_arms]
        cells.append(mean([recs[("uda", s)]["final"][reported][key] for s in seeds if ("uda", s) in recs]))
        cells += [per_seed(_deltas(recs, recipe, reported, a, seeds)) for a in base_arms]
        cells.append(per_seed(_deltas(recs, recipe, "student", "source_only", seeds)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tag", required=True, help="the code version: before / after / ... (a folder name)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "uda_vs_source")
    ap.add_argument("--recipes", nargs="+", default=list(CONFIG), choices=list(CONFIG))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each one CPU thread)")
    ap.add_argument("--arms", nargs="+", default=list(ALL_ARMS), choices=list(ALL_ARMS),
                    help="which arms to train (each recipe trains those of them it has)")
    ap.add_argument("--source-from", metavar="TAG", help="compare with this tag's source-only records "
                    "(for variants of the adaptation phase only)")
    ap.add_argument("--burn-in-from", metavar="TAG", help="resume from this tag's shared detection burn-ins "
                    "(trained there if missing; for variants that leave the burn-in unchanged)")
    ap.add_argument("--models-from", type=Path, metavar="FOLDER", help="a benchmarks/uda_table.py results folder: "
                    "evaluate its finished runs of these arms on val instead of training them again")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value for every run (e.g. a variant being measured)")
    a = ap.parse_args(argv)
    out = a.out / a.tag
    source_from = a.out / a.source_from if a.source_from else None
    burn_in_from = a.out / a.burn_in_from if a.burn_in_from else None
    out.mkdir(parents=True, exist_ok=True)
    meta = {"overrides": a.overrides, "source_from": a.source_from, "burn_in_from": a.burn_in_from, "recipes": a.recipes}
    if a.models_from is not None:
        meta["models_from"] = _relative(a.models_from)
    (out / "tag.json").write_text(json.dumps(meta, indent=2) + "\n")
    if not a.report_only:
        jobs = [(r, arm, s) for r in a.recipes for s in a.seeds for arm in a.arms if arm in ARMS[r]]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for rec in pool.map(lambda j: run_one(*j, out, a.overrides, burn_in_from, a.models_from), jobs):
                if rec is not None:
                    print(f"[uda_vs_source] done {rec['recipe']} {rec['arm']} seed {rec['seed']}", flush=True)
    text = (report(out, a.recipes, a.seeds, source_from) + "\n## The decision rule\n\n"
            + "\n".join(decision(out, a.seeds, source_from)) + "\n")
    (out / "REPORT.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "REPORT.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
