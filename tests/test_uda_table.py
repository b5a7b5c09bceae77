"""benchmarks/uda_table.py --quick: tiny runs through both recipes, raw JSON, skip-if-done, report."""
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("uda_table", ROOT / "benchmarks" / "uda_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_recipes_import_the_checkouts_warpadapt(tmp_path):
    """_recipe_env: a script run outside the checkout (as a recipe is: its sys.path starts at its own folder)
    imports the warpadapt of the checkout the runner belongs to, ahead of any other install."""
    table = _load()
    script = tmp_path / "which.py"
    script.write_text("import warpadapt; print(warpadapt.__file__)")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=table._recipe_env(),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve() == (ROOT / "warpadapt" / "__init__.py").resolve()
    assert table._recipe_env()["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_rows_cover_the_table():
    table = _load()
    names = {(r.table, r.name) for r in table.ROWS}
    for t in ("detection", "segmentation"):
        assert {(t, "source_only"), (t, "uda"), (t, "static"), (t, "geometric"), (t, "vertical_rescale"),
                (t, "schedule_linear_decay"), (t, "schedule_cosine_decay"), (t, "amplitude_range")} <= names
        assert {(f"fwhm_select", f"{t}_fwhm{f}") for f in (4, 8, 13)} <= names
    assert {("detection", "instance_burn_in"), ("detection", "instance_always"), ("segmentation", "instance"),
            ("detection", "nightaug_only")} <= names
    assert len([n for n in names if n[0] == "backbones"]) == 6
    assert table.TABLES == ("detection", "fwhm_select", "segmentation", "backbones")
    by = {(r.table, r.name): r for r in table.ROWS}
    # 5 seeds for the UDA and Instance-Warp rows, 3 for the rest
    assert {k for k, r in by.items() if r.seeds == 5} == {("detection", "uda"), ("detection", "instance_burn_in"),
                                                          ("detection", "instance_always"), ("segmentation", "uda"),
                                                          ("segmentation", "instance")}
    # source-only is the lower bound: no NightAug; the schedule rows pair with the constant warp
    assert "uda.nightaug=false" in by[("detection", "source_only")].overrides
    assert by[("detection", "schedule_cosine_decay")].baseline == "instance_burn_in"
    assert by[("segmentation", "amplitude_range")].baseline == "instance"
    # the interpolation control: the warp's own stage and FWHM, the features resampled, paired with UDA
    ro = by[("detection", "resample_only")]
    assert ro.baseline == "uda" and ro.burn_in is None and ro.fwhm
    assert {"warp.guidance=instance", "warp.stage=burn_in", "warp.resample_only=true"} <= set(ro.overrides)
    assert "warp.resample_only=true" in by[("segmentation", "resample_only")].overrides
    # only rows whose first train.burn_in iterations are one computation share a burn-in
    assert by[("detection", "uda")].burn_in == by[("detection", "nightaug_only")].burn_in == "plain"
    assert by[("detection", "instance_burn_in")].burn_in == by[("detection", "instance_always")].burn_in == "instance"
    assert by[("detection", "schedule_linear_decay")].burn_in is None and by[("detection", "source_only")].burn_in is None
    for r in table.ROWS:  # every row is paired against a row that exists; val only for the FWHM selection
        assert r.baseline is None or r.baseline_key in names
        assert all((r.table, other) in names for other in r.also)
        cmd = table.command(r, 0, Path("/tmp/x"), quick=False)
        assert f"eval.target_split={'val' if r.table == 'fwhm_select' else 'test'}" in cmd and "threads=1" in cmd
        assert r.fwhm == ("warp.guidance=instance" in r.overrides and r.table != "fwhm_select")
    overrides, group = table.resolve(by[("detection", "instance_always")], 8)
    assert "warp.fwhm=8" in overrides and group == "instance_fwhm8" == by[("fwhm_select", "detection_fwhm8")].burn_in
    with pytest.raises(ValueError, match="FWHM selection on val is not finished"):
        table.resolve(by[("segmentation", "instance")], None)


def test_the_row_scale_control_matches_the_warp_it_controls_for():
    """uda.vertical_rescale's range covers what the chosen FWHM's warp does to row heights and boxes (the
    committed --warps measurement), and is of that size: not FWHM 13's x1.7 at a FWHM that zooms x1.1."""
    table = _load()
    lo, hi = json.loads(table.VERTICAL_RESCALE)
    warps = json.loads((ROOT / "results" / "diagnose" / "warps.json").read_text())
    assert warps["instance_fwhm"] == table.fwhm_choice(ROOT / "results", "twopcnet")
    assert warps["instance_fwhm"] == table.fwhm_choice(ROOT / "results", "mic")
    inst = warps["instance"]
    assert lo <= min(inst["row_band_zoom"]) and hi >= max(*inst["row_band_zoom"], inst["zoom_median"])
    assert hi - lo <= 2 * (max(*inst["row_band_zoom"], inst["zoom_median"]) - min(inst["row_band_zoom"]))
    row = next(r for r in table.ROWS if r.name == "vertical_rescale")
    assert f"uda.vertical_rescale={table.VERTICAL_RESCALE}" in row.overrides and "warp.guidance=none" in row.overrides


def test_fwhm_choice_is_the_best_val_mean_once_all_runs_are_done(tmp_path):
    table = _load()
    (tmp_path / "raw").mkdir()
    vals = {4: (0.30, 0.34, 0.32), 8: (0.36, 0.30, 0.33), 13: (0.31, 0.31, 0.31)}  # means 32, 33, 31
    for f, per in vals.items():
        for s, v in enumerate(per):
            if f == 13 and s == 2:
                continue
            (tmp_path / "raw" / f"fwhm_select__segmentation_fwhm{f}__s{s}.json").write_text(json.dumps({"final": {"target_miou": v}}))
    assert table.fwhm_choice(tmp_path, "mic") is None  # one run missing
    (tmp_path / "raw" / "fwhm_select__segmentation_fwhm13__s2.json").write_text(json.dumps({"final": {"target_miou": 0.31}}))
    assert table.fwhm_choice(tmp_path, "mic") == 8 and table.fwhm_choice(tmp_path, "twopcnet") is None
    tie = tmp_path / "tie"
    (tie / "raw").mkdir(parents=True)
    for f in (4, 8, 13):
        for s in range(3):
            v = 0.30 if f == 4 else 0.33  # 8 and 13 tie: the larger, the paper's side
            (tie / "raw" / f"fwhm_select__segmentation_fwhm{f}__s{s}.json").write_text(json.dumps({"final": {"target_miou": v}}))
    assert table.fwhm_choice(tie, "mic") == 13
    n, hours = table.compute_left([(r, 0) for r in table.ROWS if r.recipe == "mic" and r.table != "fwhm_select"], tmp_path)
    assert n == len([r for r in table.ROWS if r.recipe == "mic" and r.table != "fwhm_select"])
    # no finished run has a wall time yet; the Instance-Warp row at seed 0 has a twin (FWHM 8, seed 0), but it
    # kept no test evaluation and its run folder is gone: it re-trains
    assert hours == pytest.approx(n * table.DEFAULT_MINUTES["mic"] / 60)
    twin_raw = tmp_path / "raw" / "fwhm_select__segmentation_fwhm8__s0.json"
    twin_raw.write_text(json.dumps({"final": {"target_miou": 0.36}, "test_eval": {"final": {}}}))
    n, hours = table.compute_left([(r, 0) for r in table.ROWS if r.recipe == "mic" and r.table != "fwhm_select"], tmp_path)
    assert hours == pytest.approx(((n - 1) * table.DEFAULT_MINUTES["mic"] + table.EVAL_MINUTES) / 60)


def test_hours_starts_only_runs_that_end_within_the_budget(tmp_path, capsys):
    table = _load()
    args = ["--quick", "--out", str(tmp_path), "--seeds", "0", "--tables", "segmentation", "--rows", "uda"]
    with pytest.raises(SystemExit):
        table.main(args + ["--hours", "-1"])
    assert "--hours must be >= 0" in capsys.readouterr().err
    assert table.main(args + ["--hours", "0"]) == 0  # nothing fits in no time: nothing starts, nothing is lost
    assert "segmentation__uda__s0 left for the next sitting" in capsys.readouterr().out
    assert not (tmp_path / "raw").exists() and not (tmp_path / "runs").exists()
    n, hours = table.compute_left([(r, 0) for r in table.ROWS if (r.table, r.name) == ("segmentation", "uda")], tmp_path)
    assert (n, hours) == (1, pytest.approx(table.DEFAULT_MINUTES["mic"] / 60))


def test_run_estimates_use_this_cpus_runs_when_there_are_enough(tmp_path):
    """run_minutes(out, cpu): the median wall time of the recipe's runs made on that CPU once it has 3 of
    them, else of all its runs; another recipe's records and other CPUs do not leak in."""
    table = _load()
    (tmp_path / "raw").mkdir()
    row = next(r for r in table.ROWS if (r.table, r.name) == ("segmentation", "uda"))
    runs = [("fast", 10), ("fast", 12), ("slow", 40), ("slow", 44), ("slow", 42)]
    for i, (cpu, minutes) in enumerate(runs):
        rec = {"recipe": "mic", "wall_seconds": 60.0 * minutes, "environment": {"cpu": {"model": cpu}}}
        (tmp_path / "raw" / f"r{i}.json").write_text(json.dumps(rec))
    (tmp_path / "raw" / "det.json").write_text(json.dumps({"recipe": "twopcnet", "wall_seconds": 60.0,
                                                           "environment": {"cpu": {"model": "fast"}}}))
    assert table.run_minutes(tmp_path)(row, 0) == 40  # all five mic runs
    assert table.run_minutes(tmp_path, "slow")(row, 0) == 42
    assert table.run_minutes(tmp_path, "fast")(row, 0) == 40  # 2 runs on it: too few, all runs decide
    (tmp_path / "raw" / "r9.json").write_text(json.dumps({"recipe": "mic", "wall_seconds": 660.0,
                                                          "environment": {"cpu": {"model": "fast"}}}))
    assert table.run_minutes(tmp_path, "fast")(row, 0) == 11
    assert table.run_minutes(tmp_path, "unknown")(row, 0) == table.run_minutes(tmp_path)(row, 0)
    assert table.compute_left([(row, 0)], tmp_path, "fast") == (1, pytest.approx(11 / 60))
    assert isinstance(table.this_cpu(), str)


def test_a_job_waiting_for_a_burn_in_another_trains_lets_the_next_go_first():
    import threading
    table = _load()
    started, b_started = [], threading.Event()

    def work(job):
        started.append(job)
        if job == "a1":  # trains the shared burn-in "x" until b has started beside it
            assert b_started.wait(timeout=30), "b never started beside a1: a2 took the second worker"
        if job == "b":
            b_started.set()
        return job == "b"  # one failure, counted

    key = lambda job: "x" if job.startswith("a") else None
    assert table.run_jobs(["a1", "a2", "b"], 2, work, key) == 1
    assert started == ["a1", "b", "a2"]
    started.clear()
    assert table.run_jobs(["a1", "a2"], 1, lambda j: started.append(j), key) == 0 and started == ["a1", "a2"]
    with pytest.raises(ZeroDivisionError):  # an error in a job reaches the caller, as from pool.map
        table.run_jobs([0, 1], 2, lambda j: 1 / j, lambda j: None)


def test_burn_in_pending_is_the_shared_folder_until_it_is_trained(tmp_path):
    table = _load()
    by = {(r.table, r.name): r for r in table.ROWS}
    bi, al, uda = by[("detection", "instance_burn_in")], by[("detection", "instance_always")], by[("detection", "uda")]
    assert table._burn_in_pending(bi, 3, tmp_path) is None  # the FWHM is not chosen yet: the job only waits
    (tmp_path / "raw").mkdir()
    for f in (4, 8, 13):
        for s in range(3):
            (tmp_path / "raw" / f"fwhm_select__detection_fwhm{f}__s{s}.json").write_text(
                json.dumps({"final": {"target_map50": 0.4 + (f == 8) * 0.01}}))
    folder = tmp_path / "runs" / "twopcnet__burn_in__instance_fwhm8__s3"
    assert table._burn_in_pending(bi, 3, tmp_path) == table._burn_in_pending(al, 3, tmp_path) == folder
    assert table._burn_in_pending(uda, 3, tmp_path) == tmp_path / "runs" / "twopcnet__burn_in__plain__s3"
    assert table._burn_in_pending(by[("segmentation", "instance")], 3, tmp_path) is None  # no shared burn-in
    (tmp_path / "raw" / "fwhm_select__detection_fwhm8__s1.json").write_text(
        json.dumps({"final": {"target_map50": 0.41}, "test_eval": {"final": {}}}))
    assert table._burn_in_pending(bi, 1, tmp_path) is None  # its twin's model is evaluated: nothing trains
    assert table._burn_in_pending(al, 1, tmp_path) == tmp_path / "runs" / "twopcnet__burn_in__instance_fwhm8__s1"
    folder.mkdir(parents=True)
    (folder / "final.json").write_text("{}")
    assert table._burn_in_pending(bi, 3, tmp_path) is None and table._burn_in_pending(al, 3, tmp_path) is None


def test_twins_are_the_instance_rows_at_the_selected_fwhm_on_the_selection_seeds():
    table = _load()
    by = {(r.table, r.name): r for r in table.ROWS}
    for key, twin in ((("detection", "instance_burn_in"), "detection_fwhm8"), (("segmentation", "instance"), "segmentation_fwhm8")):
        overrides, _ = table.resolve(by[key], 8)
        assert table.twin(by[key], overrides, 2).name == twin
        assert table.twin(by[key], overrides, 3) is None  # seeds 3-4 are not in the selection: they train
    for key in (("detection", "instance_always"), ("detection", "schedule_linear_decay"), ("segmentation", "amplitude_range"),
                ("backbones", "resnet18_instance"), ("fwhm_select", "segmentation_fwhm8")):
        assert table.twin(by[key], table.resolve(by[key], 8)[0], 0) is None, key


def test_a_row_with_a_twin_is_the_twins_model_evaluated_on_test(tmp_path):
    table = _load()
    assert table.main(["--quick", "--out", str(tmp_path), "--seeds", "0", "--tables", "fwhm_select", "segmentation",
                       "--rows", "segmentation_fwhm13", "instance"]) == 0
    trained = json.loads((tmp_path / "raw" / "fwhm_select__segmentation_fwhm13__s0.json").read_text())
    rec = json.loads((tmp_path / "raw" / "segmentation__instance__s0.json").read_text())
    assert rec["trained_by"] == "fwhm_select__segmentation_fwhm13__s0" and rec["train_command"] == trained["command"]
    assert (trained["final"]["target_split"], rec["final"]["target_split"]) == ("val", "test")
    assert rec["final"]["weights_digests"] == trained["final"]["weights_digests"]
    assert rec["final"]["seconds_per_iter"] == trained["final"]["seconds_per_iter"] > 0
    assert rec["final"]["source_miou"] == trained["final"]["source_miou"]  # the same model on the same source val
    # the selection run kept its test evaluation: the twin is made from the record, with no run folder left
    assert trained["test_eval"]["final"] == rec["final"] and "eval.target_split=test" in trained["test_eval"]["command"]
    assert not (tmp_path / "runs" / "fwhm_select__segmentation_fwhm13__s0__test").exists()
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "raw" / "segmentation__instance__s0.json").unlink()
    assert table.main(["--quick", "--out", str(tmp_path), "--seeds", "0", "--tables", "segmentation",
                       "--rows", "instance"]) == 0
    again = json.loads((tmp_path / "raw" / "segmentation__instance__s0.json").read_text())
    assert again["final"] == rec["final"] and again["trained_by"] == rec["trained_by"] and "evaluated_by" in again
    # where each number was made: package versions and the CPU kernels (they change the weights trained)
    assert again["environment"] == trained["environment"] and trained["environment"]["cpu"]["capability"]
    assert trained["environment"]["versions"]["torch"] and rec["environment"] == trained["environment"]
    # the run imported this checkout's warpadapt: its own run_info names the commit the record names
    assert trained["environment"]["git"]["commit"].startswith(trained["commit"])
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing evaluated
    # trained from scratch with eval.target_split=test, the row is the same model with the same test score
    assert table.main(["--quick", "--out", str(tmp_path / "b"), "--seeds", "0", "--tables", "segmentation",
                       "--rows", "instance"]) == 0
    alone = json.loads((tmp_path / "b" / "raw" / "segmentation__instance__s0.json").read_text())
    assert "trained_by" not in alone and alone["final"]["weights_digests"] == rec["final"]["weights_digests"]
    assert alone["final"]["target_miou"] == rec["final"]["target_miou"]


def test_quick_runs_write_raw_json_skip_done_and_report(tmp_path):
    table = _load()
    args = ["--quick", "--out", str(tmp_path), "--seeds", "0", "1", "--tables", "fwhm_select", "detection", "segmentation",
            "--rows", "detection_fwhm13", "uda", "instance_always", "instance"]
    assert table.main(args + ["--jobs", "2"]) == 0
    raw = sorted(p.name for p in (tmp_path / "raw").glob("*.json"))
    assert raw == sorted(f"{t}__{r}__s{s}.json" for s in (0, 1)
                         for t, r in (("fwhm_select", "detection_fwhm13"), ("detection", "uda"), ("detection", "instance_always"),
                                      ("segmentation", "uda"), ("segmentation", "instance")))
    rec = json.loads((tmp_path / "raw" / "detection__instance_always__s1.json").read_text())
    assert rec["final"]["target_split"] == "test" and "train.seed=1" in rec["command"]
    # the detection rows resumed from their shared burn-in (tiny runs: the paper's FWHM 13), the Instance-Warp
    # row from the one its FWHM-selection row trained: one burn-in per group and seed, whatever the table
    assert rec["burn_in"].endswith("twopcnet__burn_in__instance_fwhm13__s1") and "warp.fwhm=13" in rec["command"]
    sel = json.loads((tmp_path / "raw" / "fwhm_select__detection_fwhm13__s1.json").read_text())
    assert sel["burn_in"] == rec["burn_in"] and sel["final"]["target_split"] == "val"
    assert json.loads((tmp_path / "raw" / "detection__uda__s0.json").read_text())["burn_in"].endswith("twopcnet__burn_in__plain__s0")
    assert sorted(p.name for p in (tmp_path / "runs").glob("*__burn_in__*")) == sorted(
        f"twopcnet__burn_in__{g}__s{s}" for g in ("plain", "instance_fwhm13") for s in (0, 1))
    assert "warp.guidance=instance" in rec["command"] and rec["final"]["iters"] == 2
    seg = json.loads((tmp_path / "raw" / "segmentation__instance__s0.json").read_text())
    assert "target_miou" in seg["final"]
    # a second sitting skips what is done: no new run folder appears, the raw files are unchanged
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("*.json")}
    assert table.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("*.json")} == before
    report = (tmp_path / "RESULTS.md").read_text()
    assert "UDA + Instance-Warp (always)" in report and "per seed:" in report and "(n=1)" not in report
    # the diagnosis of the detection runs: student and teacher, pseudo-label quality, in the report
    spec = importlib.util.spec_from_file_location("uda_diagnose", ROOT / "benchmarks" / "uda_diagnose.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    assert diag.main(["--results", str(tmp_path), "--images", "2", "--warps", "--bn"]) == 0
    w = json.loads((tmp_path / "diagnose" / "warps.json").read_text())
    assert w["images"] == 2 and all(w[g]["share_after"] > w["share_before"] for g in ("instance", "static"))
    d = json.loads((tmp_path / "diagnose" / "detection__instance_always__s0.json").read_text())
    assert set(d) >= {"student", "teacher"} and d["images"] == 2 and d["target_split"] == "test"
    assert d["student"]["pseudo"]["gt"] > 0 and d["teacher"]["pseudo"]["images"] == 2
    table.main(args + ["--report-only"])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| UDA + Instance-Warp (always) | 2 | teacher |" in report and "| geometric |" in report
    seg = json.loads((tmp_path / "diagnose" / "segmentation__instance__s1.json").read_text())
    assert 0 <= seg["teacher"]["confident_share"] <= 1 and seg["student"]["target_miou"] == pytest.approx(
        json.loads((tmp_path / "raw" / "segmentation__instance__s1.json").read_text())["final"]["target_miou"])
    assert "| UDA + Instance-Warp | 2 | student |" in report
    # --bn: the student as trained re-evaluates to the run's own number; re-estimated statistics are another model
    bn = json.loads((tmp_path / "diagnose" / "bn" / "segmentation__instance__s1.json").read_text())
    assert bn["as_trained"]["target_miou"] == pytest.approx(seg["student"]["target_miou"])
    assert set(bn) >= {"source", "target"} and not (tmp_path / "diagnose" / "bn" / "detection__uda__s0.json").exists()
    assert "### Segmentation: BatchNorm running statistics" in report
    # where the difference comes from: per-class paired Δ columns for both tables
    assert "| class | Δ AP50: UDA + Instance-Warp (always) |" in report
    assert "| class | Δ IoU: UDA + Instance-Warp |" in report


def test_report_pairs_by_seed_with_a_t_interval_and_per_class(tmp_path):
    """Fake raw records with known numbers: the Δ column is the per-seed difference (not a difference of
    means) with its 95 % t interval, a schedule row pairs with the constant warp, per-class Δ skips null classes."""
    table = _load()
    (tmp_path / "raw").mkdir()
    vals = {("segmentation", "uda"): {0: 0.30, 1: 0.20}, ("segmentation", "instance"): {0: 0.35, 1: 0.22},
            ("segmentation", "schedule_linear_decay"): {0: 0.33, 1: 0.21}}
    for (t, r), per_seed in vals.items():
        for s, v in per_seed.items():
            rec = {"table": t, "row": r, "seed": s, "wall_seconds": 1.0, "machine": "m", "command": "python x",
                   "recipe": "mic", "final": {"target_miou": v, "target_iou": {"road": v, "bus": None}, "seconds_per_iter": 0.5}}
            (tmp_path / "raw" / f"{t}__{r}__s{s}.json").write_text(json.dumps(rec))
    text = table.report(tmp_path, [0, 1], tmp_path / "R.md").read_text()
    inst = next(line for line in text.splitlines() if line.startswith("| UDA + Instance-Warp |"))
    # +5, +2: mean 3.5, std 2.12, t(1) = 12.706: half-width 12.706 x 2.12 / sqrt 2 = 19.06
    assert "3.5 ± 2.1, 95 % CI [-15.6, +22.6] (includes 0) (per seed: +5.0, +2.0)" in inst
    seg = text[text.index("## Segmentation"):]
    sched = next(line for line in seg.splitlines() if line.startswith("| Instance-Warp, amplitude linear decay to 0 |"))
    assert "-1.5 ± 0.7" in sched and "(per seed: -2.0, -1.0)" in sched  # against the constant warp, seed by seed
    assert "| UDA (no warp) | 2 | 25.0 ± 7.1 |" in text and "baseline" in text
    assert "| road | 3.5 ± 2.1 |" in text  # per class: Δ road IoU +5, +2
    assert "| bus |" not in text  # absent from the test split in every run
    assert "not chosen yet" in text
    lo, hi = table.paired_interval([4.0, 5.0, 6.0, 5.0, 5.0])[1:]
    assert lo > 0 and hi == pytest.approx(5 + 2.776 * statistics.stdev([4.0, 5.0, 6.0, 5.0, 5.0]) / 5 ** 0.5)


def test_headline_pairs_each_row_with_uda_and_goes_between_the_readme_markers(tmp_path):
    """The README headline: score mean ± std over the seeds a row has, Δ against UDA on the seeds both have
    with its t interval (and whether it excludes 0); a row with no records is left out; the block replaces
    what was between the markers and nothing else; a README without markers is left untouched."""
    table = _load()

    def rec(t, r, s, v):
        key = "target_map50" if t == "detection" else "target_miou"
        return {"table": t, "row": r, "seed": s, "final": {key: v}}

    vals = {("detection", "uda"): [0.40, 0.44, 0.42], ("detection", "instance_burn_in"): [0.38, 0.43, 0.39],
            ("detection", "instance_always"): [0.30, None, None], ("segmentation", "uda"): [0.30, 0.32, 0.31],
            ("segmentation", "instance"): [0.33, 0.34, None]}
    recs = {(t, r, s): rec(t, r, s, v) for (t, r), vs in vals.items() for s, v in enumerate(vs) if v is not None}
    lines = table.headline(recs, [0, 1, 2])
    by, pair = {}, -1
    for cells in (line.split("|") for line in lines[2:]):
        pair += bool(cells[1].strip())  # a pair's first row names it
        by[(pair, cells[2].strip())] = [x.strip() for x in cells]
    assert len(by) == 5 and (0, "source only") not in by  # no records
    assert by[(0, "UDA (no warp)")][3:6] == ["0, 1, 2", "42.0 ± 2.0", "baseline"]
    # burn-in only - UDA: -2, -1, -3 -> mean -2, std 1, t(2) = 4.303: half width 2.48
    assert by[(0, "UDA + Instance-Warp (burn-in only)")][5] == "**-2.0** ± 1.0 [-4.5, +0.5], includes 0"
    assert by[(0, "UDA + Instance-Warp (always)")][4:6] == ["30.0 (n=1)", "-10.0 (n=1)"]
    assert by[(1, "UDA (no warp)")][4] == "31.0 ± 1.0"
    # + Instance-Warp (segmentation) - UDA on seeds 0, 1: +3, +2 -> [2.5 -/+ 12.706 * 0.707 / 1.414]
    assert by[(1, "UDA + Instance-Warp")][3:6] == ["0, 1", "33.5 ± 0.7", "**+2.5** ± 0.7 [-3.9, +8.9], includes 0"]
    assert lines[2].startswith("| synthetic_day2night, 2PCNet (teacher target mAP50, %) |")
    start, end = table.HEADLINE_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\nold numbers\n{end}\nafter\n")
    assert table.write_headline(readme, ["new", "table"])
    assert readme.read_text() == f"intro\n{start}\nnew\ntable\n{end}\nafter\n"
    assert table.write_headline(readme, ["again"]) and readme.read_text().count("again") == 1
    readme.write_text("no markers\n")
    assert not table.write_headline(readme, ["x"]) and readme.read_text() == "no markers\n"


def test_report_pairs_the_further_comparisons_seed_by_seed(tmp_path):
    """Row.also: the interpolation control is paired with the full warp, UDA with source-only, each on the seeds
    both rows have (row minus other), with its interval; absent pairs leave no table."""
    table = _load()
    by = {(r.table, r.name): r for r in table.ROWS}
    assert by[("detection", "resample_only")].also == ("instance_burn_in",)
    assert by[("segmentation", "resample_only")].also == ("instance",) and by[("detection", "uda")].also == ("source_only",)
    (tmp_path / "raw").mkdir()
    vals = {"resample_only": {0: 0.40, 1: 0.42, 2: 0.41}, "instance_burn_in": {0: 0.38, 1: 0.43, 3: 0.5},
            "uda": {0: 0.45}}
    for r, per_seed in vals.items():
        for s, v in per_seed.items():
            rec = {"table": "detection", "row": r, "seed": s, "wall_seconds": 1.0, "machine": "m",
                   "command": "python x", "recipe": "twopcnet", "final": {"target_map50": v}}
            (tmp_path / "raw" / f"detection__{r}__s{s}.json").write_text(json.dumps(rec))
    text = table.report(tmp_path, [0, 1, 2, 3], tmp_path / "R.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| UDA + Instance-Warp's feature resampling only")
                and "| UDA + Instance-Warp (burn-in only) |" in x)
    assert "| UDA + Instance-Warp (burn-in only) | 2 | 0.5 ± 2.1" in line and "(per seed: +2.0, -1.0)" in line
    assert text.count("Further paired comparisons") == 1  # no source-only run: UDA's pairing has no table


def test_report_names_the_environments_and_the_pairs_that_cross_them(tmp_path):
    """Records made on two CPUs / package versions: the report counts the runs of each environment (naming only
    what differs) and lists every paired difference whose two runs ran in different ones; one environment: silent."""
    table = _load()
    (tmp_path / "raw").mkdir()

    def env(cpu, kornia):
        return {"cpu": {"model": cpu, "capability": "AVX512", "threads": 1},
                "versions": {"torch": "2.14.1", "kornia": kornia}}

    runs = {("segmentation", "uda", 0): env("Intel", "0.9.0"), ("segmentation", "instance", 0): env("Intel", "0.9.0"),
            ("segmentation", "uda", 1): env("AMD", "0.9.2"), ("segmentation", "instance", 1): env("Intel", "0.9.0"),
            ("segmentation", "instance", 2): None, ("segmentation", "source_only", 1): env("Intel", "0.9.0")}
    for (t, r, s), e in runs.items():
        rec = {"table": t, "row": r, "seed": s, "wall_seconds": 1.0, "machine": "m", "command": "python x",
               "recipe": "mic", "final": {"target_miou": 0.3}, **({"environment": e} if e else {})}
        (tmp_path / "raw" / f"{t}__{r}__s{s}.json").write_text(json.dumps(rec))
    text = table.report(tmp_path, [0, 1, 2], tmp_path / "R.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("Environments"))
    assert "Intel (AVX512), kornia 0.9.0: 4 runs; AMD (AVX512), kornia 0.9.2: 1 runs" in line
    assert "torch" not in line and "not recorded (runs made before records kept it): 1 runs" in line
    # seed 0 shares one environment; seed 2 has no baseline; UDA is also paired with source-only (Row.also)
    assert line.endswith("segmentation/uda s1 (vs source_only), segmentation/instance s1.")
    (tmp_path / "raw" / "segmentation__source_only__s1.json").unlink()
    (tmp_path / "raw" / "segmentation__uda__s1.json").unlink()
    (tmp_path / "raw" / "segmentation__instance__s1.json").unlink()
    assert "Environments" not in table.report(tmp_path, [0, 1, 2], tmp_path / "R.md").read_text()


def test_environments_are_matched_by_package_name_not_position(tmp_path):
    """One record lacks a package another has: the versions still line up by name (kornia against kornia), the
    package one side lacks is named as not recorded there, and a version both sides share is left out."""
    table = _load()
    (tmp_path / "raw").mkdir()
    envs = {0: {"torch": "2.14.1", "timm": "1.0.20", "kornia": "0.9.0"}, 1: {"torch": "2.14.1", "kornia": "0.9.0"}}
    for s, versions in envs.items():
        rec = {"table": "segmentation", "row": "uda", "seed": s, "wall_seconds": 1.0, "machine": "m",
               "command": "python x", "recipe": "mic", "final": {"target_miou": 0.3},
               "environment": {"cpu": {"model": "AMD", "capability": "AVX512"}, "versions": versions}}
        (tmp_path / "raw" / f"segmentation__uda__s{s}.json").write_text(json.dumps(rec))
    line = next(x for x in table.report(tmp_path, [0, 1], tmp_path / "R.md").read_text().splitlines()
                if x.startswith("Environments"))
    assert "AMD (AVX512), timm 1.0.20: 1 runs" in line and "AMD (AVX512), timm not recorded: 1 runs" in line
    assert "kornia" not in line and "torch" not in line


def test_report_bn_recalibration_pairs_each_treatment(tmp_path):
    """diagnose/bn records with known numbers: each column of Δ pairs the row with its baseline under
    the same BatchNorm treatment, seed by seed; a bn_stats row pairs across tables."""
    table = _load()
    (tmp_path / "diagnose" / "bn").mkdir(parents=True)
    vals = {("segmentation", "uda"): {0: (0.30, 0.34, 0.35), 1: (0.20, 0.26, 0.27)},
            ("segmentation", "instance"): {0: (0.35, 0.36, 0.36), 1: (0.22, 0.25, 0.30)},
            ("backbones", "resnet18_uda"): {0: (0.33, 0.33, 0.34)}}
    for (t, r), per_seed in vals.items():
        for s, v in per_seed.items():
            rec = {"run": f"{t}__{r}__s{s}", "images": 8,
                   **{k: {"target_miou": x} for k, x in zip(("as_trained", "source", "target"), v)}}
            (tmp_path / "diagnose" / "bn" / f"{t}__{r}__s{s}.json").write_text(json.dumps(rec))
    lines = table._bn_recalibration(tmp_path, [0, 1])
    inst = next(line for line in lines if line.startswith("| UDA + Instance-Warp |"))
    cells = [c.strip() for c in inst.strip("|").split("|")]
    assert cells[1:5] == ["2", "28.5 ± 9.2", "30.5 ± 7.8", "33.0 ± 4.2"]
    assert cells[5] == "3.5 ± 2.1 (+5.0, +2.0)"    # as trained: 35-30, 22-20
    assert cells[6] == "0.5 ± 2.1 (+2.0, -1.0)"    # source statistics: 36-34, 25-26
    assert cells[7] == "2.0 ± 1.4 (+1.0, +3.0)"    # target statistics: 36-35, 30-27
    bb_row = next(line for line in lines if line.startswith("| resnet18: UDA (no warp) |"))
    assert "| 1 | 33.0 (n=1) |" in bb_row  # its own numbers; a row without a baseline has no Δ
    assert table._bn_recalibration(tmp_path / "nothing", [0]) == []


def test_report_scale_sweep_pairs_each_model_with_its_unwarped_twin(tmp_path):
    """diagnose/scales records with known numbers: a table row pairs with the UDA row, a warped burn-in with
    the plain burn-in, seed by seed and scale by scale; a seed without its twin is left out of Δ."""
    table = _load()
    d = tmp_path / "diagnose" / "scales"
    d.mkdir(parents=True)
    vals = {"detection__uda": {0: (0.40, 0.30), 1: (0.44, 0.36)},
            "detection__instance_burn_in": {0: (0.38, 0.33), 1: (0.40, 0.37), 2: (0.5, 0.5)},
            "twopcnet__burn_in__plain": {1: (0.20, 0.10)},
            "twopcnet__burn_in__instance_fwhm4": {1: (0.18, 0.15)}}
    for group, per_seed in vals.items():
        for s, v in per_seed.items():
            rec = {"run": f"{group}__s{s}", "model": "teacher", "scales": [1.0, 1.5], "image_size": [128, 256],
                   "target": {"map50": list(v)}, "source": {"map50": [0.6, 0.5]}}
            (d / f"{group}__s{s}.json").write_text(json.dumps(rec))
    lines = table._scale_sweep(tmp_path, [0, 1, 2])
    row = next(line for line in lines if line.startswith("| UDA + Instance-Warp (burn-in only) (teacher) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0, 1, 2" and cells[2] == "42.7 ± 6.4"
    assert cells[4:6] == ["-3.0 ± 1.4", "2.0 ± 1.4"]  # 38-40, 40-44; 33-30, 37-36 (seed 2: no twin)
    burn = next(line for line in lines if line.startswith("| burn-in only (student), instance_fwhm4 "))
    assert [c.strip() for c in burn.strip("|").split("|")][4:6] == ["-2.0 (n=1)", "5.0 (n=1)"]
    plain = next(line for line in lines if line.startswith("| burn-in only (student), plain "))
    assert "| - | - |" in plain  # the unwarped twin has no Δ
    assert table._scale_sweep(tmp_path / "nothing", [0]) == []


def test_report_round_trip_rows_average_each_model_group(tmp_path):
    table = _load()
    d = tmp_path / "diagnose" / "round_trip"
    d.mkdir(parents=True)
    for group, seed, (sp, sr, tp, tr), change in (("twopcnet__burn_in__plain", 1, (0.6, 0.5, 0.3, 0.2), [0.1, 0.3]),
                                                  ("twopcnet__burn_in__plain", 2, (0.7, 0.5, 0.4, 0.4), [0.3, 0.5]),
                                                  ("detection__uda", 1, (0.6, 0.6, 0.4, 0.3), [0.2, 0.2])):
        rec = {"run": f"{group}__s{seed}", "model": "student", "fwhm": 4.0,
               "source": {"plain": sp, "round_trip": sr, "feature_change": change},
               "target": {"plain": tp, "round_trip": tr, "feature_change": change}}
        (d / f"{group}__s{seed}.json").write_text(json.dumps(rec))
    lines = table._round_trip(tmp_path, [1, 2])
    row = next(line for line in lines if line.startswith("| burn-in only (student), plain (student) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["2", "65.0 ± 7.1", "50.0 ± 0.0", "-15.0 ± 7.1"]
    assert cells[7] == "-5.0 ± 7.1" and cells[8] == "20 % / 40 %"
    assert any(line.startswith("| UDA (no warp) (student) | 1 |") for line in lines)
    assert table._round_trip(tmp_path, [0]) == []
    assert sum(line.startswith("### ") for line in lines) == 1  # no --resample-only records: one table
    # --resample-only records get their own table, after the full round trip's, with their own numbers
    r = tmp_path / "diagnose" / "round_trip_resample"
    r.mkdir()
    rec = {"run": "detection__uda__s1", "model": "teacher", "fwhm": 4.0, "resample_only": True,
           "source": {"plain": 0.6, "round_trip": 0.55, "feature_change": [0.2, 0.1]},
           "target": {"plain": 0.4, "round_trip": 0.38, "feature_change": [0.2, 0.1]}}
    (r / "detection__uda__s1.json").write_text(json.dumps(rec))
    lines = table._round_trip(tmp_path, [1, 2])
    heads = [i for i, line in enumerate(lines) if line.startswith("### ")]
    assert len(heads) == 2 and "interpolation control" in lines[heads[1]]
    rows = [line for line in lines[heads[1]:] if line.startswith("| UDA (no warp) (teacher) | 1 |")]
    assert len(rows) == 1 and "| -5.0 (n=1) |" in rows[0] and "| -2.0 (n=1) |" in rows[0] and rows[0].endswith("| 20 % / 10 % |")
    assert "--round-trip --resample-only --fwhm 4" in lines[heads[1] + 2]


def test_report_round_trip_parts_one_row_per_model_group_and_fwhm(tmp_path):
    """--round-trip-parts records of two FWHMs (their own folders) give one row each per model group, the
    level values averaged over seeds in %, the strides in the caption; other seeds are left out."""
    table = _load()
    for folder, fwhm, seeds, total in (("round_trip_parts", 4.0, (1, 2), ((0.2, 0.1), (0.4, 0.3))),
                                       ("round_trip_parts_fwhm13", 13.0, (1,), ((0.5, 0.4),))):
        d = tmp_path / "diagnose" / folder
        d.mkdir(parents=True)
        for seed, t in zip(seeds, total):
            parts = {"total": list(t), "feature_resampling": [0.1, 0.05], "equivariance": [0.15, 0.1],
                     "image_resampling": [0.08, 0.02]}
            rec = {"run": f"twopcnet__burn_in__plain__s{seed}", "model": "student", "fwhm": fwhm, "images": 64,
                   "strides": [4, 8], "parts": parts}
            (d / f"twopcnet__burn_in__plain__s{seed}.json").write_text(json.dumps(rec))
    lines = table._round_trip_parts(tmp_path, [1, 2])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| burn-in")]
    assert [r[1:4] for r in rows] == [["4", "2", "30 / 20"], ["13", "1", "50 / 40"]]
    assert rows[0][4:] == ["10 / 5", "15 / 10", "8 / 2"]
    assert any("stride 4 / 8" in line for line in lines)
    assert table._round_trip_parts(tmp_path, [0]) == []


def test_decision_rule_needs_every_seed_and_the_margin(tmp_path):
    """uda_vs_source.decision: PASS only with all seeds present, each delta and the mean >= 2 points, for the
    student and (detection) the teacher; one seed short of the margin fails the pair."""
    spec = importlib.util.spec_from_file_location("uda_vs_source", ROOT / "benchmarks" / "uda_vs_source.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    raw = tmp_path / "raw"
    raw.mkdir()

    def put(recipe, arm, seed, **models):
        key = mod.METRIC[recipe]
        rec = {"recipe": recipe, "arm": arm, "seed": seed, "final": {m: {key: v} for m, v in models.items()}}
        (raw / f"{recipe}__{arm}__s{seed}.json").write_text(json.dumps(rec))

    for s in (0, 1, 2):
        put("mic", "source_only", s, student=0.20)
        put("mic", "uda", s, student=0.25, teacher=0.24)
        put("twopcnet", "source_only", s, student=0.30)
        put("twopcnet", "uda", s, student=0.33, teacher=0.30 + (0.01 if s == 1 else 0.04))  # seed 1: +1 only
    lines = mod.decision(tmp_path)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines if line.startswith("| ") and "seed 0" not in line}
    assert rows[("mic synthetic_clear2fog (target_miou)", "student (reported)")].endswith("| +5.0 | PASS |")
    assert rows[("twopcnet synthetic_day2night (target_map50)", "student")].endswith("PASS |")
    assert "+1.0" in rows[("twopcnet synthetic_day2night (target_map50)", "teacher (reported)")]
    assert rows[("twopcnet synthetic_day2night (target_map50)", "teacher (reported)")].endswith("FAIL |")
    assert "Not passed" in lines[0]
    (raw / "mic__uda__s2.json").unlink()  # a missing seed fails too
    assert "missing" in next(line for line in mod.decision(tmp_path) if line.startswith("| mic"))


def _vs_source():
    spec = importlib.util.spec_from_file_location("uda_vs_source", ROOT / "benchmarks" / "uda_vs_source.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _put_detection(root, tag, arm, seed, **models):
    """A fake uda_vs_source raw record of tag ``tag``: target mAP50 per model."""
    raw = root / tag / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rec = {"recipe": "twopcnet", "arm": arm, "seed": seed, "final": {m: {"target_map50": v} for m, v in models.items()}}
    (raw / f"twopcnet__{arm}__s{seed}.json").write_text(json.dumps(rec))


def test_decision_rule_takes_the_source_only_arm_from_another_tag(tmp_path):
    """uda_vs_source --source-from: a variant of the adaptation phase is compared with another tag's
    source-only records, and its own source-only records (if any) are ignored."""
    mod = _vs_source()
    put = lambda tag, arm, seed, **models: _put_detection(tmp_path, tag, arm, seed, **models)  # noqa: E731

    for s in (0, 1, 2):
        put("base", "source_only", s, student=0.30)
        put("variant", "source_only", s, student=0.50)  # would make every delta negative if it were read
        put("variant", "uda", s, student=0.33, teacher=0.35)
    row = next(line for line in mod.decision(tmp_path / "variant", source_from=tmp_path / "base")
               if line.startswith("| twopcnet") and "teacher" in line)
    assert row.endswith("| +5.0 | PASS |")
    own = next(line for line in mod.decision(tmp_path / "variant") if line.startswith("| twopcnet") and "teacher" in line)
    assert own.endswith("| -15.0 | FAIL |")
    text = mod.report(tmp_path / "variant", ["twopcnet"], [0, 1, 2], source_from=tmp_path / "base")
    assert "tag `base`" in text and "| 0 | 30.0 | - | 33.0 | 35.0 |" in text
    assert "teacher - source only: +5.0 ± 0.0 over 3 seeds (per seed +5.0, +5.0, +5.0)" in text


def test_tried_lists_each_tag_against_its_own_baseline(tmp_path):
    """uda_vs_source.tried: one row per tag with a tag.json; a variant with source_from is compared
    with that tag's baseline arms, per seed, for the reported model (2PCNet: teacher) and the student."""
    mod = _vs_source()
    put = lambda tag, arm, seed, **models: _put_detection(tmp_path, tag, arm, seed, **models)  # noqa: E731

    for s in (0, 1):
        put("base", "source_only", s, student=0.20)
        put("base", "nightaug_only", s, student=0.30 + 0.02 * s)
        put("base", "uda", s, student=0.29, teacher=0.31)
        put("thr", "uda", s, student=0.35, teacher=0.36)
        put("thr", "nightaug_only", s, student=0.9)  # not read: its baselines come from base
    (tmp_path / "base" / "tag.json").write_text(json.dumps({"overrides": []}))
    (tmp_path / "thr" / "tag.json").write_text(json.dumps({"overrides": ["uda.threshold=0.6"], "source_from": "base"}))
    put("untagged", "uda", 0, student=0.9, teacher=0.9)  # no tag.json: not listed
    lines = mod.tried(tmp_path, "twopcnet", seeds=(0, 1))
    assert len(lines) == 4 and not any("untagged" in line for line in lines)
    base = next(line for line in lines if line.startswith("| `base`"))
    thr = next(line for line in lines if line.startswith("| `thr`"))
    assert ("| (defaults) | itself | 20.0 (n=2) | 31.0 (n=2) | 31.0 (n=2) | +11.0, +11.0 (+11.0) | +1.0, -1.0 (+0.0) "
            "| +9.0, +9.0 (+9.0) |") in base
    assert ("`uda.threshold=0.6` | `base` | 20.0 (n=2) | 31.0 (n=2) | 36.0 (n=2) | +16.0, +16.0 (+16.0) "
            "| +6.0, +4.0 (+5.0) | +15.0, +15.0 (+15.0) |") in thr


def test_the_rule_arms_can_be_the_tables_models_evaluated_on_val(tmp_path):
    """uda_vs_source.py --models-from: the table's finished UDA run of a seed is the rule's UDA arm of that
    seed (same training config), evaluated on val; another experiment is refused, naming the keys."""
    table = _load()
    spec = importlib.util.spec_from_file_location("uda_vs_source", ROOT / "benchmarks" / "uda_vs_source.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    assert table.main(["--quick", "--out", str(tmp_path), "--seeds", "0", "--tables", "segmentation", "--rows", "uda"]) == 0
    trained = json.loads((tmp_path / "raw" / "segmentation__uda__s0.json").read_text())["final"]
    quick = list(table.QUICK["mic"])
    bad = [o for o in quick if not o.startswith("model.embed_dim")]
    with pytest.raises(ValueError, match="model.embed_dim"):
        rule.main(["--tag", "wrong", "--out", str(tmp_path / "rule"), "--recipes", "mic", "--arms", "uda", "--seeds", "0",
                   "--models-from", str(tmp_path), *bad])
    assert rule.main(["--tag", "t", "--out", str(tmp_path / "rule"), "--recipes", "mic", "--arms", "uda", "source_only",
                      "--seeds", "0", "--models-from", str(tmp_path), *quick]) == 0
    rec = json.loads((tmp_path / "rule" / "t" / "raw" / "mic__uda__s0.json").read_text())
    assert rec["trained_by"].endswith("segmentation__uda__s0")
    assert rec["final"]["student"]["target_split"] == "val" and trained["target_split"] == "test"
    assert rec["final"]["student"]["weights_digests"] == trained["weights_digests"]
    assert rec["final"]["student"]["source_miou"] == trained["source_miou"]
    # the table's source-only run of seed 0 is not there: that arm waits, nothing is trained for it
    assert not (tmp_path / "rule" / "t" / "raw" / "mic__source_only__s0.json").exists()
    assert json.loads((tmp_path / "rule" / "t" / "tag.json").read_text())["models_from"] == str(tmp_path.resolve())
