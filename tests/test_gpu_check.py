"""benchmarks/gpu_check.py, the one command a person with a GPU runs, works end to end (on the CPU, tiny)."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_reports_every_row(device):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--device", str(device), "--tiny", "--iters", "1"])
    amps = {"none", "bf16"} | ({"fp16"} if device.type == "cuda" else set())
    assert {(r["recipe"], r["amp"]) for r in report["rows"]} == {(rc, a) for rc in ("twopcnet", "mic") for a in amps}
    assert all(r["s_per_iter"] > 0 and r["syncs_per_step"] >= 0 and r["peak_memory_mb"] > 0 for r in report["rows"])
    assert report["ratio_resnet18"] > 0 and report["ratio_pvt_v2_b0"] > 0


def test_sync_counter_counts_host_reads():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    x = torch.ones(3)
    with bench.count_syncs() as c:
        x.sum().item()
        bool(x[0] > 0)
        x.tolist()
        x * 2  # no host read
    assert c["n"] == 3


def test_sync_sites_outside_the_checkout_keep_their_last_two_parts():
    """A file beside the checkout whose path starts with the checkout's (a venv at ``<checkout>-venv``, as CI's
    ``/tmp/ci`` and ``/tmp/ci-venv``) is named by its last two parts, not made relative to the checkout."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scope = {}
    for path in (str(ROOT) + "-venv/site-packages/kornia/check.py", str(ROOT / "warpadapt" / "x.py")):
        exec(compile("import sys\ndef here():\n    return sys._getframe(0)\n", path, "exec"), scope)
        frame = scope["here"]()
        assert bench._site(frame) == ("kornia/check.py:3 (here)" if "-venv" in path else "warpadapt/x.py:3 (here)")
