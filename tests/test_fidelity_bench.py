"""Smoke test of benchmarks/fidelity.py at a tiny size (one setting per axis)."""

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py"


@pytest.fixture(scope="module")
def fidelity():
    spec = importlib.util.spec_from_file_location("fidelity_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fidelity_bench_tiny(fidelity, tmp_path, capsys):
    rows = fidelity.main(["--size", "64", "128", "--batch", "1", "--fwhm", "20", "--bandwidth", "16",
                          "--amplitude", "4", "--out-dir", str(tmp_path)])
    by = {r["label"]: r for r in rows}
    ident, strong = by["identity (no boxes)"], by["FWHM = 20"]
    assert [r["axis"] for r in rows] == ["identity", "reference", "fwhm", "bandwidth_scale", "amplitude_scale"]
    # identity: lossless up to float rounding, zoom 1, object share unchanged
    assert ident["psnr_image"] > 60
    assert all(ident[f"psnr_rs_s{s}"] > 60 and ident[f"psnr_e2e_s{s}"] > 60 for s in fidelity.STRIDES)
    assert ident["zoom_x_min"] == pytest.approx(1, abs=1e-4) and ident["zoom_y_max"] == pytest.approx(1, abs=1e-4)
    assert ident["share_after"] == pytest.approx(ident["share_before"])
    # the strongest FWHM zooms in on the objects and loses information
    assert strong["zoom_x_max"] > 1 > strong["zoom_x_min"]
    assert strong["share_after"] > strong["share_before"] > 0
    assert strong["psnr_image"] < ident["psnr_image"]
    for s in fidelity.STRIDES:
        assert strong[f"psnr_e2e_s{s}"] < ident[f"psnr_e2e_s{s}"]
        assert strong[f"psnr_rs_s{s}"] < ident[f"psnr_rs_s{s}"]
        assert 0 < strong[f"rel_rs_s{s}"] < 1 and math.isfinite(strong[f"psnr_e2e_s{s}"])
    out = capsys.readouterr().out
    assert "| setting |" in out and "FWHM = 20" in out
    assert (tmp_path / "fidelity.md").read_text().count("| FWHM = ") >= 2
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000
