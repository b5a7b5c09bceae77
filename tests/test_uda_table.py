"""benchmarks/uda_table.py --quick: tiny runs through both recipes, raw JSON, skip-if-done, report."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("uda_table", ROOT / "benchmarks" / "uda_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_rows_cover_the_table():
    table = _load()
    names = {(r.table, r.name) for r in table.ROWS}
    for t in ("detection", "segmentation"):
        assert {(t, "source_only"), (t, "uda"), (t, "static"), (t, "geometric")} <= names
    assert {("detection", "instance_burn_in"), ("detection", "instance_always"), ("segmentation", "instance")} <= names
    assert len([n for n in names if n[0] == "intensity"]) == 2 and len([n for n in names if n[0] == "backbones"]) == 4
    for r in table.ROWS:  # every warp row is paired against a row of its own table
        assert r.baseline is None or (r.table, r.baseline) in names
        cmd = table.command(r, 0, Path("/tmp/x"), quick=False)
        assert "eval.target_split=test" in cmd and "threads=1" in cmd  # results must not depend on --jobs


def test_quick_runs_write_raw_json_skip_done_and_report(tmp_path):
    table = _load()
    args = ["--quick", "--out", str(tmp_path), "--seeds", "0", "1", "--tables", "detection", "segmentation",
            "--rows", "uda", "instance_always", "instance"]
    assert table.main(args + ["--jobs", "2"]) == 0
    raw = sorted(p.name for p in (tmp_path / "raw").glob("*.json"))
    assert raw == sorted(f"{t}__{r}__s{s}.json" for s in (0, 1)
                         for t, r in (("detection", "uda"), ("detection", "instance_always"),
                                      ("segmentation", "uda"), ("segmentation", "instance")))
    rec = json.loads((tmp_path / "raw" / "detection__instance_always__s1.json").read_text())
    assert rec["final"]["target_split"] == "test" and "train.seed=1" in rec["command"]
    assert "warp.guidance=instance" in rec["command"] and rec["final"]["iters"] == 2
    seg = json.loads((tmp_path / "raw" / "segmentation__instance__s0.json").read_text())
    assert "target_miou" in seg["final"]
    # a second sitting skips what is done: no new run folder appears, the raw files are unchanged
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("*.json")}
    assert table.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("*.json")} == before
    report = (tmp_path / "RESULTS.md").read_text()
    assert "UDA + Instance-Warp (always)" in report and "per seed:" in report and "(n=1)" not in report
